"""Calibration statistics: the only code in ``importance`` that runs batches through a model.

``collect(model, batches, groups)`` runs the model in eval mode with forward hooks (activations) and
``torch.autograd.grad`` on detached copies of the parameters (gradients), then returns a frozen
:class:`Stats`. The model is left exactly as it was: no hook stays, no ``.grad`` is written, no
parameter or ``requires_grad`` flag changes, and every module's ``training`` flag is restored.
Importance functions then score from ``Stats`` without running anything.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from prunekit._checks import logits_in
from prunekit.errors import ConfigError, did_you_mean
from prunekit.graph.groups import ChannelGroup

__all__ = ["NEEDS", "ModelInputs", "Stats", "channel_dim", "collect", "missing_batches", "require"]

Side = Literal["input", "output"]
NEEDS = ("activations", "gradients")
LossFn = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False)
class Stats:
    """What calibration batches taught us; plain data, read by the data-driven importance functions.

    Args:
        batches: how many batches were run.
        weight_grad: tensor fqn -> ``w ⊙ mean_b ∂L_b/∂w`` (signed, same shape as the tensor), for
            every parameter named by a group member (tied aliases included).
        activation_mean: ``(module fqn, "input"|"output")`` -> ``Tensor[C]``, mean ``|a|`` per channel
            of the module's first input or output (channel dim: 1 for conv, last for linear/embedding).
        apoz: same keys -> ``Tensor[C]``, the fraction of exact zeros per channel (Hu et al. 2016).
    """

    batches: int
    weight_grad: Mapping[str, torch.Tensor]
    activation_mean: Mapping[tuple[str, Side], torch.Tensor]
    apoz: Mapping[tuple[str, Side], torch.Tensor]


def channel_dim(module: nn.Module) -> int | None:
    """The channel dim of a module's input and output activations, or None when not known."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return 1
    if isinstance(module, (nn.Linear, nn.Embedding, nn.EmbeddingBag)):
        return -1
    return None


def _probes(model: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, set[Side]]:
    """Module fqn -> the sides to record: outputs of producers, inputs of consumers."""
    probes: dict[str, set[Side]] = {}
    for member in (m for g in groups for m in g.members if m.role != "passive"):
        if channel_dim(model.get_submodule(member.module)) is not None:
            probes.setdefault(member.module, set()).add("output" if member.role == "producer" else "input")
    return probes


class _Activations:
    """Running per-channel sums of ``|a|`` and of zeros, fed by forward hooks."""

    def __init__(self) -> None:
        self.abs: dict[tuple[str, Side], torch.Tensor] = {}
        self.zeros: dict[tuple[str, Side], torch.Tensor] = {}
        self.count: dict[tuple[str, Side], int] = {}

    def add(self, key: tuple[str, Side], x: Any, dim: int) -> None:
        if isinstance(x, (tuple, list)) and x:
            x = x[0]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            return
        a = x.detach().float().movedim(dim, 0).reshape(x.shape[dim], -1)
        if key in self.abs and self.abs[key].numel() != a.shape[0]:
            return
        self.abs[key] = self.abs.get(key, 0) + a.abs().sum(1).double().cpu()
        self.zeros[key] = self.zeros.get(key, 0) + (a == 0).sum(1).double().cpu()
        self.count[key] = self.count.get(key, 0) + a.shape[1]

    def hooks(self, model: nn.Module, probes: Mapping[str, set[Side]]) -> list[Any]:
        handles = []
        for name, sides in sorted(probes.items()):
            module = model.get_submodule(name)
            dim = channel_dim(module)

            def hook(_m: nn.Module, args: Any, out: Any, name: str = name, sides: set[Side] = sides,
                     dim: int | None = dim) -> None:
                if "input" in sides:
                    self.add((name, "input"), args, dim)  # type: ignore[arg-type]
                if "output" in sides:
                    self.add((name, "output"), out, dim)  # type: ignore[arg-type]

            handles.append(module.register_forward_hook(hook))
        return handles

    def means(self) -> tuple[dict[tuple[str, Side], torch.Tensor], dict[tuple[str, Side], torch.Tensor]]:
        mean = {k: (v / self.count[k]).float() for k, v in self.abs.items()}
        apoz = {k: (v / self.count[k]).float() for k, v in self.zeros.items()}
        return mean, apoz


