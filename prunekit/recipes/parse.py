"""Validate a recipe file into a :class:`Recipe`; every problem names the file, line and field.

Checks run before any work: the schema (pydantic), then names that registries know (model,
dataset, importance) so a misspelt name fails in a second, not after an hour of training.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from prunekit.errors import ConfigError, PrunekitError, did_you_mean
from prunekit.recipes.loader import load_yaml, where
from prunekit.recipes.schema import STAGE_KINDS, Recipe, stage_kind, stage_options
from prunekit.config import expected, literal_choices

__all__ = ["load_recipe", "parse_recipe"]


def _field(loc: Sequence[Any]) -> tuple[Any, ...]:
    """Pydantic's loc without the tagged-union repetition (``stages,1,prune,prune,x`` -> ``stages,1,prune,x``)."""
    out: list[Any] = []
    for part in loc:
        if out and part == out[-1] and isinstance(part, str) and part in STAGE_KINDS:
            continue
        out.append(part)
    return tuple(out)


def _dotted(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _message(error: dict[str, Any]) -> str:
    kind, got = error["type"], error.get("input")
    if kind == "stage_kind":
        if isinstance(got, dict) and len(got) > 1:
            what = "stages" if all(key in STAGE_KINDS for key in got) else "keys"
            items = " and ".join(f"- {key}: ..." for key in got)
            return (f"one list item holds {len(got)} {what} ({', '.join(map(str, got))}); a stage is one key "
                    f"naming its kind. Split them into separate list items: {items}")
        if isinstance(got, str) and got in STAGE_KINDS:
            return (f"stage '{got}' is a bare name; a stage is one key naming its kind, mapped to its options. "
                    f"Write it as `- {got}: {{}}` (or `- {got}: {{...}}` with options).")
        name = next(iter(got)) if isinstance(got, dict) and got else got
        return (f"unknown stage {name!r}; a stage is one key naming its kind, one of "
                f"{', '.join(STAGE_KINDS)}.{did_you_mean(str(name), STAGE_KINDS)}")
    if kind == "extra_forbidden":
        if len(error["loc"]) == 1:
            return (f"unknown key; a recipe's keys are {', '.join(Recipe.model_fields)}. Remove it or fix its "
                    f"spelling.{did_you_mean(str(error['loc'][0]), Recipe.model_fields)}")
        return "unknown key; remove it or fix its spelling (`prunekit run --help` lists the stage options)"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    allowed = ""
    if kind == "literal_error":
        choices = literal_choices(error)
        allowed = f" Allowed: {', '.join(choices)}.{did_you_mean(str(got), choices)}"
    shown = "" if kind == "missing" else f"; got {got!r}"
    return f"{expected(error)}{shown}.{allowed}"


def parse_recipe(data: Any, lines: dict[tuple[Any, ...], int] | None = None, *, source: str = "recipe") -> Recipe:
    """Validate already-loaded recipe data (``lines`` maps key paths to lines for messages)."""
    lines = lines or {}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # NOTE: an unknown key first: a misspelt required key (modle:) is also reported as missing
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = _field(first["loc"])
        line = where(lines, loc)
        at = f"{source}:{line}" if line else source
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{at}: {_dotted(loc)}: {_message(first)}{more}") from None
    _check_names(recipe, lines, source)
    _check_allocations(recipe, lines, source)
    _warn_stale(recipe)
    return recipe


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a YAML recipe file."""
    data, lines = load_yaml(path)
    return parse_recipe(data, lines, source=str(Path(path)))


def _check_names(recipe: Recipe, lines: dict[tuple[Any, ...], int], source: str) -> None:
    """Registry names (model, dataset, importance) exist; the error points at the line."""
    from prunekit import data as datasets
    from prunekit.importance import IMPORTANCE
    from prunekit.workflows.common import check_model_name

    def check(loc: tuple[Any, ...], lookup: Any) -> None:
        try:
            lookup()
        except PrunekitError as exc:
            line = where(lines, loc)
            at = f"{source}:{line}" if line else source
            raise ConfigError(f"{at}: {_dotted(loc)}: {' '.join(str(exc).split())}") from None

    check(("model", "name"), lambda: check_model_name(recipe.model.name))
    if not (Path(recipe.data.name).exists() or recipe.data.name.endswith(".npz")):
        check(("data", "name"), lambda: datasets.DATASETS.get(recipe.data.name))
    factorised_at = None
    for i, stage in enumerate(recipe.stages):
        kind, options = stage_kind(stage), stage_options(stage)
        if kind == "decompose":
            if factorised_at is not None:
                _fail(lines, source, ("stages", i), "a recipe factorises its model once; merge this "
                      f"decompose stage with stages[{factorised_at}].")
            factorised_at = i
        if kind in ("prune", "gates") and factorised_at is not None:
            _fail(lines, source, ("stages", i), f"structural '{kind}' cannot follow the decompose stage "
                  f"stages[{factorised_at}] (it would cut factorised layers). Put structural stages first.")
        if kind == "prune":
            check(("stages", i, kind, "importance"), lambda o=options: IMPORTANCE.get(o.importance))
            for j, step in enumerate(options.schedule or []):
                if step.importance is not None:
                    check(("stages", i, kind, "schedule", j, "importance"),
                          lambda s=step: IMPORTANCE.get(s.importance))


def _check_allocations(recipe: Recipe, lines: dict[tuple[Any, ...], int], source: str) -> None:
    """Every ``allocation: search`` has a search stage before it to apply: for ``decompose`` one that
    searched ranks, and whose widths (and blocks), if it searched them, a ``prune: {allocation:
    search}`` applied first (its ranks are fractions of the pruned layers' ranks)."""
    search_at, pruned = None, False
    for i, stage in enumerate(recipe.stages):
        kind, options = stage_kind(stage), stage_options(stage)
        if kind == "search":
            search_at, pruned = i, False
        if getattr(options, "allocation", None) != "search":
            continue
        if search_at is None:
            example = "{target: {macs: 0.25}" + (", ranks: true}" if kind == "decompose" else "}")
            _fail(lines, source, ("stages", i), f"{kind}: allocation: search needs a search stage before it. "
                  f"Add - search: {example} before this {kind} stage.")
        searched = stage_options(recipe.stages[search_at])
        if kind == "prune":
            pruned = True
        elif not searched.ranks:  # type: ignore[attr-defined]
            _fail(lines, source, ("stages", i), f"decompose: allocation: search needs a search stage with ranks "
                  f"before it; stages[{search_at}] searches widths only. Set ranks: true in it.")
        elif not pruned and (searched.widths or searched.depth):  # type: ignore[attr-defined]
            _fail(lines, source, ("stages", i), f"decompose: allocation: search applies ranks searched on the "
                  f"widths stages[{search_at}] chose; they are not applied yet. Add - prune: {{allocation: "
                  f"search}} before this decompose stage.")


_WRITES = {"export": "OUT/export", "quantize": "OUT/quantize"}
_CHANGES = ("prune", "gates", "sparsify", "decompose", "train", "finetune", "distill", "qat")


def _warn_stale(recipe: Recipe) -> None:
    """Warn (the user may want both) where a later stage makes an earlier one's output stale: a file
    written before the model changes, or a search whose allocation nothing applies."""
    kinds = [stage_kind(stage) for stage in recipe.stages]
    for i, kind in enumerate(kinds):
        if kind in _WRITES:
            later = next((j for j in range(i + 1, len(kinds)) if kinds[j] in _CHANGES), None)
            if later is not None:
                warnings.warn(f"stage {i + 1} ({kind}) writes {_WRITES[kind]} before stage {later + 1} "
                              f"({kinds[later]}) changes the model: {_WRITES[kind]} holds the model as it was "
                              f"then", UserWarning, stacklevel=3)
        if kind != "search":
            continue
        # NOTE: a later search replaces the allocation: only the stages before it can apply this one
        upto = next((j for j in range(i + 1, len(kinds)) if kinds[j] == "search"), len(kinds))
        if not any(getattr(stage_options(s), "allocation", None) == "search" for s in recipe.stages[i + 1:upto]):
            where = "last" if i == len(kinds) - 1 else f"stage {i + 1}"
            then = (f" before stage {upto + 1} (search) replaces it" if upto < len(kinds) else "")
            warnings.warn(f"the search stage is {where}: its allocation is applied by no later prune/decompose "
                          f"stage with allocation: search{then} (its result is in results.json)", UserWarning,
                          stacklevel=3)


def _fail(lines: dict[tuple[Any, ...], int], source: str, loc: tuple[Any, ...], message: str) -> None:
    line = where(lines, loc)
    raise ConfigError(f"{source}:{line}: {_dotted(loc)}: {message}" if line else f"{source}: {_dotted(loc)}: {message}")
