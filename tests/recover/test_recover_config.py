"""TrainConfig validation and the one-line ConfigError it becomes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prunekit.errors import ConfigError, PrunekitError
from prunekit.decompose.lowrank import DecomposeOptions
from prunekit.recover import TrainConfig, config_error, parse_config
from prunekit.structured import PrunerOptions, Target


def test_negative_epochs_says_field_expected_and_got() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(TrainConfig, {"epochs": -1})
    message = str(info.value)
    assert "'epochs' must be >= 0" in message and "got -1" in message
    assert "\n" not in message
    assert isinstance(info.value, (ValueError, PrunekitError))


def test_unknown_optimizer_lists_allowed_values() -> None:
    expected = r"'adam', 'adamw' or 'sgd'; got 'adm'\. Did you mean 'adam'\?"
    with pytest.raises(ConfigError, match=expected):
        parse_config(TrainConfig, {"optimizer": "adm"})


def test_unknown_field_is_named_with_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(TrainConfig, {"epochs": 1, "learning_rate": 0.1})
    message = str(info.value)
    assert "unknown key 'learning_rate'" in message
    assert "batch_size" in message and "Remove it" in message


def test_config_error_from_validation_error_is_one_line() -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"epochs": -1, "lr": -1.0})
    error = config_error(info.value, TrainConfig)
    assert isinstance(error, ConfigError)
    assert "\n" not in str(error) and "1 more problem" in str(error)


@pytest.mark.parametrize("build, needle", [
    (lambda: TrainConfig(epochs=-1, lr=-1.0), "TrainConfig: 'epochs' must be >= 0; got -1"),
    (lambda: TrainConfig(epoch=3), "unknown key 'epoch'"),
    (lambda: Target(), "exactly one of ratio, macs"),
    (lambda: Target(macs=2), "'macs' must be a float in (0, 1]; got 2"),
    (lambda: PrunerOptions(min_keep=-1), "PrunerOptions: 'min_keep'"),
    (lambda: DecomposeOptions(cp_iterations=0), "DecomposeOptions: 'cp_iterations'"),
])
def test_options_built_by_hand_fail_in_one_line(build, needle: str) -> None:  # type: ignore[no-untyped-def]
    """``Target()``, ``TrainConfig(lr=-1)``, ...: the one-line ConfigError, not pydantic's multi-line error."""
    with pytest.raises(ConfigError) as info:
        build()
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("values, needle", [
    ({"epochs": 1, "warmup_epochs": 2}, "'warmup_epochs' must be <= epochs"),
    ({"optimizer": "sgd", "nesterov": True, "momentum": 0.0}, "'nesterov' needs momentum > 0"),
    ({"lr": 0}, "'lr' must be > 0"),
    ({"batch_size": "many"}, "'batch_size' must be a whole number"),
    ({"scheduler": "linear"}, "'none', 'cosine' or 'step'"),
])
def test_bad_values_name_the_field(values: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse_config(TrainConfig, values)


def test_config_is_frozen_and_round_trips() -> None:
    config = TrainConfig(epochs=3, optimizer="sgd", scheduler="cosine", max_steps_per_epoch=5)
    with pytest.raises(ValidationError):
        config.epochs = 4  # type: ignore[misc]
    assert parse_config(TrainConfig, config.model_dump()) == config
    assert parse_config(TrainConfig, config) is config


def test_parse_config_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(TrainConfig, [("epochs", 1)])  # type: ignore[arg-type]
