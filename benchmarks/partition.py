"""ResNet-50 cut into 2 and 4 pipeline stages, balanced by MACs and by measured latency.

Run by hand (not in CI):  nice -n 10 .venv/bin/python benchmarks/partition.py [--pipeline]

torchvision resnet50, random initialisation (weights do not change MACs, latency or bytes),
224x224 input. For each K in (2, 4) and each balance (macs, latency): the cuts chosen by
``prunekit.decompose.partition`` (latency balance: each node timed at batch 1), each stage's MACs
and latency measured on its own (PyTorch eager, 2 threads, batch 1 and 16, median), max/mean
imbalance, and the bytes crossing each cut at batch 1 (x16 at batch 16). Also checks that the
chained stages give the model's output bit for bit. With --pipeline, K=2 also runs as two
processes (gloo, one thread each, 4 micro-batches of batch 16) against the single model.
Writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit import models  # noqa: E402
from prunekit.decompose.partition import partition  # noqa: E402
from prunekit.measure import count_macs  # noqa: E402
from prunekit.measure.latency import measure_latencies  # noqa: E402

SCRIPT = "benchmarks/partition.py"
BATCHES = (1, 16)


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _latencies(module: torch.nn.Module, feed: tuple[torch.Tensor, ...], threads: int,
               min_time_s: float) -> dict[int, float]:
    stats = measure_latencies(module, feed, batch_sizes=BATCHES, threads=threads,
                              min_time_s=min_time_s)
    return {s.batch_size: s.median_ms for s in stats}


def _one(net: torch.nn.Module, x: torch.Tensor, stages: int, balance: str, threads: int,
         min_time_s: float, whole: dict[int, float]) -> tuple[list[str], list[str]]:
    start = time.perf_counter()
    part = partition(net, x, stages, balance=balance, threads=threads, repeats=5)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        exact = torch.equal(part.run(x), net(x))
    feeds = part.stage_inputs(x)
    rows, lat = [], []
    for k, (stage, feed) in enumerate(zip(part.stages, feeds)):
        entry = part.manifest["stages"][k]
        macs = count_macs(stage, feed)
        ms = _latencies(stage, feed, threads, min_time_s)
        lat.append(ms)
        outs = ", ".join(f"`{o['name']}` {tuple(o['shape'][1:])}" for o in entry["outputs"]) or "-"
        rows.append([k, entry["num_nodes"], f"`{entry['first_node']}` .. `{entry['last_node']}`",
                     macs, ms, entry["bytes_out"], outs])
        print(f"  K={stages} {balance} stage {k}: {macs / 1e9:.3f} GMACs, "
              f"{ms[1]:.1f} ms (b1), {ms[16]:.1f} ms (b16), out {_mb(entry['bytes_out'])}",
              flush=True)
    total_macs = sum(r[3] for r in rows)
    detail = [f"**K={stages}, balance={balance}** (cuts after nodes {part.manifest['cuts']}; "
              f"partitioning took {seconds:.1f} s; chained stages == model: "
              f"{'exact' if exact else 'NOT exact'})", "",
              "| stage | nodes | first .. last node | GMACs (share) | ms b1 (share) | "
              "ms b16 (share) | bytes out at b1 | tensors crossing the cut out |",
              "|---|---|---|---|---|---|---|---|"]
    for (k, n, span, macs, ms, out, outs) in rows:
        share = [ms[b] / sum(m[b] for m in lat) for b in BATCHES]
        detail.append(f"| {k} | {n} | {span} | {macs / 1e9:.3f} ({macs / total_macs:.0%}) | "
                      f"{ms[1]:.1f} ({share[0]:.0%}) | {ms[16]:.1f} ({share[1]:.0%}) | "
                      f"{_mb(out) if out else '-'} | {outs} |")
    detail.append("")

    def imbalance(values: list[float]) -> float:
        return max(values) / (sum(values) / len(values))

    summary = (f"| {stages} | {balance} | {imbalance([r[3] for r in rows]):.3f} | "
               + " | ".join(f"{imbalance([m[b] for m in lat]):.3f}" for b in BATCHES)
               + " | " + " | ".join(f"{sum(m[b] for m in lat) / whole[b]:.2f}" for b in BATCHES)
               + f" | {_mb(sum(r[5] for r in rows))} | {'yes' if exact else 'NO'} |")
    return summary.split("\n"), detail


def _pipeline_rows(net: torch.nn.Module, x: torch.Tensor) -> list[str]:
    from prunekit.decompose.pipelined import run_pipeline

    part = partition(net, x, 2, balance="macs", repeats=1)
    batch = x.repeat(16, 1, 1, 1)
    run = run_pipeline(part, batch, n_microbatches=4, threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # NOTE: as in each stage process; kernels may round by thread count.
    try:
        with torch.no_grad():
            want = net(batch)
            chained = torch.cat([part.run(chunk) for chunk in batch.chunk(4)])
    finally:
        torch.set_num_threads(threads)
    diff, scale = float((run.output - want).abs().max()), float(want.abs().max())
    return ["", f"Pipeline over 2 processes (gloo, 1 thread each, 4 micro-batches of 4, batch 16): "
                f"{run.wall_time_s * 1000:.0f} ms for the batch. Output vs the single model at "
                f"batch 16: max |diff| {diff:.2g} for outputs up to {scale:.2g} (kernels differ "
                f"between batch 4 and batch 16); vs the chained stages run on the same 4 "
                f"micro-batches: {'bit-identical' if torch.equal(run.output, chained) else 'DIFFERENT'}.",
            ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time-s", type=float, default=1.0)
    parser.add_argument("--pipeline", action="store_true", help="also run K=2 as two processes")
    args = parser.parse_args()
    torch.manual_seed(0)
    net = models.create("resnet50", num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    load_before = os.getloadavg()
    print(f"resnet50 (random init), 224x224, {args.threads} threads, batches {BATCHES}; "
          f"load {load_before[0]:.1f} on {os.cpu_count()} cores", flush=True)
    whole = _latencies(net, (x,), args.threads, args.min_time_s)
    print(f"  whole model: {count_macs(net, x) / 1e9:.3f} GMACs, {whole[1]:.1f} ms (b1), "
          f"{whole[16]:.1f} ms (b16)", flush=True)
    summary = ["| K | balance | max/mean MACs | max/mean ms b1 | max/mean ms b16 | "
               "sum of stages / whole b1 | sum / whole b16 | bytes crossing all cuts (b1) | exact |",
               "|---|---|---|---|---|---|---|---|---|"]
    details: list[str] = []
    for stages in (2, 4):
        for balance in ("macs", "latency"):
            line, detail = _one(net, x, stages, balance, args.threads, args.min_time_s, whole)
            summary += line
            details += detail
    extra = _pipeline_rows(net, x) if args.pipeline else []
    load_after = os.getloadavg()
    note = [f"torchvision `resnet50`, random init (weights change neither MACs, latency nor bytes), "
            f"input 1x3x224x224, float32; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} intra-op thread{'s' if args.threads > 1 else ''}, "
            f"PyTorch eager, median over >= 5 calls and >= {args.min_time_s:g} s after 3 warm-up "
            f"calls. Whole model: {count_macs(net, x) / 1e9:.3f} GMACs, {whole[1]:.1f} ms at "
            f"batch 1, {whole[16]:.1f} ms at batch 16.",
            "",
            f"**Machine load**: 1-minute load average {load_before[0]:.1f} at the start and "
            f"{load_after[0]:.1f} at the end on {os.cpu_count()} cores, shared with other jobs: "
            f"latencies are noisy, and a latency-balanced cut reflects the noise of the moment it "
            f"was timed. MACs and bytes are exact.",
            "",
            "Objective: the smallest bottleneck (costliest stage), then, among cuts within 5% of "
            "it, the fewest bytes crossing (exact DP over the torch.fx topological order). "
            "max/mean = costliest stage over the mean stage (1.0 = perfect balance; a pipeline's "
            "throughput is bounded by the costliest stage).",
            "", *summary, "", *details, *extra]
    title = "Partitioning ResNet-50 into pipeline stages"
    if args.threads != 2:  # NOTE: the 2-thread run is the reference; others get their own section.
        title += f" ({args.threads} thread{'s' if args.threads > 1 else ''})"
    print(f"wrote {write_section(title, note, script=SCRIPT)}")


if __name__ == "__main__":
    main()
