"""timm attention classes whose forward reads its stored head count: their refreshes, so heads are cut.

timm's ``Attention`` reshapes its fused projection with ``self.num_heads`` and ``self.head_dim``
and its output with ``self.attn_dim``; the trace splits channels into heads only where a refresh
keeps that head count right after pruning (``shape.HEAD_COUNT_FOLLOWS``). ``head_dim`` (and so the
per-head ``scale``) never changes: whole heads are removed. Classes whose forward reshapes the
attention output to the block's input width (``x.reshape(B, N, C)`` with ``C`` read from the input
shape) are left out on purpose: their heads are tied to the embedding width, so the trace keeps them
whole and names the reason. Registered by ``attention_modules.register_libraries`` once timm is
imported: prunekit never imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from prunekit.graph.groups import ChannelGroup, Member, tensor_of
from prunekit.graph.handlers.cascaded_attention import refresh_cascaded_attention, trace_cascaded_attention
from prunekit.graph.handlers.norm import refresh_layer_norm
from prunekit.graph.handlers.shape import size_attribute
from prunekit.graph.registry import refresh_for, register_group_tie

__all__ = ["TIMM", "KEEP_HEADS", "TIED", "SECTIONS", "GROUPS", "WHOLE", "is_attention", "model_widths", "scale_widths"]


def _out(layer: Any) -> int:
    """Output channels of a Linear or Conv (rows of its weight)."""
    return int(layer.weight.shape[0])


def _refresh_attention(module: Any) -> None:
    """``num_heads`` (and ``num_kv_heads``, ``attn_dim``, ``kv_dim`` where stored) from the sliced
    projections; ``head_dim`` and ``scale`` are per head and stay."""
    qkv = getattr(module, "qkv", None)
    if qkv is not None:
        heads = _out(qkv) // 3 // module.head_dim
        kv_heads = heads
    else:
        heads = _out(module.q_proj) // module.head_dim
        kv_heads = _out(module.k_proj) // module.head_dim
    module.num_heads = heads
    if hasattr(module, "num_kv_heads"):
        module.num_kv_heads = kv_heads
    if hasattr(module, "attn_dim"):
        module.attn_dim = heads * module.head_dim
    if hasattr(module, "kv_dim"):
        module.kv_dim = kv_heads * module.head_dim


def _head_dim(module: Any) -> int | None:
    """The stored head size, else the one its per-head scale says (``scale = head_dim ** -0.5``)."""
    if type(vars(module).get("head_dim")) is int:
        return int(module.head_dim)
    scale = vars(module).get("scale")
    return round(scale ** -2) if type(scale) is float and scale > 0 else None


# Query projections and how many equal parts (q, k, v) their rows hold.
_PROJECTIONS = (("qkv", 3), ("qk", 2), ("q", 1), ("wq", 1), ("q_proj", 1))
# Parameters with one entry per head along axis 0 (XCiT's temperature, Swin-V2's logit scale, ConViT's gate).
_PER_HEAD = ("temperature", "logit_scale", "gating_param")


def _weighted(layer: Any) -> Any:
    """``layer``, or the Linear it wraps (Gemma4's ClippableLinear keeps it in ``.linear``)."""
    if layer is not None and not isinstance(getattr(layer, "weight", None), nn.Parameter):
        layer = layer._modules.get("linear")
    return layer if layer is not None and isinstance(getattr(layer, "weight", None), nn.Parameter) else None


def _rows_per_part(module: Any) -> int | None:
    """Rows of one of q / k / v in the query projection (the inner width), if it has one."""
    for name, parts in _PROJECTIONS:
        layer = _weighted(module._modules.get(name))
        if layer is not None:
            if name == "qkv" and vars(module).get("use_global") is True:
                parts = 2  # NOTE: GCViT's global attention projects k|v only (q comes from the global query)
            return _out(layer) // parts
    return None


def _per_head(module: Any) -> nn.Parameter | None:
    return next((module._parameters[n] for n in _PER_HEAD if module._parameters.get(n) is not None), None)


def _refresh_tied_attention(module: Any) -> None:
    """Attention whose forward reads its widths from the input (``B, N, C = x.shape``, then
    ``reshape(B, N, 3, self.num_heads, C // self.num_heads)`` and ``reshape(B, N, C)``): the trace
    ties its heads to the input width, so ``C`` stays ``num_heads * head_dim``; only the stored
    head count (and inner widths where stored) must follow: from the projection's rows and the
    head size, else from a per-head parameter."""
    head_dim, rows, per_head = _head_dim(module), _rows_per_part(module), _per_head(module)
    if rows is None or (head_dim is None and per_head is None):
        return
    heads = rows // head_dim if head_dim is not None else int(per_head.shape[0])  # type: ignore[union-attr]
    old = next((vars(module)[n] for n in ("num_heads", "heads") if type(vars(module).get(n)) is int), heads)
    for name in ("num_heads", "heads"):  # NOTE: Hiera calls it heads
        if type(vars(module).get(name)) is int:
            setattr(module, name, heads)
    for name in ("attn_dim", "all_head_dim", "dim", "dim_out", "out_dim"):  # per-head widths times the count
        value = vars(module).get(name)
        if type(value) is int and old and value % old == 0:
            setattr(module, name, value // old * heads)  # NOTE: TinyViT's out_dim = val_dim * num_heads
    key = _weighted(module._modules.get("k_proj"))
    if key is not None and head_dim is not None and type(vars(module).get("num_kv_heads")) is int:
        module.num_kv_heads = _out(key) // head_dim  # NOTE: grouped-query attention (Gemma4's encoder)
        if type(vars(module).get("num_kv_groups")) is int:
            module.num_kv_groups = heads // max(module.num_kv_heads, 1)


def is_attention(module: nn.Module) -> bool:
    """A timm attention class not listed in ``TIMM`` that ``_refresh_tied_attention`` can keep
    right: its forward reads a stored head count (``num_heads`` or ``heads``), it projects with a
    fused ``qkv`` / ``qk`` or a ``q`` layer, and its head size is stored (``head_dim``, or ``scale =
    head_dim ** -0.5``) or it holds a per-head parameter. Whole heads are cut with the input width,
    as for the listed classes; apply's verification checks the result by value like any other cut."""
    if not type(module).__module__.startswith("timm."):
        return False
    count = next((vars(module)[n] for n in ("num_heads", "heads") if type(vars(module).get(n)) is int), None)
    rows = _rows_per_part(module)
    if count is None or rows is None or rows % count:
        return False
    head_dim, per_head = _head_dim(module), _per_head(module)
    if head_dim is not None:  # NOTE: EfficientFormer's scale is its key size, not rows / heads: not ours
        return rows == count * head_dim
    return per_head is not None and per_head.shape[0] == count


def _refresh_rel_pos(module: Any) -> None:
    """timm's relative position biases hold one column per head (a table, or the rows of an MLP's
    last layer) and record the count in ``num_heads`` and ``bias_shape``; read it back."""
    table = getattr(module, "relative_position_bias_table", None)
    if table is not None:
        heads = int(table.shape[0] if type(module).__name__ == "RelPosBiasTf" else table.shape[1])
    else:
        heads = _out(module.mlp.fc2)
    if type(vars(module).get("num_heads")) is int:
        module.num_heads = heads
    shape = vars(module).get("bias_shape")
    if isinstance(shape, tuple) and shape:
        at = 0 if type(module).__name__ == "RelPosBiasTf" else len(shape) - 1
        module.bias_shape = shape[:at] + (heads,) + shape[at + 1:]


# Stored widths that are a per-head size times the head count (LeViT's key_attn_dim / val_attn_dim,
# EfficientFormer-V2's dh, LowFormer's o_proj_inpdim, HaloAttn's dim_out_qk / dim_out_v): the
# refresh scales them by the new count.
_HEAD_WIDTHS = ("key_attn_dim", "val_attn_dim", "dh", "o_proj_inpdim", "dim_out_qk", "dim_out_v")


def _refresh_head_widths(heads_of: Callable[[Any], int]) -> Callable[[Any], None]:
    """A refresh for attention whose forward views its projections with the stored head count and
    key / value sizes that differ (``split([key_dim, key_dim, val_dim])``, talking heads, one key and
    value head for all queries): ``num_heads`` from ``heads_of(module)``, the widths in
    ``_HEAD_WIDTHS`` scaled with it; key and value sizes stay. The attention-bias cache (timm keeps
    ``attention_biases[:, idxs]`` per device in eval mode) is emptied: it holds the old heads."""

    def refresh(module: Any) -> None:
        heads, old = heads_of(module), module.num_heads
        for name in _HEAD_WIDTHS:
            value = vars(module).get(name)
            if type(value) is int and old and value % old == 0:
                setattr(module, name, value // old * heads)
        module.num_heads = heads
        if isinstance(vars(module).get("attention_bias_cache"), dict):
            module.attention_bias_cache = {}

    return refresh


# One row of attention biases per head (LeViT, EfficientFormer, EfficientFormer-V2).
_refresh_biased_attention = _refresh_head_widths(lambda m: int(m.attention_biases.shape[0]))
# LowFormer, CPUBone: one projection of q|k|v interleaved per head (num_keys * head_dim rows each).
_refresh_conv_attention = _refresh_head_widths(lambda m: _out(m.pwise) // (m.num_keys * m.head_dim))
# MobileNetV5's multi-query attention: key_dim query rows per head, one key and value head for all.
_refresh_multi_query = _refresh_head_widths(lambda m: _out(_weighted(m.query.proj)) // m.key_dim)
# HaloAttn (ByoaNet): q rows per head dim_head_qk, v rows dim_head_v; heads folded into the batch.
_refresh_halo = _refresh_head_widths(lambda m: _out(m.q) // m.dim_head_qk)

def _refresh_conv_rel_pos(module: Any) -> None:
    """CoaT's convolutional relative position encoding splits v's heads into runs with one
    depthwise conv each (``split(v, self.channel_splits)``): the runs' sizes are read back from the
    convs; a run whose heads were all cut loses its conv (a conv of no channels cannot run)."""
    head_chs = module.channel_splits[0] // module.head_splits[0]
    kept = [(conv, window) for conv, window in zip(module.conv_list, module.window) if conv.weight.shape[0]]
    module.conv_list = nn.ModuleList(conv for conv, _ in kept)
    module.channel_splits = [int(conv.weight.shape[0]) for conv, _ in kept]
    module.head_splits = [c // head_chs for c in module.channel_splits]
    module.window = {window: heads for (_, window), heads in zip(kept, module.head_splits)}


def _refresh_lite_mla(module: Any) -> None:
    """EfficientViT's LiteMLA keeps q, k and v of each head apart in its multi-scale aggregation
    (a 1x1 conv with ``groups = 3 * heads``; the trace cuts it by whole groups, see
    ``conv.GROUPS_FOLLOW``): its groups follow the head count, read from the qkv rows. The head
    count itself is not stored (the forward views with ``-1`` heads of ``self.dim``)."""
    heads = _out(module.qkv.conv) // (3 * module.dim)
    for scale in module.aggreg:
        conv = scale[1]
        conv.groups = 3 * heads
        conv.in_channels, conv.out_channels = int(conv.weight.shape[1]) * conv.groups, _out(conv)


def _branch_conv(module: nn.Module, paths: tuple[str, ...]) -> Any:
    """The first conv found at one of ``paths`` under ``module`` (a branch that is absent, None or
    already fused away is skipped), else None."""
    for path in paths:
        found: Any = module
        for name in path.split("."):
            found = found._modules.get(name) if isinstance(found, nn.Module) else None
        if isinstance(found, nn.modules.conv._ConvNd):
            return found
    return None


def _refresh_reparam(paths: tuple[str, ...], **sizes: str) -> Callable[[Any], None]:
    """A refresh for a re-parameterisable block (RepVGG, MobileOne, FastViT's): ``reparameterize()``
    builds its fused conv (and the identity kernel of its skip branch) from the sizes it stores, so
    each attribute of ``sizes`` is read back from the attribute it names of the block's branch conv
    (the first of ``paths``). A block with no conv branch but an identity norm (FastViT's RepMixer
    norm) takes that norm's width; its groups follow only where the block was depthwise."""

    def refresh(module: Any) -> None:
        conv = _branch_conv(module, paths)
        values: dict[str, int] = {}
        if conv is not None:
            values = {"in_channels": conv.in_channels, "out_channels": conv.out_channels, "groups": conv.groups}
        elif isinstance(getattr(module, "identity", None), nn.modules.batchnorm._NormBase):
            width, old_in = int(module.identity.running_mean.shape[0]), vars(module).get("in_chs")
            depthwise = type(old_in) is int and vars(module).get("groups") == old_in
            values = {"in_channels": width, "out_channels": width, "groups": width if depthwise else module.groups}
        for attr, source in sizes.items():
            if source in values and type(vars(module).get(attr)) is int:
                setattr(module, attr, int(values[source]))
        if values:
            vars(module).pop("id_tensor", None)  # NOTE: a cached identity kernel of the old sizes

    return refresh


_IN, _OUT, _GROUPS = "in_channels", "out_channels", "groups"
_MOBILE_ONE = ("reparam_conv", "conv_kxk.0.conv", "conv_scale.conv")
# timm's re-parameterisable blocks: their branch convs, and the sizes they store for the fused conv.
_REPARAM: dict[str, list[tuple[str, _Refresh | None, None]]] = {
    "timm.models.fastvit": [
        ("MobileOneBlock", _refresh_reparam(_MOBILE_ONE, in_chs=_IN, out_chs=_OUT, groups=_GROUPS), None),
        ("ReparamLargeKernelConv", _refresh_reparam(("reparam_conv", "large_conv.conv", "small_conv.conv"),
                                                    in_chs=_IN, out_chs=_OUT, groups=_GROUPS), None),
        ("RepMixer", _refresh_reparam(("reparam_conv", *(f"mixer.{p}" for p in _MOBILE_ONE)), dim=_IN), None),
        ("RepConditionalPosEnc", _refresh_reparam(("reparam_conv", "pos_enc"), dim=_IN, dim_out=_OUT,
                                                  groups=_GROUPS), None),
    ],
    "timm.models.byobnet": [
        ("MobileOneBlock", _refresh_reparam(_MOBILE_ONE, groups=_GROUPS), None),
        ("RepVggBlock", _refresh_reparam(("reparam_conv", "conv_kxk.conv", "conv_1x1.conv"), groups=_GROUPS), None),
    ],
    "timm.models.lcnetv2": [
        ("RepDepthwiseSeparable", _refresh_reparam(("dw_conv_list.0.conv", "dw_conv.conv", "dw_conv"), in_chs=_IN),
         None),
    ],
}


_Refresh = Callable[[nn.Module], "nn.Module | None"]
# module name -> (class name, refresh, config widths) registered once that module is imported
TIMM: dict[str, list[tuple[str, _Refresh | None, Callable[..., dict[str, int]] | None]]] = {
    # ViT, DeiT, DeiT-III, the ViT variants (vit_*, vit_*_reg, ...), EVA's fused-attention ViTs
    "timm.layers.attention": [("Attention", _refresh_attention, None), ("AttentionRope", _refresh_attention, None)],
    "timm.models.visformer": [("Attention", _refresh_attention, None)],
    "timm.models.efficientformer": [("Attention", _refresh_biased_attention, None)],
    "timm.models.efficientformer_v2": [(name, _refresh_biased_attention, None)
                                       for name in ("Attention2d", "Attention2dDownsample")],
    "timm.models.levit": [(name, _refresh_biased_attention, None) for name in ("Attention", "AttentionDownsample")],
    "timm.models.lowformer": [("ConvAttention", _refresh_conv_attention, None)],
    "timm.models.cpubone": [("ConvAttention", _refresh_conv_attention, None)],  # LowFormer's, with options
    "timm.models.coat": [("ConvRelPosEnc", _refresh_conv_rel_pos, None)],
    "timm.models.efficientvit_mit": [("LiteMLA", _refresh_lite_mla, None)],
    "timm.models.efficientvit_msra": [("CascadedGroupAttention", refresh_cascaded_attention, None)],
    "timm.layers.attention2d": [("MultiQueryAttention2d", _refresh_multi_query, None)],
    "timm.layers.halo_attn": [("HaloAttn", _refresh_halo, None)],
    "timm.layers.pos_embed_rel": [(name, _refresh_rel_pos, None)
                                  for name in ("RelPosBias", "RelPosMlp", "RelPosBiasTf")],
    # NOTE: norms that are no nn.LayerNorm but hold its normalized_shape and weight (Gemma 4's and
    # DeepSeek's ViTs): the forward passes normalized_shape to F.rms_norm
    "timm.layers.norm": [(f"{kind}{suffix}", refresh_layer_norm, None) for kind in ("RmsNorm", "SimpleNorm")
                         for suffix in ("", "Fp32", "2d", "2dFp32")],
    **{f"timm.models.{module}": [(name, _refresh_tied_attention, None) for name in names] for module, names in {
        "beit": ("Attention",), "eva": ("EvaAttention",), "convit": ("MHSA",), "pvt_v2": ("Attention",),
        "twins": ("LocallyGroupedAttn", "GlobalSubSampleAttn"), "nest": ("Attention",),
        "vision_transformer_sam": ("Attention",), "davit": ("WindowAttention",),
        "swin_transformer": ("WindowAttention",), "gcvit": ("WindowAttentionGlobal",),
        "metaformer": ("Attention",), "nextvit": ("EfficientAttention",), "fastvit": ("Attention",),
        "hiera": ("MaskUnitAttention",),
    }.items()},
}
for _module, _classes in _REPARAM.items():
    TIMM.setdefault(_module, []).extend(_classes)
# Of those, the ones that read widths from the input: the trace keeps their size ties.
TIED: tuple[_Refresh, ...] = (_refresh_tied_attention,)
# Refreshes that keep the sizes their forward splits channels at (shape.SPLIT_SECTIONS_FOLLOW).
SECTIONS: tuple[_Refresh, ...] = (_refresh_conv_rel_pos,)
# Refreshes that set the groups of the grouped convs inside their module (conv.GROUPS_FOLLOW).
GROUPS: tuple[_Refresh, ...] = (_refresh_lite_mla,)
# Refreshes of modules whose whole call a module rule records (registry.MODULE_RULES), with the rule.
WHOLE: dict[_Refresh, Callable[..., dict[int, list[Any]]]] = {refresh_cascaded_attention: trace_cascaded_attention}
# Refreshes that keep the head count their forward reads as a constant.
KEEP_HEADS: tuple[_Refresh, ...] = (_refresh_attention, _refresh_tied_attention, _refresh_biased_attention,
                                    _refresh_conv_attention, _refresh_multi_query, _refresh_halo)



# Widths timm models and heads store for ``reset_classifier`` / ``head.reset`` (never read by the
# forward, so the trace does not see them), each the input width of the first or the last layer of the
# module that reads one: ``in_features`` the head's first, the others its last (the classifier, or
# MobileNetV3's ``conv_head`` for ``num_features``).
_READ_FIRST = ("in_features",)
_READ_LAST = ("num_features", "head_hidden_size", "hidden_size")


@register_group_tie
def model_widths(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """``groups`` with the widths timm models and heads store (``num_features``, ``head_hidden_size``,
    ``embed_dim`` where it equals ``num_features``, a head's ``in_features`` and ``hidden_size``)
    joined, as size attributes, to the channels of the layer of that module that reads them, so
    ``apply`` rewrites them and ``reset_classifier`` builds a classifier of the pruned width. A width
    no layer reads (the model's output once the classifier is ``nn.Identity``: never cut) is left."""
    found = [(name, module) for name, module in model.named_modules() if _stores_widths(module)]
    if not found and not isinstance(vars(model).get("embed_dim"), (tuple, list)):
        return groups
    readers = _readers(model, groups)
    joined = {m.tensor for g in groups for m in g.attrs}
    extra: dict[str, list[Member]] = {}
    entries = _entry_widths(model, readers)
    # NOTE: the model's features concatenate its branches (CrossViT: num_features = sum(embed_dim))
    summed = [size_attribute("", a, None) for a in _READ_LAST if len(entries) > 1
              and vars(model).get(a) == sum(w for _, w in entries) and size_attribute("", a, None) not in joined]
    for index, (entry, width) in enumerate(entries):
        matching = [counts for layer, counts, channels in readers if _within(layer, entry) and channels == width]
        for group_id, count in matching[-1] if matching else ():  # NOTE: the entry's residual stream, read last
            for attr_name in (size_attribute("", "embed_dim", index), *summed):
                extra.setdefault(group_id, []).append(Member(attr_name, 0, 0, count, "passive"))
    joined.update(summed)
    for name, module in found:
        values = {a: v for a in (*_READ_FIRST, *_READ_LAST, "embed_dim") if type(v := vars(module).get(a)) is int}
        if values.get("embed_dim") != values.get("num_features"):
            values.pop("embed_dim", None)  # NOTE: a stage width (Swin's first), not the model's
        if _without_classifier(module) and values.get("num_features") == values.get("head_hidden_size"):
            continue  # NOTE: the pooled features are the model's output, which keeps its width
        inside = [r for r in readers if r[0] == name or r[0].startswith(f"{name}.") or not name]
        for attr, value in values.items():
            attr_name = size_attribute(name, attr, None)
            matching = [counts for _, counts, channels in inside if channels == value]
            if attr_name in joined or not matching:
                continue
            for group_id, count in matching[0] if attr in _READ_FIRST else matching[-1]:
                extra.setdefault(group_id, []).append(Member(attr_name, 0, 0, count, "passive"))
    return tuple(dataclasses.replace(g, attrs=g.attrs + tuple(extra[g.id])) if g.id in extra else g
                 for g in groups)


def _entry_widths(model: nn.Module, readers: list[tuple[str, tuple[tuple[str, int], ...], int]]
                  ) -> list[tuple[str, int]]:
    """A timm model's ``embed_dim`` when it holds one width per stage or branch: the module that
    reads each entry and its width (empty where none is found). Per stage (LeViT, RepViT) as its
    ``feature_info`` names them; else the entries of the last list the model holds whose entry ``i``
    reads ``embed_dim[i]`` channels (CrossViT's ``head[i]`` / ``norm[i]``: one per branch, which
    ``reset_classifier`` builds from ``embed_dim[i]``)."""
    widths = vars(model).get("embed_dim")
    if not isinstance(widths, (tuple, list)) or not widths or any(type(w) is not int for w in widths):
        return []
    stages = _stage_widths(model, list(widths))
    if stages:
        return stages
    for name, child in reversed(list(model.named_children())):
        if isinstance(child, (nn.ModuleList, nn.Sequential)) and len(child) == len(widths):
            entries = [(f"{name}.{i}", width) for i, width in enumerate(widths)]
            if all(any(_within(layer, entry) and channels == width for layer, _, channels in readers)
                   for entry, width in entries):
                return entries
    return []


def _within(layer: str, module: str) -> bool:
    """Whether ``layer`` is ``module`` or one of its submodules."""
    return layer == module or layer.startswith(f"{module}.")


def _stage_widths(model: nn.Module, widths: list[int]) -> list[tuple[str, int]]:
    """The module of each stage and its width, as the model's ``feature_info`` names them, where it
    has one entry per width of ``widths`` (empty where they disagree). Each is the width the stage's
    last layer reading one of that width reads (its residual stream)."""
    info = vars(model).get("feature_info")
    if not isinstance(info, list) or len(info) != len(widths):
        return []
    stages = [(e.get("module"), e.get("num_chs")) if isinstance(e, dict) else (None, None) for e in info]
    if any(not isinstance(name, str) or not name or width != value for (name, width), value in zip(stages, widths)):
        return []
    return stages  # type: ignore[return-value]


def _stores_widths(module: nn.Module) -> bool:
    """A timm module (no layer: those have refreshes) holding one of the widths ``model_widths`` keeps."""
    return (type(module).__module__.startswith("timm.") and refresh_for(module) is None
            and not isinstance(module._parameters.get("weight"), nn.Parameter)
            and any(type(vars(module).get(a)) is int for a in (*_READ_FIRST, *_READ_LAST)))


def _without_classifier(module: nn.Module) -> bool:
    """Whether ``module`` is a model whose classifier has no weights (``num_classes=0``: nn.Identity)."""
    try:
        found = module.get_classifier() if callable(getattr(module, "get_classifier", None)) else None
    except Exception:
        return False
    return isinstance(found, nn.Module) and next(found.parameters(), None) is None


def _readers(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> list[tuple[str, tuple[tuple[str, int], ...], int]]:
    """The axes layers read channels on, in the model's module order: ``(layer name, ((group id,
    indices per channel of that group on the axis), ...), channels)``. Only axes read whole; a group
    may own several indices per channel (heads, a depthwise conv's multiplier: ``inner``), so a width
    equal to the axis follows its cut by that many per channel removed."""
    per_axis: dict[tuple[str, int], dict[str, list[Member]]] = {}
    sizes = {g.id: g.size for g in groups}
    for g in groups:
        for m in g.members:
            if m.role == "consumer":
                per_axis.setdefault((m.tensor, m.axis), {}).setdefault(g.id, []).append(m)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    readers = []
    for (tensor, axis), by_group in per_axis.items():
        members = [m for ms in by_group.values() for m in ms]
        per_channel = {gid: sum(m.inner for m in ms) for gid, ms in by_group.items()}
        channels = sum(sizes[gid] * n for gid, n in per_channel.items())
        if tensor_of(model, tensor).shape[axis] == channels:
            readers.append((members[0].module, tuple(per_channel.items()), channels))
    return sorted(readers, key=lambda r: order.get(r[0], -1))


@register_group_tie
def scale_widths(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """``groups`` with the width of one scale that timm's multi-scale blocks store next to their
    per-scale convs (EdgeNeXt's ``SplitTransposeBlock.width``; its forward splits by ``chunk``, so the
    trace never reads it) joined, as a size attribute, to the channels of its first conv's output,
    so ``apply`` rewrites it with the convs it describes."""
    extra: dict[str, list[Member]] = {}
    for name, module in model.named_modules():
        if not type(module).__module__.startswith("timm.") or refresh_for(module) is not None:
            continue  # NOTE: before reading _modules: a scripted module's is no dict
        width, convs = vars(module).get("width"), module._modules.get("convs")
        if (type(width) is not int or not isinstance(convs, nn.ModuleList) or not len(convs)
                or not all(isinstance(c, nn.modules.conv._ConvNd) and _out(c) == width for c in convs)):
            continue
        weight = f"{name}.convs.0.weight" if name else "convs.0.weight"
        rows = [(g, m) for g in groups for m in g.members if m.tensor == weight and m.axis == 0]
        attr = size_attribute(name, "width", None)
        if sum(g.size * m.inner for g, m in rows) != width or any(attr == a.tensor for g, _ in rows for a in g.attrs):
            continue
        for g, m in rows:
            extra.setdefault(g.id, []).append(Member(attr, 0, 0, m.inner, "passive"))
    return tuple(dataclasses.replace(g, attrs=g.attrs + tuple(extra[g.id])) if g.id in extra else g
                 for g in groups)
