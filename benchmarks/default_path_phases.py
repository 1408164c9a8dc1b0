"""Where the default user path spends its time: ``StructuredPruner({"ratio": 0.5}, ignore=[classifier])
.fit_transform`` split into trace, score, dense count, rounding table, search, slicing and
verification, per model, each run in a fresh process (as benchmarks/_vs_tp_worker.py runs it).

Phases are timed by wrapping the functions the pruner calls (wall and CPU seconds; a phase called
inside another, like the dense count inside the search, is counted in both). A full collection is
run before the timed call, so a one-off garbage collection of the interpreter's import-time objects
does not land in one phase. On a loaded machine compare proportions, not seconds, and prefer
``--threads 1`` (two threads on a busy machine mostly measure waiting).
    .venv/bin/python benchmarks/default_path_phases.py [--root OTHER_CHECKOUT] [--threads 1] [--repeats 3]
Prints one Markdown row per model: median seconds per phase and its share of the total.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

MODELS = ["resnet50", "vit_b_16", "densenet121", "convnext_tiny", "mobilenet_v3_large"]
PHASES = ["trace", "score", "dense count", "rounding table", "search", "slice", "verify"]

_WORKER = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from torch import nn
import prunekit.structured  # noqa: F401
from prunekit import models
from prunekit.graph.dependency import DependencyGraph
pruner, target, apply = (sys.modules[f"prunekit.structured.{m}"] for m in ("pruner", "target", "apply"))
name = sys.argv[2]
torch.set_num_threads(int(sys.argv[3]))
times = {}

def wrap(owner, attr, phase):
    if not hasattr(owner, attr):
        return  # NOTE: an older checkout without this step
    real = getattr(owner, attr)
    def timed(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            t = times.setdefault(phase, [0.0, 0.0])
            t[0] += time.perf_counter() - w
            t[1] += time.process_time() - c
    setattr(owner, attr, timed)

wrap(pruner, "score", "score")
wrap(pruner, "_dense_terms", "dense count")  # NOTE: before the count was deferred
wrap(getattr(target, "DenseCount", None), "__call__", "dense count")
wrap(pruner, "_rounding_table", "rounding table")
wrap(pruner, "search", "search")
wrap(apply, "verify", "verify")
wrap(pruner, "apply", "apply")
wrap(DependencyGraph, "trace", "trace")  # NOTE: the bound classmethod, called through the class
torch.manual_seed(0)
model = models.create(name, num_classes=1000).eval()
x = models.example_input(name, batch_size=1)
last = [k for k, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
gc.collect()
w, c = time.perf_counter(), time.process_time()
pruner.StructuredPruner({"ratio": 0.5}, ignore=[last]).fit_transform(model, x)
times["total"] = [time.perf_counter() - w, time.process_time() - c]
a, v = times.pop("apply", [0.0, 0.0]), times.get("verify", [0.0, 0.0])
times["slice"] = [a[0] - v[0], a[1] - v[1]]
print(json.dumps(times))
"""


def _run(root: str, model: str, threads: int) -> dict[str, list[float]]:
    done = subprocess.run([sys.executable, "-c", _WORKER, root, model, str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="checkout (holding prunekit/) to measure")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wall", action="store_true", help="wall seconds instead of CPU seconds")
    args = parser.parse_args()
    which = 0 if args.wall else 1
    print(f"| model | total {'wall' if args.wall else 'CPU'} s | {' | '.join(PHASES)} |")
    print(f"|---|---|{'---|' * len(PHASES)}")
    for model in args.models:
        runs = [_run(args.root, model, args.threads) for _ in range(args.repeats)]
        total = statistics.median(r["total"][which] for r in runs)
        cells = []
        for phase in PHASES:
            s = statistics.median(r.get(phase, [0.0, 0.0])[which] for r in runs)
            cells.append(f"{s:.3f} ({100 * s / total:.0f} %)")
        print(f"| {model} | {total:.3f} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
