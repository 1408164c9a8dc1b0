"""Time of the default user path, ``StructuredPruner({"ratio": 0.5}, ignore=[classifier]).fit_transform``
(verification on), per model, for this checkout and optionally a baseline checkout side by side.

Each (checkout, model) runs in a fresh process that first prunes once (so the layer-timing cache
of ``round_to="auto"`` is warm, as in vs_torch_pruning.py's "default path"), then ``--repeats``
more times; checkouts alternate, so drifting load on a shared machine hits both alike. The table
gives the median wall and CPU (process) time, and whether both checkouts produced the same plan
(kept indices), the same ``achieved_`` and the same pruned outputs. Prints Markdown; writes nothing.
    .venv/bin/python benchmarks/default_path_time.py --baseline /path/to/old/checkout [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

MODELS = ["resnet50", "vit_b_16", "densenet121", "convnext_tiny", "mobilenet_v3_large"]

_WORKER = r"""
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from torch import nn
from prunekit import models
from prunekit.structured import StructuredPruner
name, repeats = sys.argv[2], int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
torch.manual_seed(0)
model = models.create(name, num_classes=1000).eval()
x = models.example_input(name, batch_size=1)
last = [k for k, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
StructuredPruner({"ratio": 0.5}, ignore=[last]).fit_transform(model, x)
wall, cpu = [], []
for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    pruner = StructuredPruner({"ratio": 0.5}, ignore=[last])
    pruned = pruner.fit_transform(model, x)
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
with torch.no_grad():
    out = pruned(x)
digest = hashlib.sha1(json.dumps([pruner.plan_.keep, pruner.achieved_, out.flatten()[:64].tolist()],
                                 sort_keys=True, default=str).encode()).hexdigest()[:12]
print(json.dumps({"wall": wall, "cpu": cpu, "digest": digest}))
"""


def _run(root: str, model: str, repeats: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _WORKER, root, model, str(repeats), str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="root of another checkout (holding prunekit/) to compare with")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per checkout and model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    roots = {"this": "."} | ({"baseline": args.baseline} if args.baseline else {})
    print(f"| model | {' | '.join(f'{k} wall / CPU' for k in roots)} | same plan, achieved, outputs |")
    print(f"|---|{'---|' * len(roots)}---|")
    for model in args.models:
        runs: dict[str, list[dict]] = {k: [] for k in roots}
        for _ in range(args.rounds):
            for key, root in reversed(roots.items()):
                runs[key].append(_run(root, model, args.repeats, args.threads))
        cells = []
        for key in roots:
            wall = statistics.median(t for r in runs[key] for t in r["wall"])
            cpu = statistics.median(t for r in runs[key] for t in r["cpu"])
            cells.append(f"{wall:.3f} s / {cpu:.3f} s")
        same = len({r["digest"] for rs in runs.values() for r in rs}) == 1
        print(f"| {model} | {' | '.join(cells)} | {'yes' if same or len(roots) == 1 else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
