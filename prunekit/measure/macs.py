"""Multiply-accumulates of one forward pass, counted by PyTorch's own FLOP counter.

MACs = FLOPs / 2 as ``torch.utils.flop_counter.FlopCounterMode`` counts them: matmuls,
convolutions and attention; element-wise ops (activations, norms, pooling) count zero. Recurrent
layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their cells) run fused kernels the counter cannot
see into (an LSTM on CPU counted 0), so they are counted by formula instead (:func:`recurrent_macs`).
This module also holds the small helpers that turn an example input into a batch.

:func:`macs_terms` is the same count split by the parameter each op reads, so that the MACs of the
model with some parameters made smaller follow without running it again (what a pruning search
asks at every step): a convolution's or linear layer's MACs are its weight's element count times
sizes the weight does not hold (batch, output positions, tokens).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from prunekit._modes import eval_mode
from prunekit._checks import positional_inputs, tensors_in
from prunekit.errors import ConfigError

__all__ = ["count_macs", "macs_by_module", "macs_terms", "MacsTerms", "as_args", "as_inputs", "batch_of",
           "Batching", "counting_mode", "find_batch", "leading_size", "recurrent_macs", "MacCounter",
           "with_grad_if_tracked"]

# NOTE: a tensor, a tuple of positional inputs, or a dict keyed by forward's parameter names
ExampleInput = torch.Tensor | tuple[Any, ...] | Mapping[str, Any]


def as_args(example_inputs: Any) -> tuple[Any, ...]:
    """The positional arguments of ``forward``, as the tracer takes them: a tuple (or list) is the
    arguments, anything else the one argument (a tensor, a batch dict or dataclass); arguments that
    are no tensor (a flag, a route key) pass through unchanged. For the measures that only run the
    model (MACs, PyTorch latency). Those that need tensors (ONNX) use :func:`as_inputs`."""
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    for i, x in enumerate(args):
        if isinstance(x, (dict, list, tuple)) and not tensors_in(x, f"example_inputs[{i}]"):
            raise ConfigError(
                f"example_inputs[{i}] is a {type(x).__name__} holding no tensor; each positional input must be a "
                f"tensor or a dict, list or tuple of tensors. Pass e.g. (images,) or ({{'image': images}},).")
    if not tensors_in(args, "example_inputs"):
        held = [type(x).__name__ for x in args]
        raise ConfigError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors (beside which flags and other "
            f"arguments may sit); got {type(example_inputs).__name__}{f' holding {held}' if held else ''}. Pass "
            f"e.g. torch.randn(1, 3, 224, 224), or (ids, mask) for a model with two inputs.")
    return args


def as_inputs(example_inputs: ExampleInput) -> tuple[torch.Tensor, ...]:
    """The example input as a tuple of tensors (the positional arguments of ``forward``)."""
    if isinstance(example_inputs, Mapping):
        held = {key: type(value).__name__ for key, value in example_inputs.items()}
        raise ConfigError(
            f"this needs tensor inputs (ONNX export and ONNX Runtime take tensors only); example_inputs is a dict "
            f"{held} whose keys do not all name forward's parameters, so it would be one dict input. Pass the "
            f"tensors as a tuple in forward's order, or a dict keyed by forward's parameter names.")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if any(x is None for x in inputs) and any(isinstance(x, torch.Tensor) for x in inputs):
        raise ConfigError(
            f"this needs tensor inputs (ONNX export and ONNX Runtime take tensors only); example_inputs"
            f"[{next(i for i, x in enumerate(inputs) if x is None)}] "
            f"is None (a parameter of forward left at its default before a later input). Pass a tensor for it too.")
    bad = [type(x).__name__ for x in inputs if not isinstance(x, torch.Tensor)]
    if any(not isinstance(x, torch.Tensor) and tensors_in(x, "example_inputs") for x in inputs):
        raise ConfigError(
            f"this needs tensor inputs (ONNX export and ONNX Runtime take tensors only); example_inputs holds "
            f"{bad}. Wrap the model in a module whose forward takes the tensors and builds the {bad[0]} it needs.")
    if not inputs or bad:
        raise ConfigError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors; got "
            f"{type(example_inputs).__name__}{f' holding {bad}' if bad else ''}. Pass e.g. "
            f"torch.randn(1, 3, 224, 224), or (ids, mask) for a model with two inputs.")
    return inputs


def _forward_inputs(example_inputs: Any) -> tuple[Any, ...]:
    """The positional arguments to count a forward pass with (:func:`as_args`): ``None`` may stand
    for an input the model does without (an encoder-decoder's ``attention_mask`` before its
    ``decoder_input_ids``), as any argument that is no tensor may."""
    return as_args(example_inputs)


def leading_size(inputs: Any) -> int | None:
    """Dim 0 of the first input tensor that has one (also inside a dict, list or tuple input): the
    example's batch size as :func:`batch_of` takes it by default; None where no tensor has a dim."""
    from torch.utils._pytree import tree_flatten

    return next((x.shape[0] for x in tree_flatten(inputs)[0] if isinstance(x, torch.Tensor) and x.dim()), None)


