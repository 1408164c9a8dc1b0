"""A pruned stock transformer runs in plain inference (eval under no_grad or inference_mode), where
PyTorch takes its fused paths: ``nn.TransformerEncoderLayer``'s fast path reads the attention's weights
directly (it failed with "expected `qkv_weight` first dim to be 3x embed_dim" once the inner width
differed from embed_dim), and ``nn.TransformerEncoder`` packs a padded batch into a nested tensor that
only those paths take. The output must be the one the pruner verified (run with grad enabled)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.graph.handlers.attention_modules import PrunedMultiheadAttention
from prunekit.structured.apply import apply, mask
from prunekit.structured.plan import Plan

pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")


class Encoder(nn.Module):
    """An input projection into a stock nn.TransformerEncoder (2 layers, 4 heads of 4, nested tensors
    on), then a per-position classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.head = nn.Linear(6, 16), nn.Linear(16, 3)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.enc(self.inp(x), src_key_padding_mask=padding))


class Seq2Seq(nn.Module):
    """A stock nn.Transformer (encoder and decoder, 4 heads of 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Transformer(16, 4, 1, 1, 32, dropout=0.0, batch_first=True)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.t(src, tgt, src_key_padding_mask=padding, memory_key_padding_mask=padding)


def _padding() -> torch.Tensor:
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, -2:] = True  # NOTE: left aligned, as the encoder's nested path wants
    return padding


def _inputs(model: nn.Module, padded: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    src = torch.randn(2, 5, 6 if isinstance(model, Encoder) else 16, generator=g)
    x = (src,) if isinstance(model, Encoder) else (src, torch.randn(2, 3, 16, generator=g))
    return (*x, _padding()) if padded else x


def _plan(model: nn.Module, x: tuple[torch.Tensor, ...], heads: int,
          embed: int | None = None) -> tuple[DependencyGraph, Plan]:
    """The plan keeping the first ``heads`` heads of every attention (and the first ``embed``
    channels of the embedding)."""
    graph = DependencyGraph.trace(model, x)
    keep: dict[str, tuple[int, ...]] = {}
    for group in graph.prunable:
        if group.id.endswith("in_proj_weight:0"):
            keep[group.id] = tuple(range(heads))
        elif embed is not None and any(m.module == "inp" for m in group.members):
            keep[group.id] = tuple(range(embed))
    return graph, Plan(keep=keep, sizes={g.id: g.size for g in graph.prunable})


def _cut(model: nn.Module, x: tuple[torch.Tensor, ...], heads: int, embed: int | None = None) -> nn.Module:
    """``model`` pruned by :func:`_plan`, verified by ``apply``."""
    graph, plan = _plan(model, x, heads, embed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return apply(model, graph, plan, example_inputs=x)


def _kept(out: torch.Tensor, model: nn.Module, padded: bool) -> torch.Tensor:
    """The positions that are not padding: torch's nested path leaves zeros at the others."""
    return out[~_padding()] if padded and isinstance(model, Encoder) else out


def _assert_plain_inference_matches(small: nn.Module, x: tuple[torch.Tensor, ...], padded: bool) -> None:
    """Eval under no_grad and under inference_mode give what the same model gives with grad enabled
    (the regular path, the one the pruner verified)."""
    small.eval()
    want = _kept(small(*x), small, padded).detach()
    with torch.no_grad():
        got = small(*x)
    torch.testing.assert_close(_kept(got, small, padded), want, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        got = small(*x)
    torch.testing.assert_close(_kept(got, small, padded), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True], ids=["no_padding", "padding"])
@pytest.mark.parametrize("make", [Encoder, Seq2Seq], ids=["encoder", "transformer"])
def test_heads_cut_transformer_runs_in_plain_inference(make: type[nn.Module], padded: bool) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = _inputs(model, padded)
    small = _cut(model, x, heads=2)
    attns = [m for m in small.modules() if isinstance(m, nn.MultiheadAttention)]
    assert attns and all(type(a) is PrunedMultiheadAttention and a.num_heads == 2 for a in attns)
    assert attns[0].in_proj_weight.shape == (24, 16)  # inner width 8 against embed_dim 16
    _assert_plain_inference_matches(small, x, padded)
    with torch.no_grad():  # the dense model with the cut heads masked, on torch's fused paths: the same
        torch.testing.assert_close(small(*x), mask(model, *_plan(model, x, heads=2))(*x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("heads", "embed", "kind"), [(3, 12, PrunedMultiheadAttention), (2, 8, nn.MultiheadAttention)],
                         ids=["odd_heads", "even_heads"])
def test_equal_widths_run_in_plain_inference_with_padding(heads: int, embed: int, kind: type[nn.Module]) -> None:
    """Heads and embedding cut alike: nn.MultiheadAttention would stay, but the nested batch the encoder
    packs is taken only on its fast path, closed to an odd head count; that one is replaced."""
    torch.manual_seed(0)
    model = Encoder().eval()
    # NOTE: verified without padding: the masked dense model would get nested tensors in its hooks
    small = _cut(model, _inputs(model, padded=False), heads=heads, embed=embed)
    attn = small.enc.layers[0].self_attn
    assert type(attn) is kind and (attn.num_heads, attn.embed_dim) == (heads, embed)
    assert small.enc.use_nested_tensor
    _assert_plain_inference_matches(small, _inputs(model, padded=True), padded=True)


def test_heads_cut_encoder_round_trips_and_runs_in_plain_inference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    x = _inputs(model, padded=True)
    small = _cut(model, x, heads=2).eval()
    assert list(small.state_dict()) == list(model.state_dict())
    folder = prunekit.save(small, tmp_path / "m", original=model)
    loaded = prunekit.load(folder, model=Encoder()).eval()
    assert type(loaded.enc.layers[1].self_attn) is PrunedMultiheadAttention
    assert list(loaded.state_dict()) == list(model.state_dict())
    want = _kept(small(*x), small, True).detach()
    with torch.no_grad():
        got = loaded(*x)
    torch.testing.assert_close(_kept(got, loaded, True), want, rtol=1e-4, atol=1e-5)


def test_an_embedding_cut_verifies_on_a_padded_example() -> None:
    """Verification runs both models off torch's fused paths, so the encoder's nested batch (eval,
    no grad, a padding mask) never reaches its recording hooks; the setting comes back after."""
    torch.manual_seed(0)
    model = Encoder().eval()
    x = _inputs(model, padded=True)
    small = _cut(model, x, heads=3, embed=12)  # NOTE: was a VerificationError (nested tensors in the hooks)
    assert torch.backends.mha.get_fastpath_enabled()
    assert small.enc.layers[0].self_attn.embed_dim == 12
    _assert_plain_inference_matches(small, x, padded=True)
