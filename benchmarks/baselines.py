"""Baseline training runs behind the README's numbers; writes benchmarks/BASELINES.md.

Run by hand (not in CI):  .venv/bin/python benchmarks/baselines.py [--only simple_cnn]
Each run is exactly a `prunekit train` command; the table records accuracy and wall time.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from prunekit.recover import TrainConfig
from prunekit.workflows import Measure
from prunekit.workflows.train import train

RUNS = {
    "simple_cnn": dict(model="simple_cnn", config=TrainConfig(epochs=2, batch_size=64, lr=1e-3, optimizer="adam"),
                       command="prunekit train --model simple_cnn --epochs 2 --optimizer adam --lr 1e-3 --batch-size 64"),
    "resnet20": dict(model="resnet20", config=TrainConfig(epochs=3, batch_size=128, lr=0.1, optimizer="sgd",
                                                          momentum=0.9, weight_decay=5e-4, nesterov=True,
                                                          scheduler="cosine"),
                     command="prunekit train --model resnet20 --epochs 3 --optimizer sgd --lr 0.1 "
                             "--batch-size 128 --weight-decay 5e-4 --nesterov --scheduler cosine"),
    # NOTE: trained to near convergence, for benchmarks where a 3-epoch teacher would be no better
    # than continued training (distillation in benchmarks/programmable.py --baseline resnet20_long)
    "resnet20_long": dict(model="resnet20", config=TrainConfig(epochs=10, batch_size=128, lr=0.1, optimizer="sgd",
                                                               momentum=0.9, weight_decay=5e-4, nesterov=True,
                                                               scheduler="cosine"),
                          command="prunekit train --model resnet20 --epochs 10 --optimizer sgd --lr 0.1 "
                                  "--batch-size 128 --weight-decay 5e-4 --nesterov --scheduler cosine"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--out", default="runs/baselines")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.only or sorted(RUNS):
        spec = RUNS[name]
        start = time.perf_counter()
        results = train(spec["model"], "fashion_mnist", spec["config"], out_dir=f"{args.out}/{name}",
                        progress=True, profile_after=True, measure=Measure(batch_sizes=(1, 64), threads=2))
        wall = time.perf_counter() - start
        test = results["train"]["test"]
        prof = results["profile"]
        rows.append(f"| `{spec['command']}` | {100 * test['accuracy']:.2f} % | "
                    f"{results['train']['wall_time_s']:.0f} s | {wall:.0f} s | {prof['params']:,} | {prof['macs']:,} |")
        print(rows[-1], flush=True)
    header = [
        "# Baselines on Fashion-MNIST",
        "",
        f"Measured by `benchmarks/baselines.py` on {platform.machine()} with {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Test set: the 10,000 official test images; "
        "the model is the last epoch's (no selection on the test set).",
        "",
        "| command | test accuracy | training time | total (incl. data, eval, profile) | params | MACs |",
        "|---|---|---|---|---|---|",
    ]
    out = Path(__file__).with_name("BASELINES.md")
    existing = out.read_text().splitlines()[len(header):] if out.exists() and args.only else []
    keep = [r for r in existing if not any(RUNS[n]["command"] in r for n in (args.only or []))]
    out.write_text("\n".join(header + keep + rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
