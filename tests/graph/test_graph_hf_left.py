"""Hugging Face architectures that kept far more than their ideal or failed their round trip (issue 19,
the coverage survey's last rows): a Fourier transform (FNet), a width stored by a child whose method
(not forward) the parent calls (JetMoE), ``topk`` over tokens or over an MoE router's experts, a
fused q|k|v viewed head-first as ``[H, 3, d]`` (Persimmon), a strict config whose validator refuses
the pruned widths (Bamba's Mamba), a sparse-attention indexer's heads (HY-V4), a view sized by a child
layer's width and a norm sized by the input's shape (Ergo), one channel of a filled tensor (GIT),
``as_strided`` windows (Longformer), timm's attention copied into TimeSformer, Florence-2 and
ViTDet, CvT's and SqueezeBERT's stored head counts, Gemma 4's audio attention, Funnel's relative
attention, Kimi Delta Attention, MRA's mask repeated per head, Inkling 2's position bias, Zaya's
zero state, Gated DeltaNet, attention viewed with the shared config's head counts (Moonshine,
Parakeet), Gemma 3n audio's position logits, a view to an attention's own heads times head size
(Idefics2's perceiver). Each failed or kept its channels whole (or froze them without saying
why) before the fix; now they are cut where they can be, the pruned model equals the masked one and
the saved folder loads back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class FourierMixing(torch.nn.Module):
    """FNet's token mixing: ``fftn(x, dim=dims).real`` between two Linears."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims
        self.inp, self.mid, self.out = torch.nn.Linear(3, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(torch.relu(self.inp(x)))
        return self.out(torch.fft.fftn(h, dim=self.dims).real)


def test_a_fourier_transform_over_tokens_keeps_the_channels_and_over_channels_freezes_them() -> None:
    """``fftn`` over the tokens (dim 1) mixes positions, not channels: the width is cut and the pruned
    model equals the masked one. Over the tokens and the width (FNet's dims (1, 2)) every frequency
    reads every channel: that width is frozen, and the reason says so."""
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    tokens = FourierMixing((1,)).eval()
    graph = DependencyGraph.trace(tokens, x)
    assert _group_of(graph, "mid.weight").prunable
    plan = allocate(graph, score(graph, tokens, "l2"), 0.5)
    pruned = apply(tokens, graph, plan, example_inputs=x)
    assert pruned.mid.weight.shape[0] == 4 and pruned.out.weight.shape == (2, 4)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), mask(tokens, graph, plan)(x), rtol=1e-4, atol=1e-5)
    width = _group_of(DependencyGraph.trace(FourierMixing((1, 2)).eval(), x), "mid.weight")
    assert not width.prunable and "Fourier transform over them" in width.reasons[0]


class RowExperts(torch.nn.Module):
    """JetMoE's mixture of attention: ``reduce`` (a method, not ``forward``) adds each row's output
    into ``torch.zeros(rows, self.input_size)`` and views it ``(B, T, self.input_size)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.input_size = width
        self.output_linear = torch.nn.Linear(width, width)

    def reduce(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape
        rows = h.reshape(b * t, -1)
        order = torch.arange(b * t - 1, -1, -1)
        out = torch.zeros(b * t, self.input_size).index_add(0, order, self.output_linear(rows[order]))
        return out.view(b, t, self.input_size)


class CallsAChildsMethod(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.experts, self.out = torch.nn.Linear(3, 8), RowExperts(8), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.experts.reduce(h))


def test_sizes_stored_by_a_child_whose_method_runs_follow_the_cut() -> None:
    """The zeros and the view read ``self.input_size`` of the experts, whose method the parent's
    forward calls: that attribute (not one of the parent) joins the width's group and is rewritten."""
    model = CallsAChildsMethod().eval()
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, x)
    width = _group_of(graph, "inp.weight")
    assert width.prunable, width.reasons
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.experts.input_size == 4 and model.experts.input_size == 8
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


