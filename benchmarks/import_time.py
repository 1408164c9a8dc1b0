"""How long ``import prunekit`` takes beside ``import torch``; writes a section of benchmarks/RESULTS.md.

Each import runs in a fresh interpreter (``python -X importtime`` is not used: its own overhead
distorts small modules), ``--repeats`` times, alternating torch and prunekit so drift on a shared
machine hits both alike; the table reports the median wall time of the whole interpreter run, and
what prunekit adds on top of torch. ``import prunekit`` itself loads no sub-package (not even
torch); the row that touches ``prunekit.StructuredPruner`` shows the cost of first use.
``--baseline DIR`` adds a row for ``import prunekit`` from another checkout (e.g. before a change).
Run by hand:
    .venv/bin/python benchmarks/import_time.py --repeats 15 [--baseline /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_section

STATEMENTS = {
    "python (nothing)": "pass",
    "import torch": "import torch",
    "import prunekit": "import prunekit",
    "import prunekit, then prunekit.StructuredPruner": "import prunekit; prunekit.StructuredPruner",
}
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torchvision", "transformers", "pydantic", "yaml", "onnx", "tensorly")


def _seconds(statement: str, path: str | None = None) -> float:
    """Wall time of a fresh interpreter running ``statement`` in ``path`` (default: this checkout),
    which comes first on its sys.path."""
    env = {**os.environ, "PYTHONPATH": path} if path else None
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, env=env, cwd=path or ROOT)
    return time.perf_counter() - start


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, check=True,
                           text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs per statement (median reported)")
    parser.add_argument("--note", default="", help="a line about the machine (e.g. shared, load)")
    parser.add_argument("--baseline", default=None, help="another checkout whose import prunekit to time too")
    args = parser.parse_args()
    runs = {label: (statement, None) for label, statement in STATEMENTS.items()}
    if args.baseline:
        runs["import prunekit (baseline checkout)"] = ("import prunekit", args.baseline)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for statement, path in runs.values():
        _seconds(statement, path)  # NOTE: one warm-up each fills the OS file cache.
    for _ in range(args.repeats):
        for label, (statement, path) in runs.items():
            times[label].append(_seconds(statement, path))
    probe = ("import prunekit, sys; print(sorted(m for m in " + repr(HEAVY) + " if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout.strip()
    median = {k: statistics.median(v) for k, v in times.items()}
    rows = ["| statement | median s | min s | max s | beyond `import torch` |", "|---|---:|---:|---:|---:|"]
    for label, values in times.items():
        extra = median[label] - median["import torch"]
        beyond = f"{extra:+.3f} s" if label.startswith("import prunekit") else ""
        rows.append(f"| `{label}` | {median[label]:.3f} | {min(values):.3f} | {max(values):.3f} | {beyond} |")
    baseline = f" --baseline {args.baseline}" if args.baseline else ""
    command = f"`.venv/bin/python benchmarks/import_time.py --repeats {args.repeats}{baseline}`"
    rows = [(f"Command: {command}; git commit {_commit()}; Python {sys.version.split()[0]}, "
             f"torch {__import__('torch').__version__}. Each statement runs in a fresh interpreter "
             f"{args.repeats} times, interleaved; wall time of the whole run."),
            *([args.note] if args.note else []), "", *rows, "",
            f"Optional heavy modules loaded by `import prunekit`: {loaded} (of {', '.join(HEAVY)})."]
    print("\n".join(rows))
    write_section("Import time", rows, script="benchmarks/import_time.py")


if __name__ == "__main__":
    main()
