"""one_shot end to end: HF transformers block by block, plain Linear stacks, CNNs, errors, atomicity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, UnknownNameError
from prunekit.sparsity.oneshot import METHODS, one_shot

transformers = pytest.importorskip("transformers")


def _bert() -> nn.Module:
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def _bert_batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 100, (2, 10), generator=g),
             "attention_mask": torch.ones(2, 10, dtype=torch.long)} for _ in range(n)]


def _mlp() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_bert_is_pruned_block_by_block(method: str) -> None:
    model, batches = _bert(), _bert_batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = one_shot(model, batches, method=method, sparsity=0.5, progress=False)
    assert result.blocks == "encoder.layer"
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("encoder.layer.")]
    assert [r.name for r in result.layers] == linears and len(linears) == 12
    pruned = dict(result.model.named_modules())
    for name in linears:
        assert float((pruned[name].weight == 0).float().mean()) == pytest.approx(0.5)
    assert torch.equal(pruned["pooler.dense"].weight, model.pooler.dense.weight)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is untouched
    out = result.model(**batches[0]).last_hidden_state
    assert torch.isfinite(out).all() and not torch.allclose(out, model(**batches[0]).last_hidden_state)


def test_bert_sparsegpt_at_sparsity_zero_is_the_identity() -> None:
    model, batches = _bert(), _bert_batches()
    result = one_shot(model, batches, method="sparsegpt", sparsity=0.0, progress=False)
    for batch in batches:
        torch.testing.assert_close(result.model(**batch).last_hidden_state, model(**batch).last_hidden_state)


def test_later_blocks_are_calibrated_on_the_pruned_outputs() -> None:
    model, batches = _bert(), _bert_batches()
    result = one_shot(model, batches, method="wanda", sparsity=0.5, progress=False)
    # Recompute the query projection's mask in block 1 from the *pruned* model's activations.
    seen = []
    hook = result.model.encoder.layer[1].attention.self.query.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].reshape(-1, 32)))
    with torch.no_grad():
        for batch in batches:
            result.model(**batch)
    hook.remove()
    weight = model.encoder.layer[1].attention.self.query.weight.detach()
    scores = weight.abs() * torch.cat(seen).norm(dim=0)
    expected = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, torch.topk(scores, 16, dim=1).indices, True)
    assert torch.equal(result.model.encoder.layer[1].attention.self.query.weight != 0, expected)


def test_gpt2_conv1d_layers_get_two_four_along_the_input_dim() -> None:
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    torch.manual_seed(3)
    model = transformers.GPT2LMHeadModel(config).eval()
    batches = [torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    result = one_shot(model, batches, method="sparsegpt", pattern="2:4", progress=False)
    assert result.blocks == "transformer.h" and len(result.layers) == 8
    fc = result.model.transformer.h[0].mlp.c_fc.weight  # Conv1D stores [in, out]
    groups = (fc.t() != 0).reshape(fc.shape[1], -1, 4).sum(-1)
    assert torch.equal(groups, torch.full_like(groups, 2))


def test_linear_stack_skips_the_head_unless_included() -> None:
    model = _mlp()
    batches = [torch.randn(8, 16) for _ in range(2)]
    result = one_shot(model, batches, method="sparsegpt", progress=False)
    assert result.blocks is None and [r.name for r in result.layers] == ["0", "2"]
    assert any(s.startswith("4:") and "classifier head" in s for s in result.skipped)
    assert torch.equal(result.model[4].weight, model[4].weight)
    result = one_shot(model, batches, method="wanda", include=["0", "4"], ignore=["0"], progress=False)
    assert [r.name for r in result.layers] == ["4"]
    result = one_shot(model, batches, method="wanda", include="2", progress=False)  # one name as a str
    assert [r.name for r in result.layers] == ["2"] and result.skipped == ()


def test_explicitly_named_unsupported_layers_are_reported() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    result = one_shot(model, [torch.randn(3, 8)], include=["0", "1"], progress=False)
    assert [r.name for r in result.layers] == ["0"]
    assert result.skipped == ("1: LayerNorm is not a Linear, Conv1D or Conv2d",)


def test_dataloader_tuples_use_the_inputs_only() -> None:
    model = _mlp()
    xs = [torch.randn(8, 16) for _ in range(2)]
    plain = one_shot(model, xs, method="sparsegpt", progress=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(xs), torch.zeros(16)), batch_size=8)
    pairs = one_shot(model, loader, method="sparsegpt", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.parameters(), pairs.model.parameters()))
    # A lone Tensor is one batch (not an iterable of rows): same statistics as the two halves.
    whole = one_shot(model, torch.cat(xs), method="sparsegpt", progress=False)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain.model.parameters(), whole.model.parameters()))


def test_conv2d_is_calibrated_through_unfold_and_depthwise_is_skipped() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                          nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    exact = one_shot(model, batches, method="sparsegpt", sparsity=0.0, progress=False)
    torch.testing.assert_close(exact.model(batches[0]), model(batches[0]))
    result = one_shot(model, batches, method="sparsegpt", sparsity=0.5, progress=False)
    assert [r.name for r in result.layers] == ["0", "3"]
    assert any(s.startswith("2:") and "groups=8" in s for s in result.skipped)
    assert result.layers[0].sparsity == pytest.approx(0.5, abs=0.01)
    magnitude = one_shot(model, batches, method="magnitude", sparsity=0.5, progress=False)
    assert result.layers[0].error < magnitude.layers[0].error


def test_inplace_failure_restores_the_layers_already_pruned() -> None:
    model = _mlp()
    before = [p.clone() for p in model.parameters()]
    calls = []

    def failing(weight: torch.Tensor, stats: object, **_: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return torch.zeros_like(weight)

    METHODS.add("failing_for_test", failing, sequential=True)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            one_shot(model, [torch.randn(4, 16)], method="failing_for_test", inplace=True, progress=False)
    finally:
        METHODS.remove("failing_for_test")
    assert len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    result = one_shot(model, [torch.randn(4, 16)], method="magnitude", inplace=True, progress=False)
    assert result.model is model and float((model[0].weight == 0).float().mean()) == 0.5


def test_parallel_module_list_is_not_taken_for_blocks() -> None:
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
            self.out = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(sum(h(x) for h in self.heads))

    result = one_shot(Heads(), [torch.randn(4, 8)], method="wanda", progress=False)
    assert result.blocks is None and [r.name for r in result.layers] == ["heads.0", "heads.1", "heads.2"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsity": 1.0}, "'sparsity' must be a fraction in [0, 1)"),
    ({"sparsity": -0.1}, "'sparsity' must be a fraction in [0, 1)"),
    ({"blocksize": 0}, "'blocksize' must be a positive int"),
    ({"pattern": "2:4", "include": ["odd"]},
     "layer 'odd' has W[out, in] = [4, 6]; an 2:4 pattern needs 'in' divisible by 4"),
    ({"include": ["nothing*"]}, "'include' entry 'nothing*' matches no module of Sequential"),
    ({"method": "sparsegpt", "pattern": "1x4"}, "sparsegpt supports 'unstructured' and N:M patterns"),
])
def test_bad_arguments_raise_config_errors(kwargs: dict, message: str) -> None:
    model = nn.Sequential()
    model.add_module("odd", nn.Linear(6, 4))
    model.add_module("head", nn.Linear(4, 2))
    before = model.odd.weight.clone()
    with pytest.raises(ConfigError) as info:
        one_shot(model, [torch.randn(3, 6)], progress=False, **kwargs)
    assert message in str(info.value)
    assert torch.equal(model.odd.weight, before)


def test_empty_calibration_and_unknown_method() -> None:
    with pytest.raises(ConfigError, match="calibration data is empty"):
        one_shot(_mlp(), [], progress=False)
    with pytest.raises(UnknownNameError, match="Did you mean 'wanda'"):
        one_shot(_mlp(), [torch.randn(2, 16)], method="wandaa", progress=False)


def test_result_as_dict_is_plain_data() -> None:
    result = one_shot(_mlp(), [torch.randn(4, 16)], method="wanda", progress=False)
    data = result.as_dict()
    assert data["method"] == "wanda" and data["pattern"] == "unstructured" and data["sparsity"] == 0.5
    assert [layer["name"] for layer in data["layers"]] == ["0", "2"]


def _t5() -> nn.Module:
    config = transformers.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                   num_heads=4)
    torch.manual_seed(5)
    return transformers.T5ForConditionalGeneration(config).eval()


def _zeros(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean())


def test_encoder_decoder_prunes_both_block_lists_in_the_order_they_run() -> None:
    model, ids = _t5(), torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    result = one_shot(model, [{"input_ids": ids, "decoder_input_ids": ids[:, :6]}], method="wanda", sparsity=0.5)
    assert result.blocks == "encoder.block, decoder.block" and result.skipped == ()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".block." in n]
    assert sum(n.startswith("encoder.") for n in linears) == 12 and len(linears) == 12 + 20
    assert sorted(r.name for r in result.layers) == sorted(linears)
    modules = dict(result.model.named_modules())
    for report in result.layers:  # the reported sparsity is the one the weights hold
        assert report.sparsity == _zeros(modules[report.name].weight) == pytest.approx(0.5)
    zeros = sum((modules[n].weight == 0).sum().item() for n in linears)
    assert result.sparsity == zeros / sum(modules[n].weight.numel() for n in linears)


class _HeadFirst(nn.Module):
    """The output layer ``head`` is declared first; ``proj`` (declared last) feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 4)
        self.body = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        h, _ = self.attn(h, h, h)
        return self.head(torch.relu(self.proj(h)).mean(1))


