"""int8 in PyTorch itself, through torchao: the model stays an ``nn.Module`` that PyTorch runs.

Two schemes, measured on this CPU (x86, AVX-512 VNNI; 1 thread, niced, one run each on a busy
machine, median ms):

- ``dynamic``: ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``; every ``nn.Linear``
  (and transformers' ``Conv1D``, GPT-2's, first made the equal ``nn.Linear``) gets int8 weights (per
  output channel; ``nn.MultiheadAttention``'s projections stay fp32, listed in the record's
  ``kept_fp32``) and int8 activations quantised per token on each call. For transformers. A
  6-block MiniLM-sized Linear stack (384/1536, 128 tokens): eager 20.6 against 28.7 ms fp32 at
  batch 1 but 289 against 209 at batch 8; under ``torch.compile`` 12.1 against 31.6 (batch 1) and
  98 against 209 (batch 8). Weights 4x smaller.
- ``static``: PT2E (``torch.export`` -> ``prepare_pt2e`` with ``X86InductorQuantizer``, min/max
  activation ranges observed on the calibration batches -> ``convert_pt2e``) for conv nets. Eager
  PyTorch runs its reference quantize/dequantize ops, slower than fp32 (ResNet-20 at batch 1: 7.5
  against 1.8 ms), so it is offered only compiled: ``torch.compile`` with inductor's freezing lowers
  it to oneDNN int8 convolutions (batch 1: 1.3 against 1.5 ms compiled fp32; batch 64: 13.7
  against 70 ms compiled and 94 ms eager fp32).

Saving needs no pickle: the fp32 weights are saved as usual and :func:`record` describes the
quantisation (scheme, and for ``static`` the observed activation ranges, exact in JSON), which
:func:`restore` re-applies deterministically when ``prunekit.load`` reads the folder.
"""

from __future__ import annotations

import copy
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, PrunekitError, require

__all__ = ["SCHEMES", "TorchInt8", "quantize_torch", "restore", "compiled", "Compiled", "eager", "int8_bytes",
           "check_torch_options"]

SCHEMES = ("dynamic", "static")
_FEATURE = "int8 quantisation in PyTorch (backend torch)"


@dataclass(frozen=True)
class TorchInt8:
    """The int8 module (PyTorch runs it; compiled when asked) and its manifest record."""

    model: nn.Module
    record: dict[str, Any]


def check_torch_options(*, dynamic: bool, compile: bool, method: str = "minmax",
                        max_metric_drop: float | None = None, recipe: bool = False, cli: bool = False) -> None:
    """One-line errors for what the torch backend does not do (each names what to use instead);
    ``recipe``: the messages name the recipe stage's options (``method: minmax``), ``cli``: the command's
    options (``--method minmax``), not the arguments."""

    def option(name: str, value: Any) -> str:
        if recipe:
            return f"{name}: {str(value).lower() if isinstance(value, bool) else value}"
        if cli:
            flag = "--" + name.replace("_", "-")
            return flag if value is True else f"{flag} {value}"
        return f"{name}={value!r}"
    head, verb = ("", "use") if recipe else ("quantize: ", "pass")
    drop, compile_name = ("--max-metric-drop", "--compile") if cli else ("max_metric_drop", "compile")
    if method != "minmax":
        raise ConfigError(f"{head}the torch backend calibrates with minmax only; got method '{method}'. "
                          f"{verb.capitalize()} {option('method', 'minmax')}, or {option('backend', 'onnxruntime')} "
                          f"for entropy and percentile.")
    if max_metric_drop is not None:
        raise ConfigError(f"{head}{drop} (layers kept fp32 within a metric budget) works with the "
                          f"ONNX Runtime backend only. Drop it, or {verb} {option('backend', 'onnxruntime')}.")
    if not dynamic and not compile:
        raise ConfigError(f"{head}static int8 in PyTorch eager runs reference quantize/dequantize ops and is "
                          f"slower than fp32 on CPU (ResNet-20: 7.5 against 1.8 ms). {verb.capitalize()} "
                          f"{option('compile', True)} ({'' if recipe or cli else '--compile: '}torch.compile lowers "
                          f"it to oneDNN int8 kernels), {option('dynamic', True)} for linear layers, or "
                          f"{option('backend', 'onnxruntime')}.")
    if compile and shutil.which("cc") is None and shutil.which("gcc") is None:
        raise ConfigError(f"{head}torch.compile needs a C compiler (cc or gcc) on PATH and none was found. "
                          f"Install one, drop {compile_name}, or {verb} {option('backend', 'onnxruntime')}.")


