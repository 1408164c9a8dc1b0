"""A Fourier neural operator's spectral layer holds complex weights (``torch.cfloat``), and its data
are regression targets: scoring crashed (``linalg.vector_norm: dtype should be complex``), the
Taylor criterion dropped the imaginary part, and float labels met cross-entropy with a raw
``RuntimeError``. The layer is cut with its 1x1 bypass, and the gradient criteria take ``loss_fn``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.importance.stats import _first_order
from prunekit.structured import StructuredPruner, allocate, apply
from prunekit.structured.apply import mask


class Spectral(nn.Module):
    """``out_ft[:, :, :m, :m] = einsum("bixy,ioxy->boxy", x_ft[..., :m, :m], w)``, then irfft2."""

    def __init__(self, width: int, modes: int = 3) -> None:
        super().__init__()
        self.modes, self.width = modes, width
        self.w = nn.Parameter(torch.rand(width, width, modes, modes, dtype=torch.cfloat) / width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_ft = torch.fft.rfft2(x)
        out = torch.zeros(x.shape[0], self.width, x.size(-2), x.size(-1) // 2 + 1, dtype=torch.cfloat)
        m = self.modes
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :m, :m], self.w)
        return torch.fft.irfft2(out, s=(x.size(-2), x.size(-1)))


class FNO(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.lift = nn.Linear(3, width)
        self.spectral = Spectral(width)
        self.bypass = nn.Conv2d(width, width, 1)
        self.project = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x).permute(0, 3, 1, 2)
        h = F.gelu(self.spectral(h) + self.bypass(h))
        return self.project(h.permute(0, 2, 3, 1))


X = torch.randn(2, 8, 8, 3, generator=torch.Generator().manual_seed(0))
Y = torch.randn(2, 8, 8, 1, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("importance", ["l2", "fpgm"])
def test_complex_weights_are_scored_and_cut_with_their_layer(importance: str) -> None:
    torch.manual_seed(0)
    model = FNO().eval()
    graph = DependencyGraph.trace(model, X)
    plan = allocate(graph, score(graph, model, importance), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=X)
    assert pruned.spectral.w.shape == (4, 4, 3, 3) and pruned.spectral.w.is_complex() and pruned.spectral.width == 4
    torch.testing.assert_close(pruned(X), mask(model, graph, plan)(X), rtol=1e-4, atol=1e-5)


def test_taylor_of_a_complex_weight_keeps_its_imaginary_part() -> None:
    w, g = torch.tensor([1 + 2j]), torch.tensor([3 - 1j])
    assert _first_order(w, g).item() == pytest.approx(1.0)  # Re((1 + 2i)(3 + 1i)) = 3 - 2 = 1
    assert _first_order(torch.tensor([2.0]), torch.tensor([-3.0])).item() == -6.0


def test_float_labels_need_a_loss_and_taylor_takes_one() -> None:
    torch.manual_seed(0)
    model = FNO().eval()
    with pytest.raises(ConfigError, match="labels are floating point .* Pass loss_fn="):
        StructuredPruner({"ratio": 0.5}, importance="taylor").fit(model, X, batches=[(X, Y)])
    pruner = StructuredPruner({"ratio": 0.5}, importance="taylor")
    pruned = pruner.fit_transform(model, X, batches=[(X, Y)], loss_fn=F.mse_loss)
    assert pruned.spectral.width == 4 and pruner.scores_ and all(torch.isfinite(s).all() for s in pruner.scores_.values())
