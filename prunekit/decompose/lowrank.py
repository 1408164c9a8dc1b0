"""``decompose``: replace a model's Linear and Conv2d layers by low-rank factorised ones.

Each chosen layer becomes an ``nn.Sequential`` of standard layers (see
:mod:`prunekit.decompose.layers`), so the result is an ordinary module that trains, saves with
safetensors and exports to ONNX. Ranks follow one rule for the whole model: a fixed rank, a
fraction of full rank, the energy kept, EVBMF, or a ``target`` (``Target(macs=...)``: the fraction
of the model's MACs to keep; one shared level, the energy kept, is bisected until the estimate meets it). A layer whose
factorised form would not have fewer MACs than the original is left alone and reported.

Candidates are every nn.Linear, every torch conv kind and transformers' Conv1D (as the Linear it
computes). Only a layer that computes exactly its plain kind's forward of its weight is factorised:
a subclass with its own ``forward``/``_conv_forward`` (timm's ``Conv2dSame`` pads in its forward,
``StdConv2d`` standardises its weight), a forward replaced on the instance, forward hooks, a weight
tied to another parameter, and conv kinds other than nn.Conv2d are listed in ``skipped`` with the
reason. A parametrized weight (weight_norm, a mask) is factorised as the weight it computes.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils import parametrize

from prunekit.decompose.calibration import capture_calls, collect_grams
from prunekit.decompose.layers import LayerIO, conv1d_class, linear_view, original_macs
from prunekit.decompose.methods import METHODS, Method
from prunekit.decompose.rank import RankSpec, Spectrum, rank_spec
from prunekit.errors import ConfigError, UnknownNameError, did_you_mean
from prunekit.measure import count_macs
from prunekit._options import OneLineErrors
from prunekit.config import parse_config

__all__ = ["decompose", "check_arguments", "not_plain", "DecomposeOptions", "DecomposeResult", "LayerRecord"]


class DecomposeOptions(BaseModel, metaclass=OneLineErrors):
    """Rare options of :func:`decompose` (the ``options`` key of a recipe stage)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    damping: float = Field(0.01, ge=0, description="asvd: X^T X is damped by this x mean(diag)")
    cp_iterations: int = Field(100, ge=1, description="cp: most ALS iterations per layer")
    seed: int = Field(0, ge=0, description="cp: seed of the ALS fit")
    force: bool = Field(False, description="factorise chosen layers even when it saves no MACs")
    max_batches: int | None = Field(None, ge=1, description="asvd: most calibration batches used")


