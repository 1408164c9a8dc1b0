"""Options models users build by hand (``Target(macs=2)``, ``TrainConfig(lr=-1)``) fail in one line.

Kept apart from :mod:`prunekit.config`, which imports pydantic only when a value is validated: this
module imports it, and only the modules defining such models (which import pydantic anyway) use it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic._internal._model_construction import ModelMetaclass  # NOTE: BaseModel's metaclass (type(BaseModel))

from prunekit.config import config_error

__all__ = ["OneLineErrors"]


class OneLineErrors(ModelMetaclass):
    """The metaclass of an options model: calling the class (``Target(macs=2)``) raises the one-line
    ConfigError of :func:`~prunekit.config.parse_config` instead of pydantic's multi-line
    ``ValidationError``. Only the call is wrapped: validating the model as a field of another (a
    recipe's stage) goes on reporting each problem at its place, and no ``__init__`` is overridden."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls) from None
