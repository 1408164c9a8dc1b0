"""Scores + target in, Plan out (``allocate``, ``search``); Plan + model in, a smaller plain module out
(``apply``). ``StructuredPruner`` wraps the whole path in scikit-learn's fit/transform shape.

``ratio`` always means the fraction of channels *removed*; a :class:`Target`'s ``macs``, ``params``
and ``latency`` are the fraction *kept* relative to the dense model. ``apply`` works on a copy and
verifies the result against the masked dense model before returning it.
"""

from prunekit.structured.allocate import allocate as allocate
from prunekit.structured.apply import VerificationError as VerificationError
from prunekit.structured.apply import apply as apply
from prunekit.structured.apply import mask as mask
from prunekit.structured.apply import verify as verify
from prunekit.structured.depth import DepthRecord as DepthRecord
from prunekit.structured.depth import block_importance as block_importance
from prunekit.structured.depth import prune_depth as prune_depth
from prunekit.structured.depth import remove_blocks as remove_blocks
from prunekit.structured.depth import residual_blocks as residual_blocks
from prunekit.structured.iterative import compose as compose
from prunekit.structured.iterative import prune_iteratively as prune_iteratively
from prunekit.structured.plan import Plan as Plan
from prunekit.structured.pruner import PrunerOptions as PrunerOptions
from prunekit.structured.pruner import StructuredPruner as StructuredPruner
from prunekit.structured.scheduled import ScheduledPruner as ScheduledPruner
from prunekit.structured.scheduled import ScheduleEntry as ScheduleEntry
from prunekit.structured.target import Target as Target
from prunekit.structured.target import search as search

__all__ = ["Plan", "allocate", "apply", "mask", "verify", "VerificationError", "Target", "search",
           "StructuredPruner", "PrunerOptions", "ScheduledPruner", "ScheduleEntry", "prune_iteratively", "compose",
           "DepthRecord", "block_importance", "prune_depth", "remove_blocks", "residual_blocks"]
