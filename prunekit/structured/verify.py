"""Check a pruned model against the masked dense model by value, without copying the dense model.

The reference is the original model with, for one forward pass, every consumer weight that reads a
removed channel set to zero and the removed channels' activations zeroed where standard layers
produce them (conv, linear, embedding, norm outputs); the weights are restored exactly afterwards.
Zeroed activations make sums and contractions over channels agree with the pruned model too, so
groups whose only mixing is such a sum are checked by value like exact ones. Where a layer truly
mixes channels (LayerNorm statistics, a channel mean), the model outputs may differ; then every
layer holding a cut tensor is checked on its own: whenever its input agrees with the reference's
(kept channels), its output must agree too. Only the layers named in ``graph.mixing`` may differ.
A parameter that is all but zero (a residual branch's last norm scale at initialisation, a layer
scale of 1e-6, a zero head) would hide a wrong cut before it; both models get the same non-zero
values in its place for the comparison.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten, tree_map

from prunekit._modes import modes_of, restore_modes
from prunekit._checks import tensors_in
from prunekit.errors import PrunekitError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import ChannelGroup, Member, Role, owner, submodule, tensor_of
from prunekit.graph.handlers.attention_modules import packs_nested_batches
from prunekit.graph.handlers.spectral_norm import normalised_layers
from prunekit.graph.handlers.weight_norm import scales as norm_scales
from prunekit.structured.plan import Plan

__all__ = ["verify", "VerificationError", "zeroed", "zero_consumers", "restore", "cuts_of"]


class VerificationError(PrunekitError, RuntimeError):
    """The pruned model does not compute what the masked dense model computes."""


class ValuesDiffer(VerificationError):
    """Values differ (the models ran and their shapes agree): float32 rounding may be the cause."""


# Layers whose channel dim in inputs and outputs is known: (types, dim).
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                   nn.modules.instancenorm._InstanceNorm)
_CHANNELS_LAST = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.RMSNorm)
# NOTE: the layers (exact classes: a subclass may lay its output out otherwise, as torchvision's
# LayerNorm2d does) whose output hook zeroes the removed channels, so their own slices need not be
_OUTPUT_ZEROED = frozenset({nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d,
                            nn.BatchNorm3d, nn.LayerNorm, nn.RMSNorm, nn.Embedding})


def _channel_dim(module: nn.Module) -> int | None:
    if isinstance(module, _CHANNELS_FIRST):
        return 1
    if isinstance(module, _CHANNELS_LAST):
        return -1
    return None


@dataclass
class _Cuts:
    """Removed positions per module: of its output channels and of its input channels; ``fed``
    lists the consumer slices masked by zeroing the layer's input instead of its weight, and
    ``written`` the producer slices whose layer's output holds the removed positions (zeroed there
    by the output hook, so the slices themselves need not be)."""

    out: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    inp: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    fed: set[tuple[str, int]] = field(default_factory=set)
    written: set[tuple[str, int]] = field(default_factory=set)


def _axes(module: nn.Module) -> tuple[int | None, int | None]:
    """The weight axes that index the layer's output and input channels absolutely (None: not so)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            return (1 if module.groups == 1 else None), 0
        return 0, (1 if module.groups == 1 else None)
    if isinstance(module, nn.Linear):
        return 0, 1
    if isinstance(module, nn.Embedding):
        return 1, None
    return None, None


