"""How workflows find their model: prunekit.models.resolve when it exists, with the data's sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import ConfigError, UnknownNameError
from prunekit.workflows.common import build, check_model_name, load_model


def test_a_spec_goes_through_models_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def resolve(spec: str, **kwargs: Any) -> nn.Module:
        calls.append((spec, kwargs))
        return nn.Linear(2, 2)

    monkeypatch.setattr(models, "resolve", resolve, raising=False)
    check_model_name("timm:resnet18")  # NOTE: specs are checked when resolved, not against the registry.
    net = load_model("timm:resnet18", num_classes=10, in_channels=1, weights="w.safetensors", task="classification")
    assert isinstance(net, nn.Linear)
    assert calls == [("timm:resnet18", {"task": "classification", "weights": "w.safetensors",
                                        "num_classes": 10, "in_channels": 1})]


def test_new_weights_come_from_the_seed_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = load_model("simple_cnn", seed=3), load_model("simple_cnn", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # NOTE: the global RNG is untouched.
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(UnknownNameError, match="Unknown model .resnt20."):
        check_model_name("resnt20")


_SHORT_GPT = '''
from types import SimpleNamespace
import torch
from torch import nn


class GPT(nn.Module):
    """Token and position embeddings, 24 positions, as nanoGPT writes them."""

    def __init__(self, record):
        super().__init__()
        if record:
            self.config = SimpleNamespace(block_size=24, n_embd=16)  # NOTE: nanoGPT's GPTConfig
        self.wte, self.wpe = nn.Embedding(256, 16), nn.Embedding(24, 16)
        self.lm_head = nn.Linear(16, 256)

    def forward(self, idx):
        return self.lm_head(self.wte(idx) + self.wpe(torch.arange(idx.size(1))))


def recorded():
    return GPT(True)


def unrecorded():
    return GPT(False)
'''


@pytest.fixture
def short_gpt(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "short_gpt.py").write_text(_SHORT_GPT)
    (tmp_path / "corpus.txt").write_text("a small text for a small model.\n" * 60)
    return tmp_path / "short_gpt.py", tmp_path / "corpus.txt"


def test_text_blocks_are_cut_to_the_positions_a_model_records(short_gpt: tuple[Path, Path]) -> None:
    """A model whose config records 24 positions gets 24-token blocks, not the default 128 it would
    fail on; a block size asked for fits the same way, and one that is longer is refused by name."""
    code, text = short_gpt
    net, loaded = build(f"{code}:recorded", str(text), tokenizer="bytes")
    assert loaded.info["block_size"] == 24 and next(iter(loaded.train))["input_ids"].shape[1] == 24
    assert models.context_length(net) == (24, "config.block_size")
    _, asked = build(f"{code}:recorded", str(text), tokenizer="bytes", block_size=16)
    assert asked.info["block_size"] == 16
    with pytest.raises(ConfigError, match=r"block_size 64 is longer than the 24 positions the model reads "
                                          r"\(config.block_size\); pass --block-size 24 or less\."):
        build(f"{code}:recorded", str(text), tokenizer="bytes", block_size=64)


def test_a_model_that_records_no_position_count_is_told_of_block_size(short_gpt: tuple[Path, Path]) -> None:
    """Where nothing records the positions, the failed check says how long the blocks were and names
    the flag; with the flag the same model runs."""
    code, text = short_gpt
    with pytest.raises(ConfigError, match=r"IndexError.*blocks of 128 tokens: if the model reads fewer positions, pass --block-size N") as caught:
        build(f"{code}:unrecorded", str(text), tokenizer="bytes")
    assert "\n" not in str(caught.value)
    _, loaded = build(f"{code}:unrecorded", str(text), tokenizer="bytes", block_size=24)
    assert loaded.info["block_size"] == 24