class ModelInputs(tuple):  # type: ignore[type-arg]
    """A calibration batch of model inputs alone, without labels: the tuple of positional inputs,
    with ``keywords`` (an attention mask) beside them, run as ``model(*batch, **keywords)``.

    A plain tuple batch reads as ``(inputs, labels)``, so ``(x1, x2)`` would run ``model(x1)``; this
    keeps every input, and still iterates as the positional inputs (what ONNX calibration feeds)."""

    keywords: dict[str, Any]

    def __new__(cls, args: Iterable[Any] = (), keywords: Mapping[str, Any] | None = None) -> ModelInputs:
        made = super().__new__(cls, args)
        made.keywords = dict(keywords or {})
        return made

    def keywords_for(self, model: nn.Module) -> dict[str, Any]:
        """The keyword inputs ``model``'s forward takes: those it names, or all with ``**kwargs`` (as
        the tasks call a model on a mapping batch)."""
        if not self.keywords:
            return {}
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # NOTE: no readable signature: pass them all
            return dict(self.keywords)
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return dict(self.keywords)
        return {k: v for k, v in self.keywords.items() if k in params}

    def __repr__(self) -> str:
        return f"ModelInputs({tuple(self)!r}, keywords={self.keywords!r})"


def _split(batch: Any, model: nn.Module,
           device: torch.device) -> tuple[tuple[Any, ...], dict[str, Any], Any, bool]:
    """A batch -> (positional inputs, keyword inputs, labels or None, whether the labels are the batch's own
    ``"labels"`` entry). The forms: a tensor; a dict of keyword inputs (a tokenizer's output, run as
    ``model(**batch)``); an ``(inputs, labels)`` pair whose inputs are a tensor, a tuple of them or such a
    dict; or :class:`ModelInputs`."""
    own = isinstance(batch, Mapping)
    if isinstance(batch, torch.Tensor) or own:
        (inputs, kwargs), labels = _inputs(batch, model), batch.get("labels") if own else None
    elif isinstance(batch, ModelInputs):
        (inputs, kwargs), labels = _inputs(batch, model), None
    elif isinstance(batch, (tuple, list)) and batch:
        (inputs, kwargs), labels = _inputs(batch[0], model), batch[1] if len(batch) > 1 else None
    else:
        raise ConfigError(
            f"collect: a calibration batch must be {_FORMS}; got {type(batch).__name__}. "
            f"Wrap your data loader so it yields one of those."
        )
    move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
    return tuple(move(t) for t in inputs), {k: move(v) for k, v in kwargs.items()}, move(labels), own


_FORMS = ("a tensor, a dict of the model's keyword inputs (run as model(**batch)), an (inputs, labels) "
          "pair whose inputs are a tensor, a tuple of them or such a dict, or ModelInputs")