def _cuts(model: nn.Module, cut: Sequence[tuple[ChannelGroup, Sequence[int]]]) -> _Cuts:
    cuts = _Cuts()
    axes: dict[str, tuple[int | None, int | None]] = {}
    for group, removed in cut:
        channels = torch.tensor(removed, dtype=torch.long)
        for m in group.members:
            module = m.module
            if module not in axes:
                axes[module] = _axes(submodule(model, module))
            out_axis, in_axis = axes[module]
            vector = tensor_of(model, m.tensor).dim() == 1  # a bias, a norm's scale or statistics
            writes = m.role in ("producer", "passive") and (vector or m.axis == out_axis)
            reads = (m.role == "consumer" and m.axis == in_axis) or (m.role == "passive" and vector)
            if not (writes or reads):
                continue
            # NOTE: one channel, one index (most members): no index tensor to build
            positions = [m.start + c for c in removed] if m.inner == 1 else m.indices(channels).tolist()
            if writes:
                cuts.out[module].update(positions)
                cuts.written.add((m.tensor, m.axis))
            if reads:
                cuts.inp[module].update(positions)
                if m.role == "consumer":
                    cuts.fed.add((m.tensor, m.axis))
    return cuts


Saved = list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]


def cuts_of(graph: DependencyGraph, plan: Plan) -> list[tuple[ChannelGroup, Sequence[int]]]:
    """``(group, removed channels)`` for every group ``plan`` cuts."""
    return [(graph.group(g), removed) for g in plan.sizes if (removed := plan.removed(g))]


def zero_consumers(model: nn.Module, cuts: Iterable[tuple[ChannelGroup, Sequence[int]]],
                   skip: Collection[tuple[str, int]] = frozenset()) -> Saved:
    """Zero in ``model`` every consumer weight slice reading a cut channel (but the (tensor, axis)
    pairs in ``skip``): the masked dense model of DESIGN.md's equivalence. Returns what was there,
    as ``(tensor, axis, index, old values)`` in the order written, for :func:`restore`."""
    return _zero_members(model, cuts, ("consumer",),
                         lambda member, t: (member.tensor, member.axis) not in skip)


def _zero_members(model: nn.Module, cuts: Iterable[tuple[ChannelGroup, Sequence[int]]], roles: Sequence[Role],
                  chosen: Callable[[Member, torch.Tensor], bool]) -> Saved:
    """Zero the cut channels' slices of the members of ``roles`` that ``chosen`` accepts; the old values."""
    saved: Saved = []
    scales = norm_scales(model)
    with torch.no_grad():
        for group, channels in cuts:
            index = torch.tensor(sorted(channels), dtype=torch.long)
            for member in (m for role in roles for m in group.by_role(role)):
                t = tensor_of(model, member.tensor)
                if not chosen(member, t):
                    continue
                if (member.tensor, member.axis) in scales:
                    t = tensor_of(model, scales[(member.tensor, member.axis)])
                rows = member.indices(index).to(t.device)
                saved.append((t, member.axis, rows, t.index_select(member.axis, rows)))
                t.index_fill_(member.axis, rows, 0.0)
    return saved


def restore(saved: Saved) -> None:
    """Put back what :func:`zero_consumers` overwrote, in reverse order (tied tensors)."""
    with torch.no_grad():
        for t, axis, index, old in reversed(saved):
            t.index_copy_(axis, index, old)


def zero_sources(model: nn.Module, cuts: Iterable[tuple[ChannelGroup, Sequence[int]]],
                 skip: Collection[tuple[str, int]] = frozenset()) -> Saved:
    """Zero in ``model`` the slices of the cut channels in every producer and passive parameter (a
    weight's rows, a bias, a norm's scale): the cut channels' activations are then zero wherever
    a linear map makes them, also in code the verification hooks do not see (XLNet's
    ``einsum("ibh,hnd->ibnd", h, self.q)`` with raw parameters), so sums and contractions over
    channels agree with the pruned model. Only cut positions change, but the (tensor, axis) pairs
    in ``skip``. Returns the old values. Buffers (running statistics) stay: a zero variance could
    divide by zero."""
    return _zero_members(model, cuts, ("producer", "passive"),
                         lambda member, t: isinstance(t, nn.Parameter) and t.is_floating_point()
                         and (member.tensor, member.axis) not in skip)


