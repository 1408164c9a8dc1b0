"""What a workflow saves for its report (``evidence.json``): facts only the run's models can give.

:func:`collect` takes the model before and after and, where they apply, the plan, the importance
scores and labelled test data, and returns JSON-ready parts:

- ``widths``: per Conv/Linear/recurrent layer, output channels (hidden units) before and after;
- ``importance``: per group, the scores of its units and the kept units (the cut line lies between),
  with what a unit is: a channel, a block of channels cut together (``channels_per_unit``), a
  recurrent layer's hidden unit, or a head;
- ``classes``: the confusion matrix before and after (classification);
- ``gallery``: the first convolution's filters and which were removed;
- ``heads``: a layer x head importance map and the removed heads (attention);
- ``attribution``: maps before and after on fixed test images, with their agreement.

A part that cannot be computed is left out and ``notes`` says why, so one failure loses nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunekit.graph import ChannelGroup, DependencyGraph
from prunekit.measure import confusion_matrix
from prunekit.report import attribution
from prunekit.structured import Plan

__all__ = ["ATTRIBUTION_IMAGES", "collect", "filter_gallery", "head_map", "importance",
           "removed_channels", "widths"]

ATTRIBUTION_IMAGES = 4  # NOTE: the first test images, the same every run, so reports compare.
_VERSION = 1
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase)


def _width(module: nn.Module) -> int | None:
    """The units a layer outputs (a Conv's channels, a Linear's features, a recurrent layer's hidden
    units); for an ``nn.Sequential`` that replaced one (a factorised layer), its last layer's; else None."""
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return int(module.out_channels)
    if isinstance(module, nn.RNNBase):
        return int(module.hidden_size)
    if isinstance(module, nn.Sequential) and len(module):
        return _width(module[-1])
    return None


def widths(before: nn.Module, after: nn.Module) -> list[dict[str, Any]]:
    """Output width of every Conv/Linear/recurrent layer of ``before`` that ``after`` still holds under
    its name, replaced or not: a layer a later stage factorised keeps the width pruning gave it."""
    kept = dict(after.named_modules())
    rows = []
    for name, module in before.named_modules():
        width = _width(module) if isinstance(module, _LAYERS) else None
        other = _width(kept[name]) if name in kept else None
        if width is not None and other is not None:
            rows.append({"layer": name, "kind": type(module).__name__, "before": width, "after": other})
    return rows


def removed_channels(group: ChannelGroup, plan: Plan) -> list[int]:
    """The group's channels the plan cuts (all kept when the plan does not name the group)."""
    keep = set(plan.keep.get(group.id, range(group.size)))
    return [c for c in range(group.size) if c not in keep]


def _is_heads(group: ChannelGroup) -> bool:
    """Whether the group's units are attention heads: a producer slices a weight's rows in blocks."""
    return any(m.inner > 1 and m.tensor.endswith("weight") for m in group.by_role("producer"))


def _recurrent(model: nn.Module | None) -> set[str]:
    """Names of ``model``'s recurrent layers (their hidden units write one row per gate)."""
    if model is None:
        return set()
    return {name for name, m in model.named_modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))}


def _unit(group: ChannelGroup, recurrent: set[str]) -> tuple[str, int]:
    """What one of the group's units is and the channels it holds: a ``head``, a recurrent layer's
    ``hidden unit`` (its gate rows are one unit), or a ``channel`` (a block of them where cut together)."""
    if _is_heads(group):
        return "head", group.channels_per_unit
    if any(m.module in recurrent for m in group.by_role("producer")):
        return "hidden unit", 1
    return "channel", group.channels_per_unit


def importance(graph: DependencyGraph, scores: Mapping[str, torch.Tensor], plan: Plan,
               model: nn.Module | None = None) -> list[dict[str, Any]]:
    """Per pruned group: its unit scores and kept units, the groups the plan cut first; ``unit`` says
    whether a unit is a ``channel`` (``channels_per_unit`` of them, so counts are in channels), a
    ``hidden unit`` of a recurrent layer of ``model`` (the traced one) or a ``head``."""
    rows, recurrent = [], _recurrent(model)
    for group in graph.groups:
        if group.id in scores and group.id in plan.keep:
            unit, per_unit = _unit(group, recurrent)
            rows.append({"group": group.id, "scores": [float(s) for s in scores[group.id].flatten()],
                         "kept": sorted(int(c) for c in plan.keep[group.id]),
                         "unit": unit, "channels_per_unit": per_unit})
    return sorted(rows, key=lambda r: len(r["kept"]) / max(len(r["scores"]), 1))