def batch_of(inputs: tuple[Any, ...], batch_size: int, batch: int | None = None) -> tuple[Any, ...]:
    """Each input tensor (also those inside a dict, list or tuple input) whose dim 0 is the example's
    batch size ``batch`` (default :func:`leading_size`) tiled (repeated) along dim 0, then cut to
    exactly ``batch_size`` rows.

    Tensors whose dim 0 differs (a (T, T) attention mask shared by the batch) and 0-d tensors have no
    batch dimension and are passed through unchanged.
    """
    from torch.utils._pytree import tree_map

    rows = leading_size(inputs) if batch is None else batch

    def tiled(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] != rows:
            return x
        times = -(-batch_size // max(x.shape[0], 1))
        return x.repeat(times, *([1] * (x.dim() - 1)))[:batch_size].contiguous()

    return tuple(tree_map(tiled, x) for x in inputs)


@dataclass(frozen=True)
class Batching:
    """How an example input takes other batch sizes (:func:`find_batch`): ``size`` is its batch size
    along dim 0 (inputs whose dim 0 differs are shared by the batch), None where re-batching along
    dim 0 was not verified; ``reason`` then says why."""

    size: int | None
    reason: str = ""


def find_batch(model: nn.Module, inputs: tuple[Any, ...]) -> Batching:
    """The example's batch size along dim 0, verified on ``model``: for each leading size of the input
    tensors in turn, the inputs of that size are cut to their first sample ``a``, a different sample
    ``b`` is made from it, and the model at batch 2 (``[a, b]``) must give the outputs at batch 1 of
    ``a`` and of ``b`` (those outputs whose dim 0 follows the batch). A sequence-first RNN's dim 0 is
    time (steps see the steps before), so it fails; a shared mask passes through unchanged."""
    from torch.utils._pytree import tree_flatten

    sizes = list(dict.fromkeys(x.shape[0] for x in tree_flatten(inputs)[0]
                               if isinstance(x, torch.Tensor) and x.dim()))
    if not sizes:
        return Batching(None, "no input tensor has a dimension to batch")
    reasons = []
    for size in sizes:
        reason = _rebatch_failure(model, inputs, size)
        if reason is None:
            return Batching(size)
        reasons.append(reason)
    return Batching(None, reasons[0])


def _other_sample(x: torch.Tensor) -> torch.Tensor:
    """A sample unlike ``x`` of the same shape and kind: floats drawn with ``x``'s mean and spread,
    integers (token ids) shuffled among ``x``'s own values (so they stay valid), flags unchanged."""
    generator = torch.Generator().manual_seed(0)  # NOTE: the global random state is left alone
    if x.is_floating_point():
        spread = float(x.float().std()) if x.numel() > 1 else 0.0
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return x.mean() + noise * (spread if spread > 0 else 1.0)
    if x.dtype == torch.bool or x.is_complex() or x.numel() < 2:
        return x
    order = torch.randperm(x.numel(), generator=generator).to(x.device)
    return x.reshape(-1)[order].reshape(x.shape)


def _rebatch_failure(model: nn.Module, inputs: tuple[Any, ...], size: int) -> str | None:
    """Why ``inputs`` cannot be re-batched along dim 0 taking ``size`` as their batch size; None if they can."""
    from torch.utils._pytree import tree_map

    def batched(x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == size

    one = tree_map(lambda x: x[:1] if batched(x) else x, inputs)
    other = tree_map(lambda x: _other_sample(x[:1]) if batched(x) else x, inputs)
    pair = tree_map(lambda x: torch.cat([x[:1], _other_sample(x[:1])]) if batched(x) else x, inputs)
    try:
        with eval_mode(model), torch.no_grad():
            outputs = [tensors_in(model(*args), "the model's output") for args in (one, other, pair)]
    except Exception as exc:  # NOTE: the model's own code raises any type on inputs it cannot take
        first = next((line for line in str(exc).splitlines() if line.strip()), "").strip()
        return f"the model fails on it re-batched along dim 0 ({type(exc).__name__}: {first[:160]})"
    if len({len(o) for o in outputs}) != 1:
        return "the model gives a different number of outputs at batch 2"
    followed = 0
    for a, b, both in zip(*outputs):
        if not (both.dim() and both.shape[0] == 2 and a.shape == b.shape == (1, *both.shape[1:])):
            continue  # NOTE: an output with no batch dim first (an RNN's (layers, B, H) state)
        followed += 1
        if not (_close(both[:1], a) and _close(both[1:], b)):
            return ("a sample's outputs change with the other samples along dim 0 (dim 0 is not the batch, "
                    "e.g. the time steps of a sequence-first RNN)")
    if not followed:
        return "no output of the model follows the batch size along dim 0"
    return None


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to the rounding of another batch size's kernels (scaled to ``expected``'s magnitude)."""
    if not got.is_floating_point():
        return torch.equal(got, expected)
    tol = max(1e-3, 16 * torch.finfo(got.dtype).eps)
    scale = max(1.0, float(expected.detach().abs().nan_to_num(0.0, 0.0, 0.0).max())) if expected.numel() else 1.0
    return torch.allclose(got.float(), expected.float(), rtol=tol, atol=tol * scale, equal_nan=True)


def with_grad_if_tracked(run: Callable[[bool], Any]) -> Any:
    """``run(False)``; where torch's module tracker (which FlopCounterMode uses) fails under no_grad,
    ``run(True)``: a module given a view of a parameter (a Perceiver's or DETR's learned queries,
    ``latents.unsqueeze(0).expand(...)``) reports requires_grad there without a grad_fn, and the
    tracker asserts on it. With grad enabled it has one; the count is the same."""
    try:
        return run(False)
    except AssertionError as error:
        if "Expected gradient function to be set" not in str(error):
            raise
        return run(True)


def _deform_conv_flops(x: Any, weight: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
    """FLOPs of torchvision's deformable conv as of a conv of its weight (the bilinear sampling of
    its input at the offsets is element-wise work, not counted, as pooling is not)."""
    return 2 * math.prod(out_shape) * math.prod(weight[1:])


def _trilinear_flops(i1: Any, i2: Any, i3: Any, expand1: Sequence[int], expand2: Sequence[int],
                     expand3: Sequence[int], *_: Any, **__: Any) -> int:
    """FLOPs of ``aten._trilinear`` (what ``nn.Bilinear`` runs): each input is unsqueezed at its
    ``expand`` dims, the three multiplied over their broadcast shape and summed over some dims, so
    one multiply-add per element of that shape (``B * out * in1 * in2`` for a bilinear layer)."""
    shapes = []
    for shape, expand in ((i1, expand1), (i2, expand2), (i3, expand3)):
        full = list(shape)
        for axis in sorted(expand):
            full.insert(axis, 1)
        shapes.append(full)
    if len({len(s) for s in shapes}) != 1:
        return 0
    return 2 * math.prod(max(sizes) for sizes in zip(*shapes))


def _grouped_mm_flops(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor | None = None, *_: Any,
                      **__: Any) -> int:
    """FLOPs of ``aten._grouped_mm`` (what transformers' mixture-of-experts layers run): each group
    multiplies its own slice, so the work is that of one matmul over the rows (or the inner or outer
    width) the groups cover, ``offs[-1]`` of them; 3-d by 3-d is a batched matmul."""
    def covered(full: int) -> int:
        if offs is None or offs.numel() == 0:
            return full
        try:
            return int(offs[-1])
        except Exception:  # NOTE: a fake or meta tensor has no values (each raises its own type)
            return full

    if a.dim() == 2 and b.dim() == 3:  # NOTE: rows of a grouped; each row meets one group's matrix
        return 2 * covered(a.shape[0]) * a.shape[1] * b.shape[2]
    if a.dim() == 3 and b.dim() == 3:
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if a.dim() == 2 and b.dim() == 2:  # NOTE: the inner width grouped: one [M, N] output per group
        return 2 * a.shape[0] * covered(a.shape[1]) * b.shape[1]
    if a.dim() == 3 and b.dim() == 2:  # NOTE: columns of b grouped
        return 2 * a.shape[1] * a.shape[2] * covered(b.shape[1])
    return 0


_grouped_mm_flops._get_raw = True  # type: ignore[attr-defined]  # NOTE: FlopCounterMode then passes offs' values


def _library_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for ops FlopCounterMode does not know: torch's own ``_trilinear`` and
    ``_grouped_mm``, and ops of libraries already loaded (prunekit never imports those libraries)."""
    formulas: dict[Any, Callable[..., int]] = {torch.ops.aten._trilinear: _trilinear_flops}
    if hasattr(torch.ops.aten, "_grouped_mm"):
        formulas[torch.ops.aten._grouped_mm] = _grouped_mm_flops
    if "torchvision.ops.deform_conv" in sys.modules:
        formulas[torch.ops.torchvision.deform_conv2d] = _deform_conv_flops
    return formulas


@contextmanager
def counting_mode(model: nn.Module, grad: bool = False) -> Iterator[None]:
    """Eval mode, no grad (unless ``grad``), and attention run as plain matmuls, so the counter sees
    every MAC."""
    # NOTE: nn.MultiheadAttention / TransformerEncoderLayer take a fused "fast path" in eval under
    # no_grad, and CPU SDPA dispatches to a fused kernel; FlopCounterMode has no formula for
    # either and would count 0 for them (a tiny ViT came out 43% low, nn.TransformerEncoder at 0).
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), torch.set_grad_enabled(grad), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


