"""ScheduledPruner: channel masks that change while training, then a physical, exact cut."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.recover import TrainConfig, train
from prunekit.structured import ScheduledPruner

sys.path.insert(0, str(Path(__file__).parents[1] / "recover"))
from _recover_fixtures import quadrant_splits  # noqa: E402


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)))
        return self.fc(h.mean(dim=(2, 3)))


SCHEDULE = [{"epoch": 0, "ratio": 0.25, "importance": "l1"}, {"epoch": 1, "ratio": 0.5, "importance": "l2"}]


def _removed_rows_are_zero(pruner: ScheduledPruner) -> bool:
    return all(bool((t.index_select(axis, idx) == 0).all()) for t, axis, idx in pruner._zero)


def test_plain_loop_ratio_rises_and_importance_switches() -> None:
    torch.manual_seed(0)
    splits, net = quadrant_splits(), Net()
    x = splits.example_input(4)
    pruner = ScheduledPruner(SCHEDULE).fit(net, x)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=32)
    for epoch in range(3):
        for inputs, labels in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(inputs), labels).backward()
            optimizer.step()
            pruner.step()
            if pruner.plan_ is not None:
                assert _removed_rows_are_zero(pruner)  # training cannot revive a masked channel
        pruner.epoch_end(epoch)
    assert [(h["ratio"], h["importance"]) for h in pruner.history_] == [(0.25, "l1"), (0.5, "l2")]
    small = pruner.finalize()
    assert small.c1.out_channels == small.c2.out_channels == 4
    net.eval(), small.eval()
    torch.testing.assert_close(small(x), net(x), rtol=1e-5, atol=1e-6)  # masked == cut, exactly


def test_as_a_fit_callback_with_resume_state() -> None:
    torch.manual_seed(0)
    splits, net = quadrant_splits(), Net()
    pruner = ScheduledPruner(SCHEDULE[:1]).fit(net, splits.example_input(2))
    train(net, splits, TrainConfig(epochs=2, batch_size=32, lr=0.05, max_steps_per_epoch=4), progress=False,
        callbacks=[pruner])
    assert pruner.plan_ is not None and _removed_rows_are_zero(pruner)
    again = ScheduledPruner(SCHEDULE[:1]).fit(net, splits.example_input(2))
    again.load_state_dict(pruner.state_dict())
    assert again.plan_ == pruner.plan_ and again.epochs_done_ == 2


def test_hugging_face_trainer_callback_drives_the_pruner() -> None:
    pytest.importorskip("transformers")
    import transformers

    from prunekit.integrations import PrunekitTrainerCallback

    calls = []
    pruner = SimpleNamespace(step=lambda: calls.append("step"), epoch_end=lambda e: calls.append(("epoch", e)))
    callback = PrunekitTrainerCallback(pruner)
    assert isinstance(callback, transformers.TrainerCallback)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    callback.on_step_end(None, state, control)
    state.epoch = 1.0
    callback.on_epoch_end(None, state, control)
    assert calls == ["step", ("epoch", 0)]


@pytest.mark.parametrize(("schedule", "match"), [([], "empty"),
                                                   ([{"epoch": 1, "ratio": 0.2}, {"epoch": 1, "ratio": 0.3}], "increasing"),
                                                   ([{"epoch": 0, "ratio": 1.2}], "ratio")])
def test_bad_schedules(schedule: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ScheduledPruner(schedule).fit(Net(), torch.zeros(1, 1, 8, 8))


def test_finalize_before_any_entry_is_a_clear_error() -> None:
    pruner = ScheduledPruner([{"epoch": 3, "ratio": 0.5}]).fit(Net(), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="epoch 3"):
        pruner.finalize()


def test_the_constructor_only_stores_and_use_before_fit_is_a_clear_error() -> None:
    from prunekit.errors import NotFittedError

    pruner = ScheduledPruner([{"epoch": 0, "ratio": 1.5}])  # NOTE: checked in fit, like StructuredPruner
    assert pruner.schedule == [{"epoch": 0, "ratio": 1.5}]
    with pytest.raises(NotFittedError, match="not fitted"):
        pruner.plan_  # noqa: B018
    with pytest.raises(NotFittedError, match="fit"):
        pruner.step()
    with pytest.raises(NotFittedError, match="not fitted"):
        pruner.epoch_end(0)