def _first_conv(model: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def filter_gallery(model: nn.Module, graph: DependencyGraph, plan: Plan) -> dict[str, Any] | None:
    """The first ``nn.Conv2d``'s filters (RGB when it reads 3 channels, else the mean over its inputs)
    and the output channels the plan removes from it; None without a convolution."""
    name = _first_conv(model)
    if name is None:
        return None
    conv = model.get_submodule(name)
    assert isinstance(conv, nn.Conv2d)
    weight = conv.weight.detach().float()
    removed: set[int] = set()
    for group in graph.groups:
        for member in group.by_role("producer"):
            if member.tensor == f"{name}.weight" and member.axis == 0:
                cut = removed_channels(group, plan)
                if cut:
                    removed |= {int(i) for i in member.indices(torch.tensor(cut, dtype=torch.long))}
    shown = weight.permute(0, 2, 3, 1) if weight.shape[1] == 3 else weight.mean(1)
    return {"layer": name, "filters": torch.round(shown, decimals=5).tolist(),
            "removed": sorted(removed)}


def _head_groups(graph: DependencyGraph) -> list[tuple[str, ChannelGroup]]:
    """Groups whose channels are attention heads (:func:`_is_heads`), with the module of their first
    blocked producer."""
    found = []
    for group in graph.groups:
        if _is_heads(group):
            member = next(m for m in group.by_role("producer") if m.inner > 1 and m.tensor.endswith("weight"))
            found.append((member.module, group))
    return found


def head_map(graph: DependencyGraph, scores: Mapping[str, torch.Tensor] | None,
             plan: Plan) -> dict[str, Any] | None:
    """Layer x head importance (None where unscored) and the ``[row, head]`` pairs the plan removes;
    None when the model has no attention heads."""
    groups = _head_groups(graph)
    if not groups:
        return None
    rows, removed = [], []
    for index, (_, group) in enumerate(groups):
        values = scores.get(group.id) if scores else None
        rows.append([float(v) for v in values.flatten()] if values is not None else [None] * group.size)
        removed += [[index, head] for head in removed_channels(group, plan)]
    return {"layers": [name for name, _ in groups], "importance": rows, "removed": removed}


def _classes(before: nn.Module, after: nn.Module, dataset: Any, num_classes: int,
             max_batches: int | None) -> dict[str, Any]:
    return {"before": confusion_matrix(before, dataset, num_classes, max_batches=max_batches),
            "after": confusion_matrix(after, dataset, num_classes, max_batches=max_batches)}


def _attribution(before: nn.Module, after: nn.Module, dataset: Any) -> dict[str, Any]:
    images, labels = dataset.tensors[0][:ATTRIBUTION_IMAGES], dataset.tensors[1][:ATTRIBUTION_IMAGES]
    return attribution.compare(before, after, images.float(), labels.long())


def _try(notes: list[str], what: str, compute: Any) -> Any:
    """``compute()``, or None with a note saying why (optional evidence never fails the run)."""
    try:
        return compute()
    except Exception as exc:  # NOTE: Captum and tracing raise many types; the run's results stand.
        notes.append(f"{what} not computed: {' '.join(str(exc).split())[:300]}")
        return None


def collect(before: nn.Module, after: nn.Module, *, example_inputs: Any = None, plan: Plan | None = None,
            scores: Mapping[str, torch.Tensor] | None = None, dataset: Any = None,
            num_classes: int | None = None, max_batches: int | None = None,
            ignore: Sequence[str] = (), before_label: str | None = None) -> dict[str, Any]:
    """The evidence record for a run (module docstring). ``dataset`` is a labelled image
    TensorDataset (classification); ``plan`` is against ``before``; neither model is changed.
    ``before_label`` says which model ``before`` is when it is not the run's first profile."""
    notes: list[str] = []
    evidence: dict[str, Any] = {"version": _VERSION, "widths": widths(before, after)}
    if before_label:
        evidence["before_label"] = before_label
    if plan is not None and example_inputs is not None:
        graph = _try(notes, "the dependency graph", lambda: DependencyGraph.trace(before, example_inputs,
                                                                                  ignore=tuple(ignore)))
        if graph is not None:
            if scores:
                evidence["importance"] = importance(graph, scores, plan, before)
            if (gallery := _try(notes, "the filter gallery", lambda: filter_gallery(before, graph, plan))):
                evidence["gallery"] = gallery
            if (heads := _try(notes, "the head map", lambda: head_map(graph, scores, plan))):
                evidence["heads"] = heads
    images = dataset is not None and hasattr(dataset, "tensors") and len(dataset.tensors) == 2
    if images and num_classes:
        if (classes := _try(notes, "per-class accuracy", lambda: _classes(before, after, dataset, num_classes,
                                                                           max_batches))):
            evidence["classes"] = classes
    if images and dataset.tensors[0].dim() == 4:
        if (maps := _try(notes, "attribution", lambda: _attribution(before, after, dataset))):
            evidence["attribution"] = maps
    elif dataset is not None:
        notes.append("attribution not computed: the inputs are not images")
    evidence["notes"] = notes
    return evidence