_RECURRENT = (nn.RNNBase, nn.RNNCellBase)


def recurrent_macs(module: nn.Module, input: Any) -> list[tuple[torch.Tensor, int]]:
    """The matmul MACs of one call of a recurrent layer on ``input``, per weight: ``(weight, MACs)``.

    Every (sample, time step) pair multiplies each 2-d weight once, so a weight's MACs are its
    element count times the steps: per layer and direction ``gates * hidden * (input + hidden)``
    (``+ proj`` instead of ``+ hidden`` with ``proj_size``, and ``proj * hidden`` for the projection
    itself), for 4 gates (LSTM), 3 (GRU) or 1 (RNN); counted as a Linear's are. The element-wise gate
    arithmetic (sigmoids, tanh, products) and the biases count zero, as for any layer. ``input`` is
    the tensor (batched or not, ``batch_first`` or not) or a PackedSequence (its steps: the sum of
    ``batch_sizes``); a cell's input is one step per sample."""
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(input, PackedSequence):
        steps = int(input.batch_sizes.sum())
    elif not isinstance(input, torch.Tensor):
        return []
    elif isinstance(module, nn.RNNCellBase):
        steps = input.shape[0] if input.dim() == 2 else 1
    else:
        steps = input.shape[0] * input.shape[1] if input.dim() == 3 else input.shape[0]
    names = getattr(module, "_flat_weights_names", None) or ["weight_ih", "weight_hh"]
    weights = [w for name in names if isinstance(w := getattr(module, name, None), torch.Tensor) and w.dim() == 2]
    return [(w, steps * w.numel()) for w in weights]


