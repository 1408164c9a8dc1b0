"""The Sparsifier: masks on a model's weights that follow a schedule while it trains.

Usage from a plain PyTorch loop (torch.ao's shape)::

    sparsifier = Sparsifier(0.9, schedule={"name": "gradual", "end": 3000, "frequency": 100})
    sparsifier.prepare(model, example)     # all-ones masks on every Conv/Linear weight but the head
                                           # (the last one the forward calls on the example inputs)
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y); optimizer.zero_grad(); loss.backward(); optimizer.step()
        sparsifier.step(step)              # recomputes the masks when the schedule says so
    sparsifier.finalize()                  # plain weights holding the zeros

Pruning is monotone: a pruned weight scores -inf at the next update, so while the schedule's
sparsity does not fall, a weight pruned once stays pruned (the masks only grow).
``scope="layer"`` gives every parameter the schedule's sparsity; ``scope="global"`` ranks all
targeted weights (or blocks) together, so layers end at different sparsities with the requested
overall one. N:M is defined per group of M weights, so it has no global variant and fixes the
sparsity at ``1 - N/M``.
"""

from __future__ import annotations

import fnmatch
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from prunekit._modes import eval_mode, modes_of, restore_modes
from prunekit.errors import ConfigError, NotFittedError, did_you_mean
from prunekit.sparsity import masks as masking
from prunekit.sparsity.importance import IMPORTANCE, Evidence
from prunekit.sparsity.patterns import (Pattern, _keep_largest, block_scores, check_fraction, check_layer,
                                        expand_blocks, from_standard_view, mask_from_scores, pattern_sparsity,
                                        sparsity_of, standard_view)
from prunekit.sparsity.report import LAYER_TYPES, LayerSparsity, own_forward, sparsity_report, tied_names
from prunekit.sparsity.schedule import Constant, OneShot, Schedule, make_schedule

__all__ = ["Sparsifier", "select_targets", "check_selectors"]

Selector = str | type[nn.Module]
_STATE_VERSION = 1


def _matches(name: str, module: nn.Module, selector: Selector) -> bool:
    if isinstance(selector, type):
        return isinstance(module, selector)
    return fnmatch.fnmatchcase(name, selector) or fnmatch.fnmatchcase(f"{name}.weight", selector)


def check_selectors(model: nn.Module, selectors: Sequence[Any], what: str, *, owner: str = "Sparsifier",
                    matches: Callable[[str, nn.Module, Any], bool] = _matches, types: bool = True) -> None:
    """Refuse an ``include``/``ignore`` entry of ``owner`` that is not a name or glob pattern (or, with
    ``types``, a module type) or that ``matches`` no module of ``model``: a misspelt name would
    otherwise select nothing, and a layer meant to stay dense would be sparsified."""
    names = [n for n, _ in model.named_modules() if n]
    for selector in selectors:
        if types and isinstance(selector, type):
            continue
        if not isinstance(selector, str):
            kinds = "module names, glob patterns or module types" if types else "module names or glob patterns"
            raise ConfigError(f"{owner}: '{what}' entries must be {kinds}; got {selector!r}. Pass e.g. "
                              f"['features.0', 'fc*'].")
        if not any(matches(n, m, selector) for n, m in model.named_modules() if n):
            raise ConfigError(f"{owner}: '{what}' entry '{selector}' matches no module of "
                              f"{type(model).__name__}.{did_you_mean(selector, names)} Module names "
                              f"are those of model.named_modules(), e.g. '{names[0] if names else 'fc'}'.")


def _left_dense(module: nn.Module) -> str | None:
    """Why a mask on ``module.weight`` would not give zeros its forward uses (None when it would)."""
    if parametrize.is_parametrized(module, "weight"):
        kinds = [type(p).__name__ for p in module.parametrizations["weight"] if not isinstance(p, masking.Mask)]
        if kinds:
            return (f"its weight is computed by a parametrization ({', '.join(kinds)}), so zeros masked into "
                    "the stored tensors need not reach the forward (remove it with torch.nn.utils.parametrize."
                    "remove_parametrizations to sparsify the layer)")
    return own_forward(module)


