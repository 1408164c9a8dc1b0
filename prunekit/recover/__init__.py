"""Recover accuracy by training: in come a model, data (DataSplits or any iterable of batches such
as a DataLoader), a TrainConfig (or its YAML keys) and a task (classification by default); out
comes the same model, trained in place, and a TrainResult (history, val/test metrics, time).
Callbacks add distillation from the unpruned model (:class:`Distiller`, through the same task) and
sparsity-inducing regularisers (:class:`BNScaleL1`, :class:`GroupLasso`) to the loss.
"""

from prunekit.recover.callbacks import Callback as Callback
from prunekit.recover.config import TrainConfig as TrainConfig
from prunekit.recover.config import config_error as config_error
from prunekit.recover.config import parse_config as parse_config
from prunekit.recover.distill import Distiller as Distiller
from prunekit.recover.distill import distillation_loss as distillation_loss
from prunekit.recover.regularize import BNScaleL1 as BNScaleL1
from prunekit.recover.regularize import GroupLasso as GroupLasso
from prunekit.recover.train import TrainResult as TrainResult
from prunekit.recover.train import evaluate as evaluate
from prunekit.recover.train import train as train

__all__ = [
           "BNScaleL1",
           "Callback",
           "Distiller",
           "GroupLasso",
           "TrainConfig",
           "TrainResult",
           "config_error",
           "distillation_loss",
           "evaluate",
           "parse_config",
           "train",
]