def test_the_head_is_the_layer_that_gives_the_output_not_the_last_declared() -> None:
    torch.manual_seed(6)
    model, x = _HeadFirst().eval(), torch.randn(4, 5, 8)
    result = one_shot(model, [x], method="wanda", sparsity=0.5)
    assert [r.name for r in result.layers] == ["body", "proj"]
    assert any(s.startswith("head:") and "classifier head" in s for s in result.skipped)
    assert torch.equal(result.model.head.weight, model.head.weight) and _zeros(result.model.proj.weight) == 0.5


def test_magnitude_prunes_a_layer_whose_weight_is_used_without_calling_it() -> None:
    torch.manual_seed(7)
    model, x = _HeadFirst().eval(), torch.randn(4, 5, 8)
    # nn.MultiheadAttention reads out_proj.weight directly, so the layer itself never runs.
    wanda = one_shot(model, [x], method="wanda", sparsity=0.5)
    assert "attn.out_proj" not in [r.name for r in wanda.layers]
    assert any(s.startswith("attn.out_proj: never ran on the calibration data") for s in wanda.skipped)
    result = one_shot(model, [x], method="magnitude", sparsity=0.5)
    assert [r.name for r in result.layers] == ["body", "attn.out_proj", "proj"]
    assert _zeros(result.model.attn.out_proj.weight) == 0.5 and not any("out_proj" in s for s in result.skipped)
    assert math.isnan(result.layers[1].error) and result.layers[0].error > 0


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_two_four_on_a_conv_groups_input_channels_at_each_kernel_position(method: str) -> None:
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 8), nn.Linear(8, 2))
    result = one_shot(model, [torch.randn(4, 8, 6, 6)], method=method, pattern="2:4", include=["0", "2", "4"])
    for name in ("0", "2"):
        weight = result.model.get_submodule(name).weight  # [out, in, kh, kw]
        groups = (weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 9, -1, 4) != 0).sum(-1)
        assert torch.equal(groups, torch.full_like(groups, 2)), name
    linear = (result.model[4].weight != 0).reshape(8, -1, 4).sum(-1)  # a Linear: along in_features
    assert torch.equal(linear, torch.full_like(linear, 2))
    with pytest.raises(ConfigError, match="Conv2d '0' has 3 input channels; an 2:4 pattern groups 4 consecutive "
                                          "input channels at each kernel position"):
        one_shot(nn.Sequential(nn.Conv2d(3, 8, 2)), [torch.randn(2, 3, 4, 4)], method=method, pattern="2:4",
                 include=["0"])


