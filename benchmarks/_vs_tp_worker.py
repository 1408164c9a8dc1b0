"""One measurement in a fresh process: graph building + pruning time and peak memory of one tool.

Called by benchmarks/vs_torch_pruning.py as
    python benchmarks/_vs_tp_worker.py TOOL MODEL RATIO
and prints one JSON line. A fresh process per run keeps peak RSS and caches honest.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch
from torch import nn


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    from prunekit import models

    torch.manual_seed(0)
    model = models.create(name, num_classes=1000).eval()
    return model, models.example_input(name, batch_size=1)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_prunekit(model: nn.Module, x: torch.Tensor, ratio: float, verify: bool = False) -> tuple[nn.Module, dict]:
    from prunekit.graph import DependencyGraph
    from prunekit.importance import score
    from prunekit.structured import allocate, apply

    t0 = time.perf_counter()
    graph = DependencyGraph.trace(model, x)
    t1 = time.perf_counter()
    plan = allocate(graph, score(graph, model, "l2"), ratio)
    pruned = apply(model, graph, plan, example_inputs=x, verify_result=verify)
    t2 = time.perf_counter()
    return pruned, {"graph_s": t1 - t0, "prune_s": t2 - t1}


def run_prunekit_default(model: nn.Module, x: torch.Tensor, ratio: float) -> tuple[nn.Module, dict]:
    """The default user path: ``StructuredPruner(...).fit_transform`` (trace, score, allocate,
    slice, verify), with the classifier's outputs kept as Torch-Pruning's ``ignored_layers``."""
    from prunekit.structured import StructuredPruner

    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    t0 = time.perf_counter()
    pruned = StructuredPruner({"ratio": ratio}, ignore=[last]).fit_transform(model, x)
    return pruned, {"graph_s": 0.0, "prune_s": time.perf_counter() - t0}


def run_torch_pruning(model: nn.Module, x: torch.Tensor, ratio: float) -> tuple[nn.Module, dict]:
    import torch_pruning as tp

    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # the classifier
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[last], num_heads=heads)
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    return model, {"graph_s": t1 - t0, "prune_s": t2 - t1}


def main() -> None:
    tool, name, ratio = sys.argv[1], sys.argv[2], float(sys.argv[3])
    torch.set_num_threads(2)
    model, x = _model(name)
    params = sum(p.numel() for p in model.parameters())
    base_rss = _rss_mb()
    runners = {"prunekit": run_prunekit, "torch_pruning": run_torch_pruning,
               "prunekit+verify": lambda m, x, r: run_prunekit(m, x, r, verify=True),
               "prunekit-default": run_prunekit_default}
    runner = runners[tool]
    record: dict = {"tool": tool, "model": name, "ratio": ratio, "params_before": params}
    try:
        pruned, times = runner(model, x, ratio)
        with torch.no_grad():
            out = pruned(x)
        record.update(times, ok=True, out_shape=list(out.shape),
                      params_after=sum(p.numel() for p in pruned.parameters()))
    except Exception as exc:  # noqa: BLE001  (a benchmark records failures instead of stopping)
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    record.update(peak_rss_mb=_rss_mb(), model_rss_mb=base_rss)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
