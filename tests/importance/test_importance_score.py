"""score(): one call scores every prunable group, collecting data only for importance that needs it."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import ConfigError, UnknownNameError
from prunekit.importance import IMPORTANCE, collect, random, score, taylor

from _importance_models import build


def test_unknown_importance_suggests_the_closest_name() -> None:
    model, graph, _ = build("mlp")
    with pytest.raises(UnknownNameError, match=r"Unknown importance 'tayler'\. Did you mean 'taylor'\?"):
        score(graph, model, "tayler")


@pytest.mark.parametrize("importance", IMPORTANCE.names(needs_data=True))
def test_a_data_importance_without_batches_says_how_to_pass_them(importance: str) -> None:
    model, graph, _ = build("mlp")
    want = f"importance '{importance}' needs calibration batches: pass batches=[(inputs, labels), ...] (prunekit prune passes 4 training batches itself)"
    with pytest.raises(ConfigError) as info:
        score(graph, model, importance)
    assert str(info.value) == want
    with pytest.raises(ConfigError, match="stats=collect"):
        IMPORTANCE.get(importance).factory(graph.prunable[0], model)


def test_data_free_importance_ignores_batches_and_data_importance_uses_them() -> None:
    model, graph, batches = build("mlp")
    assert IMPORTANCE.names(needs_data=True) == ["activation", "apoz", "taylor"]
    group = graph.prunable[0]
    got = score(graph, model, "taylor", batches=batches)[group.id]
    torch.testing.assert_close(got, taylor(group, model, collect(model, batches, [group])))
    stats = collect(model, batches, graph.prunable)
    torch.testing.assert_close(score(graph, model, "taylor", stats=stats)[group.id], got)
    torch.testing.assert_close(score(graph, model, "taylor", batches=batches, max_batches=1)[group.id],
                               taylor(group, model, collect(model, batches[:1], [group])))


def test_seed_reaches_seeded_importance() -> None:
    model, graph, _ = build("convnet")
    group = graph.prunable[0]
    assert torch.equal(score(graph, model, "random", seed=3)[group.id], random(group, model, seed=3))
    assert not torch.equal(score(graph, model, "random", seed=3)[group.id], score(graph, model, "random")[group.id])
    assert IMPORTANCE.get("lsh").meta["seeded"]


def test_options_reach_the_importance_and_are_validated() -> None:
    model, graph, _ = build("convnet")
    for scores in score(graph, model, "l1", aggregate="max", normalize="max").values():
        assert scores.max().item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"'aggregate' must be one of .*got 'avg'"):
        score(graph, model, "l2", aggregate="avg")
    with pytest.raises(ConfigError, match=r"'normalize' .*got 'maxx'.*Did you mean 'max'"):
        score(graph, model, "fpgm", normalize="maxx")
    with pytest.raises(ConfigError, match=r"importance 'l2' has no option 'agregate'.*Did you mean 'aggregate'"):
        score(graph, model, "l2", agregate="max")
