"""Widths timm models store for ``reset_classifier`` and ``forward_head`` (``num_features``,
``head_hidden_size``, ViT's ``embed_dim``, a head's ``in_features`` / ``hidden_size``) follow the cut,
so a pruned backbone takes a new classifier; models without one (``num_classes=0``,
``features_only``) keep their output widths."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit.structured import StructuredPruner

timm = pytest.importorskip("timm")

FAMILIES: dict[str, dict[str, Any]] = {
    "vit_tiny_patch16_224": {"img_size": 32, "patch_size": 8, "depth": 2},
    "resnet18": {},
    "efficientnet_b0": {},
    "convnext_atto": {"head_hidden_size": 64},
    "mobilenetv3_small_050": {},
    "swin_tiny_patch4_window7_224": {"img_size": 32, "patch_size": 2, "window_size": 4, "depths": (1, 1, 1, 1),
                                     "embed_dim": 24, "num_heads": (1, 1, 2, 2)},
    "densenet121": {"growth_rate": 8, "block_config": (1, 1, 1, 1)},  # NOTE: the classifier reads a concat
}


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(name: str, **overrides: Any) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **{"num_classes": 10, **FAMILIES[name], **overrides}).eval()


def _classifier_name(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is model.get_classifier())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_pruned_timm_model_takes_a_new_classifier(name: str) -> None:
    model, x = _model(name), _x()
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1, ignore=[_classifier_name(model)]).fit_transform(model, x)
    classifier = pruned.get_classifier()
    assert classifier.in_features == pruned.head_hidden_size < model.head_hidden_size  # the classifier's input was cut
    if "embed_dim" in vars(model) and model.embed_dim == model.num_features:
        assert pruned.embed_dim == pruned.num_features
    pruned.reset_classifier(5)
    assert pruned(x).shape == pruned.forward_head(pruned.forward_features(x)).shape == (2, 5)
    head = getattr(pruned, "head", None)
    if isinstance(head, nn.Module) and hasattr(head, "reset"):  # NOTE: timm's classifier heads rebuild from in_features
        head.reset(3)
        assert pruned(x).shape == (2, 3)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "convnext_atto"])
def test_a_model_without_classifier_keeps_its_output_and_takes_one(name: str) -> None:
    model, x = _model(name, num_classes=0), _x()
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, x)
    assert pruned(x).shape == model(x).shape == (2, pruned.head_hidden_size)
    pruned.reset_classifier(5)  # NOTE: MobileNetV3 checks its conv_head against num_features
    assert pruned(x).shape == (2, 5)


def test_features_only_models_keep_their_feature_widths() -> None:
    torch.manual_seed(0)
    model, x = timm.create_model("resnet18", pretrained=False, features_only=True).eval(), _x()
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, x)
    assert [t.shape for t in pruned(x)] == [t.shape for t in model(x)]
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
