"""TrainConfig: every option of the training loop, validated once, frozen afterwards.

Field names are the YAML keys of the recipe's training stage and the ``--flags`` of
``prunekit train``. Pydantic's multi-line ``ValidationError`` is turned into a one-line
:class:`~prunekit.errors.ConfigError` (the thing, what was expected, what was got, what to do) by
:func:`config_error`; :func:`parse_config` validates a mapping and raises that error directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prunekit.errors import ConfigError, did_you_mean

__all__ = ["TrainConfig", "config_error", "parse_config"]

ModelT = TypeVar("ModelT", bound=BaseModel)


class TrainConfig(BaseModel):
    """Options of :func:`prunekit.recover.train`; a frozen pydantic model (unknown keys are errors).

    The learning rate follows ``scheduler`` per optimizer step: linear warm-up over
    ``warmup_epochs``, then constant (``none``), cosine decay to 0 at the last step (``cosine``) or
    multiplied by ``gamma`` every ``step_size`` epochs (``step``). ``batch_size`` is per process:
    under ``torchrun --nproc_per_node=N`` the effective batch is ``N * batch_size``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(10, ge=0, description="number of passes over the training set")
    batch_size: int = Field(64, ge=1, description="samples per step (per process under torchrun)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimizer")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam/adamw)")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw)")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd only)")
    scheduler: Literal["none", "cosine", "step"] = Field("none", description="lr schedule")
    step_size: int = Field(10, ge=1, description="epochs between lr drops (scheduler=step)")
    gamma: float = Field(0.1, gt=0, le=1, description="lr factor at each drop (scheduler=step)")
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear lr warm-up")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    seed: int = Field(0, ge=0, description="seed for shuffling and dropout")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch")
    max_eval_batches: int | None = Field(None, ge=1, description="cap on batches per validation "
                                         "or test evaluation")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")

    @model_validator(mode="after")
    def _check_warmup_and_nesterov(self) -> TrainConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"TrainConfig: 'warmup_epochs' must be <= epochs ({self.epochs}); got "
                f"{self.warmup_epochs}. Lower warmup_epochs or train for more epochs."
            )
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise ValueError(
                "TrainConfig: 'nesterov' needs momentum > 0; got momentum 0. Set momentum (e.g. "
                "0.9) or nesterov: false."
            )
        return self


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


def _expected(error: Mapping[str, Any]) -> str:
    """The 'must be ...' part of one pydantic error, in our wording."""
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
        hint = (did_you_mean(str(got), _literal_choices(first)).strip() + " " + hint).strip()
    return ConfigError(f"{name}: '{field}' {_expected(first)}; got {got!r}. {hint}{more}")


def _literal_choices(error: Mapping[str, Any]) -> list[str]:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    return [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip()]


def parse_config(model: type[ModelT], values: Mapping[str, Any] | ModelT) -> ModelT:
    """Validate ``values`` into ``model``; failing raises a one-line ConfigError."""
    if isinstance(values, model):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{model.__name__}: expected a mapping of options; got "
                          f"{type(values).__name__}. Pass a dict such as {{'epochs': 2}}.")
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise config_error(exc, model) from None
