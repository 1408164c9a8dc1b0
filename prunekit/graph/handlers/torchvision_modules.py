"""torchvision modules that record their output width at construction: group ties, so it follows a cut.

``BackboneWithFPN.out_channels`` is what torchvision's detectors build their heads from
(``RPNHead(backbone.out_channels, ...)``); the conv blocks' ``out_channels`` (``Conv2dNormActivation``,
MobileNet's ``InvertedResidual``, EfficientNet's ``MBConv``) are what ``_mobilenet_extractor`` reads
to put an FPN on a backbone. No forward reads them, so the trace never sees them: each is joined,
as a size attribute, to the group of the layers whose outputs it counts, and ``apply`` rewrites it
(as ``timm_modules.model_widths`` does for timm's ``num_features``). Only where those outputs lie
whole in one group of that size; otherwise the width is left as it is. Classes are known by name:
prunekit never imports torchvision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from prunekit.graph.groups import ChannelGroup, Member
from prunekit.graph.handlers.shape import size_attribute
from prunekit.graph.registry import register_group_tie

__all__ = ["output_widths"]


def _convs(module: nn.Module, *under: str) -> list[str]:
    """Names (relative to ``module``) of the convs inside its children named ``under``."""
    return [name for name, child in module.named_modules()
            if isinstance(child, nn.modules.conv._ConvNd) and name.startswith(tuple(f"{u}." for u in under))]


def _fpn_outputs(module: nn.Module) -> list[str]:
    """Every conv that writes a level of the FPN's output: each level's 3x3 conv and the extra
    levels' convs (RetinaNet's P6 and P7; none for the max-pooled level)."""
    return _convs(module, "fpn.layer_blocks", "fpn.extra_blocks")


def _block_output(module: nn.Module) -> list[str]:
    """The projecting conv of a MobileNet or EfficientNet block: the last conv of its sequence
    (``block``, or MobileNetV2's ``conv``); the residual sum and stochastic depth keep its channels."""
    return _convs(module, "block" if "block" in module._modules else "conv")[-1:]


# class name -> the convs (relative names) whose output channels the class's out_channels counts.
_OUTPUTS: dict[str, Callable[[nn.Module], list[str]]] = {
    "BackboneWithFPN": _fpn_outputs,
    # NOTE: (conv, norm, activation) in this order; the norm and the activation keep the conv's channels
    "ConvNormActivation": lambda m: ["0"], "Conv2dNormActivation": lambda m: ["0"],
    "Conv3dNormActivation": lambda m: ["0"],
    "InvertedResidual": _block_output, "MBConv": _block_output, "FusedMBConv": _block_output,
}


@register_group_tie
def output_widths(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """``groups`` with the ``out_channels`` torchvision modules store joined to the group of the
    outputs it counts, where all those outputs are one whole group of exactly that many channels."""
    producers = {(m.tensor, m.axis): g for g in groups for m in g.members
                 if m.role == "producer" and m.start == 0 and m.inner == 1}
    joined = {m.tensor for g in groups for m in g.attrs}
    extra: dict[str, list[Member]] = {}
    for name, module in model.named_modules():
        width, outputs = vars(module).get("out_channels"), _OUTPUTS.get(type(module).__name__)
        attr = size_attribute(name, "out_channels", None)
        if (outputs is None or type(width) is not int or not type(module).__module__.startswith("torchvision.")
                or attr in joined):
            continue
        convs = outputs(module)
        found = {producers.get((f"{name}.{conv}.weight" if name else f"{conv}.weight", 0)) for conv in convs}
        group = found.pop() if len(found) == 1 else None
        if (group is not None and group.size == width
                and all(module.get_submodule(conv).weight.shape[0] == width for conv in convs)):
            extra.setdefault(group.id, []).append(Member(attr, 0, 0, 1, "passive"))
    return tuple(dataclasses.replace(g, attrs=g.attrs + tuple(extra[g.id])) if g.id in extra else g
                 for g in groups)
