"""ONNX export with a dynamic batch dimension, written atomically as one self-contained file.

Uses PyTorch's torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``, with
onnxscript); the TorchScript exporter is deprecated and warns that it will be removed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit._checks import positional_inputs
from prunekit.errors import PrunekitError, require
from prunekit.measure.macs import ExampleInput, as_inputs, batch_of

__all__ = ["export_onnx"]

# NOTE: protobuf cannot hold a message over 2 GiB; above this many bytes of weights the
# exporter writes them to "<name>.onnx.data" beside the model instead.
_EXTERNAL_DATA_BYTES = 1_500_000_000


def _names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _output_count(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int | None:
    with torch.no_grad():
        out = model(*inputs)
    if isinstance(out, torch.Tensor):
        return 1
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return len(out)
    return None  # NOTE: dicts and nested outputs keep the exporter's own names.


def _weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _run_exporter(model: nn.Module, inputs: tuple[torch.Tensor, ...], file: Path, *,
                  dynamic_batch: bool, opset: int | None, verbose: bool) -> None:
    outputs = _output_count(model, inputs)
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} if x.dim() > 0 else None for x in inputs)
    torch.onnx.export(
        model, inputs, str(file), dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
        input_names=_names("input", len(inputs)),
        output_names=_names("output", outputs) if outputs else None,
        external_data=_weight_bytes(model) > _EXTERNAL_DATA_BYTES, verbose=verbose)


def _failure(model: nn.Module, exc: Exception) -> PrunekitError:
    root: BaseException = exc
    while root.__cause__ is not None and len(str(root.__cause__).strip()) > 0:
        root = root.__cause__  # NOTE: the exporter wraps the real cause in generic advice.
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return PrunekitError(
        f"ONNX export of {type(model).__name__} failed: {type(root).__name__}: {first[:300]}. "
        f"Check that the model runs on the example input and that "
        f"torch.export.export(model, args) traces it; pass verbose=True to see the exporter's log.")


def export_onnx(model: nn.Module, example_inputs: ExampleInput, path: str | os.PathLike[str], *,
                dynamic_batch: bool = True, opset: int | None = None,
                verbose: bool = False) -> Path:
    """Export ``model`` (in eval mode) to ONNX at ``path`` and return the path.

    With ``dynamic_batch`` the first dimension of every input and output is named "batch" and
    may take any size. ``opset`` None lets the exporter choose. The model's train/eval mode is
    restored. The file appears only when complete; models over ~1.5 GB also get a
    ``<name>.data`` file beside it. Needs ``pip install 'prunekit[onnx]'``.
    """
    require("onnx", extra="onnx", feature="ONNX export")
    require("onnxscript", extra="onnx", feature="ONNX export")
    inputs = as_inputs(positional_inputs(model, example_inputs, "export_onnx"))
    if dynamic_batch:
        # NOTE: torch.export specialises dimensions of size 1; exporting at batch 1 can bake the
        # batch into reshapes (a ViT exported at batch 1 then fails at batch 5 in ONNX Runtime).
        inputs = batch_of(inputs, max(2, max((x.shape[0] for x in inputs if x.dim()), default=2)))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    modes = modes_of(model)
    model.eval()
    log = io.StringIO()
    try:
        with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
            file = Path(tmp) / target.name
            try:
                with contextlib.ExitStack() as quiet:
                    if not verbose:
                        quiet.enter_context(contextlib.redirect_stdout(log))
                        quiet.enter_context(contextlib.redirect_stderr(log))
                        quiet.enter_context(warnings.catch_warnings())
                        warnings.simplefilter("ignore")
                    _run_exporter(model, inputs, file, dynamic_batch=dynamic_batch, opset=opset,
                                  verbose=verbose)
            except Exception as exc:  # NOTE: the exporter raises many unrelated types.
                raise _failure(model, exc) from exc
            for extra in Path(tmp).iterdir():  # external data first, the model file last
                if extra != file:
                    os.replace(extra, target.parent / extra.name)
            os.replace(file, target)
    finally:
        restore_modes(modes)
    return target
