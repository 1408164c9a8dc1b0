"""The ``partition`` workflow: build a model, cut it into stages, measure, save.

:func:`partition` builds the model its spec names (optionally with weights and a dataset),
partitions it, checks that the chained stages give the model's output exactly,
measures the whole model and each stage (MACs, median latency at a fixed thread count), and
optionally runs the stages as a pipeline of processes. It returns a JSON-ready results dict with
a before/after ``table``; with ``out_dir`` it writes ``results.json`` and ``stages/`` (manifest,
per-stage safetensors and ONNX files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit._checks import tensors_in
from prunekit.decompose.partition import Partition, tensor_inputs
from prunekit.decompose.partition import partition as cut
from prunekit.measure.latency import measure_latency
from prunekit.measure.macs import batch_of, count_macs
from prunekit.measure.profile import format_count
from prunekit.workflows.common import finish_with_report
from prunekit.workflows.inputs import without_cache
from prunekit.workflows.profile import load_with_example

__all__ = ["partition", "render_table"]


def _build(model: str, data: str | None, *, weights: str | None, data_dir: str | None, tokenizer: str | None,
           block_size: int | None, in_channels: int | None, batch_size: int,
           task: str | None, image_size: int | tuple[int, int] | None = None) -> tuple[nn.Module, Any]:
    """The model in eval mode and ``batch_size`` example inputs (from the data, else the model)."""
    net, _, _, example = load_with_example(model, data, weights=weights, data_dir=data_dir, tokenizer=tokenizer,
                                           block_size=block_size,
                                           image_size=image_size, in_channels=in_channels, task=task,
                                           batch_size=batch_size,
                                           command="partition")
    return net.eval(), example


def _pairs(want: Any, got: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The model's and the stages' output tensors, side by side (in the order of the output's
    structure: a tensor, a tuple, a dict, a Hugging Face ModelOutput, a dataclass)."""
    return list(zip(tensors_in(want, "the model's output"), tensors_in(got, "the stages' output"), strict=True))


def _exactness(part: Partition, net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    with torch.no_grad():
        want, got = net(*inputs), part.run(*inputs)
    pairs = _pairs(want, got)
    return {"exact": all(torch.equal(a, b) for a, b in pairs),
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in pairs)}


