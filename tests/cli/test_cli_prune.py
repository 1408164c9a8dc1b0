"""`prunekit prune` end to end on SimpleCNN with tiny budgets, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.cli import build_parser, main
from prunekit.io import load
from prunekit.structured import Plan

_TINY = ["--model", "simple_cnn", "--baseline-epochs", "1", "--finetune-epochs", "1",
         "--max-steps-per-epoch", "5", "--no-progress", "--no-onnx", "--batch-sizes", "1"]


def test_every_prune_option_is_explained_in_help() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["prune"]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"prune {action.option_strings} has no help text"


def test_prune_to_half_the_macs_writes_profiles_and_a_loadable_model(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["prune", *_TINY, "--target-macs", "0.5", "--importance", "l1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "simple_cnn pruned" in printed and "MACs" in printed and "achieved" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == "prune" and results["target"] == {"macs": 0.5}
    before, after = results["before"], results["after"]
    assert before["macs"] == 110400 and after["macs"] <= before["macs"] / 2
    assert after["accuracy"] is not None and before["accuracy"] is not None
    assert results["achieved"]["macs"] == pytest.approx(after["macs"] / before["macs"])
    assert results["pruner"]["target"] == {"macs": 0.5} and results["pruner"]["importance"] == "l1"
    assert sorted(p.name for p in out.iterdir()) == ["baseline.safetensors", "evidence.json", "model", "report.html",
                                                     "report.md", "results.json"]  # NOTE: the dense weights trained here
    # The saved folder rebuilds the pruned model without pickle, with the fine-tuned weights.
    plan = Plan.from_dict(results["plan"])
    assert results["architecture"] == {"model": "simple_cnn", "num_classes": 10, "in_channels": 1}
    loaded = load(out / "model")
    assert loaded.conv1.out_channels == len(plan.keep["conv1.weight:0"])
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize(("argv", "words"), [
    (["--ratio", "0.3", "--target-macs", "0.5"], "give exactly one target; got --ratio and --target-macs"),
    (["--ratio", "1.5"], "--ratio is the fraction of each group's channels to remove, in [0, 1); got 1.5. Pass e.g."),
    ([], "no target given: pass one of --ratio"),
    (["--ratio", "0.3", "--importance", "l3"], "Unknown importance 'l3'"),
    (["--layer-channels", "conv1"], "expected MODULE=N"),
    (["--layer-channels", "conv9=2"], "no module 'conv9'"),
    (["--ratio", "0.3", "--ignore", "cnv1"], "Did you mean 'conv1'"),
])
def test_bad_options_give_one_line_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          argv: list[str], words: str) -> None:
    code = main(["prune", *_TINY, *argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("prunekit prune: error:") and words in lines[0], lines[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_round_to_takes_auto_or_a_positive_int(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["prune", "--model", "simple_cnn", "--ratio", "0.5"]).round_to == "auto"
    assert parser.parse_args(["prune", "--model", "simple_cnn", "--ratio", "0.5", "--round-to", "8"]).round_to == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["prune", "--model", "simple_cnn", "--ratio", "0.5", "--round-to", "0"])
    assert "expected 'auto' or an int >= 1, got '0'" in capsys.readouterr().err


def test_prune_in_steps_with_a_fixed_layer(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "steps"
    assert main(["prune", *_TINY, "--ratio", "0.5", "--steps", "2", "--layer-channels", "conv1=1",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [s["step"] for s in results["steps"]] == [0, 1] and "finetune" in results
    plan = Plan.from_dict(results["plan"])
    assert len(plan.keep["conv1.weight:0"]) == 3  # removed once in step 0, then held fixed
    weights = load_file(str(out / "model" / "model.safetensors"))
    for group, tensor in (("conv1.weight:0", "conv1.weight"), ("conv2.weight:0", "conv2.weight"),
                          ("fc1.weight:0", "fc1.weight")):
        assert weights[tensor].shape[0] == len(plan.keep[group])
    assert results["after"]["macs"] < results["before"]["macs"]


def test_cost_options_become_the_pruner_options() -> None:
    from prunekit.cli.prune import stage
    from prunekit.structured import StructuredPruner

    parser = build_parser()
    plain = stage(parser.parse_args(["prune", "--model", "simple_cnn", "--target-macs", "0.5"]))
    assert plain["options"] is None
    args = parser.parse_args(["prune", "--model", "simple_cnn", "--target-macs", "0.5", "--cost", "latency",
                              "--cost-batch-size", "16", "--layer-ratio", "fc1=0.5"])
    params = stage(args)
    assert params["options"] == {"layer_ratios": {"fc1": 0.5}, "cost": "latency", "cost_batch_size": 16}
    assert StructuredPruner(**params).validate_params()[1].cost == "latency"


_OWN_GPT = '''
import math
import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(256, 32), nn.Embedding(128, 32)
        self.ln, self.attn = nn.LayerNorm(32), Attention(32, 4)
        self.mlp = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32))
        self.lm_head = nn.Linear(32, 256, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        x = x + self.attn(self.ln(x))
        return self.lm_head(x + self.mlp(x)), None  # NOTE: nanoGPT's (logits, loss)


def build():
    return GPT()
'''


def test_your_own_language_model_on_a_text_file_with_byte_tokens(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A nanoGPT-shaped model of one's own (no tokenizer) pruned on a text file read as UTF-8 bytes:
    its heads are cut whole and its stored sizes follow; the saved model loads and runs."""
    (tmp_path / "own_gpt.py").write_text(_OWN_GPT)
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 80)
    out = tmp_path / "out"
    assert main(["prune", "--model", f"{tmp_path / 'own_gpt.py'}:build", "--data", str(tmp_path / "corpus.txt"),
                 "--tokenizer", "bytes", "--ratio", "0.5", "--baseline-epochs", "1", "--finetune-epochs", "1",
                 "--max-steps-per-epoch", "2", "--max-eval-batches", "1", "--no-progress", "--no-onnx",
                 "--batch-sizes", "1", "--out", str(out)]) == 0
    assert "perplexity" in capsys.readouterr().out
    pruned = load(out / "model")
    assert pruned.attn.n_head == 2 and pruned.attn.n_embd == pruned.wte.embedding_dim == 16
    logits, _ = pruned(torch.randint(0, 256, (1, 9)))
    assert logits.shape == (1, 9, 256)
    # NOTE: the saved model remembers that its text is read as bytes
    assert main(["eval", "--model", str(out / "model"), "--data", str(tmp_path / "corpus.txt"),
                 "--max-eval-batches", "1"]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_block_size_fits_text_to_a_model_with_fewer_positions(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A model of one's own with 32 positions and nothing that records them: the default blocks of
    128 tokens fail with the flag named; --block-size 32 runs."""
    (tmp_path / "own_gpt.py").write_text(_OWN_GPT.replace("nn.Embedding(128, 32)", "nn.Embedding(32, 32)"))
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 80)
    args = ["eval", "--model", f"{tmp_path / 'own_gpt.py'}:build", "--data", str(tmp_path / "corpus.txt"),
            "--tokenizer", "bytes", "--max-eval-batches", "1"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "blocks of 128 tokens" in err and "--block-size N" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--block-size", "32"]) == 0
    assert "perplexity" in capsys.readouterr().out
