"""Sparsity schedules: pure functions of the optimizer step saying how sparse the masks should be.

A schedule answers two questions about step ``t`` (counted from 0, one per optimizer step):
``sparsity(t)``, the fraction of weights that should be zero after step ``t``, and ``is_update(t)``,
whether the masks are recomputed at ``t``. Nothing is counted inside a schedule, so a resumed run
asks the same questions and gets the same answers.

Schedules are chosen by name from :data:`SCHEDULES` (``one_shot``, ``constant``, ``iterative``,
``gradual``); each factory takes the final ``sparsity`` plus its own keyword options.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prunekit.errors import ConfigError
from prunekit.registry import Registry
from prunekit.sparsity.patterns import check_fraction

__all__ = ["Schedule", "OneShot", "Constant", "Iterative", "Gradual", "SCHEDULES", "make_schedule",
           "cubic_sparsity"]

SCHEDULES: Registry[Schedule] = Registry(
    "sparsity schedule", list_hint="Known: one_shot, constant, iterative, gradual")


class Schedule(Protocol):
    """What the sparsifier asks of a schedule; ``sparsity`` is its final (target) sparsity."""

    @property
    def sparsity(self) -> float: ...

    def sparsity_at(self, step: int) -> float:
        """Fraction of weights that should be zero after optimizer step ``step``."""
        ...

    def is_update(self, step: int) -> bool:
        """True when the masks are recomputed at ``step``."""
        ...


def _fraction(owner: str, name: str, value: Any) -> float:
    return check_fraction(value, owner=owner, name=name)


def _step(owner: str, name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}: '{name}' must be an integer step >= {minimum}; got {value!r}. "
                          f"Steps count optimizer steps from 0.")
    return value


@dataclass(frozen=True)
class OneShot:
    """Prune once, to ``sparsity``, at step ``at``; the masks then stay fixed."""

    sparsity: float
    at: int = 0

    def __post_init__(self) -> None:
        _fraction("one_shot schedule", "sparsity", self.sparsity)
        _step("one_shot schedule", "at", self.at)

    def sparsity_at(self, step: int) -> float:
        """``sparsity`` from step ``at`` on, 0 before."""
        return self.sparsity if step >= self.at else 0.0

    def is_update(self, step: int) -> bool:
        """Only at ``at``."""
        return step == self.at


@dataclass(frozen=True)
class Constant:
    """Hold ``sparsity`` from ``start`` to ``end``, recomputing the masks every ``frequency`` steps.

    TF-MOT's ``ConstantSparsity``. Pruned weights stay pruned (the sparsifier never regrows), so a
    re-computation only matters for weights that a data-driven importance now ranks differently
    among the survivors; with magnitude it re-applies the same mask.
    """

    sparsity: float
    start: int = 0
    end: int | None = None
    frequency: int = 100

    def __post_init__(self) -> None:
        _fraction("constant schedule", "sparsity", self.sparsity)
        _step("constant schedule", "start", self.start)
        _step("constant schedule", "frequency", self.frequency, minimum=1)
        if self.end is not None and _step("constant schedule", "end", self.end) < self.start:
            raise ConfigError(f"constant schedule: 'end' ({self.end}) must be >= start "
                              f"({self.start}). Pass a later end, or end=None to never stop.")

    def sparsity_at(self, step: int) -> float:
        """``sparsity`` from ``start`` on, 0 before."""
        return self.sparsity if step >= self.start else 0.0

    def is_update(self, step: int) -> bool:
        """Every ``frequency`` steps from ``start``, up to ``end``."""
        if step < self.start or (self.end is not None and step > self.end):
            return False
        return (step - self.start) % self.frequency == 0


@dataclass(frozen=True)
class Iterative:
    """Step-wise pruning: at each of the ``milestones`` the same fraction of the survivors is cut.

    After the k-th of K milestones (k = 1..K) the kept fraction is
    ``(1 - s_i) * ((1 - s_f) / (1 - s_i)) ** (k / K)``: geometric steps, as in Han et al. (2015)
    and the lottery-ticket papers, ending exactly at ``sparsity`` (s_f) at the last milestone.
    """

    sparsity: float
    milestones: tuple[int, ...] = (0,)
    initial_sparsity: float = 0.0

    def __post_init__(self) -> None:
        owner = "iterative schedule"
        _fraction(owner, "sparsity", self.sparsity)
        _fraction(owner, "initial_sparsity", self.initial_sparsity)
        marks = tuple(self.milestones)
        if not marks or any(_step(owner, "milestones", m) < 0 for m in marks) or list(marks) != sorted(set(marks)):
            raise ConfigError(f"{owner}: 'milestones' must be a non-empty, strictly increasing list "
                              f"of steps; got {self.milestones!r}. Pass e.g. milestones=[0, 500, 1000].")
        if not self.initial_sparsity <= self.sparsity < 1.0:
            raise ConfigError(f"{owner}: needs initial_sparsity <= sparsity < 1; got "
                              f"initial_sparsity {self.initial_sparsity}, sparsity {self.sparsity}. "
                              f"Lower initial_sparsity, or use one_shot to zero every weight.")
        object.__setattr__(self, "milestones", marks)

    def sparsity_at(self, step: int) -> float:
        """The sparsity reached at the last milestone <= ``step`` (0 before the first)."""
        done = sum(1 for m in self.milestones if m <= step)
        if done == 0:
            return 0.0
        kept_i, kept_f = 1.0 - self.initial_sparsity, 1.0 - self.sparsity
        return 1.0 - kept_i * (kept_f / kept_i) ** (done / len(self.milestones))

    def is_update(self, step: int) -> bool:
        """At each milestone."""
        return step in self.milestones


def cubic_sparsity(step: int, *, initial: float, final: float, start: int, span: int) -> float:
    """Zhu & Gupta (2017), "To prune, or not to prune", eq. (1).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for ``t0 <= t <= t0 + n * dt``
    (here ``span = n * dt``); 0 before ``t0`` and ``s_f`` after the end.
    """
    if step < start:
        return 0.0
    progress = min(1.0, (step - start) / span)
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class Gradual:
    """Gradual magnitude pruning with Zhu & Gupta's cubic schedule (2017).

    Masks are recomputed at ``t0 = start``, ``t0 + dt``, ... (``dt = frequency``) up to
    ``end = t0 + n * dt``; between updates the sparsity stays at the last update's value of
    :func:`cubic_sparsity`. The cubic prunes fast while the network has many redundant weights and
    slowly near the target, leaving it time to recover.
    """

    sparsity: float
    start: int = 0
    end: int = 1000
    frequency: int = 100
    initial_sparsity: float = 0.0

    def __post_init__(self) -> None:
        owner = "gradual schedule"
        _fraction(owner, "sparsity", self.sparsity)
        _fraction(owner, "initial_sparsity", self.initial_sparsity)
        _step(owner, "start", self.start)
        _step(owner, "frequency", self.frequency, minimum=1)
        if _step(owner, "end", self.end) <= self.start:
            raise ConfigError(f"{owner}: 'end' ({self.end}) must be after start ({self.start}). "
                              f"Pass the step at which the final sparsity is reached.")
        if self.initial_sparsity > self.sparsity:
            raise ConfigError(f"{owner}: 'initial_sparsity' ({self.initial_sparsity}) must be <= "
                              f"sparsity ({self.sparsity}). Lower initial_sparsity.")

    def _last_update(self, step: int) -> int:
        if step >= self.end:
            return self.end
        return self.start + (step - self.start) // self.frequency * self.frequency

    def sparsity_at(self, step: int) -> float:
        """The cubic evaluated at the last update step <= ``step``."""
        if step < self.start:
            return 0.0
        return cubic_sparsity(self._last_update(step), initial=self.initial_sparsity,
                              final=self.sparsity, start=self.start, span=self.end - self.start)

    def is_update(self, step: int) -> bool:
        """At ``start + k * frequency`` before ``end``, and at ``end``."""
        if step < self.start or step > self.end:
            return False
        return step == self.end or (step - self.start) % self.frequency == 0


SCHEDULES.add("one_shot", OneShot)
SCHEDULES.add("constant", Constant)
SCHEDULES.add("iterative", Iterative)
SCHEDULES.add("gradual", Gradual)


def make_schedule(spec: str | Schedule | Mapping[str, Any] | None, sparsity: float) -> Schedule:
    """A schedule from a name, a ``{"name": ..., **options}`` mapping, or an instance.

    ``sparsity`` (the sparsifier's target) is passed to a schedule built by name or mapping; a
    mapping's own ``sparsity`` and an instance's must equal it (refused otherwise, so the two
    cannot silently disagree).
    """
    if spec is None:
        return OneShot(sparsity)
    if isinstance(spec, str):
        return SCHEDULES.create(spec, sparsity=sparsity)
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"schedule mapping needs a 'name' ({', '.join(SCHEDULES.names())}); got "
                              f"{spec!r}. Pass e.g. {{'name': 'gradual', 'end': 1000}}.")
        if "sparsity" in options:
            _check_same(options["sparsity"], sparsity, f"schedule mapping '{name}'")
        options["sparsity"] = sparsity
        try:
            return SCHEDULES.create(name, **options)
        except TypeError as exc:
            raise ConfigError(f"schedule '{name}': {exc}. Check the option names in its docstring "
                              f"(prunekit.sparsity.schedule).") from None
    if not all(hasattr(spec, attr) for attr in ("sparsity_at", "is_update", "sparsity")):
        raise ConfigError(f"schedule must be a name, a mapping or an object with sparsity, "
                          f"sparsity_at() and is_update(); got {type(spec).__name__}.")
    _check_same(spec.sparsity, sparsity, "the schedule")
    return spec


def _check_same(given: Any, sparsity: float, what: str) -> None:
    """Refuse a schedule whose final sparsity ``given`` is not the sparsifier's ``sparsity``."""
    try:
        same = math.isclose(float(given), float(sparsity))
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ConfigError(f"{what} ends at sparsity {given!r} but the sparsifier's sparsity is {sparsity}. "
                          f"Pass the same value to both, or leave 'sparsity' out of the schedule.")