def _measure(part: Partition, net: nn.Module, inputs: tuple[torch.Tensor, ...], *, threads: int,
             min_time_s: float, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    batch = inputs[0].shape[0]
    feeds = part.stage_inputs(*inputs)
    timing: dict[str, Any] = {"batch_size": batch, "threads": threads, "min_time_s": min_time_s}
    bar = tqdm(total=len(part.stages) + 1, desc="measuring stages", disable=not progress)
    with bar:
        whole = {"macs": count_macs(net, inputs),
                 "latency_ms": measure_latency(net, inputs, **timing).median_ms}
        bar.update()
        rows = []
        for k, (stage, feed) in enumerate(zip(part.stages, feeds)):
            entry = part.manifest["stages"][k]
            rows.append({"stage": k, "nodes": entry["num_nodes"],
                         "first_node": entry["first_node"], "last_node": entry["last_node"],
                         "macs": count_macs(stage, feed),
                         "latency_ms": measure_latency(stage, feed, **timing).median_ms,
                         "bytes_out": entry["bytes_out"], "tensors_out": len(entry["outputs"])})
            bar.update()
    total_ms = sum(r["latency_ms"] for r in rows)
    for r in rows:
        r["macs_share"] = r["macs"] / max(whole["macs"], 1)
        r["latency_share"] = r["latency_ms"] / total_ms if total_ms > 0 else 0.0
    return whole, rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Balance of the stages: the slowest stage sets a pipeline's throughput."""
    latencies = [r["latency_ms"] for r in rows]
    macs = [r["macs"] for r in rows]
    mean_ms, mean_macs = sum(latencies) / len(rows), sum(macs) / len(rows)
    return {"bottleneck_stage": max(range(len(rows)), key=latencies.__getitem__),
            "latency_imbalance": max(latencies) / mean_ms if mean_ms > 0 else 1.0,
            "macs_imbalance": max(macs) / mean_macs if mean_macs > 0 else 1.0,
            "ideal_speedup": sum(latencies) / max(latencies) if max(latencies) > 0 else 1.0,
            "bytes_crossing": sum(r["bytes_out"] for r in rows)}


def _load() -> float | None:
    """1-minute load average while measuring (latency is noisy when it exceeds the cores)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # NOTE: not available on Windows
        return None


def _bytes(n: float) -> str:
    return "-" if n == 0 else format_count(n) + "B"


def render_table(results: dict[str, Any]) -> str:
    """The before (whole model) / after (one row per stage) table that the CLI prints."""
    whole, rows, info = results["whole"], results["stages"], results["summary"]
    head = ["", "nodes", "first .. last node", "MACs", "share", "latency ms", "share", "out", "tensors"]
    body = [["whole model", str(results["num_nodes"]), "", format_count(whole["macs"]), "100%",
             f"{whole['latency_ms']:.3f}", "", "", ""]]
    body += [[f"stage {r['stage']}", str(r["nodes"]), f"{r['first_node']} .. {r['last_node']}",
              format_count(r["macs"]), f"{r['macs_share']:.0%}", f"{r['latency_ms']:.3f}",
              f"{r['latency_share']:.0%}", _bytes(r["bytes_out"]), str(r["tensors_out"] or "")]
             for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in [head, *body]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(3, "-" * len(lines[0]))
    check = results["check"]
    lines += ["",
              f"{results['model']}: {len(rows)} stages by {results['balance']} "
              f"(traced with {results['method']}), batch {results['batch_size']}, "
              f"{results['threads']} threads"
              + (f", load average {results['load_average']:.1f} on {os.cpu_count()} cores"
                 if results.get("load_average") is not None else ""),
              f"bottleneck: stage {info['bottleneck_stage']}; max/mean latency "
              f"{info['latency_imbalance']:.2f}, max/mean MACs {info['macs_imbalance']:.2f}; "
              f"ideal pipeline speed-up {info['ideal_speedup']:.2f}x; "
              f"{_bytes(info['bytes_crossing'])} crossing the cuts",
              f"chained stages vs model: {'exact' if check['exact'] else 'NOT exact'} "
              f"(max |diff| {check['max_abs_diff']:.3g})"]
    if "pipeline" in results:
        pipe = results["pipeline"]
        lines.append(f"pipeline over {pipe['world_size']} processes (gloo, "
                     f"{pipe['n_microbatches']} micro-batches of batch {pipe['batch_size']}): "
                     f"{'matches' if pipe['allclose'] else 'DIFFERS'} "
                     f"(max |diff| {pipe['max_abs_diff']:.3g}), {pipe['wall_time_s'] * 1000:.1f} ms")
    return "\n".join(lines)


def _pipeline(part: Partition, net: nn.Module, inputs: tuple[torch.Tensor, ...],
              n_microbatches: int | None) -> dict[str, Any]:
    from prunekit.decompose.pipelined import run_pipeline

    micro = n_microbatches or len(part.stages)
    rows = -(-max(inputs[0].shape[0], micro) // micro) * micro  # NOTE: equal micro-batches.
    batch = batch_of(inputs, rows)
    run = run_pipeline(part, batch, n_microbatches=micro)
    with torch.no_grad():
        want = net(*batch)
    pairs = _pairs(want, run.output)
    return {"world_size": run.world_size, "n_microbatches": run.n_microbatches,
            "batch_size": batch[0].shape[0], "wall_time_s": run.wall_time_s,
            "allclose": all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in pairs),
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in pairs)}


def partition(model: str, *, stages: int = 2, balance: str = "macs", data: str | None = None,
              weights: str | None = None, data_dir: str | None = None,
              tokenizer: str | None = None, block_size: int | None = None,
              image_size: int | tuple[int, int] | None = None, in_channels: int | None = None,
              batch_size: int = 1, threads: int = 2, tolerance: float = 0.05, onnx: bool = True,
              pipeline: bool = False, n_microbatches: int | None = None, min_time_s: float = 1.0,
              out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
              task: str | None = None) -> dict[str, Any]:
    """Partition the model ``model`` names into ``stages``, measure, and (with ``out_dir``) save.

    The example batch is the first ``batch_size`` inputs of ``data`` (image or text data; ``task``
    says how a batch holds its inputs), else inputs derived from the model itself. Latency: median
    at ``threads`` intra-op threads (``measure_latency``).
    ``pipeline`` also runs the stages as processes (gloo) and compares with the model.
    """
    net, example = _build(model, data, weights=weights, data_dir=data_dir, tokenizer=tokenizer, block_size=block_size,
                          image_size=image_size,
                          in_channels=in_channels, batch_size=batch_size, task=task)
    with without_cache(net):
        return _partition(net, example, model=model, stages=stages, balance=balance, data=data,
                          weights=weights, batch_size=batch_size, threads=threads, tolerance=tolerance,
                          onnx=onnx, pipeline=pipeline, n_microbatches=n_microbatches,
                          min_time_s=min_time_s, out_dir=out_dir, progress=progress)


def _partition(net: nn.Module, example: Any, *, model: str, stages: int, balance: str, data: str | None,
               weights: str | None, batch_size: int, threads: int, tolerance: float, onnx: bool,
               pipeline: bool, n_microbatches: int | None, min_time_s: float,
               out_dir: str | os.PathLike[str] | None, progress: bool) -> dict[str, Any]:
    """Cut, check, measure and save (the model's key/value cache off)."""
    inputs = tensor_inputs(net, example)
    part = cut(net, inputs, stages, balance=balance, tolerance=tolerance, threads=threads)
    whole, rows = _measure(part, net, inputs, threads=threads, min_time_s=min_time_s,
                           progress=progress)
    results: dict[str, Any] = {
        "command": "partition", "model": model, "data": data, "weights": weights,
        "balance": balance, "tolerance": tolerance, "method": part.manifest["method"],
        "batch_size": batch_size, "threads": threads, "num_nodes": len(part.manifest["node_names"]),
        "cuts": part.manifest["cuts"], "whole": whole, "stages": rows, "summary": _summary(rows),
        "check": _exactness(part, net, inputs), "load_average": _load()}
    if pipeline:
        results["pipeline"] = _pipeline(part, net, inputs, n_microbatches)
    if out_dir is not None:
        folder = part.save(Path(out_dir) / "stages", onnx=onnx, progress=progress)
        results["files"] = {"stages": str(folder), "manifest": str(folder / "manifest.json")}
    results["table"] = render_table(results)
    return finish_with_report(results, out_dir)