@contextmanager
def zeroed(model: nn.Module, cuts: Iterable[tuple[ChannelGroup, Sequence[int]]],
           skip: Collection[tuple[str, int]] = frozenset(), *, sources: bool = False,
           sources_skip: Collection[tuple[str, int]] = frozenset()) -> Iterator[nn.Module]:
    """``model`` computing as if the cut channels were removed, for the duration of the block; the
    exact old values are put back afterwards (also on error). ``sources``: the cut channels'
    producers are zeroed too (:func:`zero_sources`), but those in ``sources_skip``."""
    saved: Saved = []
    cuts = list(cuts)
    try:
        saved = zero_consumers(model, cuts, skip)
        if sources:
            saved += zero_sources(model, cuts, sources_skip)
        yield model
    finally:
        restore(saved)


def _first_tensor(obj: Any) -> torch.Tensor | None:
    for t in tree_flatten(obj)[0]:
        if isinstance(t, torch.Tensor):
            return t
    return None


def _drop(t: torch.Tensor, dim: int, positions: set[int]) -> torch.Tensor | None:
    """``t`` without ``positions`` along ``dim`` (None if they do not fit)."""
    if not positions:
        return t
    size = t.shape[dim]
    if max(positions) >= size:
        return None
    keep = torch.ones(size, dtype=torch.bool)
    keep[torch.tensor(sorted(positions), dtype=torch.long)] = False
    return t.index_select(dim, keep.nonzero().squeeze(1).to(t.device))