class TopK(torch.nn.Module):
    """``topk`` along ``dim`` of a Linear's output: over the tokens (dim 1), or over the channels (an
    MoE router picking its experts)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.inp, self.out = torch.nn.Linear(3, 8), torch.nn.Linear(8 if dim == 1 else 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inp(x).topk(2, dim=self.dim).values)


def test_topk_over_tokens_keeps_the_channels_and_over_channels_freezes_them() -> None:
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    model = TopK(1).eval()
    graph = DependencyGraph.trace(model, x)
    assert _group_of(graph, "inp.weight").prunable
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.out.weight.shape == (2, 4)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    experts = _group_of(DependencyGraph.trace(TopK(-1).eval(), x), "inp.weight")
    assert not experts.prunable and "channels ranked by" in experts.reasons[0]


transformers = pytest.importorskip("transformers")

IDS = torch.randint(4, 128, (1, 8), generator=torch.Generator().manual_seed(0))


def _prune(model: torch.nn.Module, *, exact: bool = False) -> tuple[torch.nn.Module, DependencyGraph]:
    """Pruned at 0.5 with verification (by value where the hidden width passes a norm); where every
    cut is exact, the logits equal the masked dense model's."""
    torch.manual_seed(0)
    model.eval()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(IDS,))
    if exact:
        with torch.no_grad():
            torch.testing.assert_close(pruned(IDS).logits, mask(model, graph, plan)(IDS).logits, rtol=1e-4,
                                       atol=1e-4)
    return pruned, graph


def _group_of(graph: DependencyGraph, tensor: str, axis: int = 0):  # type: ignore[no-untyped-def]
    return next(g for g in graph.groups if (tensor, axis) in {(m.tensor, m.axis) for m in g.members})


def test_fused_qkv_viewed_head_first_is_cut_in_heads(tmp_path: Path) -> None:
    """Persimmon: ``fused.view(B, N, self.num_heads, 3, d)[..., 0, :]`` picks q, k and v inside each
    head; the heads dim carries the channels (3 * d per head), the part dim none."""
    config = transformers.PersimmonConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.PersimmonForCausalLM(config).eval()
    pruned, graph = _prune(model)
    heads = _group_of(graph, "model.layers.0.self_attn.query_key_value.weight")
    assert heads.prunable, heads.reasons
    attn = pruned.model.layers[0].self_attn
    assert attn.num_heads == 2 and attn.query_key_value.weight.shape[0] == 3 * 2 * attn.head_dim
    pruned.save_pretrained(tmp_path)  # the config says every width: transformers rebuilds it
    theirs = transformers.PersimmonForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(IDS).logits, pruned(IDS).logits, rtol=1e-4, atol=1e-5)


