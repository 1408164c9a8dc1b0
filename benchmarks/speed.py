"""Real speed of structurally pruned models on this CPU; writes sections of benchmarks/RESULTS.md.

Run by hand on a quiet machine (needs `make bench-deps` for the Torch-Pruning comparison):
    .venv/bin/python benchmarks/speed.py                 # all parts (~15 min on 2 cores)
    .venv/bin/python benchmarks/speed.py --part resnet50 # or: mobilenet, sweep

Parts (PyTorch eager at batch 16, unfolded and with BatchNorm folded into the convolutions, and
ONNX Runtime at batch 1; 2 intra-op threads, random init):
- resnet50: prunekit at 1/2 and 1/4 of the MACs (L2, local; ``VARIANTS``: round_to auto = the
  default, which is 16 on every ResNet-50 group, exact widths with round_to 1, round_to 8 (auto's
  rule before 2026-12-03), and latency-aware allocation with the layers timed in PyTorch at batch 16,
  ``cost="latency"``, in local and in global scope, and global with ``max_ratio=0.8``) against
  Torch-Pruning at the same MACs (its ratio bisected to match), speed-up against the MACs reduction.
- mobilenet: MobileNetV2 with a latency target of 0.5 (2x faster), re-measured afterwards.
- sweep: resnet50 and mobilenet_v2 at channel ratios 0.1 ... 0.7: never slower than dense.
Every latency in one table is measured in the same process, in ``--rounds`` interleaved rounds per
metric (dense, pruned, Torch-Pruning, dense, ...); a model's latency is the dense median times the
median of its per-round ratio to dense (``prunekit.measure.latency.interleaved``), which cancels the
machine's drift.

The script re-runs itself with glibc's mmap allocation off (``STEADY_MALLOC``) unless
``--glibc-default``: with the default, every tensor above 32 MB (dense ResNet-50 at batch 16 has
several 51 MB activations) can be mmapped and page-faulted in again on every call. Dense ResNet-50
read 700-900 ms in small probe processes and 540-590 ms in this script's earlier runs and under
``STEADY_MALLOC``: the "slow and fast states" of earlier notes were allocator states, not the machine. jemalloc and tcmalloc, which
PyTorch's CPU tuning guide recommends, also keep freed memory mapped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit import models  # noqa: E402
from prunekit.measure import count_macs, count_params, measure_latency  # noqa: E402
from prunekit.measure.latency import interleaved  # noqa: E402
from prunekit.structured import StructuredPruner  # noqa: E402

THREADS = 2
SCRIPT = "benchmarks/speed.py"
STEADY_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"


def _steady_allocator(glibc_default: bool) -> str:
    """Re-exec under ``STEADY_MALLOC`` unless asked not to or already there; returns the regime's label."""
    if glibc_default:
        return "glibc malloc defaults (large activations mmapped and page-faulted on every call)"
    if os.environ.get("GLIBC_TUNABLES") != STEADY_MALLOC:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": STEADY_MALLOC})
    return f"GLIBC_TUNABLES={STEADY_MALLOC} (freed memory stays mapped: no page faults per call)"