def test_conv_error_is_the_relative_change_of_its_output() -> None:
    torch.manual_seed(9)
    model, x = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1, bias=False)), torch.randn(3, 8, 5, 5)
    result = one_shot(model, [x], method="wanda", sparsity=0.5, include=["0"])
    with torch.no_grad():
        dense, pruned = model(x), result.model(x)
    assert result.layers[0].error == pytest.approx(float((dense - pruned).norm() / dense.norm()), rel=1e-4)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.body = nn.Linear(8, 8)
        self.out = nn.Linear(8, 16, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.body(self.embed(ids))))


def test_pruning_a_tied_weight_warns_and_names_the_other_one() -> None:
    torch.manual_seed(10)
    model = _Tied().eval()
    with pytest.warns(UserWarning, match="pruning 'out' also zeroes 'embed.weight': the same tensor"):
        result = one_shot(model, [torch.randint(0, 16, (2, 6))], method="magnitude", include=["out"])
    assert result.layers[0].tied == ("embed.weight",) and list(result.as_dict()["layers"][0]["tied"]) == ["embed.weight"]
    assert _zeros(result.model.embed.weight) == 0.5
    untied = one_shot(model, [torch.randint(0, 16, (2, 6))], method="magnitude", include=["body"])
    assert untied.layers[0].tied == ()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(torch.relu(self.conv1(x)).mean((2, 3)))))


