"""Scale: wall time and peak memory of the default pruning path on big models.

A Llama-architecture model of about 1 billion parameters (random init from a transformers
LlamaConfig, bf16, nothing downloaded) is pruned to half its attention heads and half its FFN width
(the hidden width is frozen), and ResNet-50 to half its channels, each with
``StructuredPruner(...).fit_transform`` (trace, score, allocate, slice, verify). Reported per model:
wall time, the model's own size, and the peak resident memory while pruning relative to it, counted
from the process's memory before the model was built (so the model itself counts once, and the
Python/torch runtime not at all: a first run on a small stand-in loads everything pruning imports).
Each model runs in a fresh process.

    nice python benchmarks/scale.py                      # both models, prints a markdown table
    nice python benchmarks/scale.py --model llama --tiny # a smoke run on a small Llama
    nice python benchmarks/scale.py --write              # also writes the section of RESULTS.md

Acceptance (issue 19): the 1B Llama in under 60 s with peak under 2x its size; ResNet-50 under 1.3x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LLAMA = {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 5632,
         "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000}
TINY_LLAMA = {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 352,
              "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000}


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Start VmHWM afresh from the current RSS (Linux: write 5 to clear_refs); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _llama(tiny: bool) -> tuple[Any, Any, dict[str, Any]]:
    import torch
    import transformers

    config = transformers.LlamaConfig(**(TINY_LLAMA if tiny else LLAMA), max_position_embeddings=256,
                                      tie_word_embeddings=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # NOTE: built in bf16 directly; restored below
    try:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    ids = torch.randint(0, config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    pruner = {"target": {"ratio": 0.5}, "freeze": ["model.embed_tokens"], "ignore": ["lm_head"]}
    return model, ids, pruner


def _resnet50(tiny: bool) -> tuple[Any, Any, dict[str, Any]]:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = (torchvision.models.resnet18 if tiny else torchvision.models.resnet50)().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return model, x, {"target": {"ratio": 0.5}, "ignore": ["fc"]}


def measure(name: str, tiny: bool) -> dict[str, Any]:
    """Build one model and prune it here; the record of times, sizes and memory."""
    import torch

    import prunekit.graph  # noqa: F401  (imports first: code is not the model's memory)
    import prunekit.importance  # noqa: F401
    from prunekit.structured import StructuredPruner

    torch.set_num_threads(2)
    # NOTE: one run on a small stand-in first: the modules pruning imports lazily (torch's flop
    # counter pulls in torch._dynamo) and torch's one-time kernel setup are code, not the model's memory.
    warm, wx, warm_params = (_llama if name == "llama" else _resnet50)(True)
    StructuredPruner(**warm_params).fit_transform(warm, wx)
    del warm, wx
    _reset_peak()
    before_kb = _status_kb("VmRSS")
    model, x, params = (_llama if name == "llama" else _resnet50)(tiny)
    model_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    built_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    pruner = StructuredPruner(**params)
    pruned = pruner.fit_transform(model, x)
    wall = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") if reset else 0
    kept = sum(t.numel() for t in pruned.parameters()) / sum(t.numel() for t in model.parameters())
    record: dict[str, Any] = {
        "model": "resnet18" if (tiny and name != "llama") else name, "tiny": tiny,
        "params": sum(t.numel() for t in model.parameters()), "params_kept": round(kept, 3),
        "model_mb": round(model_bytes / 2**20, 1), "wall_s": round(wall, 2),
        "rss_before_mb": round(before_kb / 1024, 1), "rss_built_mb": round(built_kb / 1024, 1),
        "peak_mb": round(peak_kb / 1024, 1) if reset else None,
        "peak_over_model": round((peak_kb - before_kb) * 1024 / model_bytes, 3) if reset else None,
        "peak_over_loaded": round(peak_kb / built_kb, 3) if reset else None,
    }
    if name == "llama":
        cfg = pruned.config
        record.update(heads=cfg.num_attention_heads, ffn=cfg.intermediate_size)
        widths = {(m.q_proj.out_features, m.gate_proj.out_features if hasattr(m, "gate_proj") else 0)
                  for m in (layer.self_attn for layer in pruned.model.layers)}
        record["q_widths"] = sorted({w for w, _ in widths})
        record["ffn_widths"] = sorted({layer.mlp.gate_proj.out_features for layer in pruned.model.layers})
    return record


def _row(r: dict[str, Any]) -> str:
    peak = (f"{r['peak_mb']:,.0f} MB ({r['peak_over_model']:.2f}x model; {r['peak_over_loaded']:.2f}x process)"
            if r.get("peak_mb") else "n/a")
    extra = f"heads {r['heads']}, FFN {r['ffn_widths']}" if "heads" in r else ""
    return (f"| {r['model']} | {r['params'] / 1e6:,.0f} M | {r['model_mb']:,.0f} MB | {r['wall_s']:.1f} s | "
            f"{peak} | {r['params_kept']:.2f} | {extra} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["llama", "resnet50", "all"], default="all")
    parser.add_argument("--tiny", action="store_true", help="small stand-ins, for a smoke run")
    parser.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.tiny)))
        return
    names = ["llama", "resnet50"] if args.model == "all" else [args.model]
    rows = ["### Scale: the default path on big models (StructuredPruner.fit_transform, verification on)", "",
            "Peak RSS while pruning: counted from before the model was built, over the model's size (the "
            "model itself is 1.00x); and over the whole process's RSS with the model loaded.", "",
            "| model | params | size | wall time | peak RSS | params kept | widths |", "|---|---|---|---|---|---|---|"]
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            rows.append(f"| {name} | failed: {out.stderr.strip().splitlines()[-1][:200] if out.stderr else '?'} ||||||")
            continue
        record = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(record), flush=True)
        rows.append(_row(record))
    print("\n".join(rows))
    if args.write and not args.tiny:
        sys.path.insert(0, str(HERE))
        from _results import write_section

        write_section("Scale", rows, script="benchmarks/scale.py")


if __name__ == "__main__":
    main()
