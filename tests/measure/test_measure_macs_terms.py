"""macs_terms: one counted pass, split by parameter, gives the MACs of the model with smaller weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from prunekit.measure import count_macs, macs_by_module
from prunekit.measure.macs import macs_terms


class GroupedAndFunctional(nn.Module):
    """Grouped and depthwise convs, a parameter used by F.linear outside any Linear, a tied weight
    read twice, and a matmul of two activations (booked as the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.proj = nn.Parameter(torch.randn(24, 32))
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(self.grouped(self.stem(x).relu()))
        tokens = y.flatten(2).transpose(1, 2)  # (B, HW, 32)
        z = nn.functional.linear(tokens, self.proj)  # (B, HW, 24)
        z = z + nn.functional.linear(tokens, self.proj)  # the same weight read twice
        mixed = z.transpose(1, 2) @ z  # (B, 24, 24): no parameter
        return self.head(mixed.mean(1))


def _vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (1, 3, 64, 64)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), (1, 3, 64, 64)),
    "vit": (_vit, (1, 3, 32, 32)),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), (1, 3, 64, 64)),
    "grouped_and_functional": (GroupedAndFunctional, (2, 3, 16, 16)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_terms_count_what_count_macs_counts(name: str) -> None:
    build, shape = MODELS[name]
    model, x = build().eval(), torch.randn(shape)
    terms = macs_terms(model, x)
    assert terms.macs == count_macs(model, x)
    assert dict(terms.by_module) == macs_by_module(model, x)
    assert terms.estimate({}) == terms.macs
    meta = macs_terms(model.to("meta"), x.to("meta"))  # shapes only: the same numbers
    assert (meta.macs, dict(meta.per_weight), meta.rest_flops) == (terms.macs, dict(terms.per_weight), terms.rest_flops)




def test_estimate_is_the_count_of_the_model_with_smaller_weights() -> None:
    wide = GroupedAndFunctional().eval()
    narrow = GroupedAndFunctional().eval()
    # NOTE: the same network with the grouped conv's 32 channels cut to 16 (depthwise, proj follow)
    narrow.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
    narrow.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    narrow.proj = nn.Parameter(torch.randn(24, 16))
    x = torch.randn(2, 3, 16, 16)
    terms = macs_terms(wide, x)
    shapes = {name: tuple(p.shape) for name, p in narrow.named_parameters()}
    assert terms.estimate(shapes) == count_macs(narrow, x) < terms.macs
    assert terms.rest_flops == 2 * 2 * 24 * 24 * 256  # the activation matmul: counted, not estimated


def test_attention_matmuls_are_the_rest_and_layers_record_their_input_shapes() -> None:
    model, x = _vit().eval(), torch.randn(1, 3, 32, 32)
    terms = macs_terms(model, x)
    # NOTE: q @ k^T and attn @ v per layer: 2 layers x 2 matmuls x (17 tokens)^2 x 32 wide
    assert terms.rest_flops // 2 == 2 * 2 * 17 * 17 * 32
    assert terms.inputs["conv_proj"] == (3, 32, 32) and terms.inputs["heads.head"] == (32,)
    assert terms.inputs["encoder.layers.encoder_layer_0.mlp.0"] == (17, 32)


@pytest.mark.parametrize("name", list(MODELS))
def test_results_built_from_shapes_count_the_same(name: str) -> None:
    from prunekit.graph.fastmeta import fast_result

    build, shape = MODELS[name]
    model, x = build().eval().to("meta"), torch.randn(shape, device="meta")
    slow, fast = macs_terms(model, x), macs_terms(model, x, shapes_only=fast_result)
    assert (fast.macs, dict(fast.per_weight), fast.rest_flops, dict(fast.by_module), dict(fast.inputs)) == \
        (slow.macs, dict(slow.per_weight), slow.rest_flops, dict(slow.by_module), dict(slow.inputs))
