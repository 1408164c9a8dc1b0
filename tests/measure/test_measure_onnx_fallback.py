"""`export_onnx` falls back to PyTorch's TorchScript-based exporter where torch.export cannot trace a
model (a stock nn.TransformerEncoder with a causal mask), says so, and keeps only a file that gives
the model's outputs; a model that branches on its data still fails in one line, printing nothing."""

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


class CausalEncoder(nn.Module):
    """Token ids -> logits through one stock encoder layer under a causal mask."""

    def __init__(self, vocab: int = 32, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps = ids.shape[1]
        mask = torch.triu(torch.full((steps, steps), float("-inf")), 1)
        return self.head(self.encoder(self.embed(ids), mask=mask))


def test_a_causal_transformer_encoder_exports_by_the_torchscript_exporter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CausalEncoder().eval()
    with pytest.warns(UserWarning, match=r"torch.export could not trace CausalEncoder \(\w+\); exported with "
                                         r"PyTorch's TorchScript-based exporter"):
        path = export_onnx(model, torch.randint(0, 32, (1, 8)), tmp_path / "lm.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.onnx"]
    assert not torch._C._jit_is_onnx_log_enabled()  # NOTE: the exporter leaves its C++ log on
    ids = torch.randint(0, 32, (3, 8), generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    with torch.no_grad():
        expected = model(ids).numpy()
    np.testing.assert_allclose(session.run(None, {"input": ids.numpy()})[0], expected, atol=1e-5)


def test_a_data_dependent_branch_is_not_traced_into_a_file(branches_on_data: nn.Module, tmp_path: Path,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PrunekitError, match="ONNX export of BranchesOnData failed"):
        export_onnx(branches_on_data, torch.randn(1, 8), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr() == ("", "")  # NOTE: the TorchScript exporter's C++ log stays quiet