@dataclass(frozen=True)
class LayerRecord:
    """One factorised layer: its name, kind, original weight shape, ranks, MACs and error.

    ``shape`` is the layer's own weight shape (in x out for transformers' Conv1D), as load checks it.

    ``error`` is the relative Frobenius error of the reconstructed weight (for ``asvd``, of the
    weight times the whitening factor, i.e. of the layer's outputs on the calibration inputs).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    ranks: tuple[int, ...]
    macs_before: int
    macs_after: int
    error: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "ranks": list(self.ranks), "macs_before": self.macs_before,
                "macs_after": self.macs_after, "error": self.error}


@dataclass(frozen=True)
class DecomposeResult:
    """What :func:`decompose` returns: the model and what happened to each layer."""

    model: nn.Module
    layers: tuple[LayerRecord, ...]
    skipped: tuple[tuple[str, str], ...]
    macs_before: int
    macs_after: int
    target: float | None = None  # NOTE: the MACs fraction a Target(macs=...) asked for
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def macs_kept(self) -> float:
        """Fraction of the model's MACs kept (measured by ``count_macs``)."""
        return self.macs_after / max(self.macs_before, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no model)."""
        return {"layers": [r.to_dict() for r in self.layers],
                "skipped": [{"name": n, "reason": why} for n, why in self.skipped],
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_kept": self.macs_kept,
                "target": None if self.target is None else {"macs": self.target}, "notes": list(self.notes)}

    def table(self) -> str:
        """Per-layer table: kind, shape, ranks, MACs before -> after, error."""
        head = ("layer", "kind", "weight shape", "ranks", "MACs before", "MACs after", "rel. error")
        rows = [(r.name, r.kind, "x".join(map(str, r.shape)), ",".join(map(str, r.ranks)),
                 f"{r.macs_before:,}", f"{r.macs_after:,}", f"{r.error:.4f}") for r in self.layers]
        widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(head)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        lines.append(f"{len(self.layers)} layers factorised, {len(self.skipped)} left alone; MACs "
                     f"{self.macs_before:,} -> {self.macs_after:,} ({100 * self.macs_kept:.1f} % kept"
                     + (f", target {100 * self.target:.1f} %)" if self.target else ")"))
        return "\n".join(lines)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    method: Method
    ios: tuple[LayerIO, ...]  # NOTE: every call's shapes; a layer shared across input sizes has several
    shape: tuple[int, ...] = ()  # NOTE: the layer's own weight shape; ``module`` may be its Linear view
    spectra: tuple[Spectrum, ...] = ()
    gram: torch.Tensor | None = None

    @property
    def io(self) -> LayerIO:
        """The call with the most MACs: what a method's ``level_ranks`` (one call's shapes) is given."""
        return max(self.ios, key=lambda io: original_macs(self.module, io))

    def before(self) -> int:
        return sum(original_macs(self.module, io) for io in self.ios)

    def after(self, ranks: Sequence[int]) -> int:
        return sum(self.method.macs(self.module, ranks, io) for io in self.ios)


_BUILTIN_CHOICES = ("auto",)


def _method_for(name: str, module: nn.Module, calibrated: bool, options: DecomposeOptions) -> Method | str:
    """The method object for ``module`` under the user's ``name``, or the reason it is left alone."""
    is_pointwise_conv = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
    if name == "auto":
        if isinstance(module, nn.Linear):
            name = "asvd" if calibrated else "svd"
        else:
            name = "svd" if is_pointwise_conv else "tucker"
    elif name in ("tucker", "cp") and is_pointwise_conv:
        name = "svd"  # NOTE: Tucker-2/CP of a 1x1 kernel is a matrix factorisation.
    kwargs: dict[str, Any] = {}
    if name == "asvd":
        kwargs = {"damping": options.damping}
    elif name == "cp":
        kwargs = {"iterations": options.cp_iterations, "seed": options.seed}
    method = METHODS.create(name, **kwargs)
    reason = method.supports(module)
    return method if reason is None else f"{name}: {reason}"


def _check_method(method: str) -> None:
    if not isinstance(method, str):
        raise ConfigError(f"decompose: 'method' must be a name such as 'svd'; got {method!r}.")
    if method not in _BUILTIN_CHOICES and method not in METHODS:
        known = [*METHODS.names(), *_BUILTIN_CHOICES]
        raise UnknownNameError(f"Unknown decomposition method '{method}'.{did_you_mean(method, known)} "
                               f"Known: {', '.join(known)}.")


def _check_target(target: Any, rank: Any, energy: Any) -> float | None:
    """The MACs fraction a ``Target(macs=...)`` (or its mapping) asks for; None without a target."""
    if target is None:
        return None
    if rank is not None or energy is not None:
        raise ConfigError("decompose: 'target' chooses every rank itself; got it together with "
                          f"rank={rank!r}/energy={energy!r}. Pass only one of rank, energy, target.")
    from prunekit.structured.target import macs_fraction  # NOTE: lazy: the budget object, not the search.

    return macs_fraction(target, where="decompose", what="ranks are chosen", example=0.5)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _is_candidate(module: nn.Module) -> bool:
    """A layer decompose considers: nn.Linear, any torch conv kind, transformers' Conv1D."""
    conv1d = conv1d_class()
    return isinstance(module, (nn.Linear, *_CONVS)) or (conv1d is not None and isinstance(module, conv1d))


