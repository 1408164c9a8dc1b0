"""What `prunekit quantize` says and records when the calibration data is not what it should be: the
value given, ONNX Runtime's whole reason in one line with advice that fits it, the batches used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _quantize_models import labelled_by, tiny_cnn

from prunekit.data.custom import from_arrays
from prunekit.errors import ConfigError, PrunekitError
from prunekit.measure import export_onnx
from prunekit.quantize import quantize_onnx
from prunekit.quantize.calibration import feeds
from prunekit.workflows import Measure
from prunekit.workflows.quantize import quantize_model, quantize_model_torch

_QUICK = Measure(batch_sizes=(1,), min_time_s=0, threads=1)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    model = tiny_cnn()
    x, y = labelled_by(model, 128).tensors
    return model, from_arrays(x, y, name="tiny", val_fraction=0.1, test_fraction=0.2)


@pytest.mark.parametrize("quantise", [quantize_model, quantize_model_torch], ids=["onnxruntime", "torch"])
def test_calibration_batches_below_one_names_the_value(tiny, tmp_path: Path, quantise) -> None:
    model, splits = tiny
    folder = (tmp_path / "q",) if quantise is quantize_model else ()
    with pytest.raises(ConfigError) as error:
        quantise(model, splits, *folder, task=None, calibration_batches=-3)
    assert str(error.value) == ("quantize: calibration_batches must be >= 1 for static int8 (it observes "
                                "activation ranges on them); got -3. Pass e.g. --calibration-batches 8, or --dynamic.")


@pytest.mark.parametrize("shape, reason", [
    ((4, 1, 6, 6), "Got invalid dimensions for input: input for the following indices index: 2 Got: 6 "
                   "Expected: 8 index: 3 Got: 6 Expected: 8"),
    ((1, 8, 8), "Invalid rank for input: input Got: 3 Expected: 4"),
], ids=["size", "rank"])
def test_wrong_calibration_shape_is_one_line_with_its_reason(tmp_path: Path, shape, reason) -> None:
    fp32 = export_onnx(tiny_cnn(), torch.randn(2, 1, 8, 8), tmp_path / "fp32.onnx")
    with pytest.raises(PrunekitError) as error:
        quantize_onnx(fp32, tmp_path / "int8.onnx", calibration=feeds([torch.randn(*shape)], ["input"],
                                                                      ["tensor(float)"]))
    assert str(error.value) == (
        f"quantize: ONNX Runtime could not quantise 'fp32.onnx' (InvalidArgument: {reason}). The calibration "
        f"batches do not have the shape the fp32 file takes: pass batches shaped like the model's input (an "
        f"image folder loaded at the size the model was trained at: --image-size H[xW]).")
    assert not (tmp_path / "int8.onnx").exists()


def test_the_record_counts_the_calibration_batches_used(tiny, tmp_path: Path) -> None:
    model, splits = tiny
    assert len(splits.train) <= 128  # NOTE: at most two batches of 64, whatever is asked for
    record = quantize_model(model, splits, tmp_path / "q", task=None, calibration_batches=8, measure=_QUICK)
    assert record["calibration_batches"] == -(-len(splits.train) // 64) == 2
    record = quantize_model(model, splits, tmp_path / "q1", task=None, calibration_batches=1, measure=_QUICK)
    assert record["calibration_batches"] == 1
