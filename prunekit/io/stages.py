"""A partitioned result loaded back: the stages, as one module that runs them in order.

``prunekit.load`` of a folder saved with a ``partition`` transform rebuilds the whole model, then
retraces it and cuts it at the recorded nodes. It returns :class:`Stages`: ``stages[k]`` is stage
k (a ``torch.fx.GraphModule`` to deploy on its own device or process), ``stages(x)`` runs them
chained and equals the saved model's output, and :meth:`Stages.partition` gives the
:class:`~prunekit.decompose.Partition` that ``run_pipeline`` takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_unflatten

from prunekit.errors import DataError

__all__ = ["Stages", "cut"]


class Stages(nn.Module):
    """K sequential stages; stage k's outputs are stage k+1's positional inputs."""

    def __init__(self, stages: list[nn.Module], record: Mapping[str, Any], output_spec: Any = None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.record = dict(record)  # the partition transform: cuts, node names, per-stage tensors
        self.output_spec = output_spec  # NOTE: a torch.export graph's output structure (its stages return it flat)

    def forward(self, *inputs: Any) -> Any:
        """The stages chained on ``inputs``: the saved model's output, in its structure."""
        values: Any = inputs
        for stage in self.stages:
            values = stage(*(tuple(values) if isinstance(values, (tuple, list)) else (values,)))
        if self.output_spec is None:
            return values
        flat = list(values) if isinstance(values, (tuple, list)) else [values]
        return tree_unflatten(flat, self.output_spec)

    def partition(self) -> Any:
        """The stages as a :class:`~prunekit.decompose.Partition` (for ``run_pipeline``)."""
        from prunekit.decompose.partition import FORMAT, VERSION, Partition

        manifest = {"format": FORMAT, "version": VERSION, **{k: v for k, v in self.record.items() if k != "kind"}}
        return Partition(stages=tuple(self.stages), manifest=manifest, output_spec=self.output_spec)


def cut(model: nn.Module, record: Mapping[str, Any], where: str) -> Stages:
    """Retrace ``model`` with the recorded method, check its nodes, and cut at the recorded cuts."""
    from prunekit.decompose.partition import build_stages
    from prunekit.decompose.partition_graph import measure_nodes, output_spec, trace
    from prunekit.io.transforms import example_inputs

    try:
        inputs = example_inputs(record["inputs"])
        names, cuts = list(record["node_names"]), [int(c) for c in record["cuts"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: the partition transform lacks inputs, node_names or cuts ({exc}). "
                        f"The file is damaged; save the model again with transforms=[partition].") from exc
    module, traced_by = trace(model, inputs, method=record.get("method", "auto"))
    with torch.no_grad():
        costs = measure_nodes(module, inputs, traced_by, latency=False)
    got = [n.name for n in costs.nodes]
    if got != names:
        at = next((i for i, (a, b) in enumerate(zip(got, names)) if a != b), min(len(got), len(names)))
        raise DataError(f"{where}: the rebuilt model's graph does not match the recorded partition (node "
                        f"{at}: {got[at] if at < len(got) else 'end'} here, "
                        f"{names[at] if at < len(names) else 'end'} recorded). Load it into the "
                        f"architecture the stages were cut from.")
    return Stages(list(build_stages(module, costs, cuts)), record, output_spec(module)).eval()