def _fresh(out: torch.Tensor, module: nn.Module, args: Any) -> bool:
    """True when ``out`` shares no memory with the tensors in ``args`` or the module's own tensors
    (a standard layer's output: writing it in place changes nothing else)."""
    try:
        ptr = out.untyped_storage().data_ptr()
        flat = args if type(args) is tuple else tree_flatten(args)[0]  # NOTE: hooks get a flat tuple
        others = [t for t in flat if isinstance(t, torch.Tensor)]
        if len(others) != len(flat):
            others = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
        others += [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
        return all(t.untyped_storage().data_ptr() != ptr for t in others)
    except (RuntimeError, NotImplementedError):  # NOTE: sparse or other storage-less layouts
        return False


@dataclass
class _Record:
    inputs: list[torch.Tensor | None] = field(default_factory=list)
    outputs: list[torch.Tensor | None] = field(default_factory=list)


def _run(model: nn.Module, inputs: tuple[Any, ...], modules: dict[str, int], cuts: _Cuts, *,
         zero: bool, record: Collection[str], watch: Collection[str] = (),
         unzeroed: set[str] | None = None) -> tuple[list[torch.Tensor], dict[str, _Record], set[str]]:
    """One eval-mode forward; with ``zero``, removed output channels of known layers are zeroed;
    the first tensor input and the output of each of ``modules`` named in ``record`` are kept.
    Returns the outputs, the records, and the layers whose input was zeroed (with ``zero``) or,
    without, the layers of ``watch`` called on a tensor (so would be). ``unzeroed`` gets the
    layers of ``modules`` with removed output channels that were never called, or whose output
    could not be zeroed in some call."""
    records: dict[str, _Record] = defaultdict(_Record)
    handles = []
    fired: set[str] = set()  # layers whose input was zeroed (their forward ran)
    outs_done: set[str] = set()
    outs_missed: set[str] = set()

    def hook(name: str, dim: int) -> Any:
        positions = sorted(cuts.out.get(name, ()))
        index = torch.tensor(positions, dtype=torch.long)
        keep = name in record

        def run(module: nn.Module, args: Any, out: Any) -> Any:
            if zero and positions and isinstance(out, torch.Tensor) and out.dim() > 0 \
                    and out.shape[dim] > positions[-1]:
                # NOTE: in place (a write of the removed channels, not a copy of the whole output)
                # unless the output shares memory with what the layer was given or holds
                if _fresh(out, module, args):
                    out.index_fill_(dim, index.to(out.device), 0.0)
                else:
                    out = out.index_fill(dim, index.to(out.device), 0.0)
                outs_done.add(name)
            elif zero and positions:
                outs_missed.add(name)
            if keep:
                x = _first_tensor(args)
                records[name].inputs.append(None if x is None else x.detach().clone())
                records[name].outputs.append(out.detach().clone() if isinstance(out, torch.Tensor) else None)
            return out

        return run

    def pre_hook(name: str, dim: int, positions: list[int]) -> Any:
        index = torch.tensor(positions, dtype=torch.long)

        def run(module: nn.Module, args: Any) -> Any:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[dim] <= positions[-1]:
                return None  # NOTE: cannot happen for the layers in cuts.fed (their weight reads this dim)
            fired.add(name)
            return (x.index_fill(dim, index.to(x.device), 0.0), *args[1:])

        return run

    def seen(name: str) -> Any:
        def run(module: nn.Module, args: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
                fired.add(name)

        return run

    fed_modules = {owner(t) for t, _ in cuts.fed} if zero else set()
    for name, dim in modules.items():
        if not zero and name not in record:
            continue
        module = submodule(model, name)
        fed = sorted(cuts.inp.get(name, ())) if name in fed_modules else []
        if fed:
            handles.append(module.register_forward_pre_hook(pre_hook(name, dim, fed)))
        handles.append(module.register_forward_hook(hook(name, dim)))
    if not zero:
        present = dict(model.named_modules())
        fired.update(name for name in watch if name not in present)  # NOTE: not known here: the dense run decides
        handles.extend(present[name].register_forward_pre_hook(seen(name)) for name in watch if name in present)
    modes = modes_of(model)
    model.eval()
    try:
        with torch.no_grad(), _same_draws(model), _unfused_attention(model):
            out = model(*inputs)
    finally:
        restore_modes(modes)
        for h in handles:
            h.remove()
    if unzeroed is not None:
        unzeroed.update({name for name in modules if cuts.out.get(name)} - (outs_done - outs_missed))
    # NOTE: every tensor of the output, also inside a dataclass or a plain object (tensors_in)
    return tensors_in(out, f"{type(model).__name__}'s output"), records, fired


@contextmanager
def _unfused_attention(model: nn.Module) -> Iterator[None]:
    """For a model holding an ``nn.TransformerEncoder`` that packs padded batches into nested tensors,
    PyTorch's fused attention paths off for the block (the setting restored after): the encoder would
    hand its layers nested tensors that the recording hooks cannot read, and the masked dense model
    would differ from the pruned one at padded positions only by the path taken. Both models take the
    regular path, which computes the same function. Other models keep the fast paths (faster)."""
    if not packs_nested_batches(model):
        yield
        return
    fused = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fused)


@contextmanager
def _same_draws(model: nn.Module) -> Iterator[None]:
    """Every verification forward draws the same random numbers (UnivNet makes its noise in the
    forward), and the caller's random state is as it was afterwards."""
    devices = sorted({t.device.index or 0 for t in model.parameters() if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        # NOTE: only the generators forked here are seeded (torch.manual_seed would seed every CUDA
        # device, and queue a seed for one not yet started, outside what fork_rng restores)
        torch.default_generator.manual_seed(0)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(0)
        yield


def verify(model: nn.Module, pruned: nn.Module, graph: DependencyGraph, plan: Plan, example_inputs: Any,
           *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Raise :class:`VerificationError` unless ``pruned`` matches the masked dense model by value.

    Two forward passes (the pruned model, then ``model`` masked in place and restored); ``model``
    is left exactly as it was. See the module docstring for what is compared. Parameters that
    silence what flows through them (:func:`_lifted`) are given the same non-zero values in both
    models for the comparison. Values that differ are compared again in float64 (both models
    converted in place and back, exactly), because a deep float32 model summing over fewer channels
    rounds differently: only a difference that stays is an error. The tolerance is relative to each
    output's magnitude, however small, where that float64 pass can rule out rounding.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    rounds = _rounds_in_float32(model, pruned, inputs)
    with _lifted(model, pruned, graph, plan):
        try:
            _verify(model, pruned, graph, plan, inputs, rtol, atol, _FLOOR if rounds else 1.0)
        except ValuesDiffer as error:
            if not rounds:
                raise
            try:
                with _in_float64(model), _in_float64(pruned):
                    _verify(model, pruned, graph, plan, _to_float64(inputs), rtol, atol, _FLOOR)
            except Exception:
                raise error from None


# NOTE: a parameter no larger than this anywhere (a zero-initialised norm scale closing a residual
# branch, a layer scale of 1e-6, a gate at zero) hides a wrong cut before it from the outputs
_VANISHING = 1e-3
# NOTE: the magnitude below which an output's tolerance stops shrinking with it (float64 rounding
# of intermediate values near one stays far below atol times this)
_FLOOR = 1e-6


@contextmanager
def _lifted(model: nn.Module, pruned: nn.Module, graph: DependencyGraph, plan: Plan) -> Iterator[None]:
    """Both models with every vanishing parameter (but biases, which add and so hide nothing) set to
    seeded values in [0.5, 1.5] (over the fan-in for a matrix) for the block, the pruned model's copy
    sliced as ``plan`` slices it; every value is put back exactly afterwards, also on error."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    lifts = list(_lifts(model, pruned, graph, plan))  # NOTE: all chosen before any changes
    try:
        with torch.no_grad():
            for t, value in lifts:
                saved.append((t, t.detach().clone()))
                t.copy_(value)
        yield
    finally:
        with torch.no_grad():
            for t, old in reversed(saved):
                t.copy_(old)


def _lifts(model: nn.Module, pruned: nn.Module, graph: DependencyGraph,
           plan: Plan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(parameter, value)`` pairs for :func:`_lifted`: each vanishing parameter of ``model`` and its
    namesake in ``pruned``; one whose namesake is missing or not shaped as the plan's slice stays."""
    theirs = dict(pruned.named_parameters())
    removed: dict[tuple[int, int], set[int]] = defaultdict(set)
    for group, channels in cuts_of(graph, plan):
        index = torch.tensor(channels, dtype=torch.long)
        for m in group.members:
            removed[(id(tensor_of(model, m.tensor)), m.axis)].update(m.indices(index).tolist())
    draws = torch.Generator().manual_seed(0)
    for name, t in model.named_parameters():
        other = theirs.get(name)
        if other is None or "bias" in name.rsplit(".", 1)[-1] or not _vanishing(t) or not _vanishing(other):
            continue
        value = torch.rand(t.shape, generator=draws).add_(0.5)
        if t.numel() > max(t.shape, default=1):  # NOTE: a matrix: an average of its inputs, not a sum
            value /= t.numel() // t.shape[0]
        value = value.to(t.device, t.dtype)
        sliced: torch.Tensor | None = value
        for axis in range(t.dim()):
            if sliced is not None:
                sliced = _drop(sliced, axis, removed.get((id(t), axis), set()))
        if sliced is None or sliced.shape != other.shape:
            continue
        yield t, value
        yield other, sliced.to(other.device, other.dtype)


def _vanishing(t: torch.Tensor) -> bool:
    """Whether ``t`` is a floating tensor with values, none larger than :data:`_VANISHING`."""
    if not t.is_floating_point() or t.numel() == 0 or t.device.type == "meta" \
            or isinstance(t, nn.parameter.UninitializedParameter):
        return False
    low, high = torch.aminmax(t.detach())  # NOTE: no copy of the tensor, as abs() would make
    return max(-float(low), float(high)) <= _VANISHING


def _floating(module: nn.Module) -> list[torch.Tensor]:
    return [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]


def _rounds_in_float32(model: nn.Module, pruned: nn.Module, inputs: tuple[Any, ...]) -> bool:
    """Whether a float64 pass could tell rounding from a wrong cut: float32 (or narrower) tensors,
    none of a model's sharing storage with another (converting one would part them)."""
    tensors = _floating(model) + _floating(pruned) + [t for t in tree_flatten(inputs)[0]
                                                      if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors or any(t.dtype == torch.float64 for t in tensors):
        return False
    for module in (model, pruned):
        own = _floating(module)
        if len({t.untyped_storage().data_ptr() for t in own}) != len(own):
            return False
    return True


@contextmanager
def _in_float64(module: nn.Module) -> Iterator[None]:
    """``module``'s floating tensors in float64 for the block; afterwards each has its own dtype
    and exact values again (a float32, float16 or bfloat16 number is exact in float64)."""
    tensors = _floating(module)
    dtypes = [t.dtype for t in tensors]
    try:
        with torch.no_grad():
            for t in tensors:
                t.data = t.data.double()
        yield
    finally:
        with torch.no_grad():
            for t, dtype in zip(tensors, dtypes):
                t.data = t.data.to(dtype)


def _to_float64(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return tree_map(lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, inputs)


def _verify(model: nn.Module, pruned: nn.Module, graph: DependencyGraph, plan: Plan, inputs: tuple[Any, ...],
            rtol: float, atol: float, floor: float = 1.0) -> None:
    """The comparison itself (see :func:`verify`); a value mismatch raises :class:`ValuesDiffer`.
    ``atol`` is relative to each tensor's largest magnitude, taken as at least ``floor``."""
    removed = cuts_of(graph, plan)
    strict = all(g.exact or g.zero_exact for g, _ in removed)
    cuts = _cuts(model, removed)
    names = {m.module for g, _ in removed for m in g.members}
    modules: dict[str, int] = {}
    for name in names:
        if name:
            dim = _channel_dim(submodule(model, name))
            if dim is not None:
                modules[name] = dim
    # NOTE: the layers named in graph.mixing are never compared (_check_layers), so never recorded
    record = set() if strict else set(modules) - set(graph.mixing)
    # NOTE: a spectral-normed weight's scale reads all of it: its cut slices are zeroed in the weight
    normalised = normalised_layers(model)
    cuts.fed -= {(t, a) for t, a in cuts.fed if owner(t) in normalised}
    fed = {owner(t) for t, _ in cuts.fed if owner(t) in modules}
    writers = {name for t, _ in cuts.written if (name := owner(t)) in modules and name not in normalised
               and parametrize.type_before_parametrizations(submodule(model, name)) in _OUTPUT_ZEROED}
    try:
        got, pruned_records, called = _run(pruned, inputs, modules, cuts, zero=False, record=record,
                                           watch=fed | writers)
    except Exception as exc:
        raise VerificationError(f"The pruned {type(model).__name__} fails on the example input: "
                                f"{type(exc).__name__}: {exc}. This is a prunekit bug; please report "
                                f"it with the model. The original model is unchanged.") from exc
    # NOTE: a layer whose weight is read without calling it (nn.MultiheadAttention's out_proj) cannot
    # have its input zeroed: its weight is. The pruned run shows which; the dense run confirms it.
    cuts.fed -= {(t, a) for t, a in cuts.fed if owner(t) not in called}
    # NOTE: a producer slice of a layer whose output hook zeroes the removed channels need not be
    # zeroed itself; the dense run shows which hooks did, and a layer that did not is redone.
    covered = {(t, a) for t, a in cuts.written if owner(t) in writers & called}

    def masked(unzeroed: set[str] | None = None) -> tuple[list[torch.Tensor], dict[str, _Record], set[str]]:
        """The reference run: the dense model with the cut channels masked."""
        with zeroed(model, removed, skip=cuts.fed, sources=True, sources_skip=covered):
            return _run(model, inputs, modules, cuts, zero=True, record=record, unzeroed=unzeroed)

    unzeroed: set[str] = set()
    want, dense_records, fired = masked(unzeroed)
    unfired = {(t, a) for t, a in cuts.fed if owner(t) not in fired}
    uncovered = {(t, a) for t, a in covered if owner(t) in unzeroed}
    if unfired or uncovered:
        cuts.fed -= unfired
        covered -= uncovered
        want, dense_records, _ = masked()
    _compare_shapes(got, want)

    def judge(want: list[torch.Tensor], dense_records: dict[str, _Record]) -> None:
        mismatch = _first_mismatch(got, want, rtol, atol, floor)
        if mismatch is None:
            return
        if strict:
            i, diff = mismatch
            raise ValuesDiffer(
                f"The pruned model's output {i} differs from the masked dense model by up to {diff:.3g} "
                f"(tolerance rtol={rtol}). A channel dependency was missed; the original model is "
                f"unchanged. Please report this model, or pass freeze=[...] for the module involved.")
        _check_layers(pruned_records, dense_records, modules, cuts, set(graph.mixing), rtol, atol, floor)

    try:
        judge(want, dense_records)
    except ValuesDiffer:
        if not covered:
            raise
        # NOTE: a skipped slice may also be read by code the hooks do not see (a weight used raw as
        # well as through its layer): the reference is made again with every producer zeroed
        covered.clear()
        want, dense_records, _ = masked()
        judge(want, dense_records)


def _compare_shapes(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    if len(got) != len(want):
        raise VerificationError(f"The pruned model's output holds {len(got)} tensors, the original's {len(want)}. "
                                f"The original model is unchanged.")
    for i, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            raise VerificationError(f"Output {i} of the pruned model has shape {tuple(a.shape)}, the "
                                    f"original {tuple(b.shape)}. The original model is unchanged.")


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float, floor: float) -> bool:
    if a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    if torch.finfo(a.dtype).bits <= 16:  # NOTE: bf16/fp16 sums of other lengths round differently
        eps = torch.finfo(a.dtype).eps
        # NOTE: and a float64 pass of a large half-precision model would take four times its memory
        rtol, atol, floor = max(rtol, 4 * eps), max(atol, 4 * eps), 1.0
    scale = float(b.abs().max().clamp_min(floor)) if b.numel() else 1.0
    return bool(torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol * scale))


def _first_mismatch(got: list[torch.Tensor], want: list[torch.Tensor], rtol: float, atol: float,
                    floor: float) -> tuple[int, float] | None:
    for i, (a, b) in enumerate(zip(got, want)):
        if not _close(a, b, rtol, atol, floor):
            diff = float((a.float() - b.float()).abs().max()) if a.is_floating_point() else float("nan")
            return i, diff
    return None


def _check_layers(pruned: dict[str, _Record], dense: dict[str, _Record], modules: dict[str, int],
                  cuts: _Cuts, mixing: set[str], rtol: float, atol: float, floor: float) -> None:
    """Each layer holding a cut tensor, fed what the reference fed it, must answer the same. A layer
    whose own code, or a child it calls, mixes channels is not compared (Inkling's embedding runs
    an RMSNorm over its output)."""
    for name, dim in modules.items():
        if name in mixing or any(m.startswith(f"{name}.") for m in mixing):
            continue
        for x, y, dx, dy in zip(pruned[name].inputs, pruned[name].outputs, dense[name].inputs, dense[name].outputs):
            if x is None or y is None or dx is None or dy is None:
                continue
            fed = dx if x.is_floating_point() is False else _drop(dx, dim, cuts.inp.get(name, set()))
            if fed is None or not _close(x, fed, rtol, atol, floor):
                continue  # its input already differs (a legitimate mix upstream): not comparable
            expected = _drop(dy, dim, cuts.out.get(name, set()))
            if expected is None or expected.shape != y.shape:
                continue
            if not _close(y, expected, rtol, atol, floor):
                diff = float((y.float() - expected.float()).abs().max())
                raise ValuesDiffer(
                    f"The pruned '{name}' computes other values than the masked dense model from the "
                    f"same input (up to {diff:.3g} apart). A channel dependency was missed; the "
                    f"original model is unchanged. Please report this model, or pass freeze=['{name}'].")