class MacCounter(FlopCounterMode):
    """FlopCounterMode that counts each recurrent layer by :func:`recurrent_macs` instead of the ops it
    runs (none seen for a fused kernel, the matmuls of a decomposed one: never both)."""

    def __init__(self) -> None:
        super().__init__(display=False, depth=None, custom_mapping=_library_formulas())
        self.recurrent = 0  # NOTE: > 0 inside a recurrent layer's forward, whose ops are not counted

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        if self.recurrent == 0 and func_packet in self.flop_registry:
            self.add(func_packet, self.flop_registry[func_packet](*args, **kwargs, out_val=out), args)
        return out

    def add(self, func_packet: Any, flops: int, operands: Sequence[Any]) -> None:
        """Count ``flops`` of one op for every module now running (and "Global")."""
        for parent in set(self.mod_tracker.parents):
            self.flop_counts[parent][func_packet] += flops

    @contextmanager
    def recurrent_layers(self, model: nn.Module) -> Iterator[None]:
        """Within the block, count ``model``'s recurrent layers by formula as they are called."""
        def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self.recurrent == 0:
                for weight, macs in recurrent_macs(module, args[0] if args else kwargs.get("input")):
                    self.add(torch.ops.aten.mm, 2 * macs, (weight,))
            self.recurrent += 1

        def after(module: nn.Module, args: Any, out: Any) -> None:
            self.recurrent -= 1

        handles = [hook for module in model.modules() if isinstance(module, _RECURRENT)
                   for hook in (module.register_forward_pre_hook(before, with_kwargs=True),
                                module.register_forward_hook(after, always_call=True))]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _flop_counts(model: nn.Module, example_inputs: ExampleInput) -> dict[str, dict[object, int]]:
    inputs = _forward_inputs(example_inputs)

    def run(grad: bool) -> dict[str, dict[object, int]]:
        counter = MacCounter()
        with counting_mode(model, grad), counter, counter.recurrent_layers(model):
            model(*inputs)
        return counter.get_flop_counts()

    return with_grad_if_tracked(run)


