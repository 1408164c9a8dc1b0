"""Trace a model by running it once and interpreting every torch call into channel constraints.

The model runs for real on the example inputs under a :class:`torch.overrides.TorchFunctionMode`,
so Python control flow, Hugging Face models and custom modules need no symbolic tracing. Each call
is handed to the rule registered for its function (``prunekit.graph.rules``), which reads the
channel layouts of the inputs and writes those of the outputs. Parameters are recognised by
identity, so ``F.conv2d(x, self.weight)`` is all a rule needs to know which tensor to slice.
A call with no rule that touches tracked channels freezes them and is reported: an op the graph
does not know is never assumed to keep channels in place.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from prunekit._clone import clone_module
from prunekit.graph.fastmeta import fast_result
from prunekit.graph.constraints import ConstraintStore, Dim, ParamDim, Tracked
from prunekit.graph.registry import FIXED_SELECTS, RULES, WIDTH_ATTRIBUTES, module_rule_for, refresh_for

__all__ = ["Context", "ChannelInt", "DerivedInt", "ParamInt", "ConfigInt", "interpret", "func_name"]


def func_name(func: Any) -> str:
    """A readable name for a torch function or Tensor method (``torch.Tensor.view``)."""
    if isinstance(func, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        return f"torch.ops.{func}"  # NOTE: a library's op (torchvision's deform_conv2d)
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None) or ""
    if "Tensor" in qual or module.startswith("torch._C") or not module:
        return qual if qual.startswith("Tensor") else f"torch.{qual}"
    return f"{module}.{qual}"


@dataclass
class Context:
    """What rules see: tensor layouts, the constraint store, and where the call happened."""

    store: ConstraintStore
    params: dict[int, str]
    scope: list[str] = field(default_factory=lambda: [""])
    modules: list[nn.Module] = field(default_factory=list)  # the modules whose forward is running
    unknown: list[str] = field(default_factory=list)
    _dims: dict[int, list[Dim]] = field(default_factory=dict)
    _alive: list[torch.Tensor] = field(default_factory=list)
    current: str = ""
    in_rule: bool = False  # a rule is running (its size comparisons are not the model's decisions)
    data: set[int] | None = None  # ids of activations (see _taint; real runs only)
    derived: set[int] | None = None  # ids of other tensors computed from the inputs (masks, ids)
    branches: list[str] = field(default_factory=list)  # Python decisions taken on such tensors
    mixing: set[str] = field(default_factory=set)  # modules whose own code mixes channels (norms)
    heads: dict[int, list[Tracked]] = field(default_factory=dict)  # id(module) -> its head layouts
    pinned: dict[int, str] = field(default_factory=dict)  # id(module) -> why its head count must stay
    counted: dict[tuple[int, int], Tracked] = field(default_factory=dict)  # (id(module), stored count) -> heads
    deferred: dict[int, list[tuple[Tracked, Tracked, str]]] = field(default_factory=dict)  # see settle_ties
    read_back: dict[int, list[tuple[Tracked, Tracked]]] = field(default_factory=dict)  # (width, view dim)
    # NOTE: a layout split into equal blocks cut alike (shape._blocks) -> (its first block, block count)
    blocked: dict[Tracked, tuple[Tracked, int]] = field(default_factory=dict)
    quiet: list[bool] = field(default_factory=list)  # per running module: its ops are left to a module rule
    resume: dict[int, list[Dim]] = field(default_factory=dict)  # id(child) -> its input layouts (see enter)
    fills: set[int] = field(default_factory=set)  # ids of tensors holding one value everywhere (zeros_like)
    # NOTE: sizes a module keeps in attributes (shape.join_size): the channels each attribute joined,
    # and the (id(module), value) pairs some op read as a constant that cannot follow a cut
    sized: dict[str, list[Tracked]] = field(default_factory=dict)
    # NOTE: widths whose ``C // heads`` sized the head dim of a split they are tied to (shape._derived_size):
    # that size stays as traced after a cut in whole heads
    head_sized: list[Tracked] = field(default_factory=list)
    # NOTE: settings objects modules hold (``self.args``), by id: (the object, "scope|attribute" first seen)
    holders: dict[int, tuple[Any, str]] = field(default_factory=dict)
    # NOTE: user modules whose stored head count joined heads, by id: the attributes joined as counts
    head_count_names: dict[int, set[str]] = field(default_factory=dict)
    fixed_sizes: dict[tuple[int, int], str] = field(default_factory=dict)
    called: set[int] = field(default_factory=set)  # ids of the modules whose forward ran
    read: set[int] = field(default_factory=set)  # ids of the parameters and buffers some op was given
    untraced: tuple[str, ...] = ()  # see _untraced

    def settle_ties(self, module: nn.Module) -> None:
        """When ``module``'s forward ends: tie each width it split into heads by ``C // num_heads``
        to the first chunk of the split (q of a fused q|k|v), unless a view in the module already
        sized its output by that width (``reshape(B, N, C)``), which ties the width to the heads in
        the order the output holds them. NesT puts the head innermost (``permute(0, 2, 3, 4, 1)``:
        channel ``c * H + h`` is head ``h``): both ties together would contradict each other."""
        heads = {s.source for layout in self.heads.get(id(module), []) for s in layout.segments}
        tied = {width for width, view in self.read_back.pop(id(module), []) if any(s.source in heads
                                                                                  for s in view.segments)}
        for source, first, where in self.deferred.pop(id(module), []):
            if source not in tied:
                self.store.unify(source, first, where)

    @property
    def module(self) -> nn.Module | None:
        """The innermost module whose forward is running (None at the top level), passing over
        modules that hold nothing of their own (no parameters, buffers, children or attributes:
        the ``kernels`` library's wrappers of a free function, ``Func``), which run as a call of that
        function inside the module that called them (Mamba-2's scan reads the mixer's head count)."""
        return next((m for m in reversed(self.modules) if not _bare(m)), None)

    @property
    def where(self) -> str:
        scope = self.scope[-1]
        return f"{self.current} in '{scope}'" if scope else f"{self.current} in the root module"

    def dims(self, t: torch.Tensor) -> list[Dim]:
        """The layout of every dimension of ``t`` (parameters are named, new tensors plain)."""
        known = self._dims.get(id(t))
        if known is not None and len(known) == t.dim():
            return list(known)
        name = self.params.get(id(t))
        if name is not None:
            return [ParamDim(name, axis, 0, t.shape[axis]) for axis in range(t.dim())]
        return [None] * t.dim()

    def set(self, t: torch.Tensor, dims: list[Dim]) -> None:
        """Record the layouts of a result tensor."""
        if len(dims) != t.dim():
            raise RuntimeError(f"internal: rule for {self.where} gave {len(dims)} dims for a {t.dim()}-d tensor")
        self._dims[id(t)] = list(dims)
        self._alive.append(t)  # NOTE: keeps ids unique for the whole trace

    def tracked(self, *tensors: Any) -> list[Tracked]:
        """Every tracked layout found on the given tensors."""
        found: list[Tracked] = []
        for t in tensors:
            if isinstance(t, torch.Tensor):
                found.extend(d for d in self.dims(t) if isinstance(d, Tracked))
        return found

    def opaque(self, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, reason: str) -> None:
        """The default: freeze every tracked input channel; outputs carry no channels."""
        inputs, _ = tree_flatten((args, kwargs))
        layouts = self.tracked(*inputs)
        if layouts:
            self.unknown.append(f"{self.where}: {reason}")
            for layout in layouts:
                self.store.freeze(layout, f"{reason} ({self.where})")
        outputs, _ = tree_flatten(out)
        for t in outputs:
            if isinstance(t, torch.Tensor):
                self.set(t, [None] * t.dim())


class _Derived:
    """A number computed from channel counts, remembering their layouts (``layouts``)."""

    layouts: tuple[Tracked, ...]

    def __new__(cls, value: Any, layouts: tuple[Tracked, ...]) -> Any:
        self = super().__new__(cls, value)  # type: ignore[call-arg]
        self.layouts = layouts
        return self


class DerivedInt(_Derived, int):
    """An int computed from channel counts (``C // self.num_heads``, ``C * 9``), remembering them.

    After pruning it is computed anew from the pruned width, so a view to it does not keep its
    traced value: the reshape rule ties or freezes the channels it came from (``layouts``).
    Arithmetic on it gives another DerivedInt; comparing it is not reported (only direct counts are).
    """

    __hash__ = int.__hash__


class DerivedFloat(_Derived, float):
    """A float computed from channel counts (``C ** -0.5``, ``1 / C``), remembering them. Data
    scaled by it changes with the cut width: an op that takes it freezes those channels."""

    __hash__ = float.__hash__


def _layouts_of(value: Any) -> tuple[Tracked, ...]:
    if isinstance(value, ChannelInt):
        return (value.layout,)
    return value.layouts if isinstance(value, _Derived) else ()


def _derives(op: str, floating: bool = False) -> Any:
    """``int.<op>`` (``float.<op>``) whose result remembers the channel counts it came from (a
    DerivedInt, or a DerivedFloat: ``C ** -0.5``)."""
    base = getattr(float if floating else int, op)

    def method(self: Any, *other: Any) -> Any:
        result = base(self, *other)
        if result is NotImplemented and not floating and any(type(o) is float for o in other):
            result = getattr(float, op)(float(self), *other)  # NOTE: C ** -0.5, C * 0.5
        if type(result) not in (int, float):
            return result  # NOTE: NotImplemented and divmod tuples stay as they are
        layouts = tuple(dict.fromkeys(_layouts_of(self) + sum((_layouts_of(o) for o in other), ())))
        return DerivedInt(result, layouts) if type(result) is int else DerivedFloat(result, layouts)

    method.__name__ = op
    return method


_ARITHMETIC = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
               "__rfloordiv__", "__mod__", "__rmod__", "__neg__", "__pow__", "__rpow__", "__truediv__",
               "__rtruediv__")
for _op in _ARITHMETIC:
    setattr(DerivedInt, _op, _derives(_op))
    setattr(DerivedFloat, _op, _derives(_op, floating=True))


class ChannelInt(int):
    """A size read from a tracked dimension (``B, N, D = x.shape``), remembering whose size it is.

    Code that reshapes another tensor to ``D`` ties that tensor's channels to ``x``'s: after
    pruning, ``D`` is read at run time from the pruned ``x``. The reshape rule sees the tag and
    records the tie (or freezes ``x``'s channels); arithmetic on it gives a :class:`DerivedInt`,
    which the reshape rule treats as a width that does not stay what it was traced. Comparing it
    (``if x.shape[1] == 64``) is a Python decision on the channel count that pruning could flip, so
    those channels are frozen and the comparison is reported.
    """

    layout: Tracked
    ctx: Context | None

    def __new__(cls, value: int, layout: Tracked, ctx: Context | None = None) -> ChannelInt:
        self = super().__new__(cls, value)
        self.layout = layout
        self.ctx = ctx
        return self

    def _decided(self, op: str, other: Any) -> None:
        ctx = self.ctx
        if ctx is None or ctx.in_rule or not isinstance(other, int):
            return
        if ctx.module is not None and refresh_for(ctx.module) is not None:
            return  # NOTE: a module with a refresh keeps the sizes it checks (InstanceNorm's num_features)
        scope = ctx.scope[-1]
        if isinstance(other, ChannelInt):
            if other.layout == self.layout:
                return
            layouts = [self.layout, other.layout]
        elif self._stored(ctx, other, scope):
            return
        else:
            layouts = [self.layout]
        place = f"'{scope}'" if scope else "the root module"
        why = (f"Python code compares a channel count ({int(self)} {op} {int(other)}) in {place}; "
               f"the pruned model could take another branch")
        ctx.unknown.append(f"comparison in {place}: {why}")
        for layout in layouts:
            ctx.store.freeze(layout, why)

    def _stored(self, ctx: Context, other: int, scope: str) -> bool:
        """The width checked against the one attribute of the running module that holds the same
        value (PVT's ``if num_channels != self.num_channels: raise``): the attribute joins the
        group (``apply`` rewrites it), so the pruned model decides the same. False: not that case."""
        from prunekit.graph.handlers.shape import size_attribute

        if ctx.module is None or int(other) != int(self):
            return False
        found = [key for key, value in vars(ctx.module).items() if type(value) is int and value == int(other)]
        from prunekit.graph.handlers.call_source import read_first

        found = read_first(ctx.module, found)  # NOTE: of several holding it, the one the comparison reads
        if len(found) != 1:
            return False
        ctx.store.use(self.layout, size_attribute(scope, found[0], None), 0, "passive")
        return True

    __hash__ = int.__hash__

    def __eq__(self, other: object) -> bool:
        self._decided("==", other)
        return int.__eq__(self, other)  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        self._decided("!=", other)
        return int.__ne__(self, other)  # type: ignore[no-any-return]

    def __lt__(self, other: Any) -> bool:
        self._decided("<", other)
        return int.__lt__(self, other)

    def __le__(self, other: Any) -> bool:
        self._decided("<=", other)
        return int.__le__(self, other)

    def __gt__(self, other: Any) -> bool:
        self._decided(">", other)
        return int.__gt__(self, other)

    def __ge__(self, other: Any) -> bool:
        self._decided(">=", other)
        return int.__ge__(self, other)


for _op in _ARITHMETIC:
    setattr(ChannelInt, _op, _derives(_op))


class ParamInt(int):
    """A size read from a parameter's or buffer's own shape (``self.weights.shape[-1]``): after
    pruning it is read from the sliced tensor, so a view of that tensor's axis to it follows the
    cut (the reshape rule needs no attribute to rewrite). Arithmetic gives plain ints."""

    dim: ParamDim

    def __new__(cls, value: int, dim: ParamDim) -> ParamInt:
        self = super().__new__(cls, value)
        self.dim = dim
        return self

    __hash__ = int.__hash__


class ConfigInt(int):
    """Entry ``index`` of the per-stage width list ``field`` of a model's config, as the forward
    reads it during the trace (SegFormer's ``reshape(B, -1, self.config.hidden_sizes[-1])``): a
    view to it ties the entry to the channels, and ``apply`` rewrites the entry."""

    field: str
    index: int

    def __new__(cls, value: int, field: str, index: int) -> ConfigInt:
        self = super().__new__(cls, value)
        self.field, self.index = field, index
        return self

    __hash__ = int.__hash__


# Config fields that list a width per stage (a Hugging Face config's ``hidden_sizes``).
STAGE_WIDTHS = ("hidden_sizes",)


@contextmanager
def _tagged_configs(model: nn.Module) -> Iterator[None]:
    """While the trace runs, the per-stage width lists of the model's configs hold ConfigInts
    (the old lists are put back afterwards, whatever happens)."""
    configs = {id(c): c for m in model.modules() if hasattr(c := vars(m).get("config"), "to_dict")}
    saved: list[tuple[Any, str, Any]] = []
    try:
        for config in configs.values():
            for field_name in STAGE_WIDTHS:
                value = getattr(config, field_name, None)
                if type(value) in (list, tuple) and value and all(type(v) is int for v in value):
                    saved.append((config, field_name, value))
                    setattr(config, field_name, type(value)(ConfigInt(v, field_name, i) for i, v in enumerate(value)))
        yield
    finally:
        for config, field_name, value in reversed(saved):
            setattr(config, field_name, value)


@contextmanager
def _tagged_layer_widths(model: nn.Module, params: dict[int, str]) -> Iterator[None]:
    """While the trace runs, the width attributes of the layers registered with
    :func:`~prunekit.graph.registry.register_width_attributes` are ParamInts of their weight's axis,
    so a view sized by one (Ergo's ``reshape(-1, self.linear.in_features)``) is told apart from a
    literal of the same value (the plain ints are put back afterwards, whatever happens)."""
    saved: list[tuple[nn.Module, str, int]] = []
    try:
        for module in model.modules():
            held = vars(module).get("_parameters")  # NOTE: a TorchScript module's is no dict (no .get)
            weight = held["weight"] if held is not None and "weight" in held else None
            if weight is None or id(weight) not in params:
                continue
            widths = [(attr, axis) for klass, axes in WIDTH_ATTRIBUTES.items() if isinstance(module, klass)
                      for attr, axis in axes.items()]
            for attr, axis in widths:
                value = vars(module).get(attr)
                if type(value) is int and weight.dim() > axis and weight.shape[axis] == value:
                    saved.append((module, attr, value))
                    setattr(module, attr, ParamInt(value, ParamDim(params[id(weight)], axis, 0, value)))
        yield
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


def _tagged(value: int, d: Dim, ctx: Context) -> int:
    if isinstance(d, Tracked):
        return ChannelInt(value, d, ctx)
    return ParamInt(value, d) if isinstance(d, ParamDim) else value


def _tag_sizes(ctx: Context, func: Any, args: tuple[Any, ...], out: Any) -> Any:
    """``x.shape`` / ``x.size()`` / ``x.size(d)`` with the sizes of tracked dims as ChannelInts
    (and those of a parameter's own axes as ParamInts)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not (isinstance(out, int) or isinstance(out, torch.Size)):
        return out
    dims = ctx.dims(x)
    if isinstance(out, torch.Size):
        if len(out) != len(dims) or not any(isinstance(d, (Tracked, ParamDim)) for d in dims):
            return out
        return torch.Size([_tagged(v, d, ctx) for v, d in zip(out, dims)])
    if func_name(func).rpartition(".")[2] == "size" and len(args) > 1 and isinstance(args[1], int):
        d = dims[args[1]] if -len(dims) <= args[1] < len(dims) else None
        return _tagged(out, d, ctx) if not isinstance(out, bool) else out
    return out


# Tensor methods that hand a value to Python: a branch on it follows the example input only.
_DECISIONS = frozenset({"Tensor.__bool__", "Tensor.item", "Tensor.tolist", "Tensor.__int__",
                        "Tensor.__float__", "Tensor.__index__"})
_WRITES = frozenset({torch.Tensor.__setitem__})


class _Recorder(TorchFunctionMode):
    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        ctx = self.ctx
        ctx.in_rule = True  # NOTE: size comparisons in torch's own code and in rules are not the model's
        try:
            return self._record(func, args, kwargs or {})
        finally:
            ctx.in_rule = False

    def _record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        ctx = self.ctx
        out = fast_result(func, args, kwargs)
        if out is NotImplemented:
            out = func(*args, **kwargs)
        _note_reads(ctx, args, kwargs)
        if ctx.quiet and ctx.quiet[-1]:  # NOTE: inside a module whose rule recorded the whole call
            if ctx.data is not None:
                _taint(ctx, func, args, kwargs, [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)])
            return out
        if func in _WRITES:
            ctx.current = func_name(func)
            _write(ctx, args)
            return out
        outputs, _ = tree_flatten(out)
        tensors_out = [t for t in outputs if isinstance(t, torch.Tensor)]
        if ctx.data is not None:
            _taint(ctx, func, args, kwargs, tensors_out)
        if not tensors_out:
            return _tag_sizes(ctx, func, args, out)  # .size(), .dim(), shape reads
        ctx.current = func_name(func)
        _scaled_by_width(ctx, args, kwargs)
        handler = RULES.get(func)
        mixes = len(ctx.store._inexact)
        if handler is None:
            ctx.opaque(args, kwargs, out, f"no rule for {ctx.current}")
        else:
            handler(ctx, args, kwargs, out)
        if len(ctx.store._inexact) > mixes:
            ctx.mixing.add(ctx.scope[-1])
        return out


def _note_reads(ctx: Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Note the parameters and buffers given to an op, also in a list (``torch.cat([w1, w2])``): a
    module that never runs may still have its weights used by its caller's code (``nn.MultiheadAttention``
    passes ``out_proj.weight`` to a function without calling ``out_proj``)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            if id(value) in ctx.params:
                ctx.read.add(id(value))
        elif isinstance(value, (list, tuple)):
            ctx.read.update(id(t) for t in value if isinstance(t, torch.Tensor) and id(t) in ctx.params)


def _scaled_by_width(ctx: Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Data scaled by a float computed from a channel count (``attn * C ** -0.5`` with ``C`` read
    from the shape): the pruned model would scale by its own width, so those channels are kept
    where their cut is otherwise exact (``ConstraintStore.scaled_by_width``; where norm statistics
    over them change values anyway, they are cut: Inkling 2's block attention over its hidden width).
    A module with a refresh keeps its scale (torchvision's Swin attention is replaced by one that does)."""
    if ctx.module is not None and refresh_for(ctx.module) is not None:
        return
    for value in (*args, *kwargs.values()):
        if isinstance(value, DerivedFloat):
            scope = ctx.scope[-1]
            why = (f"a scale computed from the channel count ({float(value):.3g}) in {ctx.current} in "
                   f"{repr(scope) if scope else 'the root module'}: a cut would change it")
            for layout in value.layouts:
                ctx.store.scaled_by_width(layout, why)


def _taint(ctx: Context, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
           outputs: list[torch.Tensor]) -> None:
    """Follow which tensors are activations (computed from a floating-point input, or from any
    input through a parameter) and report Python decisions taken on their values. Decisions on
    integer inputs alone (token ids, attention masks) do not involve the channels and are not
    reported."""
    assert ctx.data is not None and ctx.derived is not None
    inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    active = any(id(t) in ctx.data for t in inputs)
    derived = active or any(id(t) in ctx.derived for t in inputs)
    if not derived:
        return
    if outputs:
        active = active or any(id(t) in ctx.params for t in inputs)
        for t in outputs:
            (ctx.data if active else ctx.derived).add(id(t))
            ctx._alive.append(t)  # NOTE: keeps ids unique for the whole trace
        return
    name = "Tensor." + func_name(func).rpartition(".")[2]
    if active and name in _DECISIONS:
        scope = ctx.scope[-1]
        ctx.branches.append(f"{name} in {repr(scope) if scope else 'the root module'}: a Python value "
                            f"read from an activation")


def _write(ctx: Context, args: tuple[Any, ...]) -> None:
    """``x[index] = value``: a write at constant channel positions does not follow pruning (it
    would hit other channels), so those channels are frozen; so are the channels of a value written
    at such positions. Along a dim indexed whole (``:``), the value's dim (right-aligned to the
    indexed view, broadcast where it has size 1) holds the same positions as ``x``'s: the two are
    unified (MViT-v2's ``attn[:, :, 1:, 1:] = attn[...] + rel`` keeps its heads)."""
    x, index, value = args[0], args[1], args[2] if len(args) > 2 else None
    if not isinstance(x, torch.Tensor):
        return
    dims = ctx.dims(x)
    index = index if isinstance(index, tuple) else (index,)
    why = f"in-place write at constant channel positions ({ctx.where})"
    values = ctx.dims(value) if isinstance(value, torch.Tensor) else []
    frozen: list[Tracked] = []
    view: list[tuple[int | None, bool]] = []  # per dim of x[index]: the dim of x (None: new) and if whole
    rows = index[0] if len(index) == 1 and isinstance(index[0], torch.Tensor) else None
    if rows is not None and (rows.dtype == torch.bool or not rows.is_floating_point()) and rows.dim() >= 1:
        # NOTE: x[rows] = value with one index tensor (torchvision's MultiScaleRoIAlign writes each
        # level's RoIs by row): the dims it indexes are written piecewise, the others whole
        covered = rows.dim() if rows.dtype == torch.bool else 1
        frozen = [d for d in dims[:covered] + ctx.dims(rows) if isinstance(d, Tracked)]
        view = [(None, False)] * (1 if rows.dtype == torch.bool else rows.dim())
        view += [(k, True) for k in range(covered, x.dim())]
    elif any(isinstance(i, (torch.Tensor, list, bool)) for i in index):
        frozen = [d for d in dims + values if isinstance(d, Tracked)]  # advanced indexing: any dim, piecewise
        values = []
    else:
        d = 0
        n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
        for i in index:
            if i is Ellipsis:
                view += [(k, True) for k in range(d, d + x.dim() - n_real)]
                d += x.dim() - n_real
            elif i is None:
                view.append((None, True))
            else:
                whole = isinstance(i, slice) and i.start in (None, 0) and i.stop is None and i.step in (None, 1)
                if not whole and d < len(dims) and isinstance(dims[d], Tracked):
                    frozen.append(dims[d])  # type: ignore[arg-type]
                if not isinstance(i, int):
                    view.append((d, whole))
                d += 1
        view += [(k, True) for k in range(d, x.dim())]
    for k in range(1, len(values) + 1):
        vd = values[-k]
        target, whole = view[-k] if k <= len(view) else (None, False)
        if value.shape[-k] == 1 and (target is None or x.shape[target] != 1):  # type: ignore[union-attr]
            continue  # NOTE: broadcast: one value for every position
        if target is not None and whole:
            ctx.store.unify(dims[target], vd, ctx.where)
        elif isinstance(vd, Tracked):
            frozen.append(vd)
    if frozen:
        ctx.unknown.append(f"{ctx.where}: {why}")
        for layout in frozen:
            ctx.store.freeze(layout, why)


@contextmanager
def _scopes(model: nn.Module, ctx: Context) -> Iterator[None]:
    """Keep ``ctx.scope`` naming the module whose forward is running (for messages), and
    ``ctx.modules`` holding it (for rules that depend on the module, such as Swin's head count).

    Two global module hooks instead of two per module (registering those cost more than the
    meta forward itself); calls from other threads are ignored, and a module that is not part of
    ``model`` (built inside a forward) keeps its caller's scope.
    """
    names = {id(module): name for name, module in model.named_modules(remove_duplicate=False)}
    thread = threading.get_ident()

    def enter(module: nn.Module, args: Any) -> None:  # None: inputs unchanged
        if threading.get_ident() == thread:
            ctx.called.add(id(module))
            ctx.scope.append(names.get(id(module), ctx.scope[-1]))
            ctx.modules.append(module)
            ctx.quiet.append(_quiet(ctx, module, args))

    def leave(module: nn.Module, args: Any, output: Any) -> None:  # None: output unchanged
        if threading.get_ident() == thread and len(ctx.scope) > 1:
            ctx.settle_ties(module)
            ctx.scope.pop()
            ctx.modules.pop()
            ctx.quiet.pop()

    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _quiet(ctx: Context, module: nn.Module, args: Any) -> bool:
    """Whether the ops of ``module``'s forward run uninterpreted: a module rule (registry) recorded
    the call, up to the children it named, which are traced again from the input layouts it gave."""
    layouts = ctx.resume.pop(id(module), None)
    if layouts is not None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == len(layouts):
            ctx.set(args[0], layouts)
        return False
    if ctx.quiet and ctx.quiet[-1]:
        return True
    rule = module_rule_for(module)
    if rule is None:
        return False
    ctx.resume.update(rule(ctx, module, args))
    return True


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data copied).

    :func:`~prunekit._clone.clone_module` with a memo that maps every tensor to an empty meta
    tensor of the same shape:
    the module tree and names are the same, nothing of the user's model is touched, and a forward
    pass costs only shape arithmetic.
    """
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return clone_module(model, memo)


def _to_meta(obj: Any) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, obj)


def interpret(model: nn.Module, example_inputs: tuple[Any, ...], example_kwargs: dict[str, Any],
              store_factory: Any, *, meta: bool = True) -> tuple[Context, Any, ConstraintStore]:
    """Run ``model`` once under the recorder; returns the context, the output and the constraints.

    With ``meta`` (default) the run happens on the meta device: shapes only, no arithmetic, which
    makes tracing nearly free. Models whose Python code needs real values (``.item()``, data-
    dependent branches) fail there and are traced again on the real inputs.
    """
    if meta:
        try:
            shadow = _meta_copy(model)
            return _run(shadow, _to_meta(example_inputs), _to_meta(example_kwargs), store_factory)
        except Exception:  # noqa: BLE001  (any failure on meta: retry for real, which reports it)
            pass
    return _run(model, example_inputs, example_kwargs, store_factory, track_data=True)


def _run(model: nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any],
         store_factory: Any, track_data: bool = False) -> tuple[Context, Any, ConstraintStore]:
    params = {id(t): name for name, t in model.named_parameters(remove_duplicate=True)}
    params.update({id(t): name for name, t in model.named_buffers(remove_duplicate=True)})
    store = store_factory()
    ctx = Context(store, params)
    store.select = lambda layout: any(choose(ctx, layout) for choose in FIXED_SELECTS)
    if track_data:
        given = [t for t in tree_flatten((inputs, kwargs))[0] if isinstance(t, torch.Tensor)]
        ctx.data = {id(t) for t in given if t.is_floating_point()}
        ctx.derived = {id(t) for t in given}
    with torch.no_grad(), _tagged_configs(model), _tagged_layer_widths(model, params), _scopes(model, ctx), \
            _Recorder(ctx):
        out = model(*inputs, **kwargs)
    ctx.untraced = _untraced(model, ctx)
    return ctx, out, store


def _untraced(model: nn.Module, ctx: Context) -> tuple[str, ...]:
    """The modules holding weights (parameters, or buffers with a channel dim) that never ran during
    the trace and whose weights no op was given (not even by their caller's own code), each named by
    its highest ancestor of which nothing ran (``aux``, not ``aux.0``, ``aux.1``). A route chosen by
    an argument or a head run only in training: the trace could not see which channels they read."""
    modules = dict(model.named_modules())
    ran = {name for name, m in modules.items() if id(m) in ctx.called
           or any(id(t) in ctx.read for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)}
    # NOTE: the ancestors of a module that ran (a container whose children ran in part)
    partly = {".".join(name.split(".")[:k]) for name in ran for k in range(name.count(".") + 1)}
    found = []
    for name, m in modules.items():
        holds = any(p is not None for p in m._parameters.values()) or any(
            b is not None and b.dim() > 0 for b in m._buffers.values())
        if not name or name in ran or not holds:
            continue
        top = name
        while "." in top and (parent := top.rpartition(".")[0]) not in ran and parent not in partly:
            top = parent
        found.append(top)
    return tuple(dict.fromkeys(found))


def _bare(module: nn.Module) -> bool:
    """A module with nothing of its own: it can hold no width, so a size its forward reads is its caller's."""
    if module._parameters or module._buffers or module._modules:
        return False
    return all(k.startswith("_") or k == "training" for k in vars(module))