def test_a_config_its_validator_refuses_keeps_its_widths_and_lists_the_new_ones(tmp_path: Path) -> None:
    """Bamba: ``mamba_n_heads`` must divide ``mamba_expand * hidden_size``; the Mamba width is not cut,
    so a halved ``hidden_size`` is refused by ``save_pretrained``. The config keeps its fields, lists
    the new widths, and the saved folder loads back through prunekit."""
    config = transformers.BambaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, attn_layer_indices=[1],
                                      mamba_n_heads=8, mamba_d_state=16, mamba_chunk_size=8)
    torch.manual_seed(0)
    model = transformers.BambaForCausalLM(config).eval()
    pruned, _ = _prune(model)
    assert pruned.config.hidden_size == 64 and pruned.config.prunekit_layer_widths["hidden_size"] == [32]
    pruned.config.validate()
    folder = prunekit.save(pruned, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(prunekit.load(folder).eval()(IDS).logits, pruned(IDS).logits, rtol=1e-4, atol=1e-5)


def test_a_sparse_attention_indexer_is_cut_in_heads_and_its_config_follows(tmp_path: Path) -> None:
    """DeepSeek sparse attention (HY-V4): the indexer views ``wq_b`` with its stored ``n_heads`` and
    weights the heads by ``weights_proj``; both are cut in whole heads and ``index_n_heads`` follows.
    Its multi-head latent attention builds keys from the query head count, so ``num_key_value_heads``
    keeps its ratio to it: the config transformers rebuilds stores one key/value group, not 0."""
    config = transformers.HYV4Config(vocab_size=128, hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                     kv_lora_rank=32, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                     v_head_dim=16, index_n_heads=16, index_head_dim=32, index_topk=4,
                                     max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.HYV4ForCausalLM(config).eval()
    pruned, graph = _prune(model)
    assert _group_of(graph, "model.layers.0.self_attn.indexer.wq_b.weight").prunable
    indexer = pruned.model.layers[0].self_attn.indexer
    assert indexer.n_heads == 8 and indexer.wq_b.weight.shape[0] == 8 * 32
    assert indexer.weights_proj.weight.shape[0] == 8
    assert pruned.config.index_n_heads == 8
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 2)
    pruned.save_pretrained(tmp_path)
    theirs = transformers.HYV4ForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    assert theirs.model.layers[0].self_attn.num_key_value_groups == 1
    with torch.no_grad():
        torch.testing.assert_close(theirs(IDS).logits, pruned(IDS).logits, rtol=1e-4, atol=1e-5)


class ExpertGate(torch.nn.Module):
    """Ergo's MoE gate: ``x.reshape(-1, self.linear.in_features)``, a width its child Linear holds."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(-1, self.linear.in_features)).softmax(-1)


class ShapeNormedExperts(torch.nn.Module):
    """A gate sized by its child, and Ergo's expert norm: ``rms_norm(x, (x.shape[-1],))`` with no
    weight, then a per-expert scale picked by index."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.gate, self.out = torch.nn.Linear(3, 8), ExpertGate(8), torch.nn.Linear(8, 2)
        self.scale = torch.nn.Parameter(torch.rand(3, 8) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        expert = self.gate(h).argmax(-1).reshape(h.shape[:-1])
        normed = torch.nn.functional.rms_norm(h, (h.shape[-1],), eps=1e-6)
        return self.out(normed * self.scale[expert])


def test_a_view_sized_by_a_childs_width_and_a_norm_sized_by_the_shape_follow_the_cut() -> None:
    """Both sizes change with the cut at run time (the child Linear's ``in_features`` is rewritten
    from its sliced weight; ``x.shape[-1]`` is read again), so the width is cut, not frozen; the
    norm over the channels makes the group inexact, judged layer by layer."""
    model = ShapeNormedExperts().eval()
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, x)
    width = _group_of(graph, "inp.weight")
    assert width.prunable, width.reasons
    assert ("gate.linear.weight", 1) in {(m.tensor, m.axis) for m in width.members}
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.gate.linear.in_features == 4 and pruned.scale.shape == (3, 4)
    with torch.no_grad():
        assert pruned(x).shape == (2, 5, 2)


class FilledTypes(torch.nn.Module):
    """GIT's token types: ``zeros_like(h, dtype=int)[..., 0]``, one channel of a tensor that holds a
    single value everywhere, looked up in a table and added to the width."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.types, self.out = torch.nn.Linear(3, 8), torch.nn.Embedding(2, 8), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.types(torch.zeros_like(h, dtype=torch.int)[..., 0]))


def test_one_channel_of_a_filled_tensor_picks_no_channel() -> None:
    """The picked position holds the fill value whichever channels are cut, so the width is cut
    (it used to be frozen as "one channel picked"); the pruned model equals the masked one."""
    pruned = _width_cut_exactly(FilledTypes().eval(), torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0)))
    assert pruned.types.weight.shape == (2, 4)


def _width_cut_exactly(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``inp``'s output channels are a prunable group; cut by half, the model equals the masked one."""
    graph = DependencyGraph.trace(model, x)
    assert _group_of(graph, "inp.weight").prunable, _group_of(graph, "inp.weight").reasons
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return pruned


class OverlappingWindows(torch.nn.Module):
    """Longformer's chunks: ``as_strided`` redraws the sequence dim as overlapping windows and keeps
    the channel dim's size and stride."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = torch.nn.Conv1d(3, 8, 1), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, c, n = h.shape
        windows = h.as_strided((b, c, n // 2 - 1, 4), (h.stride(0), h.stride(1), 2, 1))
        return self.out(windows.mean((2, 3)))


def test_as_strided_keeps_the_channels_of_a_dim_it_does_not_redraw() -> None:
    x = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(0))
    assert _width_cut_exactly(OverlappingWindows().eval(), x).out.weight.shape == (2, 4)
    every_other = EveryOtherChannel().eval()
    graph = DependencyGraph.trace(every_other, x)
    redrawn = _group_of(graph, "inp.weight")
    assert not redrawn.prunable and "channels redrawn by" in redrawn.reasons[0]
    with torch.no_grad():
        kept = apply(every_other, graph, allocate(graph, score(graph, every_other, "l2"), 0.5), example_inputs=x)
        torch.testing.assert_close(kept(x), every_other(x))


class EveryOtherChannel(OverlappingWindows):
    """``as_strided`` that reads every other channel: the channel dim is redrawn, so it is frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.out = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, c, n = h.shape
        return self.out(h.as_strided((b, c // 2, n), (h.stride(0), 2 * h.stride(1), 1)).mean(2))


def test_timesformer_attention_reads_its_width_from_the_input_and_is_cut_in_heads(tmp_path: Path) -> None:
    """TimeSformer's attention is timm's, copied: ``reshape(B, N, 3, self.num_heads, C // self.num_heads)``
    with ``C`` read from the input. Its heads were frozen ("channels split into several dims"); now
    they are tied to the width as in timm, the stored head count follows, and the folder loads back."""
    config = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=2, hidden_size=64,
                                            num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                            num_labels=5)
    torch.manual_seed(0)
    model = transformers.TimesformerForVideoClassification(config).eval()
    video = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, video)
    heads = _group_of(graph, "timesformer.encoder.layer.0.attention.attention.qkv.weight")
    assert heads.prunable and heads.size == 4, heads.reasons
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=video)  # verified
    assert [layer.attention.attention.num_heads for layer in pruned.timesformer.encoder.layer] == [2, 2]
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(video).logits, pruned(video).logits, rtol=1e-4, atol=1e-5)


