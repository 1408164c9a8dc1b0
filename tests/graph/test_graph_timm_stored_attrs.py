"""Sizes timm blocks and models store outside their layers follow the cut: ``num_features`` where the
classifier reads several indices per channel (FastViT's depthwise-multiplier conv, CoaT's heads),
the sizes re-parameterisable blocks build their fused conv from (``reparameterize_model``), and a
per-stage ``embed_dim``."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from torch import nn

from prunekit.structured import StructuredPruner

timm = pytest.importorskip("timm")
from timm.models.byobnet import ByobNet, ByoModelCfg, _mobileone_bcfg, _rep_vgg_bcfg  # noqa: E402
from timm.models.fastvit import RepConditionalPosEnc  # noqa: E402
from timm.utils.model import reparameterize_model  # noqa: E402


def _fastvit() -> nn.Module:
    return timm.create_model(
        "fastvit_t8",
        pretrained=False,
        num_classes=10,
        layers=(1, 1, 1, 1),
        embed_dims=(16, 32, 64, 128),
        mlp_ratios=(3, 3, 3, 3),
        token_mixers=("repmixer",) * 3 + ("attention",),
        pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(3, 3))),
    )


def _coat() -> nn.Module:
    return timm.create_model(
        "coat_lite_tiny",
        pretrained=False,
        num_classes=10,
        img_size=32,
        embed_dims=(16, 16, 32, 32),
        serial_depths=(1, 1, 1, 1),
        num_heads=8,
    )


def _mobileone() -> nn.Module:
    blocks = _mobileone_bcfg(d=(2, 2, 1, 1), wf=(0.25, 0.25, 0.25, 0.25), num_conv_branches=2)
    return ByobNet(ByoModelCfg(blocks=blocks, stem_type="one", stem_chs=8), num_classes=10)


def _repvgg() -> nn.Module:
    blocks = _rep_vgg_bcfg(d=(2, 2, 1, 1), wf=(0.25, 0.25, 0.25, 0.25))
    return ByobNet(ByoModelCfg(blocks=blocks, stem_type="rep", stem_chs=8), num_classes=10)


def _levit() -> nn.Module:
    return timm.create_model(
        "levit_128s",
        pretrained=False,
        num_classes=10,
        img_size=64,
        embed_dim=(32, 48, 64),
        key_dim=8,
        num_heads=(2, 3, 4),
        depth=(1, 1, 1),
    )


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _pruned(make: Any, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = make().eval()
    for module in model.modules():  # NOTE: statistics away from identity, so a wrong fusion shows in values
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            nn.init.uniform_(module.weight, 0.5, 1.5)
    return model, StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, x).eval()


@pytest.mark.parametrize("make", [_fastvit, _coat], ids=["fastvit", "coat"])
def test_num_features_follow_a_classifier_reading_several_indices_per_channel(make: Any) -> None:
    x = _x()
    model, pruned = _pruned(make, x)
    with torch.no_grad():
        features = pruned.forward_head(pruned.forward_features(x), pre_logits=True)
    assert pruned.num_features == pruned.head_hidden_size == features.shape[1] < model.num_features
    pruned.reset_classifier(5)
    with torch.no_grad():
        assert pruned(x).shape == (2, 5)


@pytest.mark.parametrize("make", [_fastvit, _mobileone, _repvgg], ids=["fastvit", "mobileone", "repvgg"])
def test_a_pruned_reparameterisable_model_fuses_to_the_same_outputs(make: Any) -> None:
    x = _x()
    _, pruned = _pruned(make, x)
    with torch.no_grad():
        expected = pruned(x)
        fused = reparameterize_model(pruned)(x)
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)


def test_a_per_stage_embed_dim_follows_the_stage_widths() -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model, pruned = _pruned(_levit, x)
    widths: list[int] = []
    hooks = [
        stage.register_forward_hook(lambda _m, _i, out: widths.append(out.shape[-1]))
        for stage in pruned.stages
    ]
    with torch.no_grad():
        pruned(x)
    for hook in hooks:
        hook.remove()
    assert isinstance(pruned.embed_dim, tuple) and list(pruned.embed_dim) == widths
    assert sum(widths) < sum(model.embed_dim)