def _inputs(example: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (example,) if isinstance(example, torch.Tensor) else tuple(example)


def _dynamic(model: nn.Module) -> nn.Module:
    require("torchao", pip_name="torchao", feature=_FEATURE)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    _conv1d_as_linear(model)
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ConfigError(f"quantize: {type(model).__name__} has no nn.Linear layer for dynamic int8 to quantise. "
                          f"Use static int8 (dynamic=False, compile=True), or backend='onnxruntime'.")
    # NOTE: set_inductor_config=False: torchao would otherwise change inductor's process-wide settings.
    quantize_(model, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    return model


def _is_int8(weight: Any) -> bool:
    return isinstance(weight, torch.Tensor) and type(weight) not in (torch.Tensor, nn.Parameter)


def _dynamic_layers(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """``(names of the layers whose weight dynamic int8 made int8, {linear-like weight left fp32: why})``.

    NOTE: ``nn.MultiheadAttention`` keeps its projections fp32: its forward reads ``in_proj_weight`` (a
    bare parameter) and ``out_proj.weight`` (a ``NonDynamicallyQuantizableLinear``, which torchao skips
    on purpose) as plain tensors in ``F.multi_head_attention_forward``, so they are reported, not changed."""
    quantised = [name for name, m in model.named_modules() if _is_int8(getattr(m, "weight", None))]
    kept: dict[str, str] = {}
    for name, m in model.named_modules():
        where = f"{name}." if name else ""
        if isinstance(m, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if isinstance(getattr(m, attr, None), torch.Tensor):
                    kept[where + attr] = ("nn.MultiheadAttention's input projection: a bare parameter its "
                                          "forward reads directly, not an nn.Linear")
        elif isinstance(m, nn.Linear) and not _is_int8(m.weight):
            why = ("nn.MultiheadAttention's output projection (NonDynamicallyQuantizableLinear): its forward "
                   "reads the weight directly" if type(m).__name__ == "NonDynamicallyQuantizableLinear"
                   else f"{type(m).__name__}, which torchao's dynamic int8 left fp32")
            kept[where + "weight"] = why
    return quantised, kept


def _conv1d_layers(model: nn.Module) -> list[str]:
    """Names of transformers' ``Conv1D`` layers (GPT-2's attention and MLP: ``x @ W + b`` with ``W``
    stored (in, out)); none when transformers is not loaded, as then no model holds one."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return [] if conv1d is None else [name for name, m in model.named_modules() if isinstance(m, conv1d)]


def _conv1d_as_linear(model: nn.Module) -> None:
    """Each transformers ``Conv1D`` of ``model`` replaced, in place, by the ``nn.Linear`` computing the
    same (its weight transposed), so that dynamic int8 quantises it too."""
    for name in _conv1d_layers(model):
        conv = model.get_submodule(name)
        weight: torch.Tensor = conv.weight  # type: ignore[assignment]
        bias: torch.Tensor | None = conv.bias  # type: ignore[assignment]
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None, device=weight.device,
                           dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
            if bias is not None:
                linear.bias.copy_(bias)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, linear.train(conv.training))


def _observers(prepared: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The ``(min_val, max_val)`` buffers of the per-tensor (activation) observers PT2E inserted, by
    observer name; weight observers are per channel and left out."""
    found = {name: (getattr(m, "min_val", None), getattr(m, "max_val", None)) for name, m in prepared.named_modules()}
    return {name: (low, high) for name, (low, high) in found.items()
            if isinstance(low, torch.Tensor) and isinstance(high, torch.Tensor) and low.dim() == 0}


def _prepared(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """``model`` captured by ``torch.export`` (batch size free) with min/max observers inserted."""
    require("torchao", pip_name="torchao", feature=_FEATURE)
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    config = get_default_x86_inductor_quantization_config()
    act = config.input_activation
    assert act is not None
    # NOTE: min/max instead of the default histogram: two numbers per tensor, so the record is small and exact.
    act = replace(act, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    config = replace(config, input_activation=act, output_activation=act)
    example = tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in inputs)  # NOTE: export fixes size 1
    batch = torch.export.Dim("batch")
    try:
        captured = torch.export.export(model.eval(), example, dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as exc:  # NOTE: torch.export raises many types; name the model and the cause.
        raise PrunekitError(f"quantize: torch.export could not capture {type(model).__name__} for static int8 "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                            f"Use dynamic=True for linear layers, or backend='onnxruntime'.") from exc
    return prepare_pt2e(captured.module(), X86InductorQuantizer().set_global(config))


def _static(model: nn.Module, inputs: tuple[torch.Tensor, ...],
            calibration: Iterable[torch.Tensor | Sequence[torch.Tensor]]) -> tuple[nn.Module, dict[str, Any]]:
    prepared = _prepared(model, inputs)
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(*_inputs(batch))
            seen += 1
    if not seen:
        raise ConfigError("quantize: the calibration data is empty; static int8 needs batches to observe "
                          "activation ranges. Pass calibration batches, or dynamic=True.")
    ranges = {name: [float(low), float(high)] for name, (low, high) in _observers(prepared).items()}
    return _converted(prepared), ranges


def _converted(prepared: nn.Module) -> nn.Module:
    """``convert_pt2e``'s int8 graph, which lets ``train()``/``eval()`` be called (measuring does)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return allow_exported_model_train_eval(convert_pt2e(prepared))


def _specs(inputs: tuple[torch.Tensor, ...]) -> list[dict[str, Any]]:
    return [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in inputs]


def quantize_torch(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
                   dynamic: bool = False, calibration: Iterable[torch.Tensor | Sequence[torch.Tensor]] = (),
                   compile: bool = False) -> TorchInt8:
    """int8 of a copy of ``model`` (left unchanged) by torchao, and the record that rebuilds it.

    Args:
        example_inputs: one batch of the model's positional inputs (static traces with them).
        dynamic: int8 ``nn.Linear`` weights and per-token dynamic activations (transformers);
            else static PT2E int8 (conv nets) calibrated on ``calibration`` (batches of inputs).
        compile: run it through ``torch.compile`` with freezing (:func:`compiled`); static needs it.
    """
    check_torch_options(dynamic=dynamic, compile=compile)
    inputs = _inputs(example_inputs)
    work = copy.deepcopy(model).eval()
    record: dict[str, Any] = {"kind": "quantize", "backend": "torch", "scheme": "dynamic" if dynamic else "static",
                              "compile": compile, "weights": "int8 per channel"}
    if dynamic:
        converted = bool(_conv1d_layers(work))
        int8 = _dynamic(work)
        quantised, kept = _dynamic_layers(int8)
        layers = "nn.Linear and transformers Conv1D (as nn.Linear)" if converted else "nn.Linear"
        record.update(activations="int8 per token, dynamic",
                      layers=layers + (" except the weights in kept_fp32" if kept else ""),
                      quantised=quantised, kept_fp32=kept)
    else:
        int8, ranges = _static(work, inputs, calibration)
        record.update(activations="uint8 per tensor, min/max", method="minmax", inputs=_specs(inputs),
                      ranges=ranges)
    return TorchInt8(model=compiled(int8) if compile else int8, record=record)


def restore(model: nn.Module, record: Mapping[str, Any], where: str = "manifest.json") -> nn.Module:
    """The int8 module ``record`` (from :func:`quantize_torch`) describes, made from ``model``'s fp32
    weights: the same module, with the same outputs, as the one that was saved. ``model`` is used up
    (dynamic converts it in place); pass a fresh one, as ``prunekit.load`` does."""
    scheme = record.get("scheme")
    if scheme == "dynamic":
        int8 = _dynamic(model.eval())
    elif scheme == "static":
        from prunekit.io.transforms import example_inputs

        prepared = _prepared(model, example_inputs(record.get("inputs", ())))
        observers, ranges = _observers(prepared), record.get("ranges", {})
        if set(observers) != set(ranges):
            raise PrunekitError(f"{where}: the static int8 record names {len(ranges)} observed tensors; this "
                                f"model and torch trace to {len(observers)} others. Load it with the torch "
                                f"version that saved it, or quantize the model again.")
        with torch.no_grad():
            prepared(*example_inputs(record["inputs"]))  # NOTE: the weight observers read the weights.
            for name, (low, high) in ranges.items():
                observers[name][0].fill_(low)
                observers[name][1].fill_(high)
        int8 = _converted(prepared)
    else:
        raise PrunekitError(f"{where}: a torch quantize record with scheme {scheme!r}; expected one of "
                            f"{', '.join(SCHEMES)}. The file is damaged; quantize the model again.")
    return compiled(int8) if record.get("compile") else int8


class Compiled(nn.Module):
    """``model`` run by ``torch.compile`` with inductor's freezing (weights folded as constants: the
    form in which PT2E int8 becomes oneDNN int8 kernels). The setting holds only during the calls.
    Shapes are static (one compilation per batch size): with a symbolic batch size inductor's int8
    convolution fails its own stride check (torch 2.14)."""

    _compiled: Callable[..., Any]

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # NOTE: kept out of the module tree, so state_dict and parameters list the weights once.
        self.__dict__["_compiled"] = torch.compile(model, dynamic=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor

        with inductor.patch(freezing=True), torch.no_grad():
            return self._compiled(*args, **kwargs)


def compiled(model: nn.Module) -> Compiled:
    """:class:`Compiled` of ``model`` (it compiles at the first call of each input shape)."""
    return Compiled(model)


def eager(model: nn.Module) -> nn.Module:
    """The module a :class:`Compiled` runs (``model`` itself otherwise): the same arithmetic, no compiling."""
    return model.model if isinstance(model, Compiled) else model


def int8_bytes(model: nn.Module) -> int:
    """Bytes of the tensors ``model`` computes with, counting a torchao tensor subclass by its inner
    int8 data and scales, and of a PT2E graph only what it reads (its int8 constants, scales and
    biases; ``convert_pt2e`` leaves the unused fp32 weights attached): what an int8 file would take."""
    inner = eager(model)
    if isinstance(inner, torch.fx.GraphModule):
        attrs = [_attr(inner, str(n.target)) for n in inner.graph.nodes if n.op == "get_attr"]
        found = [t for t in attrs if isinstance(t, torch.Tensor)]
    else:
        found = [*inner.parameters(), *inner.buffers()]
    return sum(_bytes(t) for t in {id(t): t for t in found}.values())


def _attr(module: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner), name, None)


def _bytes(tensor: torch.Tensor) -> int:
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]
        return sum(_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()