def test_florence2_vision_tower_is_cut_in_heads_and_groups(tmp_path: Path) -> None:
    """Florence-2's DaViT vision tower (copied from timm): window attention ``reshape(B, N, 3,
    self.num_heads, C // self.num_heads)`` and channel attention ``reshape(B, N, 3, self.groups,
    C // self.groups)``, both with ``C`` read from the input. They froze every stage's width (coverage:
    69 % of the params kept against 27 %); now heads and groups are cut with the width."""
    config = transformers.Florence2VisionConfig(embed_dim=(32, 64), num_heads=(2, 4), num_groups=(2, 4), depths=(1, 1),
                                                patch_size=(7, 3), patch_stride=(4, 2), patch_padding=(3, 1),
                                                patch_prenorm=(False, True), window_size=4, projection_dim=64)
    torch.manual_seed(0)
    model = transformers.Florence2VisionBackbone(config).eval()
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, images)
    window = _group_of(graph, "blocks.0.0.spatial_block.window_attn.qkv.weight")  # NOTE: stage 1's width is the
    channel = _group_of(graph, "blocks.0.0.channel_block.channel_attn.qkv.weight")  # output's: kept
    assert window.prunable and channel.prunable, (window.reasons, channel.reasons)
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=images)  # verified
    stage = pruned.blocks[0][0]
    assert (stage.spatial_block.window_attn.num_heads, stage.channel_block.channel_attn.groups) == (1, 1)
    assert stage.channel_block.channel_attn.dim == stage.channel_block.channel_attn.qkv.weight.shape[0] // 3 == 16
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).last_hidden_state, pruned(images).last_hidden_state,
                                   rtol=1e-4, atol=1e-5)


def _traced_with_heads(model: torch.nn.Module, projection: str, heads: int):  # type: ignore[no-untyped-def]
    """(a 32x32 image, the traced graph), checking that ``projection``'s rows form ``heads`` prunable heads."""
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, images)
    group = _group_of(graph, projection)
    assert group.prunable and group.size == heads, group.reasons
    return images, graph


