"""Which layers decompose factorises: only those that compute their plain kind's forward; every
other candidate (its own forward, hooks, a tied weight, another conv kind) is listed with the reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.decompose import decompose


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


class Scaled(nn.Conv2d):
    """A user subclass that computes in its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class Centred(nn.Conv2d):
    """A user subclass that changes the weight in ``_conv_forward`` (what StdConv2d-likes do)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return super()._conv_forward(x, weight - weight.mean(), bias)


class Renamed(nn.Conv2d):
    """A subclass with nn.Conv2d's own forward: factorised like nn.Conv2d."""


def _subclasses() -> list[tuple[str, nn.Module, str]]:
    timm = pytest.importorskip("timm")
    return [("Conv2dSame", timm.layers.Conv2dSame(16, 32, 3, stride=2), "forward"),
            ("StdConv2d", timm.layers.StdConv2d(16, 32, 3, padding=1), "forward"),
            ("Scaled", Scaled(16, 32, 3, padding=1), "forward"),
            ("Centred", Centred(16, 32, 3, padding=1), "_conv_forward")]


X = torch.randn(2, 16, 15, 15, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["svd", "tucker"])
def test_conv_subclass_computing_in_its_own_forward_is_listed_not_factorised(method: str) -> None:
    for cls_name, layer, where in _subclasses():
        torch.manual_seed(0)
        model = nn.Sequential(layer, nn.Conv2d(32, 8, 3, padding=1)).eval()
        result = decompose(model, example_inputs=X, method=method, rank=1.0, options={"force": True})
        assert [r.name for r in result.layers] == ["1"], cls_name
        reason = dict(result.skipped)["0"]
        assert f"its class {cls_name} computes in its own {where}" in reason
        out, ref = result.model(X), model(X)
        assert out.shape == ref.shape and _rel(out, ref) < 1e-4, cls_name


def test_subclass_with_the_plain_forward_and_a_parametrized_weight_are_factorised() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Renamed(16, 32, 3, padding=1),
                          nn.utils.parametrizations.weight_norm(nn.Conv2d(32, 8, 3, padding=1))).eval()
    result = decompose(model, example_inputs=X, method="svd", rank=1.0, options={"force": True})
    assert [r.name for r in result.layers] == ["0", "1"] and result.skipped == ()
    assert _rel(result.model(X), model(X)) < 1e-4


def test_hooks_and_a_forward_replaced_on_the_instance_are_listed() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)).eval()
    model[0].register_forward_hook(lambda m, args, out: out * 3)
    model[1].register_forward_pre_hook(lambda m, args: (args[0] * 3,))
    plain = model[2].forward
    model[2].forward = lambda x: plain(x) + 1  # type: ignore[method-assign]
    x = torch.randn(4, 8)
    result = decompose(model, example_inputs=x, method="svd", rank=1.0, options={"force": True})
    skipped = dict(result.skipped)
    assert result.layers == () and "forward hooks" in skipped["0"] and "forward hooks" in skipped["1"]
    assert "replaced on the instance" in skipped["2"]
    assert torch.equal(result.model(x), model(x))


def test_conv_kinds_it_does_not_factorise_are_listed_with_the_reason() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)).eval()
    conv1d, conv3d = nn.Conv1d(4, 8, 3), nn.Conv3d(4, 8, 3)
    result = decompose(model, example_inputs=X, method="svd", rank=1.0, options={"force": True})
    assert [r.name for r in result.layers] == ["1"]
    assert dict(result.skipped)["0"].startswith("ConvTranspose2d: decompose factorises nn.Linear, nn.Conv2d")
    assert _rel(result.model(X), model(X)) < 1e-4
    for layer, x in ((conv1d, torch.randn(2, 4, 9)), (conv3d, torch.randn(2, 4, 5, 5, 5))):
        got = decompose(nn.Sequential(layer), example_inputs=x, method="tucker", rank=1.0, include=["0"])
        assert got.layers == () and type(layer).__name__ in dict(got.skipped)["0"]


