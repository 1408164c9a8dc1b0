"""clone_module must copy exactly like copy.deepcopy (it replaces it on the pruning hot path)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrize

from prunekit._clone import clone_module


class Tied(nn.Module):
    """A shared submodule, a tied weight, a hook, a list attribute and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight
        self.block = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
        self.again = self.block  # the same module under two names
        self.sizes = [6, 6]
        self.register_buffer("scale", torch.ones(6), persistent=False)
        self.calls = 0
        self.register_forward_hook(lambda module, args, out: setattr(module, "calls", module.calls + 1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.again(self.block(self.embed(idx))) * self.scale)


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    assert [n for n, _ in a.named_modules(remove_duplicate=False)] == \
        [n for n, _ in b.named_modules(remove_duplicate=False)]
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    for (name, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(ta, tb), name
        assert ta.data_ptr() != tb.data_ptr(), f"{name} shares storage with the original"
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_clone_equals_deepcopy_on_a_torchvision_model() -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=7)
    clone = clone_module(model)
    _same(model, clone, torch.randn(1, 3, 64, 64))
    assert vars(clone.features[0][0]).keys() == vars(copy.deepcopy(model).features[0][0]).keys()


def test_clone_keeps_sharing_hooks_and_copies_mutable_attributes() -> None:
    model = Tied()
    clone = clone_module(model)
    _same(model, clone, torch.tensor([[1, 2, 3]]))
    assert clone.head.weight is clone.embed.weight and clone.again is clone.block
    assert clone.sizes == [6, 6] and clone.sizes is not model.sizes
    calls = model.calls
    clone(torch.tensor([[1]]))
    assert clone.calls == calls + 1 and model.calls == calls  # the hook was copied, acts on the copy


def test_memo_tensors_replace_the_originals() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    small = nn.Parameter(torch.zeros(2, 4))
    clone = clone_module(model, {id(model[0].weight): small})
    assert clone[0].weight is small and model[0].weight.shape == (3, 4)


def test_modules_with_their_own_copy_protocol_fall_back_to_deepcopy() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    parametrize.register_parametrization(model[0], "weight", nn.Identity())
    clone = clone_module(model)
    assert parametrize.is_parametrized(clone[0], "weight")
    torch.testing.assert_close(clone(torch.ones(1, 4)), model(torch.ones(1, 4)))


def test_a_model_pruned_by_torch_nn_utils_prune_is_cloned_cut_saved_and_loaded(tmp_path: Path) -> None:
    """torch.nn.utils.prune keeps ``weight`` as a computed (non-leaf) attribute that deepcopy refuses:
    prunekit.load(..., model=) and the prune workflow's copy of the user's module crashed on it."""
    import torch.nn.utils.prune as torch_prune

    import prunekit
    from prunekit.structured import StructuredPruner

    def build() -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1),
                              nn.Flatten(), nn.Linear(8 * 36, 4))
        torch_prune.l1_unstructured(model[0], "weight", amount=0.3)
        torch_prune.ln_structured(model[2], "weight", amount=0.25, n=2, dim=0)
        return model

    model, x = build(), torch.randn(2, 3, 6, 6)
    assert not model[0].weight.is_leaf
    twin = clone_module(model)
    assert torch.equal(twin(x), model(x)) and twin[0].weight_orig is not model[0].weight_orig
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, x)
    assert pruned[0].weight_orig.shape[0] == 8 and pruned[0].weight_mask.shape == pruned[0].weight_orig.shape
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m", original=build()), model=build())
    assert torch.allclose(loaded(x), pruned(x))
