"""Schedules are pure functions of the step; the cubic one matches Zhu & Gupta's formula."""

from __future__ import annotations

import pytest
from torch import nn

from prunekit.errors import ConfigError, UnknownNameError
from prunekit.sparsity import SCHEDULES, Constant, Gradual, Iterative, OneShot, Sparsifier, cubic_sparsity
from prunekit.sparsity.masks import masks
from prunekit.sparsity.schedule import make_schedule


def test_gradual_matches_the_cubic_formula_at_every_step() -> None:
    s_i, s_f, t0, dt, n = 0.1, 0.9, 20, 5, 12
    schedule = Gradual(s_f, start=t0, end=t0 + n * dt, frequency=dt, initial_sparsity=s_i)
    updates = [t0 + k * dt for k in range(n + 1)]
    for t in range(0, t0 + n * dt + 30):
        last = max((u for u in updates if u <= t), default=None)
        expected = 0.0 if last is None else s_f + (s_i - s_f) * (1 - (last - t0) / (n * dt)) ** 3
        assert schedule.sparsity_at(t) == pytest.approx(expected, abs=1e-12), t
        assert schedule.is_update(t) == (t in updates), t
    assert schedule.sparsity_at(t0) == pytest.approx(s_i) and schedule.sparsity_at(10**6) == s_f


def test_gradual_reaches_the_target_at_end_when_frequency_does_not_divide_the_span() -> None:
    schedule = Gradual(0.8, start=0, end=10, frequency=4)
    assert [t for t in range(15) if schedule.is_update(t)] == [0, 4, 8, 10]
    assert schedule.sparsity_at(9) == pytest.approx(cubic_sparsity(8, initial=0, final=0.8, start=0, span=10))
    assert schedule.sparsity_at(10) == 0.8


def test_iterative_cuts_the_same_fraction_of_survivors_at_each_milestone() -> None:
    schedule = Iterative(0.875, milestones=(0, 10, 20))
    assert [schedule.sparsity_at(t) for t in (-1, 0, 9, 10, 20, 99)] == pytest.approx(
        [0.0, 0.5, 0.5, 0.75, 0.875, 0.875])
    assert [t for t in range(30) if schedule.is_update(t)] == [0, 10, 20]


def test_one_shot_and_constant() -> None:
    assert [OneShot(0.5, at=3).sparsity_at(t) for t in (2, 3, 4)] == [0.0, 0.5, 0.5]
    assert [t for t in range(10) if OneShot(0.5, at=3).is_update(t)] == [3]
    constant = Constant(0.7, start=2, end=8, frequency=3)
    assert [t for t in range(12) if constant.is_update(t)] == [2, 5, 8]
    assert constant.sparsity_at(1) == 0.0 and constant.sparsity_at(11) == 0.7


def test_schedules_are_built_by_name_or_mapping_with_the_sparsifier_target() -> None:
    assert SCHEDULES.names() == ["constant", "gradual", "iterative", "one_shot"]
    assert make_schedule("one_shot", 0.6) == OneShot(0.6)
    assert make_schedule({"name": "gradual", "end": 50}, 0.9) == Gradual(0.9, end=50)
    with pytest.raises(UnknownNameError, match="Did you mean 'gradual'"):
        make_schedule("gradaul", 0.5)
    with pytest.raises(ConfigError, match="ends at sparsity 0.5 but the sparsifier's sparsity is 0.9"):
        make_schedule(OneShot(0.5), 0.9)
    with pytest.raises(ConfigError, match="schedule 'gradual'.*unexpected keyword.*'stop'"):
        make_schedule({"name": "gradual", "stop": 5}, 0.9)


@pytest.mark.parametrize(("build", "words"), [
    (lambda: Gradual(0.9, start=10, end=10), "'end' \\(10\\) must be after start"),
    (lambda: Gradual(1.5, end=10), "'sparsity' must be a fraction in \\[0, 1\\].*got 1.5"),
    (lambda: Gradual(0.5, end=10, frequency=0), "'frequency' must be an integer step >= 1"),
    (lambda: Gradual(0.5, end=10, initial_sparsity=0.6), "'initial_sparsity' \\(0.6\\) must be <="),
    (lambda: Iterative(0.5, milestones=(5, 5)), "strictly increasing"),
    (lambda: Constant(0.5, start=5, end=2), "'end' \\(2\\) must be >= start"),
])
def test_bad_schedule_options_are_named(build: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build()  # type: ignore[operator]


def test_a_schedule_mapping_s_own_sparsity_must_be_the_sparsifier_s() -> None:
    assert make_schedule({"name": "gradual", "sparsity": 0.9, "end": 4}, 0.9) == Gradual(0.9, end=4)
    with pytest.raises(ConfigError, match="schedule mapping 'gradual' ends at sparsity 0.5 but the sparsifier's "
                                          "sparsity is 0.9. Pass the same value to both"):
        make_schedule({"name": "gradual", "sparsity": 0.5, "end": 4}, 0.9)
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.raises(ConfigError, match="ends at sparsity 0.5 but the sparsifier's sparsity is 0.9"):
        Sparsifier(0.9, schedule={"name": "gradual", "sparsity": 0.5, "end": 4, "frequency": 1}).prepare(model)
    assert masks(model) == {}