def test_misspelt_names_and_a_sparsity_the_pattern_cannot_give_are_refused() -> None:
    model, x = _Net().eval(), torch.randn(4, 8, 6, 6)
    with pytest.raises(ConfigError, match="one_shot: 'ignore' entry 'conv_1' matches no module of _Net. Did you "
                                          "mean 'conv1'?"):
        one_shot(model, [x], method="wanda", ignore=["conv_1"])
    with pytest.raises(ConfigError, match="one_shot: 'include' entry 'fc2' matches no module"):
        one_shot(model, [x], method="wanda", include=["fc", "fc2"])
    with pytest.raises(ConfigError, match="one_shot: the 2:4 pattern zeroes exactly 0.5 of the weights, but "
                                          "sparsity=0.9 was asked for"):
        one_shot(model, [x], method="wanda", pattern="2:4", sparsity=0.9)
    assert one_shot(model, [x], method="wanda", pattern="1:4").sparsity == 0.75  # the pattern's, by default
    assert one_shot(model, [x], method="wanda", pattern="2:4", sparsity=0.5).sparsity == 0.5
    assert [r.name for r in one_shot(model, [x], method="wanda", ignore=["conv1"]).layers] == ["fc"]
    assert [r.name for r in one_shot(model, [x], method="wanda", include=["conv*"]).layers] == ["conv1"]


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.mha(x, x, x)
        return self.head(self.fc(h).mean(1))


def test_multihead_attention_s_own_in_proj_weight_is_reported_not_silently_dense() -> None:
    torch.manual_seed(11)
    model, x = _Attention().eval(), torch.randn(2, 5, 16)
    note = "mha: MultiheadAttention's own in_proj_weight left dense: one_shot prunes Linear, Conv1D and Conv2d layers"
    result = one_shot(model, [x], method="magnitude", include=["mha"])
    assert [r.name for r in result.layers] == ["mha.out_proj"] and result.skipped == (note,)
    assert torch.equal(result.model.mha.in_proj_weight, model.mha.in_proj_weight)
    assert note in one_shot(model, [x], method="wanda").skipped  # the default selection says so too
    assert not any(s.startswith("mha:") for s in one_shot(model, [x], method="wanda", ignore=["mha"]).skipped)
    with pytest.raises(ConfigError, match="none of the selected layers can be pruned: mha: MultiheadAttention's "
                                          "own in_proj_weight left dense"):
        one_shot(model, [x], method="magnitude", include=["mha"], ignore=["mha.out_proj"])
