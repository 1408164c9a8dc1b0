"""Adapters to other training frameworks (imported on use; prunekit does not depend on them)."""

from prunekit.integrations.hf_trainer import PrunekitTrainerCallback

__all__ = ["PrunekitTrainerCallback"]