def _has_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.Tensor)


def _no_weight(name: str, module: nn.Module) -> str | None:
    """Why an included ``module`` cannot be sparsified at all: it holds weights of its own but no
    ``weight`` (an LSTM's ``weight_ih_l0``, MultiheadAttention's ``in_proj_weight``). None for a layer
    with a ``weight``, and for a container without weights of its own (its layers are selected by name)."""
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if _has_weight(module) or not own:
        return None
    hint = (f"; name '{name}.out_proj' to sparsify its output projection"
            if isinstance(module, nn.MultiheadAttention) else "")
    return (f"{type(module).__name__} has no 'weight' to mask (its own weights are {', '.join(own)}); the "
            f"Sparsifier sparsifies a layer's 'weight' (Linear, Conv and other layers that have one){hint}")


def _check_named(model: nn.Module, include: Sequence[Selector], ignore: Sequence[Selector]) -> None:
    """Refuse an ``include`` entry naming modules (a plain name or a type, not a glob) none of which
    has a ``weight``: an LSTM, a MultiheadAttention, a container, which would be dropped silently."""
    for selector in include:
        if isinstance(selector, str) and any(c in selector for c in "*?["):
            continue
        named = [(n, m) for n, m in model.named_modules() if _matches(n, m, selector)
                 and not any(_matches(n, m, s) for s in ignore)]
        if not named or any(_has_weight(m) for _, m in named):
            continue
        name, module = named[0]
        label = selector.__name__ if isinstance(selector, type) else f"'{selector}'"
        if (reason := _no_weight(name, module)) is not None:
            raise ConfigError(f"Sparsifier: include entry {label} selects '{name}', which cannot be sparsified: "
                              f"{reason}. Drop it from include.")
        raise ConfigError(f"Sparsifier: include entry {label} selects '{name}', a {type(module).__name__} with no "
                          f"'weight' of its own, and include does not reach into a module. Pass '{name}.*' to "
                          f"select the layers in it.")


def _call(example_inputs: Any) -> Any:
    """``example_inputs`` as a one-shot Call: a dict is keyword inputs, a tuple positional ones."""
    from prunekit.sparsity.oneshot.calibrate import Call  # NOTE: oneshot imports this module

    if isinstance(example_inputs, Mapping):
        return Call((), dict(example_inputs))
    return Call(tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,), {})


def _classifier(model: nn.Module, candidates: Sequence[tuple[str, nn.Module]], example_inputs: Any) -> str | None:
    """The classifier the default leaves dense: the last of ``candidates`` that a forward on
    ``example_inputs`` calls (the layer giving the output, wherever it is declared). Without
    ``example_inputs``, or when none of them runs, the last one declared: a head declared before
    the body is then not found."""
    if not candidates:
        return None
    if example_inputs is not None:
        from prunekit.sparsity.oneshot.calibrate import output_layer

        with eval_mode(model):
            try:
                called = output_layer(model, {m: n for n, m in candidates}, _call(example_inputs))
            except Exception as error:  # NOTE: the model is the user's; any error means bad inputs
                first = (str(error).splitlines() or [""])[0]
                raise ConfigError(f"Sparsifier: {type(model).__name__} failed on example_inputs "
                                  f"({type(error).__name__}: {first}); pass inputs its forward takes (a Tensor, "
                                  f"a tuple of positional inputs or a dict of keyword inputs), or none to take "
                                  f"the last declared Linear/Conv as the classifier.") from error
        if called is not None:
            return called
    return candidates[-1][0]