def _inputs(inputs: Any, model: nn.Module) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The inputs of a batch -> (positional, keyword): a dict is passed by keyword (as far as
    ``model``'s forward takes them, as :class:`ModelInputs` does), a tuple positionally."""
    if isinstance(inputs, Mapping):
        if not inputs or not all(isinstance(k, str) for k in inputs):
            raise ConfigError(f"collect: a dict calibration batch must map the model's input names to values, "
                              f"e.g. {{'input_ids': ..., 'attention_mask': ...}}; got keys {list(inputs)[:5]}.")
        inputs = ModelInputs(keywords=inputs)
        if not inputs.keywords_for(model):
            raise ConfigError(f"collect: none of a dict calibration batch's keys {sorted(inputs.keywords)[:5]} "
                              f"names an input of {type(model).__name__}.forward. Key the dict by forward's "
                              f"parameter names.")
    if isinstance(inputs, ModelInputs):
        return tuple(inputs), inputs.keywords_for(model)
    return (tuple(inputs), {}) if isinstance(inputs, (tuple, list)) else ((inputs,), {})


def _logits(out: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor, ``.logits`` (Hugging Face), a mapping's
    ``"logits"`` or a tuple's first element."""
    found = logits_in(out)
    if found is None:
        raise ConfigError(
            f"collect: the default loss needs logits, but the model returned {type(out).__name__} without a "
            f"tensor, .logits, ['logits'] or a first element to take them from. Pass loss_fn=(output, labels) -> loss."
        )
    return found


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the class axis 1, as ``tasks.Classification`` scores ``[B, C, ...]`` logits
    against ``[B, ...]`` labels (per-pixel classes); the last axis where only it fits the labels
    (``[B, T, V]`` token logits against ``[B, T]`` labels)."""
    if logits.dim() > 2 and labels.shape == logits.shape[:1] + logits.shape[2:]:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _loss(out: Any, labels: Any, loss_fn: LossFn | None, own: bool = False,
          passed: bool = False) -> torch.Tensor:
    """``loss_fn`` of the logits (and labels); default: cross-entropy (see :func:`_cross_entropy`), or for a dict
    batch's own ``"labels"`` (``own``; ``passed``: the forward took them) the loss the model returned (``.loss``)."""
    if loss_fn is not None:
        logits = getattr(out, "logits", out)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return loss_fn(logits, labels) if labels is not None else loss_fn(logits)
    if labels is None:
        raise ConfigError(
            "collect: gradients need a loss, but the calibration batches have no labels. Pass (inputs, labels) "
            "pairs (inputs: a tensor, a tuple of them or a dict of keyword inputs; cross-entropy is used), dicts "
            "holding 'labels' for a model that returns its own .loss (Hugging Face), or loss_fn=lambda output: ..."
        )
    if own:
        return _own_loss(out, passed)
    logits = _logits(out)
    if isinstance(labels, torch.Tensor) and labels.is_floating_point():
        raise ConfigError(
            f"collect: the default loss is cross-entropy over class indices, but the labels are floating point "
            f"{tuple(labels.shape)} against an output of {tuple(logits.shape)} (a regression?). Pass "
            f"loss_fn=(output, labels) -> loss, e.g. torch.nn.functional.mse_loss."
        )
    return _cross_entropy(logits, labels)


def _own_loss(out: Any, passed: bool) -> torch.Tensor:
    """The scalar loss a model computed from a dict batch's ``"labels"`` (``out.loss`` or ``out["loss"]``)."""
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, Mapping):
        loss = out.get("loss")
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return loss.reshape(())
    why = "returned no scalar .loss" if passed else "does not take 'labels' in its forward"
    raise ConfigError(
        f"collect: a dict batch's 'labels' serve as the loss only where the model computes it, but the "
        f"model {why}. "
        f"Pass (inputs, labels) pairs, e.g. [({{'input_ids': ..., 'attention_mask': ...}}, labels)] "
        f"(cross-entropy is used), or loss_fn=(output, labels) -> loss."
    )


def _first_order(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``w * dL/dw`` per entry, in float32: the loss's first-order change if the entry were zeroed.
    For a complex weight, ``Re(w * conj(g))`` (torch's gradient of a real loss is the conjugate
    Wirtinger one), not the real part of ``w * g`` alone."""
    return (weight * grad.conj()).real.float() if weight.is_complex() else (weight * grad).float()


def _param_names(model: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, str]:
    """Member tensor fqn -> the canonical parameter name (tied weights have several fqns)."""
    canonical: dict[int, str] = {}
    names: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names[name] = canonical.setdefault(id(p), name)
    wanted = {m.tensor for g in groups for m in g.members}
    return {n: c for n, c in names.items() if n in wanted}


def _gradients(model: nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any], labels: Any,
               loss_fn: LossFn | None, wanted: Sequence[str], own: bool = False) -> list[torch.Tensor | None]:
    """``∂L/∂p`` for the canonical parameters ``wanted``, never touching the model's ``.grad``; ``own``:
    the labels are the dict batch's ``"labels"`` (see :func:`_loss`)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    with torch.enable_grad():
        out = functional_call(model, leaves, inputs, kwargs)
        loss = _loss(out, labels, loss_fn, own, passed="labels" in kwargs)
        grads = torch.autograd.grad(loss, [leaves[n] for n in wanted], allow_unused=True)
    return list(grads)


def _check_needs(needs: Iterable[str]) -> tuple[str, ...]:
    needs = tuple(needs)
    for need in needs:
        if need not in NEEDS:
            raise ConfigError(f"collect: unknown need {need!r}; expected some of {NEEDS}.{did_you_mean(need, NEEDS)}")
    return needs


def _take(batches: Iterable[Any], max_batches: int | None) -> Iterator[Any]:
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"collect: 'max_batches' must be a positive int or None; got {max_batches}.")
    return itertools.islice(iter(batches), max_batches)


def collect(model: nn.Module, batches: Iterable[Any], groups: Sequence[ChannelGroup], *,
            needs: Iterable[str] = NEEDS, loss_fn: LossFn | None = None,
            max_batches: int | None = None) -> Stats:
    """Run calibration ``batches`` once and gather what data-driven importance functions need for ``groups``.

    Args:
        batches: tensors (inputs only), dicts of keyword inputs (a tokenizer's output, run as
            ``model(**batch)``; a ``"labels"`` entry makes the loss the one the model returns, as a Hugging
            Face model does), ``(inputs, labels)`` tuples (inputs may be a tuple or such a dict), or
            :class:`ModelInputs` (several inputs, or keyword inputs, without labels).
        groups: the groups to be scored (usually ``graph.prunable``).
        needs: ``"activations"`` (forward hooks) and/or ``"gradients"`` (one backward per batch).
        loss_fn: ``loss_fn(logits, labels)`` (or ``loss_fn(logits)`` without labels); default
            cross-entropy, which needs labels (or a dict batch's own ``"labels"`` and the model's ``.loss``).
        max_batches: stop after this many batches.

    The model runs in eval mode (no dropout, BN uses its running statistics) so results are
    deterministic and the model's buffers are not updated.
    """
    needs, groups = _check_needs(needs), tuple(groups)
    aliases = _param_names(model, groups) if "gradients" in needs else {}
    wanted = sorted(set(aliases.values()))
    acts = _Activations()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    flags = {name: m.training for name, m in model.named_modules()}
    handles = acts.hooks(model, _probes(model, groups)) if "activations" in needs else []
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    try:
        model.eval()
        for batch in _take(batches, max_batches):
            inputs, kwargs, labels, own = _split(batch, model, device)
            if "gradients" in needs:
                for name, g in zip(wanted, _gradients(model, inputs, kwargs, labels, loss_fn, wanted, own)):
                    if g is not None:
                        sums[name] = sums.get(name, 0) + g.detach()
            else:
                with torch.no_grad():
                    model(*inputs, **kwargs)
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
        for name, module in model.named_modules():
            module.training = flags[name]
    if seen == 0:
        raise ConfigError("collect: the calibration batches were empty. Pass at least one batch.")
    params = dict(model.named_parameters())
    weight_grad = {alias: _first_order(params[c].detach(), sums.get(c, torch.zeros_like(params[c])) / seen)
                   for alias, c in aliases.items()}
    mean, apoz = acts.means()
    return Stats(seen, MappingProxyType(weight_grad), MappingProxyType(mean), MappingProxyType(apoz))


def missing_batches(importance: str) -> ConfigError:
    """The error for a data-driven importance that got no calibration data."""
    return ConfigError(
        f"importance '{importance}' needs calibration batches: pass batches=[(inputs, labels), ...] (prunekit prune passes 4 training batches itself)"
    )


def require(stats: object, importance: str) -> Stats:
    """``stats`` as :class:`Stats`, or the missing-batches error (importance functions called directly)."""
    if not isinstance(stats, Stats):
        error = missing_batches(importance)
        raise ConfigError(f"{error} to score(), or stats=collect(model, batches, groups) to the importance.")
    return stats
