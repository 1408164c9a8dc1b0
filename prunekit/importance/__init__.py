"""Groups + model (+ collected stats) in, one score per channel out (higher = keep).

Every importance is a pure function ``(group, model, stats=None, **options) -> Tensor[group.size]``;
it never changes the model, and the same inputs give the same scores. Those that need data read a
:class:`Stats` made by :func:`collect`, the only code here that runs batches; :func:`score` does both.
Shared options: ``aggregate`` (``sum``/``mean``/``max`` over a group's members) and ``normalize``
(``None``/``mean``/``max``/``sum``/``standardize`` per group).
"""

from prunekit.importance.activation import activation as activation
from prunekit.importance.activation import apoz as apoz
from prunekit.importance.bn_scale import bn_scale as bn_scale
from prunekit.importance.fpgm import fpgm as fpgm
from prunekit.importance.lsh import lsh as lsh
from prunekit.importance.magnitude import l1 as l1
from prunekit.importance.magnitude import l2 as l2
from prunekit.importance.magnitude import random as random
from prunekit.importance.score import score as score
from prunekit.importance.stats import Stats as Stats
from prunekit.importance.stats import collect as collect
from prunekit.importance.taylor import taylor as taylor
from prunekit.registry import Registry

IMPORTANCE: Registry = Registry("importance")  # NOTE: unknown names list every known one
IMPORTANCE.add("l1", l1, needs_data=False, description="sum of |w| over the weights writing and reading a channel")
IMPORTANCE.add("l2", l2, needs_data=False, description="L2 norm of the weights writing and reading a channel")
IMPORTANCE.add("random", random, needs_data=False, seeded=True, description="seeded uniform random baseline")
IMPORTANCE.add("bn_scale", bn_scale, needs_data=False,
               description="|gamma| of the channel's BatchNorm (Liu et al. 2017)")
IMPORTANCE.add("fpgm", fpgm, needs_data=False,
               description="distance to the other filters; near the geometric median = redundant (He et al. 2019)")
IMPORTANCE.add("lsh", lsh, needs_data=False, seeded=True,
               description="L2 norm, with near-duplicate filters (SimHash buckets) scored lowest")
IMPORTANCE.add("taylor", taylor, needs_data=True, needs=("gradients",),
               description="first-order Taylor |sum w * dL/dw| from calibration batches (Molchanov et al. 2019)")
IMPORTANCE.add("activation", activation, needs_data=True, needs=("activations",),
               description="mean |activation| of the channel on calibration batches")
IMPORTANCE.add("apoz", apoz, needs_data=True, needs=("activations",),
               description="1 - average percentage of zero activations (Hu et al. 2016)")

__all__ = ["IMPORTANCE", "Stats", "activation", "apoz", "bn_scale", "collect", "fpgm", "l1", "l2", "lsh",
           "random", "score", "taylor"]
