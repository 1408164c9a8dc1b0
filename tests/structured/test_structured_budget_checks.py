"""Malformed or unreachable budgets fail in one line that says what to pass: depth pruning's target and
block count, the prune workflow's stage and metric budget (before any data is loaded), a Target given a
bool or a string, and a target that ``round_to`` alone makes impossible."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.config import parse_config
from prunekit.errors import ConfigError
from prunekit.structured import StructuredPruner, Target
from prunekit.structured.depth import prune_depth
from prunekit.workflows import Measure
from prunekit.workflows import prune as prune_module


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def _residual() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Block(8), _Block(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4)).eval()


X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_depth_target_no_block_removal_reaches_is_refused() -> None:
    model = _residual()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"Target\(macs=0\.01\) cannot be reached: removing all 2 residual "
                                          r"blocks found keeps 0\.\d+ of the dense MACs\. Ask for macs >= 0\.\d+"):
        prune_depth(model, X, target=Target(macs=0.01))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    _, record = prune_depth(model, X, target=Target(macs=0.9))  # NOTE: a reachable target still prunes
    assert len(record.removed) >= 1 and record.macs[1] <= 0.9 * record.macs[0]


@pytest.mark.parametrize("n_blocks", [2.5, True, 1.0])
def test_depth_n_blocks_must_be_a_whole_number(n_blocks: object) -> None:
    with pytest.raises(ConfigError, match=rf"n_blocks must be a whole number of blocks to remove; got "
                                          rf"{n_blocks!r}\. Pass an int"):
        prune_depth(_residual(), X, n_blocks=n_blocks)  # type: ignore[arg-type]


def test_depth_target_given_as_a_string_shows_a_target() -> None:
    with pytest.raises(ConfigError, match=r"got 'macs=0\.5'\. Pass e\.g\. Target\(macs=0\.8\) or \{'macs': 0\.8\}"):
        prune_depth(_residual(), X, target="macs=0.5")


@pytest.mark.parametrize("kind", ["macs", "ratio", "size_mb", "batch_size"])
def test_target_refuses_booleans(kind: str) -> None:
    values = {kind: True} if kind != "batch_size" else {"macs": 0.5, "batch_size": True}
    with pytest.raises(ConfigError, match=rf"'{kind}' must be a number, not a bool; got True\. Pass "):
        Target(**values)
    with pytest.raises(ConfigError, match="not a bool"):
        parse_config(Target, values)
    with pytest.raises(ConfigError, match="not a bool"):
        StructuredPruner(values).fit(_cnn(), X)


def test_round_to_that_keeps_every_channel_is_named_with_a_smaller_round_to() -> None:
    with pytest.raises(ConfigError) as info:
        StructuredPruner({"macs": 0.5}, round_to=32).fit(_cnn(), X)
    text = str(info.value)
    assert "\n" not in text and "keeps 1.000 of the dense macs" in text
    assert "round_to=32 rounds every kept width up to a multiple of 32, so 2 of the 2 prunable groups " \
           "(16-32 channels) keep all their channels" in text
    assert "Fix: pass a smaller round_to, e.g. round_to=" in text
    assert "macs >= 1.0" not in text and "ignore" not in text
    StructuredPruner({"macs": 0.5}, round_to=8).fit(_cnn(), X)  # NOTE: the advice holds: a smaller one reaches it


def test_unreachable_target_names_min_keep_and_ignored_layers() -> None:
    with pytest.raises(ConfigError, match=r"min_keep=12 keeps at least 12 channels in every group.*Fix: pass a "
                                          r"smaller min_keep in options; or ask for macs >= 0\.\d+\.$"):
        StructuredPruner({"macs": 0.05}, round_to=1, options={"min_keep": 12}).fit(_cnn(), X)
    with pytest.raises(ConfigError, match=r"ignore keeps 1 layer whole \(0\).*Fix: ignore fewer layers"):
        StructuredPruner({"macs": 0.01}, round_to=1, ignore=["0"]).fit(_cnn(), X)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"max_metric_drop": "0.01"}, r"max_metric_drop must be >= 0, a number .*; got '0\.01'\. Pass e\.g\. "
                                  r"max_metric_drop=0\.01\."),
    ({"max_metric_drop": True}, r"max_metric_drop must be >= 0, a number .*; got True\."),
    ({"max_metric_drop": 0.01, "tries": 2.5}, r"tries must be >= 1, a whole number .*; got 2\.5\. Pass e\.g\. tries=5"),
    ({"stage": {"macs": 0.5, "importance": "l1"}},
     r"prune: stage has unknown keys \['macs'\]; it takes target, importance, .* macs belongs in the target: pass "
     r"stage=\{'target': \{'macs': 0\.5\}, 'importance': 'l1'\}\."),
    ({"stage": {"target": {"macs": 0.5}, "scop": "global"}}, r"unknown keys \['scop'\].* Did you mean 'scope'\?"),
    ({"stage": {"importance": "l1"}}, r"stage has no 'target'.*stage=\{'target': \{'macs': 0\.5\}\}"),
])
def test_prune_workflow_refuses_malformed_arguments_before_loading_data(
        monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], words: str) -> None:
    def no_data(*args: object, **kw: object) -> None:
        raise AssertionError("the arguments must be checked before the data is loaded")

    monkeypatch.setattr(prune_module, "build", no_data)
    stage = kwargs.pop("stage", {"target": {"macs": 0.5}})
    with pytest.raises(ConfigError, match=words):
        prune_module.prune(_cnn(), "fashion_mnist", stage=stage, finetune_epochs=0,  # type: ignore[arg-type]
                           measure=Measure(batch_sizes=(1,), min_time_s=0.0), **kwargs)


def test_check_budget_accepts_numbers() -> None:
    from prunekit.workflows.metric_budget import check_budget

    check_budget(None, 5)
    check_budget(0, 1)
    check_budget(0.01, 3)


def test_a_target_given_as_a_string_shows_a_target_dict() -> None:
    from prunekit.recover import TrainConfig

    with pytest.raises(ConfigError, match=r"'target' must be a Target or a mapping; got str 'macs=0.5'\. "
                                          r"Pass e.g\. \{'macs': 0\.5\}"):
        StructuredPruner(target="macs=0.5").validate_params()
    with pytest.raises(ConfigError, match=r"TrainConfig: expected a mapping of options; got str 'x'\. Pass a "
                                          r"dict of its fields \(epochs, "):
        parse_config(TrainConfig, "x")
