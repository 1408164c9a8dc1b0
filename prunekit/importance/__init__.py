"""Groups + model (+ collected stats) in, one score per channel out (higher = keep).

Every criterion is a pure function ``(group, model, stats=None) -> Tensor[group.size]``; it never
changes the model, and the same inputs give the same scores.
"""

from prunekit.importance.magnitude import l1 as l1
from prunekit.importance.magnitude import l2 as l2
from prunekit.importance.magnitude import random as random
from prunekit.registry import Registry

CRITERIA: Registry = Registry("importance criterion", list_hint="Known: l1, l2, random")
CRITERIA.add("l1", l1)
CRITERIA.add("l2", l2)
CRITERIA.add("random", random)

__all__ = ["CRITERIA", "l1", "l2", "random"]