def _targets(model: nn.Module, include: Sequence[Selector] | None, ignore: Sequence[Selector],
             example_inputs: Any = None) -> tuple[list[str], list[str]]:
    """The weights to sparsify and the selected ones left dense, as ``"name: reason"``."""
    check_selectors(model, list(include or ()), "include")
    check_selectors(model, list(ignore), "ignore")
    if include is None:
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
        head = _classifier(model, candidates, example_inputs)
        chosen = [(n, m) for n, m in candidates if n != head]
    else:
        _check_named(model, include, ignore)
        chosen = [(n, m) for n, m in model.named_modules() if any(_matches(n, m, s) for s in include)]
    targets, skipped = [], []
    for n, m in chosen:
        if any(_matches(n, m, s) for s in ignore):
            continue
        if not _has_weight(m):
            if (why := _no_weight(n, m)) is not None:
                skipped.append(f"{n}: {why}")
            continue
        name, reason = f"{n}.weight" if n else "weight", _left_dense(m)
        if reason is None:
            targets.append(name)
        else:
            skipped.append(f"{name}: {reason}")
    return targets, skipped


def select_targets(model: nn.Module, include: Sequence[Selector] | None = None,
                   ignore: Sequence[Selector] = (), example_inputs: Any = None) -> list[str]:
    """Names of the weights to sparsify, in model order.

    Default (``include=None``): every Linear/Conv weight except the classifier (whose few weights
    matter most): the last such layer the forward calls on ``example_inputs`` (a Tensor, a tuple of
    positional inputs or a dict of keyword inputs). Without ``example_inputs`` no forward runs and
    the last layer *declared* is taken, which misses a head declared before the body.
    ``include``/``ignore`` take module names, glob patterns (``"layer1.*"``) or module types
    (``nn.Linear``); ``ignore`` wins; a name selects that module only (``"layer1.*"`` its layers).
    A weight whose forward would not use the zeros (a parametrized weight such as ``weight_norm``, a
    layer subclass with its own forward such as timm's ``StdConv2d``) and an included layer without a
    ``weight`` (an LSTM, MultiheadAttention's ``in_proj_weight``) are left out;
    ``Sparsifier.skipped_`` lists them with the reason. An include entry that names only such
    modules is refused.
    """
    return _targets(model, include, ignore, example_inputs)[0]


