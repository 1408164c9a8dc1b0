"""Sensitivity analysis: the proxy metric after removing part of one channel group (or one block) alone.

For every prunable group of the :class:`~prunekit.graph.DependencyGraph` and every ratio (the
fraction of the group's channels *removed*, its lowest-importance ones), the group is cut alone and
the model scored by the :class:`~prunekit.search.proxy.Proxy` (task metric on a fixed validation
subset after BatchNorm re-estimation). With ``depth=True`` every residual block
(:func:`prunekit.structured.residual_blocks`) is also removed alone, and with ``ranks`` every
``nn.Linear``/``nn.Conv2d`` layer is factorised alone at each ratio of its full rank removed (the
decomposition method by :func:`prunekit.search.ranks.rank_methods`' rule: svd for Linear and 1x1
convs, Tucker-2 for k x k convs, or the methods named). It tells which layers can give up channels
or rank (NNI's sensitivity analysis; the first step of AMC and NetAdapt).

It is fast because nothing is sliced or copied: a cut is simulated by zeroing every consumer
weight that reads a removed channel (DESIGN.md's equivalence: the masked model computes what the
pruned one does), one group at a time, and those weights are copied back exactly afterwards; a
factorised layer is swapped in for the one layer and the original put back.

The result is plain JSON, written as ``sensitivity.json`` (:data:`SENSITIVITY_FILE`) in a run
folder, of this shape::

    {"metric_name": "accuracy", "baseline": 0.91,
     "groups": [{"name": "layer1.0.conv1.weight:0", "size": 16, "modules": [...],
                 "ratios": [0.1, ..., 0.9], "metric": [0.90, ..., 0.31]}, ...],
     "blocks": [{"name": "layer1.0", "metric": 0.88}, ...],
     "ranks": [{"name": "layer1.0.conv1", "method": "tucker", "ratios": [0.1, ..., 0.9],
                "ranks": [[15, 15], ...], "metric": [0.91, ..., 0.52]}, ...],
     "settings": {...}, "key": "<cache key>"}

``name`` is the group id; ``metric[i]`` is the proxy with ``ratios[i]`` of the group removed;
``baseline`` is the proxy of the unchanged model; ``ranks`` (only with ``ranks``) holds each layer's
ranks at each ratio (``ratios[i]`` of its full rank removed) and the proxy then. Results are cached
on disk (``cache_dir``) under a hash of the model's weights, what it computes (:func:`fingerprint`: its
module tree and its outputs on the first validation batch, so a model with other forward code but the
same weights is scored anew), the data, the settings and the task (its class, direction, settings and
the code of its functions, so an edited ``metric_fn`` is scored anew).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import math
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError
from prunekit.graph import DependencyGraph
from prunekit.graph.groups import ChannelGroup
from prunekit.importance import score
from prunekit.io import save_json
from prunekit.search.proxy import Proxy, reestimated_bn
from prunekit.structured.verify import zeroed

__all__ = ["sensitivity", "masked", "bypassed", "state_hash", "fingerprint", "SENSITIVITY_FILE", "DEFAULT_RATIOS"]

SENSITIVITY_FILE = "sensitivity.json"
DEFAULT_RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
Progress = Callable[[str, int, int], None]


def state_hash(*items: Any) -> str:
    """A sha256 over tensors (their bytes, dtype and shape), mappings, sequences and plain values."""
    digest = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{t.dtype}{tuple(item.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(item, nn.Module):
            feed(item.state_dict())
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                digest.update(str(key).encode())
                feed(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(b"[")
            for x in item:
                feed(x)
            digest.update(b"]")
        else:
            digest.update(repr(item).encode())

    for item in items:
        feed(item)
    return digest.hexdigest()


def fingerprint(model: nn.Module, proxy: Proxy) -> list[Any]:
    """What ``model`` computes, as data for the cache key: its module tree (each module's name and
    qualified class, and the model's repr) and what its forward returns, and the metrics, as ``proxy``
    scores the first validation batch. The weights alone do not say it: two models built from one file
    with one weights file may differ in code (an activation picked by an attribute). An output that
    differs in the last bit (threads, kernels) only misses the cache; a different model never hits it."""
    tree = [[name, f"{type(m).__module__}.{type(m).__qualname__}"] for name, m in model.named_modules()]
    outputs: list[Any] = []
    metrics: Any = None
    if proxy.validation:
        handle = model.register_forward_hook(lambda m, args, out: outputs.append(out))
        try:
            with reestimated_bn(model, list(proxy.calibration[:proxy.bn_batches]), proxy.task) as ready:
                outputs.clear()  # NOTE: only the scored forward passes, not the BatchNorm re-estimation's
                metrics = dict(proxy.task.evaluate(ready, list(proxy.validation[:1])))
        except DataError:  # NOTE: a first batch with nothing to score (all padding): its outputs still tell
            metrics = None
        finally:
            handle.remove()
    return [tree, repr(model), outputs, metrics]


def masked(model: nn.Module, group: ChannelGroup, channels: Sequence[int]) -> AbstractContextManager[nn.Module]:
    """``model`` computing as if ``channels`` of ``group`` were removed: every consumer weight
    reading them is zero inside the block, and exactly restored on exit."""
    return zeroed(model, [(group, channels)])


@contextmanager
def bypassed(model: nn.Module, names: Sequence[str]) -> Iterator[nn.Module]:
    """``model`` computing as if each named residual block were ``nn.Identity`` (forward hooks)."""
    handles = [model.get_submodule(n).register_forward_hook(lambda m, args, out: args[0]) for n in names]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _task_key(task: Any) -> dict[str, Any]:
    """What ``task``'s scores depend on, as plain data for the cache key: its class, direction and
    attributes, with functions by their code (:func:`_plain`). Without it an edited Custom metric_fn
    would get the curves cached for the old one, since the settings hold only the metric's name."""
    kind = type(task)
    return {"class": f"{kind.__module__}.{kind.__qualname__}",
            "higher_is_better": bool(getattr(task, "higher_is_better", True)),
            "attributes": _plain(dict(vars(task)) if hasattr(task, "__dict__") else {}, 0)}


def _plain(value: Any, depth: int) -> Any:
    """``value`` as data :func:`state_hash` digests the same way in every process: numbers and
    strings as they are, tensors and modules by their values, functions by module, name, bytecode,
    constants, global names, defaults and closure; anything else by its type (a repr may hold an
    address). ``depth`` stops a function that refers to itself."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, nn.Module)):
        return value
    if depth > 4:
        return type(value).__qualname__
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, functools.partial):
        return {"partial": _plain(value.func, depth + 1), "args": _plain(value.args, depth + 1),
                "keywords": _plain(value.keywords, depth + 1)}
    if isinstance(value, types.MethodType):
        return {"method": _plain(value.__func__, depth + 1), "of": type(value.__self__).__qualname__}
    if isinstance(value, types.FunctionType):
        cells = [_cell(c) for c in value.__closure__ or ()]
        return {"function": f"{value.__module__}.{value.__qualname__}", "code": _code(value.__code__),
                "defaults": _plain(value.__defaults__, depth + 1), "closure": _plain(cells, depth + 1)}
    if callable(value) and isinstance(type(value).__call__, types.FunctionType):
        return {"callable": _plain(type(value).__call__, depth + 1),
                "attributes": _plain(dict(getattr(value, "__dict__", {})), depth + 1)}
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # NOTE: a closure variable not yet assigned
        return None


def _code(code: types.CodeType) -> list[Any]:
    """Bytecode, global names and constants of ``code`` (nested code objects alike; a frozenset's
    members sorted, since their order changes with the string hash seed)."""
    def constant(c: Any) -> Any:
        if isinstance(c, types.CodeType):
            return _code(c)
        if isinstance(c, (tuple, frozenset)):
            items = [constant(x) for x in c]
            return sorted(items, key=repr) if isinstance(c, frozenset) else items
        return repr(c)
    return [code.co_code.hex(), list(code.co_names), [constant(c) for c in code.co_consts]]


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    bad = [r for r in ratios if not 0.0 < float(r) < 1.0]
    if not ratios or bad:
        raise ConfigError(f"sensitivity: ratios must be fractions removed in (0, 1); got {list(ratios)}. "
                          f"Pass e.g. 0.1,0.2,...,0.9.")
    return tuple(float(r) for r in ratios)


def _cached(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None or not (cache_dir / f"sensitivity-{key}.json").is_file():
        return None
    return dict(json.loads((cache_dir / f"sensitivity-{key}.json").read_text()))


def sensitivity(model: nn.Module, example_inputs: Any, proxy: Proxy, *,
                ratios: Sequence[float] = DEFAULT_RATIOS, importance: str = "l2", depth: bool = True,
                ignore: Sequence[str] = (), cache_dir: str | os.PathLike[str] | None = None,
                progress: Progress | None = None, ranks: bool | str | Sequence[str] = False) -> dict[str, Any]:
    """The proxy metric after removing each ratio of each prunable group alone (and each residual
    block alone with ``depth``); the JSON-able result the module docstring describes.

    Args:
        model: any traceable model; left exactly as it was.
        example_inputs: what tracing runs the model on.
        proxy: how a candidate is scored (:class:`~prunekit.search.proxy.Proxy`).
        ratios: fractions of each group's channels removed, lowest ``importance`` first.
        importance: a data-free importance name (``l2``, ``l1``, ``fpgm``, ``bn_scale``).
        depth: also remove each residual block alone.
        ignore: module names whose groups are left out.
        cache_dir: where results are cached by a hash of the weights, the model's module tree and outputs
            (:func:`fingerprint`), data, settings and task (None: no cache).
        progress: called as ``progress(what, done, total)`` after each evaluation.
        ranks: also factorise each layer alone: True (the auto rule) or method names (``"svd,cp"``).
    """
    from prunekit.search.ranks import rank_methods

    ratios = _check_ratios(ratios)
    methods = rank_methods(ranks, "sensitivity: ranks")
    settings = {"ratios": list(ratios), "importance": importance, "depth": depth, "ignore": list(ignore),
                **({"ranks": list(methods)} if methods else {}),
                "bn_batches": proxy.bn_batches, "finetune_steps": proxy.finetune_steps, "lr": proxy.lr,
                "metric": proxy.metric_name}  # NOTE: the task's class and direction are in the key (_task_key)
    key = state_hash(model, fingerprint(model, proxy), list(proxy.calibration[:proxy.bn_batches]),
                     list(proxy.validation), settings, _task_key(proxy.task))
    cache = Path(cache_dir) if cache_dir is not None else None
    if (hit := _cached(cache, key)) is not None:
        return hit
    graph = DependencyGraph.trace(model, example_inputs, ignore=tuple(ignore))
    scores = score(graph, model, importance)
    blocks = _blocks(model, example_inputs) if depth else []
    layers = _factorisable(model, example_inputs, methods, ignore) if methods else []
    total = (len(graph.prunable) + len(layers)) * len(ratios) + len(blocks) + 1
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(what, done, total)

    baseline = proxy(model)
    tick("baseline")
    groups = []
    for group in graph.prunable:
        order = torch.sort(scores[group.id].float(), stable=True).indices.tolist()  # NOTE: least important first
        metric = []
        for ratio in ratios:
            n = min(max(math.floor(group.size * ratio), 1), group.size - 1)
            with masked(model, group, order[:n]):
                metric.append(proxy(model))
            tick(group.id)
        groups.append({"name": group.id, "size": group.size, "modules": list(group.modules),
                       "ratios": list(ratios), "metric": metric})
    removed = []
    for name in blocks:
        with bypassed(model, [name]):
            removed.append({"name": name, "metric": proxy(model)})
        tick(name)
    factorised = []
    for name, method_name, method in layers:
        curve: dict[str, Any] = {"name": name, "method": method_name, "ratios": list(ratios), "ranks": [],
                                 "metric": []}
        for ratio in ratios:
            with _factorised(model, name, method, 1.0 - ratio) as layer_ranks:
                curve["ranks"].append(list(layer_ranks))
                curve["metric"].append(proxy(model))
            tick(name)
        factorised.append(curve)
    result = {"metric_name": proxy.metric_name, "higher_is_better": proxy.higher_is_better,
              "baseline": baseline, "groups": groups, "blocks": removed, "settings": settings, "key": key}
    if methods:
        result["ranks"] = factorised
    if cache is not None:
        save_json(result, cache / f"sensitivity-{key}.json")
    return result


def _factorisable(model: nn.Module, example_inputs: Any, methods: Sequence[str],
                  ignore: Sequence[str]) -> list[tuple[str, str, Any]]:
    """(module name, method name, method) for every Linear/Conv2d the example input runs, not under ``ignore``, that
    one of ``methods`` factorises (the first that takes it)."""
    from prunekit.decompose import METHODS
    from prunekit.search.ranks import _method_name, run_layers

    found = []
    for name, module, _ in run_layers(model, example_inputs, ignore):
        for wanted in methods:
            method_name = _method_name(wanted, module)
            method = METHODS.create(method_name)
            if method.supports(module) is None:
                found.append((name, method_name, method))
                break
    return found


@contextmanager
def _factorised(model: nn.Module, name: str, method: Any, fraction: float) -> Iterator[tuple[int, ...]]:
    """``model`` with layer ``name`` factorised by ``method`` at ``fraction`` of its full rank (yields
    the ranks); the original layer object is put back on exit."""
    from prunekit.search.ranks import _fraction_ranks

    original = model.get_submodule(name)
    layer_ranks = _fraction_ranks(method, original, fraction)
    new, _ = method.factorize(original, layer_ranks, None)
    new.train(original.training)
    model.set_submodule(name, new)
    try:
        yield layer_ranks
    finally:
        model.set_submodule(name, original)


def _blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    from prunekit.structured import residual_blocks

    return residual_blocks(model, example_inputs)