def count_macs(model: nn.Module, example_inputs: ExampleInput) -> int:
    """MACs of one forward pass on ``example_inputs`` (the whole batch it holds).

    The model runs once in eval mode under ``no_grad``; its train/eval mode is restored. A dict
    whose keys name ``forward``'s parameters is passed by name; any other dict is one input.
    """
    counts = _flop_counts(model, positional_inputs(model, example_inputs, "count_macs"))
    return sum(counts.get("Global", {}).values()) // 2


def macs_by_module(model: nn.Module, example_inputs: ExampleInput) -> dict[str, int]:
    """MACs per module, keyed by qualified name as in ``named_modules()`` ("" is the whole model).

    A parent's count includes its children's. Modules that do no counted work are left out;
    the order is ``named_modules()`` order, so the dict reads as the model's outline. Inputs as
    for :func:`count_macs`.
    """
    return _by_module(model, _flop_counts(model, positional_inputs(model, example_inputs, "macs_by_module")))


def _by_module(model: nn.Module, counts: Mapping[str, Mapping[object, int]]) -> dict[str, int]:
    root = type(model).__name__
    by_name: dict[str, int] = {}
    for key, ops in counts.items():
        if key == "Global":
            continue
        name = "" if key == root else key.removeprefix(root + ".")
        by_name[name] = sum(ops.values()) // 2
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return dict(sorted(by_name.items(), key=lambda item: order.get(item[0], len(order))))


@dataclass(frozen=True)
class MacsTerms:
    """One counted forward pass of a model, split by the parameter each op reads.

    ``per_weight[name]`` is the FLOPs of the ops that read parameter ``name`` whole (a convolution,
    a linear layer, ``x @ W.T``) per element of it, ``rest_flops`` those of the others (attention
    matmuls, ops on two parameters or on a slice of one); ``flops == rest_flops + sum(per_weight[n] *
    numel(n))``. ``by_module`` is :func:`macs_by_module`'s answer and ``inputs`` the shape (batch dim
    left out) of the first tensor input of every module holding parameters, from its first call.
    """

    flops: int
    per_weight: Mapping[str, int]
    rest_flops: int
    shapes: Mapping[str, tuple[int, ...]]  # parameter name -> its shape when counted
    by_module: Mapping[str, int]
    inputs: Mapping[str, tuple[int, ...]]

    @property
    def macs(self) -> int:
        """:func:`count_macs` of the counted model."""
        return self.flops // 2

    def estimate(self, shapes: Mapping[str, Sequence[int]]) -> int:
        """MACs with the parameters named in ``shapes`` resized to them (the others as counted).

        Exact when resizing changes no size of an op other than its weight's (channel pruning:
        batch, positions and tokens stay); where it does (a linear layer applied across a cut
        channel axis, attention over cut heads), only a counted forward of the smaller model is.
        """
        flops = self.rest_flops + sum(k * math.prod(shapes.get(name, self.shapes[name]))
                                      for name, k in self.per_weight.items())
        return flops // 2