class Sparsifier:
    """Masks on a model's weights, moved along a schedule; ``finalize`` leaves plain zeros.

    Args:
        sparsity: fraction of each targeted weight (``scope="layer"``) or of all of them
            (``"global"``) set to zero at the end of the schedule, as a float or a
            ``Target(ratio=...)``. Ignored by N:M patterns, which fix it at ``1 - N/M``; pass None
            there.
        pattern: ``"unstructured"``, N:M (``"2:4"``, ``"4:8"``, along the input dimension: for a
            conv, consecutive input channels at each kernel position; a transposed conv's weight
            ``[in, out, *k]`` is read as the conv it transposes) or blocks (``"1x4"``, ``"4x4"``),
            see :class:`~prunekit.sparsity.Pattern`.
        importance: how weights are scored, a name in :data:`~prunekit.sparsity.IMPORTANCE`:
            ``magnitude``, ``random``, ``taylor`` or ``movement``.
        scope: ``"layer"`` (same sparsity per weight) or ``"global"`` (one ranking).
        schedule: a name in :data:`~prunekit.sparsity.SCHEDULES`, a ``{"name": ..., **options}``
            mapping, or a schedule object; default one-shot at step 0.
        include, ignore: module names, glob patterns or types (see :func:`select_targets`).
        seed: seed of the random importance.

    After :meth:`prepare`, ``targets_`` names the masked weights and ``skipped_`` the selected ones
    left dense (``"name: reason"``: their forward would not use the zeros, or they have no
    ``weight``).
    """

    def __init__(self, sparsity: float | Any | None = 0.5, *, pattern: str | Pattern = "unstructured",
                 importance: str = "magnitude", scope: str = "layer",
                 schedule: str | Mapping[str, Any] | Schedule | None = None,
                 include: Sequence[Selector] | None = None, ignore: Sequence[Selector] = (),
                 seed: int = 0) -> None:
        self.sparsity = sparsity
        self.pattern = pattern
        self.importance = importance
        self.scope = scope
        self.schedule = schedule
        self.include = include
        self.ignore = ignore
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, as given (the recipe stage)."""
        return {"sparsity": sparsity_of(self.sparsity, owner="Sparsifier"), "pattern": str(self.pattern),
                "importance": self.importance, "scope": self.scope, "schedule": self.schedule,
                "include": None if self.include is None else list(self.include),
                "ignore": list(self.ignore), "seed": self.seed}

    # ---- validation --------------------------------------------------------------------------

    def validate_params(self) -> tuple[Pattern, float, Schedule]:
        """Check the arguments (no model needed); returns the parsed pattern, sparsity, schedule."""
        pattern = Pattern.parse(self.pattern)
        sparsity = self._resolve_sparsity(pattern)
        if self.scope not in ("layer", "global"):
            raise ConfigError(f"Sparsifier: 'scope' must be 'layer' or 'global'; got "
                              f"{self.scope!r}.{did_you_mean(str(self.scope), ['layer', 'global'])}")
        if pattern.kind == "nm" and self.scope == "global":
            raise ConfigError(f"Sparsifier: scope 'global' has no meaning for the {pattern} pattern: "
                              f"every group of {pattern.m} weights keeps {pattern.n}, in every layer. "
                              f"Use scope='layer'.")
        IMPORTANCE.get(self.importance)
        schedule = make_schedule(self.schedule, sparsity)
        if pattern.kind == "nm" and not _is_fixed(schedule):
            raise ConfigError(f"Sparsifier: the {pattern} pattern fixes the sparsity at "
                              f"{sparsity:g}, so schedule {type(schedule).__name__} cannot ramp it. "
                              f"Use schedule 'one_shot' or 'constant'.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"Sparsifier: 'seed' must be an int; got {self.seed!r}.")
        return pattern, sparsity, schedule

    def _resolve_sparsity(self, pattern: Pattern) -> float:
        asked = sparsity_of(self.sparsity, owner="Sparsifier")
        if pattern.fixed_sparsity is not None:
            return pattern_sparsity(asked, pattern, owner="Sparsifier")
        fraction = check_fraction(asked, owner="Sparsifier")
        if fraction == 1.0:  # NOTE: like a prune ratio of 1: every weight zero is no model.
            raise ConfigError("Sparsifier: sparsity 1 zeroes every weight, which leaves no model; expected "
                              "a fraction in [0, 1). Pass e.g. sparsity=0.9 (--sparsity 0.9).")
        return fraction

    # ---- lifecycle ---------------------------------------------------------------------------

    def prepare(self, model: nn.Module, example_inputs: Any = None) -> Sparsifier:
        """Attach all-ones masks to the targeted weights of ``model`` (in place); returns self.

        ``example_inputs`` (a Tensor, a tuple of positional inputs or a dict of keyword inputs, on
        the model's device) let the default find the classifier by the forward's call order (one
        eval-mode pass, no gradients); without them it is the last Linear/Conv declared.

        Weights that already carry a prunekit mask keep it, so a new sparsifier continues from
        there (pruned weights stay pruned).

        Everything is checked first (arguments, names, every layer's shape against the pattern),
        so a refusal leaves ``model`` untouched.
        """
        pattern, sparsity, schedule = self.validate_params()
        targets, skipped = _targets(model, self.include, self.ignore, example_inputs)
        if not targets:
            left = f" Left dense: {'; '.join(skipped)}." if skipped else ""
            raise ConfigError(f"Sparsifier: no weights to sparsify in {type(model).__name__} "
                              f"(include={self.include!r}, ignore={list(self.ignore)!r}).{left} Widen "
                              f"include, or note the default leaves the classifier (the last Linear/Conv "
                              f"layer) dense.")
        for name in targets:
            check_layer(name, _view_shape(model, name), pattern)
        if skipped:
            warnings.warn(f"Sparsifier: {len(skipped)} selected weight(s) left dense: {'; '.join(skipped)}",
                          stacklevel=2)
        for name, others in tied_names(model, targets).items():
            warnings.warn(f"Sparsifier: masking '{name}' also zeroes {', '.join(repr(o) for o in others)}: the "
                          "same tensor (tied weights). Untie them first to keep the other one dense.",
                          stacklevel=2)
        # NOTE: a weight that already carries a mask keeps it (a second sparsifier continues).
        present = masking.masks(model)
        masking.attach(model, {n: torch.ones_like(_weight(model, n), dtype=torch.bool)
                               for n in targets if n not in present})
        self.model_, self.targets_, self.skipped_ = model, targets, tuple(skipped)
        self.pattern_, self.sparsity_, self.schedule_ = pattern, sparsity, schedule
        self.step_: int = -1
        self.needs_gradients_ = bool(IMPORTANCE.get(self.importance).meta.get("needs_gradients"))
        self.taylor_: dict[str, torch.Tensor] = {}
        self.movement_: dict[str, torch.Tensor] = {}
        return self

    def _fitted(self) -> nn.Module:
        if not hasattr(self, "model_"):
            raise NotFittedError("Sparsifier: call prepare(model) before step(), apply(), "
                                 "finalize() or sparsity_report().")
        if self.model_ is None:
            raise NotFittedError("Sparsifier: finalize() already removed the masks; prepare a model "
                                 "again to continue sparsifying.")
        return self.model_

    def step(self, step: int | None = None) -> bool:
        """Call once after each optimizer step; returns True when the masks were recomputed.

        ``step`` is the optimizer step just taken (from 0); without it, the last step + 1. Criteria
        that need gradients read each weight's ``.grad`` here, so call it before ``zero_grad``.
        """
        self._fitted()
        current = self.step_ + 1 if step is None else int(step)
        if self.needs_gradients_:
            self._accumulate_grads()
        self.step_ = current
        if not self.schedule_.is_update(current):
            return False
        self._update(self.schedule_.sparsity_at(current), current)
        return True

    def apply(self, sparsity: float | None = None) -> Sparsifier:
        """Recompute the masks now, at ``sparsity`` (default: the final one): one-shot pruning."""
        self._fitted()
        target = self.sparsity_ if sparsity is None else float(sparsity)
        self._update(target, max(self.step_, 0))
        return self

    def accumulate(self, batches: Iterable[Any], *,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   progress: bool = False) -> Sparsifier:
        """Gather gradient statistics from ``(inputs, labels)`` batches without training.

        For one-shot ``taylor``/``movement``: the model runs in eval mode (BatchNorm statistics
        are not updated), weights and existing ``.grad`` are restored afterwards.
        """
        model = self._fitted()
        loss_fn = loss_fn or nn.functional.cross_entropy
        params = list(model.parameters())
        saved = [None if p.grad is None else p.grad.clone() for p in params]
        modes = modes_of(model)
        model.eval()
        try:
            device = next((p.device for p in params), torch.device("cpu"))
            for inputs, labels in tqdm(batches, desc="gradients", file=sys.stderr, leave=False,
                                       disable=not progress):
                model.zero_grad(set_to_none=True)
                loss_fn(model(inputs.to(device)), labels.to(device)).backward()
                self._accumulate_grads()
        finally:
            for p, grad in zip(params, saved):
                p.grad = grad
            restore_modes(modes)
        return self

    def finalize(self) -> nn.Module:
        """Remove the masks, leaving plain weights with the zeros; returns the model."""
        model = masking.finalize(self._fitted())
        self.model_ = None
        return model

    def sparsity_report(self) -> list[LayerSparsity]:
        """Zeros per targeted weight, as a forward pass sees them."""
        return sparsity_report(self._fitted(), self.targets_)

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The step and the gradient statistics (the masks live in the model's ``state_dict``)."""
        self._fitted()
        return {"version": _STATE_VERSION, "step": self.step_, "targets": list(self.targets_),
                "taylor": dict(self.taylor_), "movement": dict(self.movement_)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output onto a sparsifier prepared on the same layers."""
        self._fitted()
        if list(state.get("targets", [])) != list(self.targets_):
            raise ConfigError(f"Sparsifier: the saved state covers {list(state.get('targets', []))[:4]}"
                              f"... but this sparsifier targets {self.targets_[:4]}... Prepare it "
                              f"with the same include/ignore as the run that saved it.")
        self.step_ = int(state["step"])
        self.taylor_ = {k: v.clone() for k, v in state.get("taylor", {}).items()}
        self.movement_ = {k: v.clone() for k, v in state.get("movement", {}).items()}

    # ---- internals ---------------------------------------------------------------------------

    @torch.no_grad()
    def _accumulate_grads(self) -> None:
        model = self.model_
        for name in self.targets_:
            module, attr = masking.split_name(model, name)
            original = module.parametrizations[attr].original
            if original.grad is None:
                continue
            product = original.detach() * original.grad
            if name not in self.taylor_:
                self.taylor_[name] = torch.zeros_like(product)
                self.movement_[name] = torch.zeros_like(product)
            self.taylor_[name] += product.square()
            self.movement_[name] -= product

    @torch.no_grad()
    def _update(self, sparsity: float, step: int) -> None:
        model, importance = self.model_, IMPORTANCE.get(self.importance).factory
        current = masking.masks(model)
        layers = {name: masking.split_name(model, name)[0] for name in self.targets_}
        scores = {}
        for name in self.targets_:
            weight = _weight(model, name)
            evidence = Evidence(name=name, weight=weight.detach(), seed=self.seed, step=step,
                                taylor=self.taylor_.get(name) if self.needs_gradients_ else None,
                                movement=self.movement_.get(name) if self.needs_gradients_ else None)
            score = importance(evidence).detach().float()
            if tuple(score.shape) != tuple(weight.shape):
                raise ConfigError(f"importance '{self.importance}' returned shape {tuple(score.shape)} "
                                  f"for '{name}' {tuple(weight.shape)}; an importance must return one "
                                  f"score per weight.")
            # NOTE: pruned weights stay pruned: masks only grow with the schedule's sparsity.
            # The patterns read [out, in, *k]; a transposed conv's [in, out, *k] is turned first.
            scores[name] = standard_view(score.masked_fill(~current[name].mask, -math.inf), layers[name])
        if self.pattern_.kind == "nm" and sparsity == 0.0:
            new = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
        elif self.scope == "global":
            new = _global_masks(scores, sparsity, self.pattern_)
        else:
            new = {n: mask_from_scores(s, sparsity, self.pattern_) for n, s in scores.items()}
        masking.attach(model, {n: from_standard_view(m, layers[n]) for n, m in new.items()})


def _is_fixed(schedule: Schedule) -> bool:
    return isinstance(schedule, (OneShot, Constant))


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    module, attr = masking.split_name(model, name)
    return getattr(module, attr)


def _view_shape(model: nn.Module, name: str) -> tuple[int, ...]:
    """The shape the patterns see for weight ``name`` (:func:`~prunekit.sparsity.patterns.standard_view`)."""
    module, _ = masking.split_name(model, name)
    return tuple(standard_view(torch.empty(_weight(model, name).shape, device="meta"), module).shape)


def _global_masks(scores: Mapping[str, torch.Tensor], sparsity: float,
                  pattern: Pattern) -> dict[str, torch.Tensor]:
    """One ranking over every layer's entries (or blocks); the kept set is split back per layer."""
    units = {n: block_scores(s, pattern.block) if pattern.kind == "block" else s.reshape(-1)
             for n, s in scores.items()}
    flat = torch.cat([u.reshape(-1) for u in units.values()])
    keep = flat.numel() - int(round(sparsity * flat.numel()))
    kept = _keep_largest(flat, keep)
    out, offset = {}, 0
    for name, unit in units.items():
        part = kept[offset:offset + unit.numel()].reshape(unit.shape)
        offset += unit.numel()
        shape = scores[name].shape
        out[name] = expand_blocks(part, shape, pattern.block) if pattern.kind == "block" else part.reshape(shape)
    return out