def _dense(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return models.create(name, num_classes=1000).eval(), models.example_input(name, batch_size=1)


ROUNDS = 3


Metric = Callable[[nn.Module, torch.Tensor, float], float]
METRICS: dict[str, Metric] = {
    "torch16_ms": lambda m, x, t: measure_latency(m, x, backend="torch", batch_size=16, threads=THREADS,
                                                  min_time_s=t).median_ms,
    "fused16_ms": lambda m, x, t: measure_latency(m, x, backend="torch-fused", batch_size=16, threads=THREADS,
                                                  min_time_s=t).median_ms,
    "ort1_ms": lambda m, x, t: measure_latency(m, x, backend="onnxruntime", batch_size=1, threads=THREADS,
                                               min_time_s=t).median_ms,
}


def _latencies(candidates: dict[str, nn.Module], x: torch.Tensor, min_time_s: float,
               metrics: dict[str, Metric] = METRICS) -> dict[str, dict[str, float]]:
    """Every model measured in ``ROUNDS`` interleaved rounds per metric (``candidates`` holds "dense"),
    by :func:`prunekit.measure.latency.interleaved`.

    This machine's speed drifts by up to 2x within minutes (dense ResNet-50 at batch 16 read 580 to
    1230 ms in one afternoon), so each model's latency is reported as the dense median times the
    median over rounds of its ratio to the dense reading of the same round: a slow stretch that hits
    a whole round cancels out, and one disturbed reading does not decide the result.
    """
    result: dict[str, dict[str, float]] = {key: {} for key in candidates}
    for metric, measure in metrics.items():
        pairs = interleaved(candidates, lambda m, measure=measure: measure(m, x, min_time_s),
                            reference="dense", rounds=ROUNDS)
        for key, pair in pairs.items():
            result[key][metric] = pair.median_ms
        print(f"  {metric}: " + ", ".join(f"{k} {[round(v, 2) for v in p.round_ms]}" for k, p in pairs.items()),
              flush=True)
    return result


def _prunekit(model: nn.Module, x: torch.Tensor, target: dict, round_to: int | str = "auto",
              options: dict | None = None, scope: str = "local") -> nn.Module:
    pruner = StructuredPruner(target, importance="l2", scope=scope, round_to=round_to, options=options)
    return pruner.fit_transform(model, x)


LATENCY_AWARE = {"cost": "latency", "cost_batch_size": 16}  # NOTE: layers timed as the torch bs16 column runs


def _torch_pruning_at(model_name: str, macs_kept: float) -> nn.Module:
    """Torch-Pruning (L2 group magnitude, its defaults) with the ratio bisected to keep ``macs_kept``."""
    import torch_pruning as tp

    def pruned_at(ratio: float) -> nn.Module:
        model, x = _dense(model_name)
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[last])
        pruner.step()
        return model

    dense_model, x = _dense(model_name)
    dense = count_macs(dense_model, x)
    lo, hi = 0.0, 0.95
    for _ in range(14):
        mid = (lo + hi) / 2
        if count_macs(pruned_at(mid), x) / dense <= macs_kept:
            hi = mid
        else:
            lo = mid
    return pruned_at(hi)


_COLUMNS = (("torch16_ms", "torch bs16"), ("fused16_ms", "torch bs16, BN folded"), ("ort1_ms", "ORT bs1"))


def _row(label: str, model: nn.Module, x: torch.Tensor, dense: dict[str, float],
         lat: dict[str, float]) -> tuple[str, dict]:
    macs = count_macs(model, x)
    mac_x = dense["macs"] / macs
    speed = {key: dense[key] / lat[key] for key, _ in _COLUMNS}
    record = {"macs": macs, **lat, "mac_x": mac_x, "speed": speed}
    cells = " | ".join(f"{lat[key]:.1f} ms | {speed[key]:.2f}x ({speed[key] / mac_x:.2f})" for key, _ in _COLUMNS)
    line = f"| {label} | {macs / 1e9:.3f} G | {count_params(model) / 1e6:.2f} M | {mac_x:.2f}x | {cells} |"
    print(line, flush=True)
    return line, record


_HEADER = ["| model | MACs | params | MACs reduction | "
           + " | ".join(f"{title} | speed-up (÷ MACs red.)" for _, title in _COLUMNS) + " |",
           "|---|---|---|---|" + "---|---|" * len(_COLUMNS)]


VARIANTS: dict[str | int, dict] = {  # NOTE: how prunekit cuts in the resnet50 part, and the row labels
    "auto": dict(round_to="auto"), 1: dict(round_to=1), 8: dict(round_to=8),
    "latency": dict(options=LATENCY_AWARE), "latency-global": dict(options=LATENCY_AWARE, scope="global"),
    "latency-global-0.8": dict(options={**LATENCY_AWARE, "max_ratio": 0.8}, scope="global")}
_WHAT = {"latency": "cost=latency (layers timed in torch at bs16), round_to=auto",
         "latency-global": "cost=latency, scope=global",
         "latency-global-0.8": "cost=latency, scope=global, max_ratio=0.8 (no group loses more than 80 %)"}


