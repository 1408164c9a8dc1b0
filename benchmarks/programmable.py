"""Programmable pruning on Fashion-MNIST ResNet-20: gates vs L2 magnitude, with/without distillation.

Run by hand on a quiet machine (the baseline comes from benchmarks/baselines.py, or is trained here):
    .venv/bin/python benchmarks/programmable.py --budget 2      # epochs after the baseline, per method

Every method starts from the same trained baseline and gets the same number of training epochs
(``--budget``) after it, at 2x and at 4x fewer MACs:
- one-shot L2: prune once to the target, fine-tune ``budget`` epochs;
- iterative L2: ``budget`` steps, each pruning further and fine-tuning one epoch;
- gates: Hard Concrete gates trained ``budget - 1`` epochs with the MACs Lagrangian, hardened to
  the target, then one epoch of fine-tuning; "gates, L2 init" starts the gates from the L2 ranking
  (``init_importance="l2"``) instead of all equal;
each once with plain cross-entropy and once with distillation from the baseline (T=4, alpha=0.7).
Other ``--methods`` (not run by default) price the speed-oriented allocations of benchmarks/speed.py
in accuracy: one-shot L2 with round_to auto, with cost="latency" (layers timed at batch 16), in
global scope, and both.
``--baseline resnet20_long`` starts from ResNet-20 trained 10 epochs instead of 3 (train it with
``benchmarks/baselines.py --only resnet20_long``): after 3 epochs the teacher is barely better than
the pruned model's own continued training, so distillation has little to teach.
Writes the section "Programmable pruning: gates, iterative, distillation" of RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit import data, models  # noqa: E402
from prunekit.gates import ChannelGates  # noqa: E402
from prunekit.measure import count_macs, evaluate, measure_latency  # noqa: E402
from prunekit.recover import Distiller, TrainConfig, train  # noqa: E402
from prunekit.structured import StructuredPruner, Target, prune_iteratively  # noqa: E402

BASELINES = Path("runs/baselines")
BASELINE = [BASELINES / "resnet20" / "model.safetensors"]  # --baseline picks another benchmarks/baselines.py run
ROUND_TO = 1  # exact widths for every method: an accuracy comparison at equal MACs, not a latency one
TUNE = dict(batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4, scheduler="cosine", seed=0)


SEED = [0]  # the fine-tune's seed (data order, gate samples); --seeds repeats the chosen rows


def _config(epochs: int, **extra: object) -> TrainConfig:
    return TrainConfig(epochs=epochs, **{**TUNE, "seed": SEED[0], **extra})


def _baseline(splits: data.DataSplits) -> nn.Module:
    if BASELINE[0].is_file():
        return models.create("resnet20", weights=str(BASELINE[0])).eval()
    if BASELINE[0].parent.name != "resnet20":
        raise SystemExit(f"no baseline at {BASELINE[0]}: train it first with "
                         f"`.venv/bin/python benchmarks/baselines.py --only {BASELINE[0].parent.name}`")
    torch.manual_seed(0)
    model = models.create("resnet20")
    train(model, splits, TrainConfig(epochs=3, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4,
                                   nesterov=True, momentum=0.9, scheduler="cosine"), progress=False)
    return model.eval()


def _callbacks(teacher: nn.Module, distill: bool) -> list:
    return [Distiller(teacher, temperature=4.0, alpha=0.7)] if distill else []


def one_shot_with(**pruner: object):  # noqa: ANN201
    """One-shot L2 to the MACs target with these pruner settings, then ``budget`` epochs of fine-tuning."""
    def method(base: nn.Module, splits, keep: float, budget: int, distill: bool) -> nn.Module:
        pruned = StructuredPruner({"macs": keep}, importance="l2", **pruner).fit_transform(base, splits.example_input(1))
        train(pruned, splits, _config(budget), progress=False, callbacks=_callbacks(base, distill))
        return pruned
    return method


one_shot = one_shot_with(round_to=ROUND_TO)


def iterative(base: nn.Module, splits, keep: float, budget: int, distill: bool) -> nn.Module:
    def tune(model: nn.Module, step: int) -> nn.Module:
        train(model, splits, _config(1), progress=False, callbacks=_callbacks(base, distill))
        return model

    pruned, _ = prune_iteratively(base, splits.example_input(1), {"macs": keep}, steps=budget,
                                  importance="l2", round_to=ROUND_TO, finetune=tune)  # tunes between steps: budget - 1 epochs
    return tune(pruned, budget - 1)


def gates(base: nn.Module, splits, keep: float, budget: int, distill: bool,
          init_importance: str | None = None) -> nn.Module:
    model = copy.deepcopy(base)
    x = splits.example_input(1)
    steps = (len(splits.train) // TUNE["batch_size"]) * max(budget - 1, 1)
    gated = ChannelGates(Target(macs=keep), warmup_steps=steps // 2, round_to=ROUND_TO,
                         init_importance=init_importance).fit(model, x)
    train(model, splits, _config(max(budget - 1, 1)), progress=False, callbacks=[gated, *_callbacks(base, distill)])
    pruned = gated.harden().model
    train(pruned, splits, _config(1), progress=False, callbacks=_callbacks(base, distill))
    return pruned


def gates_l2_init(base: nn.Module, splits, keep: float, budget: int, distill: bool) -> nn.Module:
    return gates(base, splits, keep, budget, distill, init_importance="l2")


LATENCY_AWARE = {"cost": "latency", "cost_batch_size": 16}
METHODS = {"one-shot L2": one_shot, "iterative L2": iterative, "gates": gates, "gates, L2 init": gates_l2_init}
DEFAULT_METHODS = list(METHODS)
# NOTE: what the speed-oriented allocations of benchmarks/speed.py cost in accuracy (not run by default)
METHODS |= {"one-shot L2, round_to auto": one_shot_with(),
            "one-shot L2, cost=latency": one_shot_with(options=LATENCY_AWARE),
            "one-shot L2, global": one_shot_with(scope="global"),
            "one-shot L2, cost=latency, global": one_shot_with(options=LATENCY_AWARE, scope="global"),
            "one-shot L2, cost=latency, global, max_ratio 0.8": one_shot_with(
                options={**LATENCY_AWARE, "max_ratio": 0.8}, scope="global")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=2, help="training epochs after the baseline, per method")
    parser.add_argument("--speedups", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS,
                        help=f"default: {', '.join(DEFAULT_METHODS)}; the others are the speed-oriented "
                             "allocations of benchmarks/speed.py (round_to auto, cost=latency, global scope)")
    parser.add_argument("--distill", choices=("both", "no", "yes"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="repeat each chosen row with these fine-tune seeds and report the mean "
                             "(written to its own RESULTS.md section)")
    parser.add_argument("--baseline", default="resnet20", choices=("resnet20", "resnet20_long"),
                        help="the benchmarks/baselines.py run every method starts from (and distils from): "
                             "resnet20 (3 epochs; trained here if missing) or resnet20_long (10 epochs)")
    parser.add_argument("--label", default="",
                        help="with --seeds: appended to the section title, so runs of different rows "
                             "keep their own RESULTS.md sections")
    args = parser.parse_args()
    seeds = args.seeds or [0]
    BASELINE[0] = BASELINES / args.baseline / "model.safetensors"
    torch.set_num_threads(2)
    splits = data.load("fashion_mnist")
    base = _baseline(splits)
    x = splits.example_input(1)
    dense_macs = count_macs(base, x)
    dense_ms = measure_latency(base, x, batch_size=16, threads=2).median_ms
    rows = ["| MACs reduction | method | distillation | MACs kept | accuracy | torch bs16 latency | wall time |"
            + (" per seed |" if args.seeds else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if args.seeds else ""),
            f"| 1x | dense baseline | - | 100 % | {100 * evaluate(base, splits.test).accuracy:.2f} % | "
            f"{dense_ms:.2f} ms | - |"]
    for speedup in args.speedups:
        for name in args.methods:
            method = METHODS[name]
            for distill in {"both": (False, True), "no": (False,), "yes": (True,)}[args.distill]:
                started = time.perf_counter()
                accs = []
                for seed in seeds:
                    SEED[0] = seed
                    torch.manual_seed(seed)
                    pruned = method(base, splits, 1 / speedup, args.budget, distill).eval()
                    accs.append(evaluate(pruned, splits.test).accuracy)
                seconds = (time.perf_counter() - started) / len(seeds)
                acc = sum(accs) / len(accs)
                ms = measure_latency(pruned, x, batch_size=16, threads=2).median_ms
                rows.append(f"| {speedup}x | {name} | {'yes' if distill else 'no'} | "
                            f"{100 * count_macs(pruned, x) / dense_macs:.1f} % | {100 * acc:.2f} % | "
                            f"{ms:.2f} ms | {seconds:.0f} s |"
                            + (f" {', '.join(f'{100 * a:.2f}' for a in accs)} |" if args.seeds else ""))
                print(rows[-1], flush=True)
    rows += ["", f"Budget: {args.budget} training epochs after the baseline for every method (fine-tune: "
             f"{TUNE}); baseline `{BASELINE[0]}` (benchmarks/baselines.py) or 3 SGD epochs trained here. "
             f"1-minute load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores."]
    title = "Programmable pruning: gates, iterative, distillation"
    if args.seeds:
        title += f" (mean of fine-tune seeds {', '.join(map(str, seeds))})"
        if args.label:
            title += f": {args.label}"
        rows[-1] += (f" Rows: {', '.join(args.methods)} at {', '.join(f'{s}x' for s in args.speedups)}, "
                     f"distillation {args.distill}; accuracy is the mean over the seeds, wall time per seed.")
    print(f"wrote {write_section(title, rows, script='benchmarks/programmable.py')}")


if __name__ == "__main__":
    main()