def _plain_methods(module: nn.Module) -> tuple[type, tuple[str, ...]] | None:
    """The plain class ``module`` is taken as and the methods that must be that class's own."""
    conv1d = conv1d_class()
    if isinstance(module, nn.Linear):
        return nn.Linear, ("forward",)
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d, ("forward", "_conv_forward")
    if conv1d is not None and isinstance(module, conv1d):
        return conv1d, ("forward",)
    return None


def owners_of(model: nn.Module) -> dict[int, list[str]]:
    """Every name each parameter is reachable under (a tied parameter has several)."""
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    return owners


def not_plain(module: nn.Module, name: str = "", owners: dict[int, list[str]] | None = None) -> str | None:
    """Why ``module`` is not a layer whose output a factorised one reproduces, or None when it is.

    It must be an nn.Linear, nn.Conv2d or transformers' Conv1D whose forward (and ``_conv_forward``)
    is that class's, not replaced on the instance, without forward hooks (its replacement would run
    neither), and with a weight no other parameter name shares (``owners``: :func:`owners_of` of the
    model; factorising a tied weight would untie it). A parametrized weight is read as computed.
    """
    cls = parametrize.type_before_parametrizations(module)
    plain = _plain_methods(module)
    if plain is None:
        return (f"{cls.__name__}: decompose factorises nn.Linear, nn.Conv2d and transformers' Conv1D "
                f"only")
    base, methods = plain
    for method in methods:
        if getattr(type(module), method) is not getattr(base, method):
            return (f"its class {cls.__name__} computes in its own {method}; a factorised "
                    f"{base.__name__} would not give its outputs")
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and nn.parameter.is_lazy(weight):
        return "a lazy layer not yet run (its weight has no shape); run the model once before decompose"
    if "forward" in vars(module):
        return "its forward is replaced on the instance; a factorised layer would not give its outputs"
    if module._forward_hooks or module._forward_pre_hooks:
        return "it has forward hooks, which its factorised replacement would not run"
    tied = [n for n in (owners or {}).get(id(weight), []) if n != f"{name}.weight"]
    if tied:
        return f"its weight is tied to '{tied[0]}' (one shared tensor); factorising it would untie them"
    return None


def _select(model: nn.Module, include: Sequence[str] | None, ignore: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Candidate layers (Linear, conv, Conv1D) whose names match ``include`` (all if None) and not ``ignore``."""
    if isinstance(include, str) or isinstance(ignore, str):
        raise ConfigError("decompose: 'include' and 'ignore' are lists of module-name patterns; got a "
                          "bare string. Pass e.g. include=['features.*'].")
    layers = [(n, m) for n, m in model.named_modules() if _is_candidate(m)]
    names = [n for n, _ in layers]
    for pattern in [*(include or ()), *ignore]:
        if not fnmatch.filter(names, pattern):
            raise ConfigError(f"decompose: the pattern '{pattern}' matches no Linear or conv layer."
                              f"{did_you_mean(pattern, names)} Layers are named as in "
                              f"model.named_modules(), e.g. {names[:3]}.")
    return [(n, m) for n, m in layers
            if (include is None or any(fnmatch.fnmatchcase(n, p) for p in include))
            and not any(fnmatch.fnmatchcase(n, p) for p in ignore)]


def _level_ranks(layer: _Layer, level: float) -> tuple[int, ...]:
    """Ranks at a shared level; methods without ``level_ranks`` use energy = level."""
    chooser = getattr(layer.method, "level_ranks", None)
    if chooser is None:
        return layer.method.ranks(layer.module, layer.spectra, RankSpec("energy", level))
    return chooser(layer.module, layer.spectra, level, layer.io)


def _plan(layers: list[_Layer], spec: RankSpec | None, target: float | None, total: int,
          force: bool) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Ranks per layer (only the layers worth factorising) and notes about the search."""
    def ranks_at(rule: RankSpec) -> dict[str, tuple[int, ...]]:
        out = {}
        for layer in layers:
            ranks = (layer.method.ranks(layer.module, layer.spectra, rule) if rule.kind != "level"
                     else _level_ranks(layer, float(rule.value)))
            if force or layer.after(ranks) < layer.before():
                out[layer.name] = ranks
        return out

    if target is None:
        return ranks_at(spec), []
    by_name = {layer.name: layer for layer in layers}

    def estimate(chosen: dict[str, tuple[int, ...]]) -> int:
        return total - sum(by_name[n].before() - by_name[n].after(r) for n, r in chosen.items())

    lowest = estimate(ranks_at(RankSpec("level", 0.0)))
    if lowest > target * total:
        raise ConfigError(f"decompose: the target macs={target} cannot be reached: with every "
                          f"factorisable layer at rank 1 the model keeps {lowest / total:.3f} of its MACs "
                          f"({len(layers)} layers can be factorised). Pass a target >= {lowest / total:.3f}, "
                          f"or include more layers.")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if estimate(ranks_at(RankSpec("level", mid))) <= target * total:
            lo = mid
        else:
            hi = mid
    chosen = ranks_at(RankSpec("level", lo))
    return chosen, [f"shared level {lo:.6f} (energy kept, or for cp the fraction of the break-even rank) meets the target macs={target} "
                    f"(estimated {estimate(chosen) / total:.4f} of the MACs kept)"]


def _progress(items: Iterable[Any], enabled: bool, desc: str, total: int) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False)