def part_resnet50(min_time_s: float, with_tp: bool) -> list[str]:
    model, x = _dense("resnet50")
    candidates: dict[tuple[float, str | int], nn.Module] = {}
    for kept in (0.5, 0.25):
        for who, kwargs in VARIANTS.items():
            candidates[(kept, who)] = _prunekit(model, x, {"macs": kept}, **kwargs)
        if with_tp:
            candidates[(kept, "tp")] = _torch_pruning_at("resnet50", kept)
    names = {"dense": model, **{f"{k}/{w}": m for (k, w), m in candidates.items()}}
    lat = _latencies(names, x, min_time_s)
    dense = {"macs": count_macs(model, x), **lat["dense"]}
    rows = list(_HEADER)
    rows.append(f"| resnet50 dense | {dense['macs'] / 1e9:.3f} G | {count_params(model) / 1e6:.2f} M | 1.00x | "
                + " | ".join(f"{dense[key]:.1f} ms | 1.00x" for key, _ in _COLUMNS) + " |")
    checks = []
    for (kept, who), pruned in candidates.items():
        label = (f"Torch-Pruning at {kept} of the MACs" if who == "tp" else
                 f"prunekit macs={kept} {_WHAT.get(who, f'round_to={who}')}")
        line, rec = _row(label, pruned, x, dense, lat[f"{kept}/{who}"])
        rows.append(line)
        checks.append((kept, who, rec))
    rows += ["", "Acceptance: speed-up at least 0.9x the MACs reduction (the number in brackets); at equal "
             "MACs not slower than Torch-Pruning.", ""]
    for kept, who, rec in checks:
        if who != "tp":
            gains = {title: rec["speed"][key] / rec["mac_x"] for key, title in _COLUMNS}
            tp = next((r for k, w, r in checks if k == kept and w == "tp"), None)
            vs = "" if tp is None else "; vs Torch-Pruning " + ", ".join(
                f"{title} {tp[key] / rec[key]:.2f}x" for key, title in _COLUMNS) + " (>1: prunekit faster)"
            what = _WHAT.get(who, f"round_to={who}")
            rows.append(f"- macs={kept}, {what}: speed-up/MACs reduction "
                        + ", ".join(f"{title} {g:.2f} ({'meets' if g >= 0.9 else 'MISSES'} 0.9)"
                                    for title, g in gains.items()) + vs)
    rows += ["", "BN folded: both the dense and the pruned model measured after "
             "`prunekit.measure.fold_batchnorm` (every Conv -> BatchNorm pair merged, as ONNX Runtime does at "
             "load; backend `torch-fused`), to separate the BatchNorm passes from the convolutions. Passes "
             "whose time follows the bytes they move (BatchNorm, ReLU, the residual add, 1x1 convolutions "
             "at 56x56) get faster with the width, not with the MACs (which fall with the width squared); "
             "the gap to the MACs reduction at batch 16 comes from them.",
             "", "cost=latency: `options={'cost': 'latency', 'cost_batch_size': 16}` "
             "(`prunekit.structured.cost`): the same MACs budget, allocated by each group's measured "
             "milliseconds per MAC in PyTorch at batch 16 (the max-pool, ReLU and residual-add calls that "
             "read a group's channels included), so the stem and the first stage, whose time does not fall with "
             "their MACs, are cut more and the compute-bound stages less. The weights describe the runtime "
             "they were timed on; the ORT column shows what they do elsewhere. In global scope one ranking of "
             "score / weight over all groups decides (each group's L2 scores normalised by their mean); "
             "on these random-init weights the scores are nearly flat, so the weights alone shape the "
             "cut: the residual streams, whose BatchNorm, ReLU and add passes run at full width in "
             "every block, are cut hardest. On a trained model the scores take part.",
             "", "round_to=auto: kept widths multiples of 16 on groups of 64 channels or more (all of "
             "ResNet-50's), the float32 vector width of this CPU's AVX-512 (the blocked layouts of oneDNN "
             "and ONNX Runtime's NCHWc kernels hold 16 channels); round_to=8 was auto's rule before."]
    return rows


