"""Hard Concrete gates: the L0 relaxation of Louizos, Welling and Kingma (ICLR 2018).

Each gate ``z`` in [0, 1] is a stretched, clipped binary-concrete sample: with ``u ~ U(0, 1)``,
``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``, ``z = clip(s * (zeta - gamma) + gamma, 0, 1)``.
The stretch puts real probability mass on exactly 0 and exactly 1, and the probability that a gate
is open, ``P(z > 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))``, is differentiable in
``log_alpha`` — the expected L0 norm (and, here, the expected MACs) can be trained with the loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["HardConcrete"]


class HardConcrete(nn.Module):
    """``n`` gates with learnable ``log_alpha``; sampled in training, deterministic in eval.

    Args:
        n: number of gates (one per channel, head or neuron of a group).
        init_log_alpha: starting ``log_alpha``; 3.0 opens every gate fully in eval mode (the
            model's function is unchanged when gates are attached) and ~99 % in training.
        beta, gamma, zeta: temperature and stretch interval, the paper's 2/3, -0.1, 1.1.
    """

    def __init__(self, n: int, *, init_log_alpha: float = 3.0, beta: float = 2 / 3,
                 gamma: float = -0.1, zeta: float = 1.1) -> None:
        super().__init__()
        if n < 1:
            raise ConfigError(f"HardConcrete: needs at least one gate; got n={n}.")
        if not (gamma < 0 < 1 < zeta and beta > 0):
            raise ConfigError(f"HardConcrete: needs gamma < 0, zeta > 1 and beta > 0; got gamma={gamma}, "
                              f"zeta={zeta}, beta={beta}. The paper uses -0.1, 1.1 and 2/3.")
        self.log_alpha = nn.Parameter(torch.full((n,), float(init_log_alpha)))
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)

    def forward(self) -> torch.Tensor:
        """A sample of the gates (training) or their deterministic value (eval)."""
        if not self.training:
            return self.deterministic()
        eps = 1e-6
        u = torch.rand_like(self.log_alpha).clamp(eps, 1 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate values ``clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``."""
        return (torch.sigmoid(self.log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def open_probability(self, shift: float = 0.0) -> torch.Tensor:
        """``P(z > 0)`` per gate, differentiable in ``log_alpha`` (the expected L0 norm per gate); with
        ``shift``, as if every ``log_alpha`` were moved by it (how the budget's projection finds its shift)."""
        return torch.sigmoid(self.log_alpha + shift - self.beta * math.log(-self.gamma / self.zeta))

    def extra_repr(self) -> str:
        return f"n={self.log_alpha.numel()}, beta={self.beta:.3f}, gamma={self.gamma}, zeta={self.zeta}"