def decompose(model: nn.Module, *, example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
              method: str = "auto", rank: int | float | tuple[int, int] | str | None = None,
              energy: float | None = None, target: Any = None,
              calibration: Iterable[Any] | None = None, include: Sequence[str] | None = None,
              ignore: Sequence[str] = (), options: DecomposeOptions | dict[str, Any] | None = None,
              inplace: bool = False, progress: bool = False) -> DecomposeResult:
    """Factorise ``model``'s nn.Linear, nn.Conv2d and transformers' Conv1D layers; returns a
    :class:`DecomposeResult`. Every other candidate (see the module docstring) is listed in ``skipped``.

    Args:
        example_inputs: one input batch (a tensor or a tuple of positional inputs); it gives each
            layer's shapes for the MAC counts.
        method: ``svd``, ``asvd`` (needs ``calibration``), ``tucker``, ``cp`` or ``auto`` (Linear:
            asvd with calibration else svd; k x k conv: tucker; 1x1 conv: svd). A layer the method
            does not take is left alone and listed in ``skipped``.
        rank: an int rank, an (r_in, r_out) pair (Tucker-2), a float fraction of full rank, or
            ``"vbmf"``. ``energy``: fraction of squared singular values kept (default 0.9 when no
            rule is given). ``target``: a ``Target(macs=...)`` (or ``{"macs": ...}``), the fraction
            of the model's MACs to keep; ranks are chosen
            for the whole model by bisecting one shared level (the energy kept; for cp, a fraction
            of each layer's break-even rank). The achieved fraction is measured by ``count_macs``.
        calibration: batches for ``asvd``: tensors, ``(inputs, labels)`` tuples or keyword dicts.
        include / ignore: module-name patterns (fnmatch) of the layers to consider / leave alone.
        options: :class:`DecomposeOptions` or its mapping.
        inplace: change ``model`` itself (only once everything succeeded) instead of a copy.

    ``model`` is never changed when ``inplace`` is False or when anything fails.
    """
    spec, opts = check_arguments(model, method=method, rank=rank, energy=energy,
                                 target=target, include=include, ignore=ignore, options=options)
    macs_goal = _check_target(target, rank, energy)
    if calibration is not None:
        calibration = list(itertools.islice(calibration, opts.max_batches))
    layers, skipped = _prepare(model, example_inputs, method, calibration, include, ignore, opts)
    total = count_macs(model, example_inputs)
    chosen, notes = _plan(layers, spec, macs_goal, total, opts.force)
    for layer in layers:
        if layer.name not in chosen:
            skipped.append((layer.name, "the factorised form would not have fewer MACs"))
    replacements: dict[str, nn.Module] = {}
    records: list[LayerRecord] = []
    todo = [layer for layer in layers if layer.name in chosen]
    for layer in _progress(todo, progress, "decompose", len(todo)):
        ranks = chosen[layer.name]
        new, error = layer.method.factorize(layer.module, ranks, layer.gram)
        replacements[layer.name] = new
        records.append(LayerRecord(layer.name, layer.method.kind, layer.shape,
                                   tuple(int(r) for r in ranks), layer.before(), layer.after(ranks), error))
    out = model if inplace else copy.deepcopy(model)
    for name, new in replacements.items():
        out.set_submodule(name, new)
    after = count_macs(out, example_inputs)
    return DecomposeResult(out, tuple(records), tuple(skipped), total, after, macs_goal, tuple(notes))