class _TermCounter(MacCounter):
    """The counter that also books each op's FLOPs to the one parameter it reads whole."""

    def __init__(self, params: Mapping[int, tuple[str, int]]) -> None:
        super().__init__()
        self.params = params
        self.per_weight: dict[str, int] = defaultdict(int)
        self.rest = 0

    def book(self, flops: int, operands: Sequence[Any]) -> None:
        """Book ``flops`` to the one parameter among ``operands`` read whole, else to the rest."""
        read = set()
        for a in operands:
            if isinstance(a, torch.Tensor) and a.dim() >= 2:
                known = self.params.get(id(a if a._base is None else a._base))
                if known is not None and a.numel() == known[1]:
                    read.add(known)
        if len(read) == 1 and flops % next(iter(read))[1] == 0:
            name, numel = read.pop()
            self.per_weight[name] += flops // numel
        else:
            self.rest += flops

    def add(self, func_packet: Any, flops: int, operands: Sequence[Any]) -> None:
        """Count and book an op (also one that did not run: its result was built from shapes)."""
        self.book(flops, operands)
        super().add(func_packet, flops, operands)


ShapesOnly = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]
_CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}


class _Shortcut(TorchFunctionMode):
    """Builds results from shapes (``shapes_only``) instead of running ops; convolutions and linear
    layers so answered are counted with FlopCounterMode's formulas (aten.convolution, aten.mm)."""

    def __init__(self, counter: _TermCounter, shapes_only: ShapesOnly) -> None:
        super().__init__()
        self.counter, self.shapes_only = counter, shapes_only

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        nd = _CONVS.get(func)
        linear = func is torch.nn.functional.linear
        x = args[0] if args else None
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        if (nd is not None or linear) and not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
                                               and x.dim() == (nd + 2 if nd else max(x.dim(), 2))):
            return func(*args, **kwargs)  # NOTE: unbatched or odd calls: counted as they run
        out = self.shapes_only(func, args, kwargs)
        if out is NotImplemented:
            return func(*args, **kwargs)
        if nd is not None:
            assert isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
            flops = 2 * x.shape[0] * weight.numel() * math.prod(out.shape[2:])
            self.counter.add(torch.ops.aten.convolution, flops, (x, weight))
        elif linear:
            assert isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
            flops = 2 * math.prod(x.shape[:-1]) * weight.numel()
            self.counter.add(torch.ops.aten.mm, flops, (x, weight))
        return out


def macs_terms(model: nn.Module, example_inputs: ExampleInput, *, shapes_only: ShapesOnly | None = None) -> MacsTerms:
    """Count ``model``'s MACs on ``example_inputs`` once, as :class:`MacsTerms` (see there).

    Runs like :func:`count_macs` (eval mode, no grad, train/eval mode restored); works on a model
    on the meta device, where it costs no arithmetic. ``shapes_only(func, args, kwargs)`` may
    return an op's result built from shapes (or ``NotImplemented`` to run it): the meta kernels of
    activations and norms are slow Python (``prunekit.graph.fastmeta.fast_result`` is one); it is
    asked only about ops with no MACs, convolutions and linear layers, whose MACs it cannot change.
    """
    inputs = _forward_inputs(positional_inputs(model, example_inputs, "macs_terms"))
    params: dict[int, tuple[str, int]] = {}
    for name, p in model.named_parameters():
        params.setdefault(id(p), (name, p.numel()))
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if name not in seen and args and isinstance(args[0], torch.Tensor):
                seen[name] = tuple(args[0].shape[1:])
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if any(p is not None for p in m._parameters.values())]

    def run(grad: bool) -> _TermCounter:
        counter = _TermCounter(params)
        shortcut = _Shortcut(counter, shapes_only) if shapes_only is not None else contextlib.nullcontext()
        with counting_mode(model, grad), counter, counter.recurrent_layers(model), shortcut:
            model(*inputs)
        return counter

    try:
        counter = with_grad_if_tracked(run)
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    flops = sum(counts.get("Global", {}).values())
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return MacsTerms(flops=flops, per_weight=dict(counter.per_weight), rest_flops=counter.rest, shapes=shapes,
                     by_module=_by_module(model, counts), inputs=seen)
