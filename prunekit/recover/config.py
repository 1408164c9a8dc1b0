"""TrainConfig: every option of the training loop, validated once, frozen afterwards.

Field names are the YAML keys of the recipe's training stage and the ``--flags`` of
``prunekit train``. Validation errors become one line through :mod:`prunekit.config` (whose
``parse_config`` and ``config_error`` are re-exported here for existing callers).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prunekit._options import OneLineErrors
from prunekit.config import config_error, parse_config

__all__ = ["TrainConfig", "config_error", "parse_config"]


class TrainConfig(BaseModel, metaclass=OneLineErrors):
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
    tensorboard: str | None = Field(None, description="write a TensorBoard log of every step's loss and "
                                    "every epoch's metrics under this folder (one run-N subfolder per training)")

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
