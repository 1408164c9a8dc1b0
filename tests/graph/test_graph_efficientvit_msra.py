"""EfficientViT-MSRA's cascaded group attention (timm ``CascadedGroupAttention``): a module rule
records the call as a whole, so each head's input chunk (tied to the previous head's values), its
query/key width and the last head's value width are cut (the q|k|v split and the depthwise conv on q
froze them, and with them the residual stream); the pruned module holds per-head widths, equals the
masked dense model, and saves, loads and prunes again without pickle. Whole heads stay."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.graph.handlers.cascaded_attention import PrunedCascadedGroupAttention
from prunekit.importance import score
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask
from prunekit.structured.verify import VerificationError, verify

timm = pytest.importorskip("timm")

KEY = 4  # query/key width per head
ATTN = "stages.1.blocks.0.mixer.m.attn"  # 4 heads of 32 / 4 = 8 channels (value width 8)


def _model() -> nn.Module:
    """Two stages (2 and 4 heads; 8x8 then 4x4 tokens, attended in 4x4 windows), random norms and attention biases (timm zeroes the projection's
    norm, which would make the attention's output zero whatever is cut)."""
    from timm.models.efficientvit_msra import EfficientVitMsra

    torch.manual_seed(0)
    model = EfficientVitMsra(img_size=128, num_classes=10, embed_dim=(16, 32), key_dim=(KEY, KEY), depth=(1, 1),
                             num_heads=(2, 4), window_size=(4, 4), kernels=(3, 3, 3, 3),
                             down_ops=(("", 1), ("subsample", 2))).eval()
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():
                t.uniform_(0.5, 1.5) if name.endswith("running_var") else t.normal_(0.0, 0.5)
    return model


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


def _masked_dense(model: nn.Module, graph: DependencyGraph, plan) -> nn.Module:  # type: ignore[no-untyped-def]
    """``mask``'s dense model (consumer weights of cut channels zero) with every cut channel's norm
    outputs zero too (scale and shift zeroed): the queries, keys and last values, which no weight
    consumes, are zero there. Independent of verification's hooks."""
    dense = mask(model, graph, plan)
    state = dict(dense.named_parameters())
    with torch.no_grad():
        for group_id in plan.sizes:
            removed = torch.tensor(plan.removed(group_id), dtype=torch.long)
            for m in graph.group(group_id).members if len(removed) else ():
                if m.tensor.endswith((".bn.weight", ".bn.bias")):
                    state[m.tensor].index_fill_(m.axis, m.indices(removed), 0.0)
    return dense


def _pruned() -> tuple[nn.Module, nn.Module, DependencyGraph, object, torch.Tensor]:
    model, x = _model(), _input()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    return model, apply(model, graph, plan, example_inputs=x), graph, plan, x


def test_query_key_width_of_every_head_and_the_last_value_width_are_groups() -> None:
    model, x = _model(), _input()
    graph = DependencyGraph.trace(model, x)
    groups = {g.id: g for g in graph.groups}
    for head in range(4):
        qk = next(g for g in graph.groups if (f"{ATTN}.dws.{head}.conv.weight", 0) in {(m.tensor, m.axis)
                                                                                     for m in g.members})
        assert qk.prunable and qk.zero_exact and qk.size == KEY, qk.reasons
        rows = sorted(m.start for m in qk.members if m.tensor == f"{ATTN}.qkvs.{head}.conv.weight")
        assert rows == [0, KEY]  # row j of q and row j of k: one channel
    last = groups[f"{ATTN}.qkvs.3.conv.weight:{2 * KEY}"]
    assert last.prunable and last.size == 8
    assert (f"{ATTN}.proj.1.conv.weight", 1, 24) in {(m.tensor, m.axis, m.start) for m in last.members}
    for head in range(1, 4):  # chunk i of the input (the residual stream) is head i-1's values
        chunk = next(g for g in graph.groups if (f"{ATTN}.qkvs.{head}.conv.weight", 1) in {(m.tensor, m.axis)
                                                                                         for m in g.members})
        assert chunk.prunable and chunk.size == 8, chunk.reasons
        members = {(m.tensor, m.axis, m.start) for m in chunk.members}
        assert {(f"{ATTN}.qkvs.{head - 1}.conv.weight", 0, 2 * KEY),
                (f"{ATTN}.proj.1.conv.weight", 1, 8 * (head - 1))} <= members


def test_pruned_cascaded_attention_equals_the_masked_dense_model() -> None:
    model, pruned, graph, plan, x = _pruned()
    attn = pruned.get_submodule(ATTN)
    assert isinstance(attn, PrunedCascadedGroupAttention)
    assert attn.key_dims == [KEY // 2] * 4 and attn.val_dims == [4] * 4 and attn.chunks == [4] * 4
    assert [tuple(qkv.conv.weight.shape[:2]) for qkv in attn.qkvs] == [(8, 4)] * 4
    assert attn.proj[1].conv.weight.shape[1] == 16 and model.get_submodule(ATTN).key_dim == KEY
    with torch.no_grad():
        got, want = pruned(x), _masked_dense(model, graph, plan)(x)
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < 0.35 * sum(p.numel() for p in model.parameters())


def test_a_wrong_cascade_fails_verification() -> None:
    """Negative control: the same pruned model with its heads' key widths swapped is caught."""
    model, pruned, graph, plan, x = _pruned()
    wrong = copy.deepcopy(pruned)
    attn = wrong.get_submodule(ATTN)
    attn.dws[0], attn.dws[1] = attn.dws[1], attn.dws[0]
    with pytest.raises(VerificationError):
        verify(model, wrong, graph, plan, x)


def test_pruned_cascaded_attention_saves_loads_and_prunes_again(tmp_path: Path) -> None:
    model, pruned, _, _, x = _pruned()
    prunekit.save(pruned, tmp_path / "m", original=model)
    loaded = prunekit.load(tmp_path / "m", model=_model())
    assert isinstance(loaded.get_submodule(ATTN), PrunedCascadedGroupAttention)
    assert loaded.get_submodule(ATTN).key_dims == [KEY // 2] * 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)
    graph = DependencyGraph.trace(loaded, x)
    again = apply(loaded, graph, allocate(graph, score(graph, loaded, "l2"), 0.5), example_inputs=x)
    assert again.get_submodule(ATTN).key_dims == [1] * 4 and again(x).shape == (2, 10)


def test_bare_cascaded_attention_keeps_its_input_chunks_and_exports() -> None:
    """The module as the whole model: its input is the model's, so the chunks stay (named); the
    query/key widths and the last values are cut, the root is replaced, and torch.export works."""
    from timm.models.efficientvit_msra import CascadedGroupAttention

    torch.manual_seed(0)
    model = CascadedGroupAttention(16, KEY, num_heads=2, attn_ratio=2, resolution=4, kernels=(3, 3))
    model.eval()  # NOTE: timm's train() returns None
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():
                t.uniform_(0.5, 1.5) if name.endswith("running_var") else t.normal_(0.0, 0.5)
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    chunks = [g for g in graph.groups if any("reads input chunk" in r for r in g.reasons)]
    assert len(chunks) == 2 and not any(g.prunable for g in chunks)
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=x)
    assert isinstance(pruned, PrunedCascadedGroupAttention)
    assert (pruned.chunks, pruned.key_dims, pruned.val_dims) == ([8, 8], [KEY // 2] * 2, [8, 4])
    exported = torch.export.export(pruned, (x,)).module()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), pruned(x), rtol=1e-5, atol=1e-6)
