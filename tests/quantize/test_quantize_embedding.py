"""Dynamic int8 of a transformer encoder, scored as an embedding task by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from prunekit.measure import export_onnx
from prunekit.quantize import OnnxModel, evaluate_onnx, quantize_onnx
from prunekit.tasks import Embedding

transformers = pytest.importorskip("transformers")


def test_dynamic_int8_bert_keeps_its_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 128, (4, 12), generator=g), torch.ones(4, 12, dtype=torch.long)) for _ in range(3)]
    batches[0][1][:, 8:] = 0  # padding, so the mean pooling reads the mask
    task = Embedding(teacher=model)
    fp32 = export_onnx(model, batches[0], tmp_path / "bert.onnx")
    assert evaluate_onnx(fp32, batches, task=task)["cosine"] == pytest.approx(1.0, abs=1e-5)
    int8 = quantize_onnx(fp32, tmp_path / "bert.int8.onnx", dynamic=True)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert evaluate_onnx(int8, batches, task=task)["cosine"] >= 0.98
    ids, mask = batches[0]
    int8_out, fp32_out = OnnxModel(int8)(ids, attention_mask=mask), OnnxModel(fp32)(ids, attention_mask=mask)
    assert type(fp32_out) is type(model(ids, attention_mask=mask))  # NOTE: the model's own output type
    assert not torch.equal(int8_out.last_hidden_state, fp32_out.last_hidden_state)


def test_the_workflow_exports_the_attention_mask(tmp_path: Path) -> None:
    """Padded sentences: the exported file takes the mask, so fp32 ONNX equals PyTorch (ids only, it
    attended to the padding: cosine 0.78 on all-MiniLM-L6-v2)."""
    from prunekit import data
    from prunekit.workflows import Measure
    from prunekit.workflows.quantize import FP32_FILE, INT8_FILE, quantize_model

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        ids, mask = torch.randint(0, 128, (4, 12), generator=g), torch.ones(4, 12, dtype=torch.long)
        mask[:, 6:] = 0
        batches.append((ids, mask))
    loaders = data.Loaders(name="sentences", train=batches, val=batches, test=batches, task="embedding")
    task = Embedding(teacher=model)
    quantize_model(model, loaders, tmp_path / "q", task=task, dynamic=True, measure=Measure(backends=()))
    assert len(onnx.load(str(tmp_path / "q" / FP32_FILE)).graph.input) == 2
    assert evaluate_onnx(tmp_path / "q" / FP32_FILE, batches, task=task)["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert evaluate_onnx(tmp_path / "q" / INT8_FILE, batches, task=task)["cosine"] >= 0.98
