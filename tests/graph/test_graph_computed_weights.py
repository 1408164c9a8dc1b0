"""Layers whose weight is computed entrywise from a parameter and a buffer of its shape: PixelCNN's
masked convolution (``F.conv2d(x, self.weight * self.mask)``) and MADE's masked linear layer
(``F.linear(x, self.mask * self.weight)``). Before, the product was no parameter, so every channel
the layer made or read was kept ("no parameter produces these channels"). Now the weight and its
mask are sliced together, the pruned model equals the masked dense one, and it saves and loads."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from _half_cut import cut_half


class MaskedConv2d(nn.Conv2d):
    def __init__(self, kind: str, *args: int, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))
        _, _, kh, kw = self.weight.shape
        self.mask[:, :, kh // 2, kw // 2 + (kind == "B"):] = 0
        self.mask[:, :, kh // 2 + 1:] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


class PixelCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(MaskedConv2d("A", 1, 16, 5, padding=2), nn.ReLU(),
                                 MaskedConv2d("B", 16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskedLinear(nn.Linear):
    def __init__(self, fin: int, fout: int, mask: torch.Tensor) -> None:
        super().__init__(fin, fout)
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.mask * self.weight, self.bias)


class MADE(nn.Module):
    """Autoregressive masks from input degrees 1..d and hidden degrees drawn below d."""

    def __init__(self, d: int = 6, hidden: int = 24) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        din = torch.arange(1, d + 1)
        dh = torch.randint(1, d, (hidden,), generator=g)
        self.l1 = MaskedLinear(d, hidden, dh[:, None] >= din[None])
        self.l2 = MaskedLinear(hidden, hidden, dh[:, None] >= dh[None])
        self.out = MaskedLinear(hidden, d, din[:, None] > dh[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.l2(F.relu(self.l1(x)))))


def test_masked_convolution_is_cut_with_its_mask(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = PixelCNN(), torch.randn(2, 1, 8, 8)
    graph, pruned = cut_half(model, x)
    first = next(g for g in graph.groups if any(m.tensor == "net.0.weight" and m.axis == 0 for m in g.members))
    assert first.prunable and {m.tensor for m in first.members} >= {"net.0.weight", "net.0.mask", "net.2.weight"}
    assert pruned.net[0].weight.shape == pruned.net[0].mask.shape == (8, 1, 5, 5)
    assert pruned.net[2].mask.shape == (8, 8, 3, 3) and pruned.net[2].out_channels == 8
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m", original=model), model=PixelCNN())
    torch.testing.assert_close(loaded(x), pruned(x))


def test_masked_linear_keeps_the_autoregressive_masks() -> None:
    torch.manual_seed(0)
    model, x = MADE(), torch.randn(3, 6)
    _, pruned = cut_half(model, x)
    assert pruned.l1.mask.shape == pruned.l1.weight.shape == (12, 6) and pruned.out.weight.shape == (6, 12)
    # NOTE: output i still depends on inputs before i only: the kept masks are the old ones' rows/columns
    jac = torch.autograd.functional.jacobian(lambda v: pruned(v[None])[0], torch.randn(6))
    assert torch.all(jac.triu() == 0)
