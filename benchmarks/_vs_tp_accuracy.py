"""Accuracy part of vs_torch_pruning.py: Fashion-MNIST ResNet-20 at 2x and 4x fewer MACs.

Both tools start from the same trained baseline (benchmarks/baselines.py writes it), use the same
criterion (L2 magnitude over the coupled group), reach the same MACs budget (MACs counted by the same
counter) and get the same 1-epoch fine-tune, repeated with ``SEEDS`` (the fine-tune's data order and
augmentation), mean reported. Torch-Pruning's ratio is bisected to the budget (it has no MACs target);
prunekit uses its own ``Target(macs=...)`` search, which bisects and then fills the budget back.

Torch-Pruning goes first; prunekit's budget is then the MACs Torch-Pruning reached, so prunekit never
keeps more. prunekit runs twice: ``local`` (every group loses the same fraction, as Torch-Pruning
does here) and ``global`` (one ranking of the same L2 scores over all groups). Both use exact widths
(``round_to=1``): Torch-Pruning does not round, and rounding 16/32/64-channel layers to multiples of
8 would leave only a few reachable MACs values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prunekit import data, models
from prunekit.measure import count_macs, evaluate
from prunekit.recover import TrainConfig, train

BASELINE = Path("runs/baselines/resnet20/model.safetensors")
SEEDS = (0, 1)
FINETUNE = TrainConfig(epochs=1, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9,
                       weight_decay=5e-4, scheduler="cosine", seed=0)


def _bisect(prune: Callable[[float], nn.Module], x: torch.Tensor, dense_macs: int, keep: float) -> nn.Module:
    """The pruned model with the largest MACs not above ``keep * dense_macs`` (ratio bisection)."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        candidate = prune(mid)
        if count_macs(candidate, x) <= keep * dense_macs:
            best, hi = candidate, mid
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"could not reach {keep:.2f} of the MACs")
    return best


def _prunekit(scope: str) -> Callable[[nn.Module, torch.Tensor, float], nn.Module]:
    """prunekit's own MACs target: bisection over the ratio, then the budget filled back greedily."""
    def prune(model: nn.Module, x: torch.Tensor, keep: float) -> nn.Module:
        from prunekit.graph import DependencyGraph
        from prunekit.importance import score
        from prunekit.structured import Target, apply, search

        graph = DependencyGraph.trace(model, x)
        scores = score(graph, model, "l2")
        plan, _ = search(model, graph, scores, Target(macs=keep), example_inputs=x,
                         allocate_kwargs={"scope": scope, "round_to": 1})
        return apply(model, graph, plan, example_inputs=x)

    return prune


def _torch_pruning(model: nn.Module, x: torch.Tensor, keep: float) -> nn.Module:
    """Torch-Pruning has no MACs target: its pruning ratio is bisected to the budget."""
    import torch_pruning as tp

    def prune(ratio: float) -> nn.Module:
        m = copy.deepcopy(model)
        tp.pruner.MetaPruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=ratio, ignored_layers=[m.fc]).step()
        return m

    return _bisect(prune, x, count_macs(model, x), keep)


def part_accuracy(seeds: tuple[int, ...] = SEEDS, speedups: tuple[int, ...] = (2, 4),
                  baseline: Path = BASELINE) -> list[str]:
    """Rows of the accuracy table (one per tool and MACs reduction), fine-tunes repeated per seed."""
    torch.set_num_threads(2)
    splits = data.load("fashion_mnist")
    if not baseline.is_file():
        raise SystemExit(f"no baseline at {baseline}: train it first with "
                         f"`.venv/bin/python benchmarks/baselines.py --only {baseline.parent.name}`")
    base = models.create("resnet20", weights=str(baseline)).eval()
    x = splits.example_input(1)
    dense_macs = count_macs(base, x)
    dense_acc = evaluate(base, splits.test).accuracy
    rows = ["| tool | MACs reduction | MACs kept | params | accuracy after pruning | after 1-epoch fine-tune "
            f"(mean of seeds {', '.join(map(str, seeds))}) | per seed |",
            "|---|---|---|---|---|---|---|",
            f"| dense baseline | 1x | 100 % | {sum(p.numel() for p in base.parameters()):,} | {100 * dense_acc:.2f} % | - | - |"]
    tools = (("Torch-Pruning", _torch_pruning), ("prunekit local", _prunekit("local")),
             ("prunekit global", _prunekit("global")))
    for speedup in speedups:
        budget = 1 / speedup
        for name, make in tools:
            pruned = make(base, x, budget)
            if name == "Torch-Pruning":
                budget = min(budget, count_macs(pruned, x) / dense_macs)
            before = evaluate(pruned, splits.test).accuracy
            after = []
            for seed in seeds:
                tuned = copy.deepcopy(pruned)
                train(tuned, splits, FINETUNE.model_copy(update={"seed": seed}), progress=False)
                after.append(evaluate(tuned, splits.test).accuracy)
            macs = count_macs(pruned, x)
            row = (f"| {name} | {speedup}x | {100 * macs / dense_macs:.1f} % | "
                   f"{sum(p.numel() for p in pruned.parameters()):,} | {100 * before:.2f} % | "
                   f"{100 * sum(after) / len(after):.2f} % | {', '.join(f'{100 * a:.2f}' for a in after)} |")
            print(row, flush=True)
            rows.append(row)
    epochs = "10 epochs" if baseline.parent.name == "resnet20_long" else "3 epochs"
    rows += ["", f"Baseline: `{baseline}` from benchmarks/baselines.py (ResNet-20, {epochs}). Fine-tune: "
             f"{FINETUNE.model_dump(exclude_defaults=True)}, seeds {seeds}. Criterion: L2 norm over the coupled "
             "group (prunekit `l2`, Torch-Pruning `GroupMagnitudeImportance(p=2)`); Torch-Pruning's ratio "
             "found by bisection so the MACs stay within the budget, prunekit's by its own "
             "`Target(macs=...)` search (bisection, then the best removed channels added back while the "
             "budget holds); prunekit's budget is the MACs Torch-Pruning reached, so it never keeps more; prunekit `local` cuts every group alike as "
             "Torch-Pruning does, `global` ranks the same scores over all groups; exact widths "
             "(round_to=1) for both. MACs counted by prunekit.measure.count_macs for both."]
    return rows
