"""Plan: for each channel group, the channel indices to keep. Plain, versioned, JSON-serialisable."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prunekit.errors import DataError

__all__ = ["Plan", "PLAN_VERSION"]

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """Which channels survive. Computing a plan never touches the model; ``apply`` is the only mutation.

    Args:
        keep: group id -> sorted channel indices kept (groups not listed keep everything).
        sizes: group id -> the group's original size (so a plan can be checked against a graph).
        meta: how the plan was made (importance, ratio, target, ...), for the record.
    """

    keep: Mapping[str, tuple[int, ...]]
    sizes: Mapping[str, int]
    meta: Mapping[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION

    def removed(self, group_id: str) -> tuple[int, ...]:
        """Channel indices of ``group_id`` that are cut."""
        size = self.sizes.get(group_id, 0)
        kept = self.keep.get(group_id)
        return () if kept is None else tuple(sorted(set(range(size)).difference(kept)))

    @property
    def ratio(self) -> float:
        """Fraction of all listed channels that are cut."""
        total = sum(self.sizes.values())
        return 0.0 if total == 0 else 1 - sum(len(v) for v in self.keep.values()) / total

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "keep": {k: list(v) for k, v in self.keep.items()},
                "sizes": dict(self.sizes), "meta": dict(self.meta)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        version = data.get("version")
        if version != PLAN_VERSION:
            raise DataError(f"Plan version {version!r} is not supported (this prunekit reads version "
                            f"{PLAN_VERSION}). Re-create the plan with this prunekit version.")
        keep = {k: tuple(int(i) for i in v) for k, v in data["keep"].items()}
        return cls(keep=keep, sizes={k: int(v) for k, v in data["sizes"].items()},
                   meta=dict(data.get("meta", {})), version=version)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
