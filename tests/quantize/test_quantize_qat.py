"""Quantisation-aware fine-tuning: torchao's PT2E flow on a tiny CNN, the weight fake-quant fallback
for a model torch.export cannot capture, and prune -> qat -> quantize as one recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _quantize_models import labelled_by, tiny_cnn
from acceptance._acceptance_fixtures import write_image_folder
from torch import nn

from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.quantize import qat


def _fit(data: torch.utils.data.TensorDataset, steps: int = 3, epochs: int = 1):
    """A tiny training loop that calls the callbacks' epoch hook the way prunekit.recover.train does."""
    def fit(model: nn.Module, callbacks=()) -> list[float]:
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
        losses = []
        for epoch in range(epochs):
            model.train()
            for i in range(steps):
                x, y = data.tensors[0][i * 16:(i + 1) * 16], data.tensors[1][i * 16:(i + 1) * 16]
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimiser.step()
                optimiser.zero_grad()
                losses.append(float(loss.detach()))
            for callback in callbacks:
                callback.on_epoch_end(epoch, model, {})
        return losses

    return fit


def test_pt2e_qat_trains_and_returns_the_original_architecture() -> None:
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = labelled_by(tiny_cnn(seed=1), 64)
    result = qat(model, data.tensors[0][:1], _fit(data))
    assert result.flow == "pt2e" and result.note == "" and len(result.fit_result) == 3
    assert type(result.model) is type(model) and not result.model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the input is unchanged
    assert not torch.equal(result.model.features[0].weight, model.features[0].weight)  # trained
    assert result.model(data.tensors[0][:5]).shape == (5, 4)  # any batch size


class _Branchy(nn.Module):
    """Branches on a value, which torch.export cannot capture."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if bool(out.sum() > -1e9) else -out


def test_untraceable_model_falls_back_to_fake_quantised_weights() -> None:
    data = labelled_by(tiny_cnn(seed=1), 64)
    result = qat(_Branchy(), data.tensors[0][:1], _fit(data))
    assert result.flow == "weight-fake-quant" and "torch.export could not capture _Branchy" in result.note
    weight = result.model.body.features[0].weight.detach()
    steps = weight / (weight.abs().flatten(1).amax(1) / 127).reshape(-1, 1, 1, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # every weight on its channel's int8 grid
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in result.model.modules())


def test_recipe_prune_qat_quantize(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", per_class=4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: simple_cnn\ndata: {images}\nstages:\n"
                      f"  - prune: {{target: {{ratio: 0.5}}}}\n"
                      f"  - qat: {{epochs: 2, fp32_epochs: 1, max_steps_per_epoch: 2, lr: 0.001}}\n"
                      f"  - quantize: {{calibration_batches: 2}}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    stages = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]
    assert [s["kind"] for s in stages] == ["prune", "qat", "quantize"]
    assert stages[1]["summary"]["flow"] == "pt2e"
    assert (stages[1]["summary"]["epochs"], stages[1]["summary"]["fp32_epochs"]) == (2, 1)
    int8 = stages[2]["summary"]["test"]["int8"]
    assert 0.0 <= int8["accuracy"] <= 1.0 and int8["count"] > 0
    assert (tmp_path / "run" / "quantize" / "model.onnx").is_file()


def test_example_recipe_validates() -> None:
    from prunekit.recipes import load_recipe

    recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "prune_qat_int8.yaml")
    assert [next(iter(type(s).model_fields)) for s in recipe.stages] == ["train", "prune", "qat", "quantize", "evaluate"]


def _fake_quant_enabled(model: nn.Module) -> set[bool]:
    return {bool(m.fake_quant_enabled[0]) for m in model.modules() if hasattr(m, "fake_quant_enabled")}


def test_fp32_epochs_train_without_fake_quantisation_then_switch_it_on() -> None:
    # NOTE: one run: epoch 0 trains the PT2E graph as plain fp32 (its outputs are the model's), epoch 1 quantised
    data = labelled_by(tiny_cnn(seed=1), 64)
    model = tiny_cnn().eval()
    x = data.tensors[0][:8]
    seen: list[tuple[set[bool], bool]] = []

    def fit(prepared: nn.Module, callbacks) -> list[float]:
        prepared.eval()
        seen.append((_fake_quant_enabled(prepared), torch.allclose(prepared(x), model(x), atol=1e-5)))
        losses = _fit(data, epochs=2)(prepared, callbacks)
        seen.append((_fake_quant_enabled(prepared), False))
        return losses

    delayed = qat(model, x[:1], fit, fp32_epochs=1)
    assert seen == [({False}, True), ({True}, False)]
    assert delayed.flow == "pt2e" and len(delayed.fit_result) == 6
    seen.clear()
    qat(model, x[:1], fit)  # NOTE: without the delay the very first forward is already quantised
    assert seen[0] == ({True}, False)


def test_fp32_epochs_must_leave_a_quantised_epoch() -> None:
    data = labelled_by(tiny_cnn(seed=1), 64)
    with pytest.raises(ConfigError, match=r"fp32_epochs=2 is not below the number of epochs fit trained.*lower fp32_epochs"):
        qat(tiny_cnn(), data.tensors[0][:1], _fit(data, epochs=2), fp32_epochs=2)


def test_fallback_delays_the_weight_fake_quantisation_too() -> None:
    data = labelled_by(tiny_cnn(seed=1), 64)
    parametrized: list[bool] = []

    def fit(model: nn.Module, callbacks) -> list[float]:
        watch = type("Watch", (), {"on_epoch_end": lambda self, e, m, _: parametrized.append(
            nn.utils.parametrize.is_parametrized(m.body.features[0], "weight"))})()
        return _fit(data, epochs=3)(model, (*callbacks, watch))

    result = qat(_Branchy(), data.tensors[0][:1], fit, fp32_epochs=2)
    assert result.flow == "weight-fake-quant" and parametrized == [False, True, True]
    weight = result.model.body.features[0].weight.detach()
    steps = weight / (weight.abs().flatten(1).amax(1) / 127).reshape(-1, 1, 1, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-3)


def test_recipe_qat_fp32_epochs_must_leave_a_quantised_epoch(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: simple_cnn\ndata: digits\nstages:\n  - qat: {epochs: 2, fp32_epochs: 2}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "fp32_epochs (2) must be below epochs (2)" in err and "Lower fp32_epochs" in err
    assert not (tmp_path / "run").exists()
