"""Does round_to="auto" earn its rounding? The default StructuredPruner against exact widths.

Issue 20, item 8: on held-out small networks (ResNet-20 and VGG-small on Fashion-MNIST, 10-epoch
baselines) the default cut at 2x and 4x fewer MACs, against exact widths (``round_to=1``) and the old
rule (every group of 16-63 channels rounded to 8, from 64 to 16; reproduced with a table that says
rounding always pays). Each row: MACs kept against the target, accuracy after the same fine-tune
(mean of 3 seeds), latency at batch 1 in PyTorch (2 threads) and ONNX Runtime, paired with the dense
model in interleaved rounds. Acceptance: the default is not below exact widths in accuracy, within
2 % of the MACs target, and not slower than the old rule.

Run by hand on a quiet machine (trains the baselines into runs/baselines/ when missing):
    .venv/bin/python benchmarks/rounding.py
Smoke run (tiny budgets, no timing, nothing written to RESULTS.md):
    .venv/bin/python benchmarks/rounding.py --quick

``--part ort`` (no training; random weights decide nothing about latency): the default pruner
(layers timed in PyTorch) against ``options={"backend": "onnxruntime"}`` (the whole pruned model
timed under ONNX Runtime, exact widths against rounded, ``prunekit.structured.model_timing``), both
at half the MACs, timed under ONNX Runtime side by side with the dense model and a second copy of it
(the A/A row) in interleaved rounds:
    .venv/bin/python benchmarks/rounding.py --part ort
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit import data, models  # noqa: E402
from prunekit.graph.dependency import DependencyGraph  # noqa: E402
from prunekit.io import load_weights, save_weights  # noqa: E402
from prunekit.measure import count_macs, evaluate  # noqa: E402
from prunekit.measure.latency import paired_latency  # noqa: E402
from prunekit.recover import TrainConfig, train  # noqa: E402
from prunekit.search.sensitivity import state_hash  # noqa: E402
from prunekit.structured.pruner import StructuredPruner  # noqa: E402
from prunekit.structured.model_timing import describe  # noqa: E402
from prunekit.structured.rounding import TimingTable  # noqa: E402

MODELS = ("resnet20", "vgg_small")
SEEDS = (0, 1, 2)
SPEEDUPS = (2, 4)
# NOTE: the same 10-epoch baselines as benchmarks/search.py (runs/baselines), so the tables share them
BASELINE = TrainConfig(epochs=10, batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                       scheduler="cosine")
FINETUNE = TrainConfig(epochs=3, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                       scheduler="cosine")


def _always(model: nn.Module, x: torch.Tensor) -> TimingTable:
    """The old rule as a table: every width on the 8/16 step is faster than any other."""
    graph = DependencyGraph.trace(model, x)
    step = {g.id: 16 if g.size >= 64 else 8 for g in graph.prunable}
    return TimingTable({g.id: {w: 1.0 if w % step[g.id] == 0 else 2.0 for w in range(1, g.size + 1)}
                        for g in graph.prunable})


def _variants(model: nn.Module, x: torch.Tensor, folder: Path, quick: bool) -> dict[str, dict]:
    """Pruner keyword arguments per row label (the timing tables they read are written into ``folder``)."""
    rule, never = folder / "old-rule.json", folder / "no-timing.json"
    rule.write_text(json.dumps(_always(model, x).to_dict()))
    never.write_text(json.dumps(TimingTable({}).to_dict()))
    default: dict = {"options": {"timings": str(never)}} if quick else {}  # NOTE: --quick times nothing
    return {"default (auto)": default, "exact widths (round_to=1)": {"round_to": 1},
            "old rule (8/16 always, within the 2 % band)": {"options": {"timings": str(rule)}}}


def _baseline(name: str, splits, config: TrainConfig, root: Path) -> nn.Module:
    path = root / name / "model.safetensors"
    model = models.create(name)
    if path.is_file():
        return load_weights(model, path).eval()
    train(model, splits, config, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, path)
    return model.eval()


ORT_MODELS = {"resnet20": (1, 28, 28), "vgg_small": (1, 28, 28), "resnet50": (3, 224, 224),
              "mobilenet_v2": (3, 224, 224)}


def part_ort(names: list[str], quick: bool) -> None:
    """ONNX Runtime latency of the default cut and of the cut rounded for ONNX Runtime (module docstring)."""
    batch_sizes = (1,) if quick else (1, 16)
    rows = ["| model | pruner | MACs kept | kept widths (distinct) | rounding chosen (gain vs exact, A/A) | "
            + " | ".join(f"ORT b{b} ms | vs dense" for b in batch_sizes) + " |",
            "|---|---|---|---|---|" + "---|---|" * len(batch_sizes)]
    for name in names:
        shape = ORT_MODELS[name]
        torch.manual_seed(0)
        dense = (models.create(name, num_classes=10, in_channels=1) if shape[0] == 1 else models.create(name)).eval()
        x = torch.randn(1, *shape)
        batches = [torch.randn(8, *shape)]
        pruned: dict[str, nn.Module] = {"dense": dense, "dense again (A/A)": copy.deepcopy(dense)}
        notes: dict[str, tuple[str, str, str]] = {}
        for label, options in (("default (layers timed in torch)", None),
                               ("backend onnxruntime (whole model timed)", {"backend": "onnxruntime"})):
            pruner = StructuredPruner({"macs": 0.5}, importance="l2", options=options).fit(dense, x, batches)
            pruned[label] = pruner.transform(dense)
            widths = sorted({p.shape[0] for p in pruned[label].parameters() if p.dim() == 4})
            rounding = pruner.achieved_.get("rounding")
            chosen = (describe(rounding).split(": ", 1)[1] if rounding
                      else f"{len(pruner.plan_.meta.get('rounded', {}))} groups rounded")
            notes[label] = (f"{100 * pruner.achieved_['macs']:.1f} %", ", ".join(map(str, widths[:12])), chosen)
        cells: dict[str, list[str]] = {k: [] for k in pruned}
        for b in batch_sizes:
            pair = paired_latency(pruned, x, reference="dense", rounds=3 if quick else 5, backend="onnxruntime",
                                  batch_size=b, threads=2, min_time_s=0.1 if quick else 1.0)
            for k in pruned:
                cells[k].append(f"{pair[k].median_ms:.3f} | {1 / pair[k].ratio:.2f}x")
        for k in pruned:
            macs, widths, chosen = notes.get(k, ("100 %", "-", "-"))
            rows.append(f"| {name} | {k} | {macs} | {widths} | {chosen} | {' | '.join(cells[k])} |")
            print(rows[-1], flush=True)
    rows += ["", "`StructuredPruner({'macs': 0.5}, importance='l2')`, random weights (seed 0), with and without "
             "`options={'backend': 'onnxruntime'}`. Latency: ONNX Runtime, CPU, 2 threads, "
             "`paired_latency` (interleaved rounds, median; 'vs dense' is the speed-up, the A/A row "
             "is the dense model timed as a second model: its distance from 1.00x is the noise)."]
    if quick:
        print("quick run: nothing written")
        return
    write_section("Rounding for ONNX Runtime: layers timed alone vs the whole model", rows,
                  script="benchmarks/rounding.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, a few steps, no latency timing, RESULTS.md untouched")
    parser.add_argument("--part", choices=("accuracy", "ort"), default="accuracy",
                        help="accuracy: the default against exact widths with fine-tuning (default); "
                             "ort: ONNX Runtime latency of the default cut and the cut rounded for it")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"accuracy: {', '.join(MODELS)}; ort: {', '.join(ORT_MODELS)} (default: all)")
    parser.add_argument("--root", type=Path, default=Path("runs/baselines"),
                        help="where baselines are kept (shared with benchmarks/search.py)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    unknown = sorted(set(args.models or ()) - set(ORT_MODELS if args.part == "ort" else MODELS))
    if unknown:
        parser.error(f"--models: unknown for --part {args.part}: {', '.join(unknown)}")
    if args.part == "ort":
        part_ort(args.models or (["resnet20"] if args.quick else list(ORT_MODELS)), args.quick)
        return
    args.models = args.models or list(MODELS)
    splits = data.load("fashion_mnist")
    seeds = SEEDS[:1] if args.quick else SEEDS
    base_config = BASELINE.model_copy(update={"epochs": 1, "max_steps_per_epoch": 3}) if args.quick else BASELINE
    tune = FINETUNE.model_copy(update={"epochs": 1, "max_steps_per_epoch": 3}) if args.quick else FINETUNE
    eval_batches = 2 if args.quick else None
    root = Path(tempfile.mkdtemp(prefix="rounding-quick-")) if args.quick else args.root
    x = splits.example_input(1)
    rows = ["| model | MACs target | pruner | MACs kept | groups rounded | accuracy (mean of seeds) | per seed "
            "| torch ms (x dense) | onnxruntime ms (x dense) |", "|---|---|---|---|---|---|---|---|---|"]
    # NOTE: finished rows are kept per commit, so a run stopped part-way resumes where it was
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = Path("runs/rounding") / f"rows-{commit}.json"
    if not args.quick:
        record.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = json.loads(record.read_text()) if record.is_file() and not args.quick else {}
    tuned_accuracy: dict[str, list[float]] = {}
    for name in args.models:
        dense = _baseline(name, splits, base_config, root)
        dense_macs = count_macs(dense, x)
        accuracy = evaluate(dense, splits.test, max_batches=eval_batches).accuracy
        rows.append(f"| {name} | dense | - | 100 % | - | {100 * accuracy:.2f} % | - | - | - |")
        for speedup in SPEEDUPS:
            for label, kwargs in _variants(dense, x, root if args.quick else record.parent, args.quick).items():
                key = f"{name}|{speedup}|{label}"
                if key in done:  # NOTE: a row an interrupted run of this commit finished
                    print(done[key], flush=True)
                    rows.append(done[key])
                    continue
                pruner = StructuredPruner({"macs": 1 / speedup}, **kwargs).fit(dense, x)
                pruned = pruner.transform(dense)
                same = state_hash(pruned)  # NOTE: two pruners that cut the same channels give one model
                if same not in tuned_accuracy:
                    tuned_accuracy[same] = []
                    for seed in seeds:
                        tuned = copy.deepcopy(pruned)
                        train(tuned, splits, tune.model_copy(update={"seed": seed}), progress=False)
                        tuned_accuracy[same].append(evaluate(tuned, splits.test, max_batches=eval_batches).accuracy)
                after = tuned_accuracy[same]
                times = ["-", "-"]
                if not args.quick:
                    for i, backend in enumerate(("torch", "onnxruntime")):
                        pair = paired_latency({"dense": dense, "pruned": pruned}, x, reference="dense", rounds=5,
                                              backend=backend, threads=2)
                        times[i] = f"{pair['pruned'].median_ms:.3f} ({pair['pruned'].ratio:.2f})"
                rounded = len(pruner.plan_.meta.get("rounded", {}))
                row = (f"| {name} | {speedup}x | {label} | {100 * count_macs(pruned, x) / dense_macs:.1f} % | "
                       f"{rounded} | {100 * statistics.mean(after):.2f} % | "
                       f"{', '.join(f'{100 * a:.2f}' for a in after)} | {times[0]} | {times[1]} |")
                print(row, flush=True)
                rows.append(row)
                if not args.quick:
                    done[key] = row
                    record.write_text(json.dumps(done, indent=1))
    rows += ["", f"Baselines: {BASELINE.model_dump(exclude_defaults=True)}; fine-tune: "
             f"{FINETUNE.model_dump(exclude_defaults=True)}, seeds {seeds}; importance l2, local scope. "
             "Latency: batch 1, 2 threads, 5 interleaved rounds with the dense model (ratio in brackets). "
             "Two pruners that cut the same channels give the same model (compared tensor by tensor): it is "
             "fine-tuned once and both rows show that result."]
    if args.quick:
        shutil.rmtree(root, ignore_errors=True)
        print("quick run: nothing written")
        return
    write_section("Rounding that earns its place (round_to='auto')", rows, script="benchmarks/rounding.py")


if __name__ == "__main__":
    main()
