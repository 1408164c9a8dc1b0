from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(path: Path, *inputs: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)[0]


def _assert_matches(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(_run(path, x), expected, atol=1e-4, rtol=1e-4)


def test_dynamic_batch_matches_torch(simple_cnn: nn.Module, tmp_path: Path) -> None:
    simple_cnn.train()
    path = export_onnx(simple_cnn, torch.randn(1, 1, 28, 28), tmp_path / "cnn.onnx")
    assert simple_cnn.training, "train/eval mode must be restored"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"], "one self-contained file"
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    _assert_matches(simple_cnn, path, torch.randn(3, 1, 28, 28))


def test_fixed_batch(mlp: nn.Module, tmp_path: Path) -> None:
    path = export_onnx(mlp, torch.randn(4, 8), tmp_path / "mlp.onnx", dynamic_batch=False)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    _assert_matches(mlp, path, torch.randn(4, 8))


def test_torchvision_resnet18(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    path = export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "resnet18.onnx")
    _assert_matches(model, path, torch.randn(2, 3, 64, 64))


def test_vit_exported_at_batch_one_runs_at_other_batches(tmp_path: Path) -> None:
    # NOTE: exporting at batch 1 used to bake the batch into attention reshapes.
    vision_transformer = pytest.importorskip("torchvision.models.vision_transformer")
    torch.manual_seed(0)
    model = vision_transformer.VisionTransformer(
        image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=10)
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
    path = export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "vit.onnx")
    _assert_matches(model, path, torch.randn(3, 3, 16, 16))


def test_export_failure_names_the_model(branches_on_data: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(PrunekitError, match="BranchesOnData"):
        export_onnx(branches_on_data, torch.randn(1, 8), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == [], "a failed export leaves nothing behind"