def _exact_groups_cut(model: torch.nn.Module, graph: DependencyGraph, x: torch.Tensor | tuple, tmp_path: Path):  # type: ignore[no-untyped-def,type-arg]
    """``model`` with half of every exact group cut (L2): equal to the masked dense model, and the
    same again after prunekit.save and prunekit.load; returns the pruned model. ``x``: the input,
    or a tuple of the inputs."""
    inputs = x if isinstance(x, tuple) else (x,)
    scores = score(graph, model, "l2")
    plan = allocate(graph, {g.id: scores[g.id] for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=inputs)  # verified
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        out = pruned(*inputs).last_hidden_state
        torch.testing.assert_close(out, mask(model, graph, plan)(*inputs).last_hidden_state, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(*inputs).last_hidden_state, out, rtol=1e-4, atol=1e-5)
    return pruned


def _four_heads(model: torch.nn.Module, x: torch.Tensor, projection: str):  # type: ignore[no-untyped-def]
    """(the traced graph, the heads group of ``projection``'s rows), checking they are 4 exact prunable heads."""
    graph = DependencyGraph.trace(model, x)
    heads = _group_of(graph, projection)
    assert heads.prunable and heads.size == 4 and heads.exact, heads.reasons
    return graph, heads


def _heads_cut(model: torch.nn.Module, graph: DependencyGraph, heads, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A causal LM with half of the group ``heads`` cut (L2): its logits equal the masked dense
    model's, and the same again after prunekit.save and prunekit.load; returns the pruned model."""
    plan = allocate(graph, {heads.id: score(graph, model, "l2")[heads.id]}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=IDS)  # verified
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        out = pruned(IDS).logits
        torch.testing.assert_close(out, mask(model, graph, plan)(IDS).logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(IDS).logits, out, rtol=1e-4, atol=1e-5)
    return pruned


def test_vitdet_attention_is_cut_in_heads(tmp_path: Path) -> None:
    """ViTDet's attention (timm's SAM ViT attention, copied) views ``qkv(x)`` with ``self.num_heads``:
    its heads were frozen; now the stored count follows, the pruned model equals the masked one."""
    config = transformers.VitDetConfig(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, mlp_ratio=2, pretrain_image_size=32)
    torch.manual_seed(0)
    model = transformers.VitDetModel(config).eval()
    images, graph = _traced_with_heads(model, "encoder.layer.0.attention.qkv.weight", 4)
    pruned = _exact_groups_cut(model, graph, images, tmp_path)
    assert [layer.attention.num_heads for layer in pruned.encoder.layer] == [2, 2]


def test_cvt_attention_is_cut_in_heads(tmp_path: Path) -> None:
    """CvT views each projection as ``(self.num_heads, self.embed_dim // self.num_heads)``: its heads
    were frozen (coverage: 33 % of the params kept against 27 %); now the count and width follow."""
    # NOTE: three stages, and stage k at least k + 1 layers deep (CvT indexes its per-layer drop rates by stage)
    config = transformers.CvtConfig(embed_dim=[16, 32, 64], num_heads=[1, 2, 4], depth=[1, 2, 3],
                                    mlp_ratio=[2.0, 2.0, 2.0], drop_path_rate=[0.0, 0.0, 0.0], num_labels=5)
    torch.manual_seed(0)
    model = transformers.CvtForImageClassification(config).eval()
    images, graph = _traced_with_heads(model, "cvt.encoder.stages.2.layers.0.attention.attention.projection_query.weight", 4)
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=images)  # verified
    attention = pruned.cvt.encoder.stages[2].layers[0].attention.attention
    assert (attention.num_heads, attention.embed_dim) == (2, 32)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, pruned(images).logits, rtol=1e-4, atol=1e-5)


def test_squeezebert_attention_is_cut_in_heads(tmp_path: Path) -> None:
    """SqueezeBERT's attention (1x1 Conv1d projections, channels first) views them as
    ``(N, self.num_attention_heads, self.attention_head_size, W)``: its q, k and v were frozen; now
    whole heads are cut and the stored count follows."""
    config = transformers.SqueezeBertConfig(vocab_size=128, hidden_size=64, embedding_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4, q_groups=1, k_groups=1,
                                            v_groups=1, output_groups=1, intermediate_groups=1, post_attention_groups=1)
    torch.manual_seed(0)
    model = transformers.SqueezeBertModel(config).eval()
    graph, heads = _four_heads(model, IDS, "encoder.layers.0.attention.query.weight")
    pruned = _exact_groups_cut(model, graph, IDS, tmp_path)
    assert [layer.attention.num_attention_heads for layer in pruned.encoder.layers] == [2, 2]


def test_gemma4_audio_attention_is_cut_in_heads(tmp_path: Path) -> None:
    """Gemma 4's chunked audio attention (projections wrapped in clippable linears, relative keys of
    their own) views q, k, v and the relative keys with ``self.num_heads``: they were frozen; now
    whole heads are cut across all four and the stored count follows."""
    config = transformers.Gemma4AudioConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    model = transformers.Gemma4AudioModel(config).eval()
    features = torch.randn(1, 64, 128, generator=torch.Generator().manual_seed(0))
    graph, heads = _four_heads(model, features, "layers.0.self_attn.q_proj.linear.weight")
    assert ("layers.0.self_attn.relative_k_proj.weight", 0) in {(m.tensor, m.axis) for m in heads.members}
    pruned = _exact_groups_cut(model, graph, features, tmp_path)
    assert [layer.self_attn.num_heads for layer in pruned.layers] == [2, 2]


