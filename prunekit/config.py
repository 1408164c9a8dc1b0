"""Validated options: a mapping checked against a frozen pydantic model, failing in one line.

Shared by every layer that reads options (recover's TrainConfig, structured's Target and
PrunerOptions, decompose's options, the recipe schema and the CLI). Pydantic's multi-line
``ValidationError`` becomes a one-line :class:`~prunekit.errors.ConfigError` (the thing, what was
expected, what was got, what to do). Pydantic itself is imported only when a value is validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from prunekit.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

__all__ = ["config_error", "expected", "literal_choices", "parse_config"]

ModelT = TypeVar("ModelT", bound="BaseModel")

# NOTE: what to do, per field; the generic hint covers the rest.
_HINTS: dict[str, str] = {
    "epochs": "Pass a whole number of epochs, e.g. 10 (0 only evaluates).",
    "batch_size": "Pass a positive batch size, e.g. 64.",
    "lr": "Pass a positive learning rate, e.g. 0.001 for adam or 0.1 for sgd.",
}
_GENERIC_HINT = "Fix this key in the recipe stage or the matching --flag."

_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
_TYPES = {"int_": "a whole number", "float_": "a number", "bool_": "true or false"}


def expected(error: Mapping[str, Any]) -> str:
    """The 'must be ...' part of one pydantic error (an item of ``exc.errors()``), in our wording."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return f"must be {symbol} {ctx.get(key)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    for prefix, wording in _TYPES.items():
        if kind.startswith(prefix):
            return f"must be {wording}"
    if kind == "missing":
        return "is required"
    return "must be valid: " + str(error["msg"]).removeprefix("Value error, ")


def literal_choices(error: Mapping[str, Any]) -> list[str]:
    """The allowed values of a pydantic ``literal_error`` (``"'a', 'b' or 'c'"`` -> ``[a, b, c]``)."""
    text = str((error.get("ctx") or {}).get("expected", ""))
    return [part.strip(" '") for part in text.replace(" or ", ",").split(",") if part.strip()]


def config_error(exc: ValidationError, model: type[BaseModel] | None = None) -> ConfigError:
    """One-line :class:`ConfigError` for the first problem in ``exc`` (the CLI prints only this).

    The line names the field, what was expected, what was got and what to do; further problems
    are counted at the end, e.g. "TrainConfig: 'epochs' must be >= 0; got -1. Pass ...".
    Pass the validated ``model`` class so an unknown key can list the known ones.
    """
    name = model.__name__ if model is not None else exc.title
    errors = exc.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s) in {name})" if len(errors) > 1 else ""
    field = ".".join(str(part) for part in first["loc"])
    if first["type"] == "value_error" and not field:
        # NOTE: our model validators already write four-part messages.
        return ConfigError(str(first["msg"]).removeprefix("Value error, ") + more)
    if first["type"] == "extra_forbidden":
        known = list(model.model_fields) if model is not None else []
        listing = f"; expected one of {', '.join(known)}" if known else ""
        return ConfigError(
            f"{name}: unknown key '{field}'{listing}.{did_you_mean(field, known)} "
            f"Remove it or fix its spelling.{more}"
        )
    got = first.get("input")
    hint = _HINTS.get(field, _GENERIC_HINT)
    if first["type"] == "literal_error":
        hint = (did_you_mean(str(got), literal_choices(first)).strip() + " " + hint).strip()
    return ConfigError(f"{name}: '{field}' {expected(first)}; got {got!r}. {hint}{more}")


def parse_config(model: type[ModelT], values: Mapping[str, Any] | ModelT) -> ModelT:
    """Validate ``values`` into ``model``; failing raises a one-line ConfigError."""
    from pydantic import ValidationError

    if isinstance(values, model):
        return values
    if not isinstance(values, Mapping):
        fields = list(model.model_fields)
        shown = ", ".join(fields[:4]) + (", ..." if len(fields) > 4 else "")
        raise ConfigError(f"{model.__name__}: expected a mapping of options; got {type(values).__name__} "
                          f"{values!r:.60}. Pass a dict of its fields ({shown}), e.g. {{'{fields[0]}': ...}}."
                          if fields else f"{model.__name__}: expected a mapping of options; got "
                          f"{type(values).__name__}. Pass a dict.")
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise config_error(exc, model) from None