def test_a_tied_weight_is_listed_not_factorised() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 16)
            self.mid = nn.Linear(16, 16)
            self.head = nn.Linear(16, 20, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(F.relu(self.mid(self.embed(ids))))

    torch.manual_seed(0)
    model, ids = Tied().eval(), torch.randint(0, 20, (2, 5))
    result = decompose(model, example_inputs=ids, method="svd", rank=1.0, options={"force": True})
    assert [r.name for r in result.layers] == ["mid"]
    assert dict(result.skipped)["head"].startswith("its weight is tied to 'embed.weight'")
    assert result.model.get_submodule("head").weight is result.model.get_submodule("embed").weight


def test_timm_models_with_conv_subclasses_keep_their_outputs_at_full_rank() -> None:
    timm = pytest.importorskip("timm")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    eff = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=10).eval()
    result = decompose(eff, example_inputs=x, method="tucker", rank=1.0, options={"force": True})
    assert len(result.layers) > 20 and "Conv2dSame" in dict(result.skipped)["conv_stem"]
    assert _rel(result.model(x), eff(x)) < 1e-4
    bit = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=10).eval()
    result = decompose(bit, example_inputs=x, method="svd", rank=1.0, options={"force": True},
                       include=["stages.0.*"])
    assert result.layers == () and len(result.skipped) == 10
    assert all("StdConv2d computes in its own forward" in why for _, why in result.skipped)
    assert _rel(result.model(x), bit(x)) < 1e-4


def _gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_conv1d_factorised_at_full_rank_and_tied_head_listed() -> None:
    model, ids = _gpt2(), torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    result = decompose(model, example_inputs=ids, method="svd", rank=1.0, options={"force": True})
    names = [r.name for r in result.layers]
    assert len(names) == 8 and all(n.startswith("transformer.h.") for n in names)
    assert {r.name: r.shape for r in result.layers}["transformer.h.0.attn.c_attn"] == (32, 96)  # Conv1D: in x out
    assert dict(result.skipped)["lm_head"].startswith("its weight is tied to 'transformer.wte.weight'")
    assert _rel(result.model(ids).logits, model(ids).logits) < 1e-4


def test_gpt2_decomposed_saves_and_loads_with_equal_outputs(tmp_path) -> None:
    model, ids = _gpt2(), torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    result = decompose(model, example_inputs=ids, method="svd", rank=0.5, options={"force": True})
    folder = prunekit.save(result.model, tmp_path / "gpt2", transforms=[result])
    loaded = prunekit.load(folder)
    assert isinstance(loaded.transformer.h[0].attn.c_proj, nn.Sequential)
    assert torch.equal(loaded(ids).logits, result.model(ids).logits)


class Attention(nn.Module):
    """nn.MultiheadAttention (whose out_proj it never calls: its forward reads the weight) and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.attn = nn.Embedding(64, 32), nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc, self.fc2, self.head = nn.Linear(32, 64), nn.Linear(64, 32), nn.Linear(32, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = h + self.attn(h, h, h)[0]
        return self.head(self.fc2(torch.relu(self.fc(h))).mean(1))


@pytest.mark.parametrize("method", ["svd", "asvd", "auto"])
def test_a_layer_the_example_never_calls_is_listed_before_calibration(method: str) -> None:
    """asvd once gathered out_proj's calibration inputs first and failed: 'never run by the calibration batches'."""
    torch.manual_seed(0)
    model, ids = Attention().eval(), torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(0))
    result = decompose(model, example_inputs=ids, method=method, rank=0.5, calibration=[ids], progress=False)
    assert dict(result.skipped)["attn.out_proj"] == "not run by example_inputs"
    assert [r.name for r in result.layers] == ["fc", "fc2", "head"]
    assert {r.kind for r in result.layers} == {"svd" if method == "svd" else "asvd"}
