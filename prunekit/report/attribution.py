"""Where a classifier looks, before and after: Captum attributions on a few fixed images, and a number
for how much the two explanations agree.

Grad-CAM (``LayerGradCam``) on the last convolution of a CNN, upsampled to the image; integrated
gradients (summed over channels, absolute) for any other image model. Agreement is Spearman's rank
correlation of the two maps per image, averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit._modes import modes_of, restore_modes

__all__ = ["agreement", "attribute", "compare", "last_conv"]


def last_conv(model: nn.Module) -> str | None:
    """Name of the model's last ``nn.Conv2d`` (module order), or None when it has none."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return names[-1] if names else None


def attribute(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``(maps [N, H, W], method)``: how much each pixel drove the ``targets`` logits. The model's
    mode and weights are unchanged (no ``.grad`` is left on its parameters)."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    modes = modes_of(model)
    model.eval()
    device = next(model.parameters()).device
    images, targets = images.detach().to(device).requires_grad_(True), targets.to(device)
    try:
        conv = last_conv(model)
        if conv is not None:
            cam = LayerGradCam(model, model.get_submodule(conv))
            maps = cam.attribute(images, target=targets, relu_attributions=True)
            maps = LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), "bilinear").sum(1)
            method = f"Grad-CAM on {conv}"
        else:
            maps = IntegratedGradients(model).attribute(images, target=targets, n_steps=16).abs().sum(1)
            method = "integrated gradients"
    finally:
        restore_modes(modes)
    return maps.detach().cpu(), method


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks from 0 with ties given their average rank, as Spearman's correlation needs (Grad-CAM maps
    hold many exact zeros: ranking them in index order would make unrelated maps agree)."""
    ordered, order = values.sort()
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(values.dtype)
    average = ends - (counts.to(values.dtype) + 1) / 2  # NOTE: mean of the 0-based ranks end-count .. end-1
    ranks = torch.empty_like(values)
    ranks[order] = average[inverse]
    return ranks


def agreement(before: torch.Tensor, after: torch.Tensor) -> list[float | None]:
    """Spearman's rank correlation of each pair of maps (None where a map is constant)."""
    scores: list[float | None] = []
    for a, b in zip(before.flatten(1).double(), after.flatten(1).double(), strict=True):
        ra, rb = _ranks(a), _ranks(b)
        ra, rb = ra - ra.mean(), rb - rb.mean()
        norm = float(ra.norm() * rb.norm())
        constant = bool(a.max() == a.min()) or bool(b.max() == b.min())
        scores.append(None if constant or norm == 0 else float((ra * rb).sum()) / norm)
    return scores


def compare(before: nn.Module, after: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """The evidence record: images, both maps, per-image agreement and its mean."""
    maps_before, method_before = attribute(before, images, targets)
    maps_after, method_after = attribute(after, images, targets)
    scores = agreement(maps_before, maps_after)
    known = [s for s in scores if s is not None]

    def plain(t: torch.Tensor, decimals: int = 5) -> list[Any]:
        return torch.round(t.detach().float(), decimals=decimals).tolist()  # type: ignore[no-any-return]

    return {"method": method_before if method_before == method_after else f"{method_before} / {method_after}",
            "targets": [int(t) for t in targets],
            "images": plain(images, 4),
            "before": plain(maps_before), "after": plain(maps_after), "agreement": scores,
            "mean_agreement": sum(known) / len(known) if known else None}
