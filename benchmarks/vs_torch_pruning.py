"""prunekit vs Torch-Pruning, side by side in one run; writes a section of benchmarks/RESULTS.md.

Run by hand on a quiet machine (needs `make bench-deps` for torch-pruning):
    .venv/bin/python benchmarks/vs_torch_pruning.py --part time      # graph + prune time, memory;
        # "default path" is StructuredPruner({"ratio": r}, ignore=[classifier]).fit_transform, verified
    .venv/bin/python benchmarks/vs_torch_pruning.py --part accuracy  # Fashion-MNIST ResNet-20, 2x/4x MACs
Each (tool, model) timing runs in a fresh process (benchmarks/_vs_tp_worker.py), alternating the
tools, and the median of --repeats runs is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section as _write_section  # noqa: E402
MODELS = ["resnet50", "vit_b_16", "densenet121", "convnext_tiny", "mobilenet_v3_large"]
MEMORY_MODELS = ["swin_t", "vit_b_16", "resnet50"]
TOOLS = ["prunekit", "torch_pruning", "prunekit+verify", "prunekit-default"]


RSS_LIMIT_MB = 12_000  # a tool passing this is stopped (the machine has 23 GB) and reported as such


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _worker(tool: str, model: str, ratio: float) -> dict:
    """One fresh process per measurement; stopped when it exceeds RSS_LIMIT_MB or 30 minutes."""
    proc = subprocess.Popen([sys.executable, str(HERE / "_vs_tp_worker.py"), tool, model, str(ratio)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, peak = time.monotonic(), 0.0
    while proc.poll() is None:
        peak = max(peak, _rss_mb(proc.pid))
        if peak > RSS_LIMIT_MB or time.monotonic() - started > 1800:
            proc.kill()
            proc.wait()
            return {"tool": tool, "model": model, "ok": False, "peak_rss_mb": peak,
                    "error": f"stopped at {peak / 1024:.1f} GB resident after {time.monotonic() - started:.0f} s"}
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        reason = f"killed (exit {proc.returncode})" if proc.returncode < 0 else last
        return {"tool": tool, "model": model, "ok": False, "error": reason[:200]}
    return json.loads(lines[-1])


def _fmt(record: dict | None, key: str, unit: str = "s") -> str:
    if not record or not record.get("ok"):
        return "failed" if record else "-"
    return f"{record[key]:.2f} {unit}" if unit else f"{record[key]:,}"


def part_time(repeats: int, ratio: float) -> list[str]:
    """Median graph-building + pruning time, and peak resident memory, per tool and model."""
    results: dict[tuple[str, str], list[dict]] = {}
    for model in dict.fromkeys(MODELS + MEMORY_MODELS):
        for _ in range(repeats):
            for tool in TOOLS:  # alternate tools so drifting machine load hits both alike
                record = _worker(tool, model, ratio)
                print(json.dumps(record), flush=True)
                results.setdefault((tool, model), []).append(record)
    rows = [
        f"### Graph building + pruning time ({int(ratio * 100)} % of channels, L2 group magnitude, "
        f"median of {repeats})", "",
        "| model | prunekit | Torch-Pruning | prunekit / TP | prunekit + verification | default path "
        "| default / TP | params after (pk / TP) | peak RSS prunekit | peak RSS TP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(MODELS + MEMORY_MODELS):
        med = {t: _median(results[(t, model)]) for t in TOOLS}
        pk, tp, pv, pd = med["prunekit"], med["torch_pruning"], med["prunekit+verify"], med["prunekit-default"]
        ratio_text = f"{pk['total_s'] / tp['total_s']:.2f}" if pk.get("ok") and tp.get("ok") else "-"
        default_text = f"{pd['total_s'] / tp['total_s']:.2f}" if pd.get("ok") and tp.get("ok") else "-"
        params = f"{pk.get('params_after', 0):,} / {tp.get('params_after', 0):,}"
        rows.append(f"| {model} | {_fmt(pk, 'total_s')} | {_fmt(tp, 'total_s')} | {ratio_text} | "
                    f"{_fmt(pv, 'total_s')} | {_fmt(pd, 'total_s')} | {default_text} | {params} | "
                    f"{_fmt(pk, 'peak_rss_mb', 'MB')} | "
                    f"{_fmt(tp, 'peak_rss_mb', 'MB')} |")
        for t in TOOLS:
            if not med[t].get("ok"):
                rows.append(f"|  | {t} failed: {med[t].get('error', '?')[:160]} |||||||||")
    return rows


def _median(records: list[dict]) -> dict:
    ok = [r for r in records if r.get("ok")]
    if not ok:
        return records[-1]
    for r in ok:
        r["total_s"] = r["graph_s"] + r["prune_s"]
    ok.sort(key=lambda r: r["total_s"])
    best = dict(ok[len(ok) // 2])
    best["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in ok)
    return best


def write_section(title: str, rows: list[str]) -> Path:
    """This script's sections of RESULTS.md."""
    return _write_section(title, rows, script="benchmarks/vs_torch_pruning.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["time", "accuracy"], action="append", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--seeds", type=lambda s: tuple(int(v) for v in s.split(",")), default=(0, 1),
                        help="fine-tune seeds of the accuracy part, comma-separated (default: 0,1)")
    parser.add_argument("--speedups", type=lambda s: tuple(int(v) for v in s.split(",")), default=(2, 4),
                        help="MACs reductions of the accuracy part, comma-separated (default: 2,4)")
    parser.add_argument("--baseline", default="resnet20", choices=("resnet20", "resnet20_long"),
                        help="the benchmarks/baselines.py run both tools start from: resnet20 (3 epochs) or "
                             "resnet20_long (10 epochs, its own RESULTS.md section)")
    parser.add_argument("--dry-run", action="store_true", help="print the accuracy table, leave RESULTS.md alone")
    args = parser.parse_args()
    if "time" in args.part:
        print(f"wrote {write_section('prunekit vs Torch-Pruning: time and memory', part_time(args.repeats, args.ratio))}")
    if "accuracy" in args.part:
        from _vs_tp_accuracy import part_accuracy

        rows = part_accuracy(args.seeds, args.speedups, Path("runs/baselines") / args.baseline / "model.safetensors")
        title = "prunekit vs Torch-Pruning: accuracy on Fashion-MNIST ResNet-20"
        if args.baseline != "resnet20":
            title += " (10-epoch baseline)"
        if not args.dry_run:
            print(f"wrote {write_section(title, rows)}")


if __name__ == "__main__":
    main()
