"""Decomposition methods, chosen by name from ``METHODS`` (svd, asvd, tucker, cp).

A method is an object with the :class:`Method` interface: which layers it takes, the spectra its
ranks are chosen from, how ranks follow from a :class:`~prunekit.decompose.rank.RankSpec`, the MACs
of its factorised form, and the factorisation itself. Add one with
``METHODS.add("mine", MyMethod)``; ``decompose(model, method="mine")`` then uses it.

Rules of the built-in methods (documented choices):
- grouped and depthwise convs are left alone by every method (they are already cheap, and a
  low-rank split of a per-channel kernel saves nothing);
- on a 1x1 conv, Tucker-2 and CP reduce to a matrix factorisation, so ``tucker`` and ``cp`` use
  ``svd`` there;
- ``cp`` ranks from energy, a fraction or VBMF are the larger of the two Tucker-2 ranks the same
  rule gives (CP has no spectrum of its own); a fixed int is used as given. Under a ``Target(macs=...)``
  a CP layer's rank is a shared fraction of its break-even rank instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from prunekit.decompose.cp import cp_factorization
from prunekit.decompose.layers import LayerIO, layer_macs, original_macs
from prunekit.decompose.rank import RankSpec, Spectrum, axis_rank
from prunekit.decompose.svd import conv_factorization, linear_factorization, svd_spectrum, whitening
from prunekit.decompose.tucker import tucker2_factorization, unfolding_spectra
from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["Method", "METHODS", "SVD", "ActivationSVD", "Tucker2", "CP"]


class Method(Protocol):
    """What ``decompose`` asks of a decomposition method.

    ``kind`` names the factorised layout (a :mod:`prunekit.decompose.layers` kind) so a saved model
    can be rebuilt; ``needs_calibration`` means ``factorize`` wants the layer's input Gram matrix.
    """

    kind: str
    needs_calibration: bool

    def supports(self, module: nn.Module) -> str | None:
        """None when the method can factorise ``module``, else the reason it cannot."""

    def spectra(self, module: nn.Module, gram: torch.Tensor | None) -> tuple[Spectrum, ...]:
        """The spectra its ranks are chosen from."""

    def ranks(self, module: nn.Module, spectra: Sequence[Spectrum], spec: RankSpec) -> tuple[int, ...]:
        """The ranks ``spec`` gives this layer."""

    def macs(self, module: nn.Module, ranks: Sequence[int], io: LayerIO) -> int:
        """MACs of the factorised layer on the recorded shapes."""

    def level_ranks(self, module: nn.Module, spectra: Sequence[Spectrum], level: float,
                    io: LayerIO) -> tuple[int, ...]:
        """Ranks at a shared ``level`` in [0, 1], monotone in it; a MACs target bisects on it."""

    def factorize(self, module: nn.Module, ranks: Sequence[int], gram: torch.Tensor | None,
                  **options: Any) -> tuple[nn.Module, float]:
        """The factorised replacement and its relative reconstruction error."""


def _plain_conv(module: nn.Module) -> str | None:
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} is not an nn.Conv2d"
    if module.groups != 1:
        return f"grouped/depthwise conv (groups={module.groups}) is left alone"
    return None


class SVD:
    """Truncated SVD of nn.Linear, or of an nn.Conv2d kernel seen as N x C*kh*kw."""

    kind = "svd"
    needs_calibration = False

    def supports(self, module: nn.Module) -> str | None:
        if isinstance(module, nn.Linear):
            return None
        return _plain_conv(module)

    def spectra(self, module: nn.Module, gram: torch.Tensor | None) -> tuple[Spectrum, ...]:
        return (svd_spectrum(module),)

    def ranks(self, module: nn.Module, spectra: Sequence[Spectrum], spec: RankSpec) -> tuple[int, ...]:
        # NOTE: an (r_in, r_out) pair is for Tucker-2; a 1x1 conv it reaches is factorised at the smaller.
        fixed = min(spec.value) if spec.kind == "fixed" and isinstance(spec.value, tuple) else None
        return (axis_rank(spectra[0], spec, fixed),)

    def macs(self, module: nn.Module, ranks: Sequence[int], io: LayerIO) -> int:
        return layer_macs("svd", module, ranks, io)

    def level_ranks(self, module: nn.Module, spectra: Sequence[Spectrum], level: float,
                    io: LayerIO) -> tuple[int, ...]:
        return self.ranks(module, spectra, RankSpec("energy", level))

    def factorize(self, module: nn.Module, ranks: Sequence[int], gram: torch.Tensor | None,
                  **options: Any) -> tuple[nn.Module, float]:
        if isinstance(module, nn.Linear):
            return linear_factorization(module, int(ranks[0]))
        return conv_factorization(module, int(ranks[0]))


class ActivationSVD(SVD):
    """SVD-LLM whitening: the SVD of W L (L L^T = X^T X of calibration inputs) is truncated."""

    kind = "asvd"
    needs_calibration = True

    def __init__(self, damping: float = 0.01) -> None:
        self.damping = damping
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def _whitening(self, gram: torch.Tensor | None) -> torch.Tensor:
        # NOTE: spectra and factorize need the same Cholesky factor; compute it once per Gram.
        if gram is None:
            raise ConfigError("asvd: no calibration Gram matrix for this layer. Pass calibration "
                              "batches that run through it.")
        if self._cached is None or self._cached[0] is not gram:
            self._cached = (gram, whitening(gram, self.damping))
        return self._cached[1]

    def supports(self, module: nn.Module) -> str | None:
        return None if isinstance(module, nn.Linear) else "asvd factorises nn.Linear only"

    def spectra(self, module: nn.Module, gram: torch.Tensor | None) -> tuple[Spectrum, ...]:
        return (svd_spectrum(module, self._whitening(gram)),)

    def factorize(self, module: nn.Module, ranks: Sequence[int], gram: torch.Tensor | None,
                  **options: Any) -> tuple[nn.Module, float]:
        return linear_factorization(module, int(ranks[0]), chol=self._whitening(gram))


class Tucker2:
    """Tucker-2 of a k x k nn.Conv2d kernel (input and output channel modes)."""

    kind = "tucker2"
    needs_calibration = False

    def supports(self, module: nn.Module) -> str | None:
        return _plain_conv(module)

    def spectra(self, module: nn.Module, gram: torch.Tensor | None) -> tuple[Spectrum, ...]:
        return unfolding_spectra(module)

    def ranks(self, module: nn.Module, spectra: Sequence[Spectrum], spec: RankSpec) -> tuple[int, ...]:
        pair = spec.value if spec.kind == "fixed" and isinstance(spec.value, tuple) else (None, None)
        return axis_rank(spectra[0], spec, pair[0]), axis_rank(spectra[1], spec, pair[1])

    def macs(self, module: nn.Module, ranks: Sequence[int], io: LayerIO) -> int:
        return layer_macs("tucker2", module, ranks, io)

    def level_ranks(self, module: nn.Module, spectra: Sequence[Spectrum], level: float,
                    io: LayerIO) -> tuple[int, ...]:
        return self.ranks(module, spectra, RankSpec("energy", level))

    def factorize(self, module: nn.Module, ranks: Sequence[int], gram: torch.Tensor | None,
                  **options: Any) -> tuple[nn.Module, float]:
        return tucker2_factorization(module, ranks)


class CP(Tucker2):
    """CP (rank-R canonical polyadic) decomposition of a k x k nn.Conv2d kernel, by ALS."""

    kind = "cp"

    def __init__(self, iterations: int = 100, seed: int = 0) -> None:
        self.iterations, self.seed = iterations, seed

    def ranks(self, module: nn.Module, spectra: Sequence[Spectrum], spec: RankSpec) -> tuple[int, ...]:
        if spec.kind == "fixed" and not isinstance(spec.value, tuple):
            return (int(spec.value),)
        return (max(super().ranks(module, spectra, spec)),)

    def macs(self, module: nn.Module, ranks: Sequence[int], io: LayerIO) -> int:
        return layer_macs("cp", module, ranks, io)

    def level_ranks(self, module: nn.Module, spectra: Sequence[Spectrum], level: float,
                    io: LayerIO) -> tuple[int, ...]:
        # NOTE: CP has no spectrum; the level is the fraction of the break-even rank (the rank at
        # which the CP form costs as many MACs as the original), so each layer keeps ~level of its MACs.
        per_rank = layer_macs("cp", module, (1,), io)
        break_even = original_macs(module, io) / max(per_rank, 1)
        return (max(1, int(level * break_even)),)

    def factorize(self, module: nn.Module, ranks: Sequence[int], gram: torch.Tensor | None,
                  **options: Any) -> tuple[nn.Module, float]:
        return cp_factorization(module, int(ranks[0]), iterations=self.iterations, seed=self.seed)


METHODS: Registry[Method] = Registry(
    "decomposition method",
    list_hint="Known: svd, asvd, tucker, cp and auto (prunekit.decompose.METHODS.names())")
METHODS.add("svd", SVD)
METHODS.add("asvd", ActivationSVD)
METHODS.add("tucker", Tucker2)
METHODS.add("cp", CP)
