"""Quantisation-aware fine-tuning: train under int8 rounding, so the int8 export loses less.

The PT2E flow of torchao (``torch.export`` -> ``prepare_qat_pt2e`` with ``X86InductorQuantizer``'s
QAT configuration: per-channel symmetric int8 weights, uint8 activations, Conv-BN folded as it will
be at inference) is tried first. Where the model does not trace, the weights of every Conv and
Linear are fake-quantised per output channel with torch's ``fake_quantize_per_channel_affine``
(a parametrization; activations stay fp32). Either way the result is the original architecture with
the trained weights, ready for :func:`prunekit.quantize.quantize_onnx`, whose static QDQ scheme
(int8 per-channel weights, uint8 activations) is the one trained for.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.errors import ConfigError, require

__all__ = ["DelayedQuantisation", "QATResult", "qat", "FLOWS"]

FLOWS = ("pt2e", "weight-fake-quant")


@dataclass(frozen=True)
class QATResult:
    """The model after QAT (same architecture, trained weights, eval mode), which flow ran, why the
    fallback was needed (empty for pt2e), and what ``fit`` returned."""

    model: nn.Module
    flow: str
    note: str = ""
    fit_result: Any = None


def _traced(model: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    """The model captured by ``torch.export`` in train mode, batch size left free, prepared for QAT."""
    require("torchao", pip_name="torchao", feature="Quantisation-aware training")
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    inputs = tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in example)  # NOTE: export fixes size 1
    batch = torch.export.Dim("batch")
    captured = torch.export.export(model.train(), inputs, dynamic_shapes=tuple({0: batch} for _ in inputs)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(captured, quantizer)
    allow_exported_model_train_eval(prepared)  # NOTE: the training loop switches train/eval itself.
    return prepared


class _PerChannelInt8(nn.Module):
    """Weight parametrization: symmetric int8 per output channel (scale = max |w| / 127)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127.0
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero, 0, -127, 127)


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


class DelayedQuantisation:
    """Training-loop callback (:class:`prunekit.recover.Callback`) that keeps int8 fake quantisation
    off for the first ``fp32_epochs`` epochs and switches it on at the end of the last of them.

    Delayed quantisation as NNCF and TF-MOT schedule it, inside *one* training run: the learning-rate
    schedule and the data order are those of plain fp32 fine-tuning, a freshly pruned network
    recovers without the rounding noise, and the observers first see settled ranges. A custom loop
    calls ``on_epoch_end(epoch, model, {})`` after each epoch.
    """

    def __init__(self, fp32_epochs: int, switch_on: Callable[[], None]) -> None:
        self.fp32_epochs = fp32_epochs
        self.quantising = False
        self.quantised_epochs = 0  # NOTE: epochs that ended with fake quantisation on
        self._switch_on = switch_on
        if fp32_epochs <= 0:
            self._turn_on()

    def _turn_on(self) -> None:
        if not self.quantising:
            self._switch_on()
            self.quantising = True

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Any) -> None:
        if self.quantising:
            self.quantised_epochs += 1
        elif epoch + 1 >= self.fp32_epochs:
            self._turn_on()

    def state_dict(self) -> dict[str, Any]:
        return {"quantising": self.quantising, "quantised_epochs": self.quantised_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("quantising"):
            self._turn_on()
        self.quantised_epochs = int(state.get("quantised_epochs", 0))


Fit = Callable[[nn.Module, tuple[DelayedQuantisation, ...]], Any]


def qat(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...], fit: Fit, *,
        fp32_epochs: int = 0) -> QATResult:
    """Fine-tune a copy of ``model`` with ``fit`` under int8 fake quantisation and return it with
    the trained weights (``model`` is unchanged).

    ``fit(module, callbacks)`` trains the module it is given in place and passes ``callbacks`` to the
    training loop (``lambda m, cbs: train(m, data, config, callbacks=cbs)``); it may call
    ``train()``/``eval()`` on the module. With ``fp32_epochs`` the first epochs of that one run train
    in fp32 (:class:`DelayedQuantisation`); ``fit`` must train more epochs than that.
    """
    work = copy.deepcopy(model)
    example = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    captured = io.StringIO()
    try:
        # NOTE: a failing torch.export prints the whole traced graph (~100 lines) before raising; the
        # fallback's one-line note says what happened, so that text is dropped (and kept on success).
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            prepared = _traced(copy.deepcopy(work), example)
        sys.stderr.write(captured.getvalue())
    except Exception as exc:  # NOTE: torch.export and the quantizer raise many types.
        note = (f"torch.export could not capture {type(model).__name__} ({type(exc).__name__}); "
                f"fake-quantised weights only")
        return _weights_only(work, fit, fp32_epochs, note)
    switch = DelayedQuantisation(fp32_epochs, lambda: _quantising(prepared, True))
    if not switch.quantising:
        _quantising(prepared, False)
    result = fit(prepared, (switch,))
    _check_switched(switch)
    trained = prepared.state_dict()
    work.load_state_dict({k: trained[k] for k in work.state_dict()}, strict=True)
    return QATResult(model=work.eval(), flow="pt2e", fit_result=result)


def _quantising(prepared: nn.Module, on: bool) -> None:
    """Turn the PT2E graph's fake quantisation and observers on or off (off: it trains as fp32)."""
    from torchao.quantization.pt2e import disable_fake_quant, disable_observer, enable_fake_quant, enable_observer

    prepared.apply(enable_fake_quant if on else disable_fake_quant)
    prepared.apply(enable_observer if on else disable_observer)


def _check_switched(switch: DelayedQuantisation) -> None:
    if switch.fp32_epochs > 0 and switch.quantised_epochs == 0:
        raise ConfigError(f"qat: fp32_epochs={switch.fp32_epochs} is not below the number of epochs fit trained, "
                          "so no epoch ran under fake quantisation. Fix: lower fp32_epochs or train more epochs.")


def _weights_only(work: nn.Module, fit: Fit, fp32_epochs: int, note: str) -> QATResult:
    layers = _weight_layers(work)

    def switch_on() -> None:
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", _PerChannelInt8())

    switch = DelayedQuantisation(fp32_epochs, switch_on)
    try:
        result = fit(work, (switch,))
        _check_switched(switch)
    finally:
        for layer in layers:
            if parametrize.is_parametrized(layer, "weight"):
                # NOTE: keep the rounded weights: int8 export then reproduces them exactly.
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return QATResult(model=work.eval(), flow="weight-fake-quant", note=note, fit_result=result)
