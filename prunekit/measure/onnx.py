"""ONNX export with a dynamic batch dimension, written atomically as one self-contained file.

Uses PyTorch's torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``, with
onnxscript); the TorchScript exporter is deprecated and warns that it will be removed. Where
torch.export cannot trace a model, the TorchScript exporter's file is used instead (with a warning
saying so), if it gives the model's outputs in ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, treespec_dumps

from prunekit._modes import modes_of, restore_modes
from prunekit._checks import positional_inputs
from prunekit.errors import PrunekitError, require
from prunekit.measure.macs import ExampleInput, as_inputs, batch_of

__all__ = ["OUTPUTS_KEY", "export_onnx", "without_cache"]

# NOTE: the file's metadata entry holding the model output's structure (a tuple, a dict, a Hugging
# Face output) as pytree JSON; ONNX itself only has a flat list of outputs. Quantisers keep it.
OUTPUTS_KEY = "prunekit.outputs"

# NOTE: protobuf cannot hold a message over 2 GiB; above this many bytes of weights the
# exporter writes them to "<name>.onnx.data" beside the model instead.
_EXTERNAL_DATA_BYTES = 1_500_000_000


def _names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _outputs_of(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int | None, str]:
    """(how many output names to give, the output's structure for :data:`OUTPUTS_KEY`): the
    structure is its pytree ``TreeSpec`` as JSON, "" where a leaf is not a tensor or a container
    has no serialised name (:class:`~prunekit.quantize.OnnxModel` then refuses several outputs)."""
    with torch.no_grad():
        out = model(*inputs)
    leaves, spec = tree_flatten(out)
    structure = ""
    if all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        try:
            structure = treespec_dumps(spec)
        except (NotImplementedError, TypeError, ValueError):  # NOTE: a container without a name
            pass
    if isinstance(out, torch.Tensor):
        return 1, structure
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return len(out), structure
    return None, structure  # NOTE: dicts and nested outputs keep the exporter's own names.


def _weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _run_exporter(model: nn.Module, inputs: tuple[torch.Tensor, ...], file: Path, *, outputs: int | None,
                  structure: str, dynamic_batch: bool, opset: int | None, verbose: bool) -> None:
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} if x.dim() > 0 else None for x in inputs)
    program = torch.onnx.export(
        model, inputs, None, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
        input_names=_names("input", len(inputs)),
        output_names=_names("output", outputs) if outputs else None, verbose=verbose)
    assert program is not None  # NOTE: only the TorchScript exporter returns None
    program.model.metadata_props[OUTPUTS_KEY] = structure
    program.save(str(file), external_data=_weight_bytes(model) > _EXTERNAL_DATA_BYTES)


def _run_legacy_exporter(model: nn.Module, inputs: tuple[torch.Tensor, ...], file: Path, *, outputs: int | None,
                         structure: str, dynamic_batch: bool, opset: int | None) -> float | None:
    """Export with PyTorch's TorchScript-based exporter (``dynamo=False``), which traces one run
    instead of ``torch.export``'s symbolic one (a stock ``nn.TransformerEncoder`` with a causal mask
    exports only so), and return the largest difference of the file's outputs from the model's,
    at the example's batch size and, with ``dynamic_batch``, at one more. None (nothing to trust)
    where it fails, disagrees, or the model's own code turned a tensor into a Python value while
    traced (a branch on the data, baked into the file for every input)."""
    import onnx

    input_names = _names("input", len(inputs))
    output_names = _names("output", outputs) if outputs else []
    axes = {name: {0: "batch"} for name, x in zip(input_names, inputs) if x.dim() > 0}
    axes.update({name: {0: "batch"} for name in output_names})
    was_logging = torch._C._jit_is_onnx_log_enabled()
    try:
        with warnings.catch_warnings(record=True) as caught, _silenced():
            warnings.simplefilter("always")
            torch.onnx.export(model, inputs, str(file), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names or None,
                              dynamic_axes=axes if dynamic_batch else None)
        own = Path(torch.__file__).parent
        if any(issubclass(w.category, torch.jit.TracerWarning) and own not in Path(w.filename).parents
               for w in caught):
            return None
        proto = onnx.load(str(file))
        proto.metadata_props.add(key=OUTPUTS_KEY, value=structure)
        onnx.save(proto, str(file))
        return _difference(model, inputs, file, [0, 1] if dynamic_batch else [0])
    except Exception:  # NOTE: a fallback: its failure leaves the first exporter's error to report.
        return None
    finally:
        torch._C._jit_set_onnx_log_enabled(was_logging)  # NOTE: the exporter turns its C++ log on for good


def _difference(model: nn.Module, inputs: tuple[torch.Tensor, ...], file: Path, more: list[int]) -> float | None:
    """The largest difference of ``file``'s outputs in ONNX Runtime from ``model``'s, at the example's
    batch size plus each of ``more``; None where a count, a shape or a value (beyond float32 rounding)
    disagrees."""
    import numpy as np

    from prunekit.measure.latency import ort_session  # NOTE: the session options every int8 evaluation uses

    session, worst = ort_session(file, threads=1), 0.0
    for args in (batch_of(inputs, max(x.shape[0] for x in inputs if x.dim()) + extra) for extra in more):
        with torch.no_grad():
            expected = [t.numpy() for t in tree_flatten(model(*args))[0]]
        got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), args)})
        if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
            return None
        for g, e in zip(got, expected):
            scale = max(1.0, float(np.abs(e).max(initial=0.0)))
            if not np.allclose(g, e, rtol=1e-3, atol=1e-4 * scale):
                return None
            worst = max(worst, float(np.abs(g - e).max(initial=0.0)))
    return worst


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Output to stdout and stderr dropped, at the file descriptors too: the TorchScript exporter's
    C++ log prints the whole graph there when it fails (the first exporter's error says why)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # NOTE: no such descriptors (an embedded interpreter): Python's streams only
        saved = []
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in range(1, 1 + len(saved)):
            os.dup2(null, fd)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for fd, copy in enumerate(saved, start=1):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


def _root_cause(exc: BaseException) -> BaseException:
    root = exc
    while root.__cause__ is not None and len(str(root.__cause__).strip()) > 0:
        root = root.__cause__  # NOTE: the exporter wraps the real cause in generic advice.
    return root


def _failure(model: nn.Module, exc: Exception) -> PrunekitError:
    root = _root_cause(exc)
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
    ``<name>.data`` file beside it. A Hugging Face model is exported with its key/value cache off
    (``config.use_cache``: the file returns the logits, not a cache). Needs ``pip install 'prunekit[onnx]'``.
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
        with without_cache(model), tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
            file = Path(tmp) / target.name
            found: tuple[int | None, str] | None = None  # NOTE: the output's names and structure, once run
            try:
                with contextlib.ExitStack() as quiet:
                    if not verbose:
                        quiet.enter_context(contextlib.redirect_stdout(log))
                        quiet.enter_context(contextlib.redirect_stderr(log))
                        quiet.enter_context(warnings.catch_warnings())
                        warnings.simplefilter("ignore")
                    found = _outputs_of(model, inputs)
                    _run_exporter(model, inputs, file, outputs=found[0], structure=found[1],
                                  dynamic_batch=dynamic_batch, opset=opset, verbose=verbose)
            except Exception as exc:  # NOTE: the exporter raises many unrelated types.
                difference = None if found is None else _run_legacy_exporter(
                    model, inputs, file, outputs=found[0], structure=found[1], dynamic_batch=dynamic_batch,
                    opset=opset)
                if difference is None:
                    raise _failure(model, exc) from exc
                warnings.warn(f"export_onnx: torch.export could not trace {type(model).__name__} "
                              f"({type(_root_cause(exc)).__name__}); exported with PyTorch's TorchScript-based "
                              f"exporter (torch.onnx.export(..., dynamo=False)) instead, whose file gives the "
                              f"model's outputs on the example input (largest difference {difference:.1g}).",
                              stacklevel=2)
            for extra in Path(tmp).iterdir():  # external data first, the model file last
                if extra != file:
                    os.replace(extra, target.parent / extra.name)
            os.replace(file, target)
    finally:
        restore_modes(modes)
    return target


@contextlib.contextmanager
def without_cache(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every Hugging Face config in it (a wrapper's too) keeping no key/value cache: the
    cache object (a DynamicCache) is no tensor that tracers or an ONNX file can return. The settings
    are restored after."""
    cached: list[Any] = list({id(c): c for m in model.modules()
                              if getattr(c := getattr(m, "config", None), "use_cache", None) is True}.values())
    try:
        for config in cached:
            config.use_cache = False
        yield model
    finally:
        for config in cached:
            config.use_cache = True