def check_arguments(model: nn.Module, *, method: str = "auto", rank: Any = None, energy: Any = None,
                    target: Any = None, include: Sequence[str] | None = None,
                    ignore: Sequence[str] = (), options: Any = None) -> tuple[RankSpec | None, DecomposeOptions]:
    """Validate :func:`decompose`'s arguments without running anything (cheap; raises ConfigError)."""
    _check_method(method)
    spec = None if _check_target(target, rank, energy) is not None else rank_spec(rank, energy)
    if spec is not None and isinstance(spec.value, tuple) and method != "tucker":
        raise ConfigError(f"decompose: an (r_in, r_out) rank pair is for method='tucker'; got "
                          f"rank={rank!r} with method='{method}'. Pass an int rank, or method='tucker'.")
    opts = options if isinstance(options, DecomposeOptions) else parse_config(DecomposeOptions, dict(options or {}))
    _select(model, include, ignore)
    return spec, opts


def _prepare(model: nn.Module, example_inputs: Any, method: str, calibration: list[Any] | None,
             include: Sequence[str] | None, ignore: Sequence[str],
             opts: DecomposeOptions) -> tuple[list[_Layer], list[tuple[str, str]]]:
    """The candidate layers with their method, shapes, Gram matrices and spectra; and the skipped."""
    skipped: list[tuple[str, str]] = []
    resolved: list[tuple[str, nn.Module, Method]] = []
    owners = owners_of(model)
    for name, module in _select(model, include, ignore):
        reason = not_plain(module, name, owners)
        got = reason if reason is not None else _method_for(method, linear_view(module),
                                                            calibration is not None, opts)
        if isinstance(got, str):
            skipped.append((name, got))
        else:
            resolved.append((name, module, got))
    # NOTE: layers the example never calls (nn.MultiheadAttention's out_proj) are dropped before
    # calibration, which would otherwise find them never run by the batches either.
    calls = capture_calls(model, example_inputs, [n for n, _, _ in resolved])
    skipped += [(name, "not run by example_inputs") for name, _, _ in resolved if name not in calls]
    resolved = [(name, module, m) for name, module, m in resolved if name in calls]
    needs = [name for name, _, m in resolved if m.needs_calibration]
    if needs and not calibration:
        raise ConfigError(f"decompose: method '{method}' needs calibration batches for {len(needs)} "
                          f"layer(s) (e.g. '{needs[0]}') to whiten their inputs; got none. Pass "
                          f"calibration=[batch, ...] (real inputs), or use method='svd'.")
    grams = collect_grams(model, calibration, needs, max_batches=opts.max_batches) if needs else {}
    layers = []
    for name, module, m in resolved:
        view = linear_view(module)
        layer = _Layer(name, view, m, calls[name], tuple(module.weight.shape), gram=grams.get(name))
        layer.spectra = m.spectra(view, layer.gram)
        layers.append(layer)
    return layers, skipped
