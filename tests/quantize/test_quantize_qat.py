"""Quantisation-aware fine-tuning: torchao's PT2E flow on a tiny CNN, the weight fake-quant fallback
for a model torch.export cannot capture, and prune -> qat -> quantize as one recipe."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _quantize_models import labelled_by, tiny_cnn
from acceptance._acceptance_fixtures import write_image_folder
from torch import nn

from prunekit.cli import main
from prunekit.quantize import qat


def _fit(data: torch.utils.data.TensorDataset, steps: int = 3):
    def fit(model: nn.Module) -> list[float]:
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
        model.train()
        losses = []
        for i in range(steps):
            x, y = data.tensors[0][i * 16:(i + 1) * 16], data.tensors[1][i * 16:(i + 1) * 16]
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            losses.append(float(loss.detach()))
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


def test_warmup_trains_in_fp32_before_fake_quantisation() -> None:
    # NOTE: warm-up sees plain modules (no fake-quant nodes); fit sees the PT2E graph with observers.
    data = labelled_by(tiny_cnn(seed=1), 64)
    seen: list[str] = []

    def warmup(model: nn.Module) -> None:
        seen.append(type(model).__name__)
        _fit(data)(model)

    def fit(model: nn.Module) -> list[float]:
        seen.append("fake-quant" if any("fake_quant" in n or "activation_post_process" in n
                                        for n, _ in model.named_modules()) else type(model).__name__)
        return _fit(data)(model)

    model = tiny_cnn()
    plain = qat(model, data.tensors[0][:1], _fit(data))
    warmed = qat(model, data.tensors[0][:1], fit, warmup=warmup)
    assert seen == [type(model).__name__, "fake-quant"]
    assert warmed.flow == "pt2e"
    assert not torch.equal(warmed.model.features[0].weight, plain.model.features[0].weight)


def test_recipe_qat_fp32_epochs_must_leave_a_quantised_epoch(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: simple_cnn\ndata: digits\nstages:\n  - qat: {epochs: 2, fp32_epochs: 2}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "fp32_epochs (2) must be below epochs (2)" in err and "Lower fp32_epochs" in err
    assert not (tmp_path / "run").exists()
