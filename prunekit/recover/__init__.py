"""Recover accuracy by training: in come a model, DataSplits and a TrainConfig (or its YAML keys);
out comes the same model, trained in place, and a TrainResult (history, val/test metrics, time).
Callbacks add distillation from the unpruned model (:class:`Distiller`) and sparsity-inducing
regularisers (:class:`BNScaleL1`, :class:`GroupLasso`) to the loss.
"""

from prunekit.recover.config import TrainConfig as TrainConfig
from prunekit.recover.distill import Distiller as Distiller
from prunekit.recover.distill import distillation_loss as distillation_loss
from prunekit.recover.regularize import BNScaleL1 as BNScaleL1
from prunekit.recover.regularize import GroupLasso as GroupLasso
from prunekit.recover.config import config_error as config_error
from prunekit.recover.config import parse_config as parse_config
from prunekit.recover.train import Callback as Callback
from prunekit.recover.train import TrainResult as TrainResult
from prunekit.recover.train import evaluate as evaluate
from prunekit.recover.train import fit as fit

__all__ = ["TrainConfig", "TrainResult", "Callback", "fit", "evaluate", "config_error",
           "parse_config", "Distiller", "distillation_loss", "BNScaleL1", "GroupLasso"]
