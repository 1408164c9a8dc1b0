"""How long a quick try takes: the same ``prunekit prune`` of ResNet-20 (20 training steps per
epoch) with and without the evaluation and profiling caps; writes a section of benchmarks/RESULTS.md.

The issue that asked for the caps measured 146 s for a 20-step ResNet-20 run, because evaluation
(validation, test, both profiles) ran over the whole splits and latency was timed for a second at
each of two batch sizes and two backends. The capped run adds ``--max-eval-batches 2 --min-time-s 0
--batch-sizes 1 --no-onnx``. Each variant runs ``--repeats`` times, alternating, in a fresh process
(the wall time a user waits, start-up and data loading included); the median is reported.
Run by hand on a quiet machine:
    .venv/bin/python benchmarks/quick_try.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_section

BASE = ["prune", "--model", "resnet20", "--data", "fashion-mnist", "--target-macs", "0.5",
        "--max-steps-per-epoch", "20", "--no-progress"]
VARIANTS = {
    "uncapped (whole splits, default latency protocol)": [],
    "capped (--max-eval-batches 2 --min-time-s 0 --batch-sizes 1 --no-onnx)":
        ["--max-eval-batches", "2", "--min-time-s", "0", "--batch-sizes", "1", "--no-onnx"],
}
CLI = Path(sys.executable).with_name("prunekit")


def _seconds(extra: list[str], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(CLI), *BASE, *extra, "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _commit() -> str:
    here = Path(__file__).resolve().parent
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                         cwd=here).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, check=True, cwd=here).stdout.strip()
    return out + (" (with uncommitted changes)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median reported)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for index, (label, extra) in enumerate(VARIANTS.items()):
                times[label].append(_seconds(extra, Path(tmp) / f"run-{repeat}-{index}"))
    rows = [f"Command: `.venv/bin/python benchmarks/quick_try.py --repeats {args.repeats}`; git commit "
            f"{_commit()}; {os.cpu_count()} cores. Each run: `prunekit {' '.join(BASE)} [caps] --out DIR` "
            f"in a fresh process (1 baseline epoch + 1 fine-tune epoch of 20 steps each).", "",
            "| run | median s | min s | max s |", "|---|---:|---:|---:|"]
    for label, values in times.items():
        rows.append(f"| {label} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    medians = [statistics.median(v) for v in times.values()]
    rows += ["", f"The caps make the quick try {medians[0] / medians[1]:.1f}x faster."]
    print("\n".join(rows))
    write_section("Quick try: evaluation and profiling caps", rows, script="benchmarks/quick_try.py")


if __name__ == "__main__":
    main()
