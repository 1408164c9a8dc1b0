"""Rank dimensions of a search: which layers a search may factorise, at which ``"method:fraction"``
choices, and applying a configuration's choices to a model.

A layer (``nn.Linear`` / ``nn.Conv2d`` run by the example input) gets a ``rank:<module>`` dimension
when a method of :data:`prunekit.decompose.METHODS` takes it and some fraction of its full rank (the
search's ``levels`` below 1) has fewer MACs than the layer itself. Its choices are ``"none"``, then
``"<method>:<fraction>"`` ordered by MACs falling (at the model's own widths), so a choice further
along is cheaper, as the strategies assume. A fraction is of the layer's full rank *as built*: when
widths are searched too, of the pruned layer's (the layer is pruned first, then factorised).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from prunekit.decompose import METHODS, DecomposeResult, LayerRecord
from prunekit.decompose.calibration import capture_calls, capture_io
from prunekit.decompose.layers import KINDS, original_macs, shell
from prunekit.decompose.lowrank import not_plain, owners_of
from prunekit.decompose.rank import RankSpec
from prunekit.errors import ConfigError
from prunekit.measure import count_macs

__all__ = ["AUTO", "rank_methods", "rank_choices", "run_layers", "factorise", "parse_choice", "shell_of", "untimed"]

AUTO = "auto"  # NOTE: decompose's own rule without calibration: svd for Linear and 1x1 conv, tucker for k x k


def rank_methods(ranks: Any, where: str = "search: --ranks") -> tuple[str, ...]:
    """The decomposition methods ``ranks`` asks a search for: ``True`` or ``"auto"``: decompose's
    rule (svd for Linear and 1x1 conv, tucker for a k x k conv); a list of names (``["svd", "cp"]``):
    each layer may take any of them; ``False``/``None``/empty: none. Else a ConfigError."""
    if ranks is None or ranks is False:
        return ()
    if ranks is True:
        return (AUTO,)
    names = [n.strip() for n in ranks.split(",")] if isinstance(ranks, str) else ranks
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}: expected true or decomposition method names such as svd,tucker; got "
                          f"{ranks!r}. Pass e.g. --ranks (auto) or --ranks svd,cp.")
    known = [n for n in METHODS.names() if n != "asvd"]
    for name in names:
        if name == "asvd":
            raise ConfigError(f"{where}: asvd needs calibration batches, which a search's candidates are not "
                              f"factorised with; got asvd. Use svd.")
        if name != AUTO and name not in METHODS:
            raise ConfigError(f"{where}: unknown decomposition method '{name}'; expected {AUTO} or one of "
                              f"{', '.join(known)}. Pass e.g. --ranks svd,tucker.")
    return tuple(dict.fromkeys(names))


def _method_name(name: str, module: nn.Module) -> str:
    """The method ``name`` factorises ``module`` with (a 1x1 conv's Tucker-2 or CP is an SVD)."""
    pointwise = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
    if name == AUTO:
        return "svd" if isinstance(module, nn.Linear) or pointwise else "tucker"
    return "svd" if name in ("tucker", "cp") and pointwise else name


def _fraction_ranks(method: Any, module: nn.Module, fraction: float) -> tuple[int, ...]:
    """The ranks ``method`` gives ``module`` at ``fraction`` of its full rank. A fraction's ranks follow
    from the weight's shape alone, so they are read off a storage-free (meta) twin: no SVD is paid."""
    twin = copy.copy(module)
    twin._parameters = {k: None if p is None else nn.Parameter(p.detach().to("meta"), requires_grad=False)
                        for k, p in module._parameters.items()}
    return tuple(int(r) for r in method.ranks(twin, method.spectra(twin, None), RankSpec("fraction", fraction)))


def run_layers(model: nn.Module, example_inputs: Any, ignore: Sequence[str] = ()) -> list[tuple[str, nn.Module, Any]]:
    """(name, module, LayerIO) of every ``nn.Linear``/``nn.Conv2d`` the example input runs, outside the
    modules named in ``ignore``: the layers a rank choice can apply to (as ``decompose`` factorises:
    plain layers only, not a subclass computing in its own forward, such as timm's StdConv2d)."""
    skip = tuple(f"{n}." for n in ignore)
    owners = owners_of(model)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
              and n not in ignore and not n.startswith(skip) and not_plain(m, n, owners) is None]
    seen = capture_io(model, example_inputs, [n for n, _ in layers])
    return [(n, m, seen[n][0]) for n, m in layers if n in seen]


def rank_choices(model: nn.Module, example_inputs: Any, methods: Sequence[str],
                 levels: Sequence[float]) -> dict[str, tuple[str, ...]]:
    """Module -> its ``"method:fraction"`` choices (module docstring), for every layer one of
    ``methods`` can factorise at a fraction in ``levels`` (below 1) with fewer MACs."""
    if not methods:
        return {}
    fractions = sorted({float(f) for f in levels if f < 1}, reverse=True)
    found: dict[str, tuple[str, ...]] = {}
    for name, module, io in run_layers(model, example_inputs):
        dense = original_macs(module, io)
        priced: dict[tuple[str, tuple[int, ...]], tuple[int, str]] = {}
        for method_name in dict.fromkeys(_method_name(m, module) for m in methods):
            method = METHODS.create(method_name)
            if method.supports(module) is not None:
                continue
            for fraction in fractions:
                ranks = _fraction_ranks(method, module, fraction)
                macs = method.macs(module, ranks, io)
                if macs < dense and (method.kind, ranks) not in priced:
                    priced[(method.kind, ranks)] = (macs, f"{method_name}:{fraction:g}")
        if priced:
            found[name] = tuple(c for _, c in sorted(priced.values(), key=lambda p: -p[0]))
    return found


