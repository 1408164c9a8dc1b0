"""A Hugging Face causal LM exports to ONNX (and is timed by ONNX Runtime) with its key/value cache
off: the cache object is no tensor a file can return. The config's setting comes back."""

from __future__ import annotations

import pytest
import torch

from prunekit.measure import export_onnx, measure_latency

transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    return transformers.GPT2LMHeadModel(config).eval()


def test_a_causal_lm_with_its_cache_on_exports_and_is_timed(tmp_path) -> None:
    model, ids = _gpt2(), torch.randint(0, 50, (1, 6))
    assert model.config.use_cache is True
    file = export_onnx(model, ids, tmp_path / "gpt2.onnx")
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: ids.repeat(3, 1).numpy()}
    with torch.no_grad():
        expected = model(ids.repeat(3, 1), use_cache=False).logits
    torch.testing.assert_close(torch.from_numpy(session.run(None, feed)[0]), expected, rtol=1e-4, atol=1e-4)
    assert model.config.use_cache is True
    assert measure_latency(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                           backend="onnxruntime", min_time_s=0.0).median_ms > 0
    assert model.config.use_cache is True