def test_funnel_relative_attention_is_cut_in_heads(tmp_path: Path) -> None:
    """Funnel's relative attention views q, k, v with the shared config's ``n_head`` and merges them
    back to ``n_head * d_head`` (96 here, no field of the config): its heads were frozen; now whole
    heads are cut with their per-head
    biases and positional kernel, and each layer's config view says its own count."""
    config = transformers.FunnelConfig(vocab_size=128, d_model=64, n_head=4, d_head=24, d_inner=128,
                                       block_sizes=[1, 1], num_decoder_layers=1)
    torch.manual_seed(0)
    model = transformers.FunnelModel(config).eval()
    graph, heads = _four_heads(model, IDS, "encoder.blocks.0.0.attention.q_head.weight")
    members = {(m.tensor.rsplit(".", 1)[-1], m.axis) for m in heads.members}
    assert {("r_w_bias", 0), ("r_r_bias", 0), ("r_s_bias", 0), ("r_kernel", 1), ("seg_embed", 1)} <= members
    pruned = _exact_groups_cut(model, graph, IDS, tmp_path)
    assert [block[0].attention.config.n_head for block in pruned.encoder.blocks] == [2, 2]


def test_kimi_delta_attention_is_cut_in_heads(tmp_path: Path) -> None:
    """Kimi Delta Attention (Kimi Linear, Bailing's hybrid) runs one depthwise conv over q|k|v, splits
    it at ``self.qkv_dim`` and views the parts and its forget gate with ``self.num_heads``: all were
    frozen; now whole heads are cut across q, k, v, the conv, the gates and the decay."""
    config = transformers.KimiLinearConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, kv_lora_rank=32, qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=8,
        mlp_layer_types=["dense", "dense"], layer_types=["linear_attention", "full_attention"], linear_head_dim=16,
        linear_num_heads=4, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.KimiLinearForCausalLM(config).eval()
    graph, heads = _four_heads(model, IDS, "model.layers.0.self_attn.b_proj.weight")
    inner = {(m.tensor.rsplit("self_attn.", 1)[-1], m.axis, m.inner) for m in heads.members}
    assert {("conv1d.weight", 0, 16), ("forget_gate.A_log", 2, 1), ("o_proj.weight", 1, 16)} <= inner
    attention = _heads_cut(model, graph, heads, tmp_path).model.layers[0].self_attn
    assert (attention.num_heads, attention.qkv_dim, attention.forget_gate.num_heads) == (2, 32, 2)


def test_mask_repeated_by_the_stored_head_count_follows_the_heads(tmp_path: Path) -> None:
    """MRA repeats its token mask once per head (``mask.repeat(1, self.num_attention_heads, 1)``) and
    folds heads into the batch: the repeated dim was a fixed size the heads met, so they stayed
    whole. A size-1 dim repeated by the stored head count of a module whose refresh keeps it is
    those heads; now they are cut and the pruned model equals the masked one."""
    config = transformers.MraConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.MraModel(config).eval()
    graph, heads = _four_heads(model, IDS, "encoder.layer.0.attention.self.query.weight")
    pruned = _exact_groups_cut(model, graph, IDS, tmp_path)
    assert [layer.attention.self.num_attention_heads for layer in pruned.encoder.layer] == [2, 2]