def parse_choice(choice: str) -> tuple[str, float]:
    """``"svd:0.5"`` -> ``("svd", 0.5)``; a ConfigError for anything else."""
    method, _, fraction = str(choice).partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if method not in METHODS or not 0 < value <= 1:
        raise ConfigError(f"A rank choice is '<method>:<fraction of full rank>' such as 'svd:0.5'; got {choice!r}. "
                          f"Use a search space's own choices.")
    return method, value


def shell_of(module: nn.Module, choice: str) -> nn.Sequential:
    """The chain of layers ``choice`` (``"method:fraction"``) replaces ``module`` with, as the
    uninitialised shell :func:`factorise` builds with ``weights=False`` (the same ranks, from the
    module's own shape): what a latency table times for a factorised layer, with no decomposition
    paid. A ConfigError for a method whose layout has no shell or that needs calibration."""
    method_name, fraction = parse_choice(choice)
    method = METHODS.create(method_name)
    why = method.supports(module)
    if why is None and (method.needs_calibration or method.kind not in KINDS):
        why = f"method '{method_name}' builds layers of kind '{method.kind}', which have no shell to time"
    if why is not None:
        raise ConfigError(f"Cannot build {choice} of a {type(module).__name__} to time it: {why}. Use the "
                          f"methods svd, tucker or cp, or time the built model (LatencyTable.measure).")
    return shell(method.kind, module, _fraction_ranks(method, module, fraction))


def untimed(methods: Sequence[str]) -> tuple[str, ...]:
    """Those of ``methods`` (as :func:`rank_methods` gives them) whose factorised layers
    :func:`shell_of` cannot build, so a latency table cannot time them: a method registered with a
    layout of its own."""
    return tuple(m for m in methods if m != AUTO and METHODS.create(m).kind not in KINDS)


def factorise(model: nn.Module, ranks: Mapping[str, str], example_inputs: Any, *, weights: bool = True,
              cache: dict[Any, tuple[nn.Module, float]] | None = None) -> DecomposeResult:
    """``model`` (not changed) with each layer of ``ranks`` (module -> ``"method:fraction"``, as
    :meth:`~prunekit.search.space.SearchSpace.ranks` gives) factorised exactly so, even where that
    saves no MACs: the method's ranks at that fraction of the layer's full rank, as
    ``decompose(model, method=..., rank=fraction, include=[layer], options={"force": True})`` gives
    them, in one pass (a search builds many candidates). ``weights=False``: the factorised layers are
    left uninitialised (:func:`prunekit.decompose.layers.shell`, errors NaN), which is all that
    counting MACs and params needs, without the decompositions' cost (Tucker-2's iterations).
    ``cache``: factorised layers by (layer, choice, weight shape), reused (copied) when met again;
    valid only for candidates of one model pruned by one set of scores (an Evaluator's), where a
    layer's shape says which channels it kept."""
    if example_inputs is None:
        raise ConfigError(f"Factorising {', '.join(list(ranks)[:3])} needs example_inputs (their shapes). "
                          f"Pass example_inputs.")
    modules = dict(model.named_modules())
    seen = capture_calls(model, example_inputs, [n for n in ranks if n in modules])
    total = count_macs(model, example_inputs)
    out = copy.deepcopy(model)
    records: list[LayerRecord] = []
    for name, choice in ranks.items():
        method_name, fraction = parse_choice(choice)
        method, module = METHODS.create(method_name), modules.get(name)
        if module is None:
            why: str | None = "no such layer"
        else:
            why = method.supports(module) or (None if name in seen else "not run by example_inputs")
        if module is None or why is not None or method.needs_calibration:
            raise ConfigError(f"Cannot factorise '{name}' as {choice}: {why or 'it needs calibration batches'}. "
                              f"Apply searched ranks to the model they were searched on (after its widths).")
        calls = seen[name]  # NOTE: every call's shapes: a layer run on several input sizes costs each
        layer_ranks = _fraction_ranks(method, module, fraction)
        key = (name, choice, tuple(module.weight.shape))
        new: nn.Module
        if not weights and method.kind in KINDS:
            new, error = shell(method.kind, module, layer_ranks), float("nan")
        elif cache is not None and key in cache:
            new, error = copy.deepcopy(cache[key][0]), cache[key][1]
        else:
            new, error = method.factorize(module, layer_ranks, None)
            if cache is not None:
                cache[key] = (copy.deepcopy(new), error)
        out.set_submodule(name, new)
        records.append(LayerRecord(name, method.kind, tuple(module.weight.shape), layer_ranks,
                                   sum(original_macs(module, io) for io in calls),
                                   sum(method.macs(module, layer_ranks, io) for io in calls), error))
    after = total - sum(r.macs_before - r.macs_after for r in records)
    return DecomposeResult(out, tuple(records), (), total, after,
                           notes=(f"searched ranks: {len(records)} layers factorised as the search chose",))
