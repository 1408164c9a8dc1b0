"""ONNX models of single layers built with onnx.helper compute what the PyTorch layer does, at any batch,
in the opset and with the names the exporter gives; other modules are left to the exporter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.measure import export_onnx, layer_onnx
from prunekit.measure.latency import measure_onnx_latencies, ort_session
from prunekit.search.ranks import shell_of

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _run(module: nn.Module, x: torch.Tensor, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    built = layer_onnx(module, tuple(x.shape))
    assert built is not None
    onnx.checker.check_model(onnx.load_from_string(built), full_check=True)
    tiled = x.repeat(batch, *([1] * (x.dim() - 1))) + torch.randn(batch * x.shape[0], *x.shape[1:])
    got = ort_session(built, threads=1).run(None, {"input": tiled.numpy()})[0]
    with torch.no_grad():
        want = module.eval()(tiled)
    return torch.from_numpy(got), want


CONVS = {
    "stride-padding": lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1),
    "asymmetric-dilated": lambda: nn.Conv2d(4, 6, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
    "groups-no-bias": lambda: nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False),
    "depthwise": lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
    "same-even-kernel": lambda: nn.Conv2d(4, 5, 4, padding="same", dilation=1),
    "same-dilated": lambda: nn.Conv2d(4, 5, 3, padding="same", dilation=2),
    "valid-pointwise": lambda: nn.Conv2d(4, 5, 1, padding="valid"),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", sorted(CONVS))
def test_a_conv_built_as_onnx_computes_what_the_layer_does_at_any_batch(case: str) -> None:
    torch.manual_seed(0)
    got, want = _run(CONVS[case](), torch.randn(1, CONVS[case]().in_channels, 11, 13))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1, 16), (2, 5, 16), (1, 2, 3, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_linear_built_as_onnx_computes_what_the_layer_does(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 7, bias=bias)
    got, want = _run(linear, torch.randn(*shape))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    ops = [n.op_type for n in onnx.load_from_string(layer_onnx(linear, shape)).graph.node]  # type: ignore[arg-type]
    assert ops == (["Gemm"] if len(shape) == 2 else ["MatMul", "Add"] if bias else ["MatMul"])


@pytest.mark.parametrize("choice", ["tucker:0.5", "cp:0.5", "svd:0.5"])
def test_a_factorised_chain_built_as_onnx_computes_what_the_chain_does(choice: str) -> None:
    torch.manual_seed(0)
    chain = shell_of(nn.Conv2d(8, 16, 3, stride=2, padding=1), choice)
    for layer in chain:  # NOTE: real weights, not whatever the shell was left with
        nn.init.normal_(layer.weight)
        if layer.bias is not None:
            nn.init.normal_(layer.bias)
    got, want = _run(chain, torch.randn(1, 8, 10, 10))
    assert len(onnx.load_from_string(layer_onnx(chain, (1, 8, 10, 10))).graph.node) == len(chain)  # type: ignore[arg-type]
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-4)
    linear = shell_of(nn.Linear(12, 10), "svd:0.5")
    got, want = _run(linear, torch.randn(1, 4, 12))
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("module, shape", [
    (nn.ReLU(), (1, 4)),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), (1, 4, 8, 8)),
    (nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), (1, 4, 8, 8)),
    (nn.Conv2d(4, 4, 3).double(), (1, 4, 8, 8)),
    (nn.Conv2d(4, 4, 3), (4, 8, 8)),  # NOTE: unbatched
    (nn.Linear(4, 4), (4,)),
    (nn.Sequential(), (1, 4)),
])
def test_modules_or_inputs_it_cannot_map_are_left_to_the_exporter(module: nn.Module, shape: tuple[int, ...]) -> None:
    assert layer_onnx(module, shape) is None


def test_the_built_model_has_the_exporters_opset_names_and_batch_dimension(tmp_path: Path) -> None:
    linear, x = nn.Linear(8, 3).eval(), torch.randn(1, 8)
    exported = onnx.load(str(export_onnx(linear, x, tmp_path / "m.onnx")))
    built = onnx.load_from_string(layer_onnx(linear, (1, 8)))  # type: ignore[arg-type]
    assert [(o.domain, o.version) for o in built.opset_import] == [(o.domain, o.version) for o in exported.opset_import]
    assert built.ir_version == exported.ir_version
    for ours, theirs in [(built.graph.input, exported.graph.input), (built.graph.output, exported.graph.output)]:
        assert [v.name for v in ours] == [v.name for v in theirs]
        assert ([d.dim_param or d.dim_value for d in ours[0].type.tensor_type.shape.dim]
                == [d.dim_param or d.dim_value for d in theirs[0].type.tensor_type.shape.dim])
    fixed = onnx.load_from_string(layer_onnx(linear, (1, 8), dynamic_batch=False))  # type: ignore[arg-type]
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_built_bytes_are_timed_with_the_file_protocol() -> None:
    built = layer_onnx(nn.Conv2d(3, 4, 3), (1, 3, 8, 8))
    assert built is not None
    stats = measure_onnx_latencies(built, torch.randn(1, 3, 8, 8), batch_sizes=(1, 2), threads=1, min_time_s=0.0)
    assert [s.batch_size for s in stats] == [1, 2] and all(s.median_ms > 0 and s.backend == "onnxruntime" for s in stats)