def test_inkling2_relative_position_bias_is_cut_with_the_heads(tmp_path: Path) -> None:
    """Inkling 2 adds a per-head position bias, computed from the hidden states and viewed with the
    bias module's ``self.num_heads``, to its scores: the heads met a fixed-size bias and stayed
    whole. Now the bias follows the heads it is added to, and both are cut."""
    config = transformers.Inkling2TextConfig(
        vocab_size=128, unpadded_vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, layer_types=["hybrid_sliding", "hybrid_sliding"],
        max_position_embeddings=64, moe_intermediate_size=128, n_routed_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    model = transformers.Inkling2ForCausalLM(config).eval()
    graph = DependencyGraph.trace(model, IDS)
    bias = _group_of(graph, "model.layers.0.self_attn.relative_position_bias.linear.weight")
    assert bias.prunable, bias.reasons
    assert any(m.tensor == "model.layers.0.self_attn.q_proj.linear.weight" for m in bias.members)
    pruned = apply(model, graph, allocate(graph, {bias.id: score(graph, model, "l2")[bias.id]}, 0.5),
                   example_inputs=IDS)  # verified
    attention = pruned.model.layers[0].self_attn  # NOTE: its sliding layers have 48 query heads of 128
    position_bias = attention.relative_position_bias
    assert position_bias.num_heads == position_bias.norm.scale.shape[0] == attention.o_proj.linear.weight.shape[1] // 128
    assert position_bias.num_heads < 48
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, pruned(IDS).logits, rtol=1e-4, atol=1e-5)


def test_a_zero_state_sized_by_a_refreshed_module_width_follows_the_cut(tmp_path: Path) -> None:
    """Zaya's attention projects ``hidden_states.new_zeros(B, 1, self.hidden_size)`` as the previous
    token's value state: a uniform tensor sized by a stored width of a module with a refresh was
    fixed, so the whole residual width froze. Its positions are the channels that meet them; the
    attribute is rewritten with the cut."""
    config = transformers.ZayaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     max_position_embeddings=64, moe_intermediate_size=64, num_experts=4,
                                     layer_types=["hybrid", "hybrid"], head_dim=16)
    torch.manual_seed(0)
    model = transformers.ZayaForCausalLM(config).eval()
    graph = DependencyGraph.trace(model, IDS)
    width = _group_of(graph, "model.layers.0.self_attn.qkv_proj.v_proj_delayed.weight", axis=1)
    assert width.prunable, width.reasons
    plan = allocate(graph, {width.id: score(graph, model, "l2")[width.id]}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=IDS)  # verified
    attention = pruned.model.layers[0].self_attn.qkv_proj
    assert attention.hidden_size == attention.v_proj_delayed.in_features < 64
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, pruned(IDS).logits, rtol=1e-4, atol=1e-5)


def test_gated_delta_net_is_cut_in_key_heads_with_their_value_heads(tmp_path: Path) -> None:
    """Gated DeltaNet (OLMo hybrid, Qwen3.5) splits its conv's q|k|v at stored widths, repeats each
    key head over its value heads (``repeat_interleave(num_v_heads // num_k_heads)``) and solves a
    triangular system per head: its heads were frozen. Now a key head is cut with its value heads,
    gates and decays, and the pruned model equals the masked one."""
    config = transformers.OlmoHybridConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
        layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=16, linear_value_head_dim=16)
    torch.manual_seed(0)
    model = transformers.OlmoHybridForCausalLM(config).eval()
    graph = DependencyGraph.trace(model, IDS)
    heads = _group_of(graph, "model.layers.0.linear_attn.A_log")
    assert heads.prunable and heads.size == 2 and heads.exact, heads.reasons
    inner = {(m.tensor.rsplit("linear_attn.", 1)[-1], m.axis, m.inner) for m in heads.members}
    assert {("A_log", 0, 2), ("q_proj.weight", 0, 16), ("v_proj.weight", 0, 32), ("o_proj.weight", 1, 32)} <= inner
    attention = _heads_cut(model, graph, heads, tmp_path).model.layers[0].linear_attn
    assert (attention.num_k_heads, attention.num_v_heads, attention.key_dim, attention.value_dim) == (1, 2, 16, 32)


def test_moonshine_attention_viewed_with_the_shared_configs_head_count_is_cut_in_heads(tmp_path: Path) -> None:
    """Moonshine views q, k and v with ``self.config.num_key_value_heads``, the shared config's: its
    heads were frozen (the model kept 58 % of its parameters at ratio 0.5 against 41 % ideal). Now
    whole heads are cut in the encoder's and the decoder's self- and cross-attention, and each layer's
    config view says its own counts."""
    config = transformers.MoonshineConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                          encoder_num_hidden_layers=2, decoder_num_hidden_layers=2,
                                          encoder_num_attention_heads=4, decoder_num_attention_heads=4)
    torch.manual_seed(0)
    model = transformers.MoonshineModel(config).eval()
    audio = torch.randn(1, 4096, generator=torch.Generator().manual_seed(0))
    inputs = (audio, None, IDS[:, :5])
    graph, heads = _four_heads(model, inputs, "encoder.layers.0.self_attn.q_proj.weight")
    pruned = _exact_groups_cut(model, graph, inputs, tmp_path)
    attention = pruned.encoder.layers[0].self_attn
    assert attention.q_proj.weight.shape[0] == 2 * attention.head_dim
    assert (attention.config.num_attention_heads, attention.config.num_key_value_heads) == (2, 2)


