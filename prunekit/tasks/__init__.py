"""Tasks: what "good" means for a model. In: a model and a batch (whatever a DataLoader yields:
``(x, y)`` tuples, mappings such as Hugging Face's, or tensors). Out: a differentiable loss, the
outputs distillation compares, and metrics over an iterable of batches.

Built-in tasks, by registered name: ``classification`` (cross-entropy; loss, accuracy, top5),
``causal_lm`` (the model's own loss or shifted cross-entropy; perplexity), ``embedding`` (cosine
of mean-pooled hidden states to a teacher). :class:`Custom` wraps the user's ``loss_fn`` and
``metric_fn``. Training, distillation and evaluation take any of them.
"""

from __future__ import annotations

from typing import Any

from prunekit.errors import ConfigError
from prunekit.registry import Registry
from prunekit.tasks.base import BaseTask as BaseTask
from prunekit.tasks.base import Metrics as Metrics
from prunekit.tasks.base import Task as Task
from prunekit.tasks.base import soft_kl as soft_kl
from prunekit.tasks.batches import to_device as to_device
from prunekit.tasks.causal_lm import CausalLM as CausalLM
from prunekit.tasks.classification import Classification as Classification
from prunekit.tasks.custom import Custom as Custom
from prunekit.tasks.embedding import Embedding as Embedding
from prunekit.tasks.embedding import mean_pool as mean_pool

__all__ = [
    "TASKS",
    "BaseTask",
    "CausalLM",
    "Classification",
    "Custom",
    "Embedding",
    "Metrics",
    "Task",
    "create",
    "mean_pool",
    "names",
    "resolve",
    "soft_kl",
    "to_device",
]

TASKS: Registry[Task] = Registry("task", list_hint="Known: classification, causal_lm, embedding "
                                 "(or prunekit.tasks.Custom for your own loss_fn)")
TASKS.add("classification", Classification, metric="accuracy",
          description="cross-entropy; metrics loss, accuracy (top-1), top5")
TASKS.add("causal_lm", CausalLM, metric="perplexity",
          description="next-token cross-entropy (the model's own loss when it has one); perplexity")
TASKS.add("embedding", Embedding, metric="cosine",
          description="mean-pooled sentence embeddings; cosine to the dense model as teacher")


def create(name: str, **kwargs: Any) -> Task:
    """Build the registered task ``name`` (hyphens allowed) with its own ``kwargs``."""
    return TASKS.create(name, **kwargs)


def names(pattern: str = "*") -> list[str]:
    """Sorted registered task names matching a shell-style ``pattern``."""
    return TASKS.names(pattern)


def resolve(task: Task | str | None, **kwargs: Any) -> Task:
    """A task object from a task, a registered name, or None (classification); ``kwargs`` go to
    the task built from a name or None."""
    if task is None:
        return Classification(**kwargs)
    if isinstance(task, str):
        return create(task, **kwargs)
    if not isinstance(task, Task):
        raise ConfigError(f"task must be a Task (e.g. prunekit.tasks.Classification()) or one of "
                          f"{', '.join(names())}; got {type(task).__name__}. Fix: pass "
                          f"task='causal_lm' or a Task object.")
    return task
