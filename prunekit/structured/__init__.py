"""Scores + target in, Plan out (``allocate``); Plan + model in, a smaller plain module out (``apply``).

``ratio`` always means the fraction of channels *removed*. ``apply`` works on a copy and verifies
the result against the masked dense model before returning it.
"""

from prunekit.structured.allocate import allocate as allocate
from prunekit.structured.apply import VerificationError as VerificationError
from prunekit.structured.apply import apply as apply
from prunekit.structured.apply import mask as mask
from prunekit.structured.apply import verify as verify
from prunekit.structured.plan import Plan as Plan

__all__ = ["Plan", "allocate", "apply", "mask", "verify", "VerificationError"]