def test_parakeet_relative_attention_viewed_with_the_shared_configs_head_count_is_cut_in_heads(tmp_path: Path) -> None:
    """Parakeet's relative attention views its positional keys and per-head biases with the shared
    config's ``num_attention_heads``: its heads were frozen. Now whole heads are cut with their
    positional keys and biases, and each layer's config view says its own count."""
    config = transformers.ParakeetEncoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=128, subsampling_conv_channels=16)
    torch.manual_seed(0)
    model = transformers.ParakeetEncoder(config).eval()
    features = torch.randn(1, 64, 80, generator=torch.Generator().manual_seed(0))
    graph, heads = _four_heads(model, features, "layers.0.self_attn.q_proj.weight")
    members = {(m.tensor.rsplit(".", 2)[-2] + "." + m.tensor.rsplit(".", 1)[-1], m.axis) for m in heads.members}
    assert {("relative_k_proj.weight", 0), ("self_attn.bias_u", 0), ("self_attn.bias_v", 0)} <= members
    pruned = _exact_groups_cut(model, graph, features, tmp_path)
    assert [layer.self_attn.config.num_attention_heads for layer in pruned.layers] == [2, 2]


def test_gemma3n_audio_relative_position_logits_are_cut_with_the_heads(tmp_path: Path) -> None:
    """Gemma 3n's audio attention computes its relative position logits in a child that views its
    projection with its own ``self.num_heads``: the heads were frozen. Now whole heads are cut in
    q, k, v and the position projection, and both stored counts follow."""
    config = transformers.Gemma3nAudioConfig(hidden_size=64, conf_num_attention_heads=4, conf_num_hidden_layers=2)
    torch.manual_seed(0)
    model = transformers.Gemma3nAudioEncoder(config).eval()
    features = torch.randn(1, 64, 128, generator=torch.Generator().manual_seed(0))
    inputs = (features, torch.zeros(1, 64, dtype=torch.bool))
    graph, heads = _four_heads(model, inputs, "conformer.0.attention.attn.q_proj.weight")
    assert ("conformer.0.attention.attn.relative_position_embedding.pos_proj.weight", 0) in {
        (m.tensor, m.axis) for m in heads.members}
    pruned = _exact_groups_cut(model, graph, inputs, tmp_path)
    attention = pruned.conformer[0].attention.attn
    assert (attention.num_heads, attention.relative_position_embedding.num_heads) == (2, 2)


def test_a_view_to_the_attentions_own_heads_times_head_size_follows_the_cut(tmp_path: Path) -> None:
    """Idefics2's perceiver attention merges its heads with ``reshape(B, N, self.num_heads *
    self.head_dim)``, a product of two stored ints the config holds under other names: it froze the
    heads. The attention's refresh keeps the head count, so the view follows; heads are cut."""
    config = transformers.models.idefics2.configuration_idefics2.Idefics2PerceiverConfig(
        hidden_size=64, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=4, resampler_head_dim=8,
        num_key_value_heads=4)
    torch.manual_seed(0)
    model = transformers.models.idefics2.modeling_idefics2.Idefics2PerceiverResampler(config).eval()
    context = torch.randn(1, 6, 64, generator=torch.Generator().manual_seed(0))
    inputs = (context, torch.ones(1, 6, dtype=torch.long))
    graph, heads = _four_heads(model, inputs, "layers.0.self_attn.q_proj.weight")
    scores = score(graph, model, "l2")
    plan = allocate(graph, {g.id: scores[g.id] for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=inputs)  # verified
    assert pruned.layers[0].self_attn.num_heads == 2 and pruned.layers[0].self_attn.o_proj.weight.shape == (64, 16)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), mask(model, graph, plan)(*inputs), rtol=1e-4, atol=1e-5)