def part_mobilenet(min_time_s: float) -> list[str]:
    model, x = _dense("mobilenet_v2")
    pruner = StructuredPruner({"latency": 0.5, "batch_size": 1}, importance="l2")
    pruned = pruner.fit_transform(model, x)
    rows = ["| model | MACs | params | torch bs1 (2 threads) | speed-up |", "|---|---|---|---|---|"]
    bs1: dict[str, Metric] = {"ms": lambda m, x, t: measure_latency(m, x, batch_size=1, threads=THREADS,
                                                                     min_time_s=t).median_ms}
    lat = _latencies({"dense": model, "pruned": pruned}, x, min_time_s, bs1)
    base, after = lat["dense"]["ms"], lat["pruned"]["ms"]
    rows.append(f"| mobilenet_v2 dense | {count_macs(model, x) / 1e6:.1f} M | {count_params(model) / 1e6:.2f} M | "
                f"{base:.2f} ms | 1.00x |")
    rows.append(f"| prunekit latency=0.5 | {count_macs(pruned, x) / 1e6:.1f} M | {count_params(pruned) / 1e6:.2f} M | "
                f"{after:.2f} ms | {base / after:.2f}x |")
    achieved = pruner.achieved_
    rows += ["", f"The search measured {achieved['latency']:.3f} of the dense latency at ratio "
             f"{achieved['ratio']:.3f}; re-measured afterwards in this run: {after / base:.3f} "
             f"({'meets' if after / base <= 0.5 * 1.05 else 'MISSES'} the 2x target within 5 % noise)."]
    return rows


def part_sweep(min_time_s: float, round_to: int | str = "auto") -> list[str]:
    rows = ["| model | channel ratio removed | MACs kept | "
            + " | ".join(f"{title} vs dense" for _, title in _COLUMNS) + " |", "|---|---|---|" + "---|" * len(_COLUMNS)]
    worst = 0.0
    for name in ("resnet50", "mobilenet_v2"):
        model, x = _dense(name)
        macs = count_macs(model, x)
        ratios = (0.1, 0.2, 0.3, 0.5, 0.7)
        pruned_at = {ratio: _prunekit(model, x, {"ratio": ratio}, round_to) for ratio in ratios}
        measured = _latencies({"dense": model, **{str(r): m for r, m in pruned_at.items()}}, x, min_time_s)
        dense = measured["dense"]
        for ratio, pruned in pruned_at.items():
            lat = measured[str(ratio)]
            ratio_of = [lat[key] / dense[key] for key, _ in _COLUMNS]
            worst = max(worst, *ratio_of)
            rows.append(f"| {name} | {ratio} | {count_macs(pruned, x) / macs:.3f} | "
                        + " | ".join(f"{r:.3f}" for r in ratio_of) + " |")
            print(rows[-1], flush=True)
    rows += ["", f"round_to {round_to}. Largest pruned/dense latency ratio: {worst:.3f} "
             f"({'never slower' if worst < 1.0 else 'SLOWER'} than dense)."]
    return rows


def main() -> None:
    global ROUNDS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "resnet50", "mobilenet", "sweep"), default="all")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per latency")
    parser.add_argument("--dry-run", action="store_true", help="print the tables, leave RESULTS.md alone")
    parser.add_argument("--round-to", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="round_to of the sweep's pruned widths (default: auto, the library default)")
    parser.add_argument("--no-tp", action="store_true", help="skip the Torch-Pruning rows")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved measurement rounds per table")
    parser.add_argument("--glibc-default", action="store_true",
                        help="keep glibc's default malloc (large tensors mmapped per call) instead of re-running "
                             "with STEADY_MALLOC")
    args = parser.parse_args()
    ROUNDS = args.rounds
    allocator = _steady_allocator(args.glibc_default)
    load = os.getloadavg()[0]
    note = [f"2 intra-op threads, random-init weights (latency does not depend on values), 224x224; "
            f"{ROUNDS} interleaved rounds of {args.min_time:g} s per latency, reported as dense median x "
            f"median per-round ratio to dense; "
            f"allocator: {allocator}; "
            f"1-minute load average at start: {load:.2f} on {os.cpu_count()} cores.", ""]
    parts: dict[str, tuple[str, Callable[[], list[str]]]] = {
        "resnet50": ("Real speed: ResNet-50 at 1/2 and 1/4 of the MACs",
                     lambda: part_resnet50(args.min_time, not args.no_tp)),
        "mobilenet": ("Real speed: MobileNetV2 with a 2x latency target", lambda: part_mobilenet(args.min_time)),
        "sweep": (f"Real speed: no ratio slower than dense (round_to {args.round_to})",
                  lambda: part_sweep(args.min_time, args.round_to)),
    }
    for key, (title, run) in parts.items():
        if args.part in ("all", key):
            rows = run()
            print("\n".join(rows), flush=True)
            if not args.dry_run:
                print(f"wrote {write_section(title, note + rows, script=SCRIPT)}")


if __name__ == "__main__":
    main()
