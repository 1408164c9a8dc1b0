"""`prunekit quantize` of a user's own language model whose forward takes token ids only: the text
batches carry an attention mask, which the model is exported without (as it is trained and scored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from prunekit.workflows import Measure
from prunekit.workflows.quantize import quantize


class IdsOnly(nn.Module):
    """Embedding, one causal mixing layer and a head: ``forward(ids)``, no ``attention_mask``."""

    def __init__(self, vocab: int = 256, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        steps = torch.arange(1, ids.shape[1] + 1, device=ids.device).view(1, -1, 1)
        return self.head(torch.relu(self.mix(x.cumsum(1) / steps)))


def test_dynamic_int8_of_a_model_without_attention_mask(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    torch.manual_seed(0)
    model = IdsOnly().eval()
    results = quantize(model, str(corpus), tokenizer="bytes", block_size=16, dynamic=True, out_dir=tmp_path / "q",
                       measure=Measure(batch_sizes=(1,), min_time_s=0, threads=1, backends=("onnxruntime",)))
    assert [p["name"] for p in results["profiles"]] == ["model fp32", "model int8"]
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).numpy()
    outputs = {}
    for name in ("model.fp32.onnx", "model.onnx"):
        session = ort.InferenceSession(str(tmp_path / "q" / name), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input"]  # the ids only, no mask input
        outputs[name] = session.run(None, {"input": ids.numpy()})[0]
    assert outputs["model.onnx"].shape == expected.shape
    np.testing.assert_allclose(outputs["model.fp32.onnx"], expected, atol=1e-5)
