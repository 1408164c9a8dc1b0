"""Depth pruning finds exactly the residual blocks, removes the cheapest, and never touches the input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure.macs import count_macs
from prunekit.models import create
from prunekit.models.resnet_cifar import BasicBlock
from prunekit.structured import Target
from prunekit.structured.depth import block_importance, prune_depth, remove_blocks, residual_blocks

X = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return create("resnet20").eval()


@pytest.fixture(scope="module")
def blocks(resnet20: nn.Module) -> list[str]:
    return residual_blocks(resnet20, X)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_blocks_are_the_basic_blocks_without_downsampling(resnet20: nn.Module, blocks: list[str]) -> None:
    found = blocks
    want = [n for n, m in resnet20.named_modules()
            if isinstance(m, BasicBlock) and isinstance(m.shortcut, nn.Identity)]
    assert found == want
    assert len(found) == 7  # 9 blocks, the first of stages 2 and 3 downsample


def test_removing_blocks_lowers_cost_and_leaves_input_alone(resnet20: nn.Module, blocks: list[str]) -> None:
    before = _state(resnet20)
    last = _params(resnet20), count_macs(resnet20, X)
    for k in (1, 3):
        smaller = remove_blocks(resnet20, blocks[:k])
        cost = _params(smaller), count_macs(smaller, X)
        assert cost[0] < last[0] and cost[1] < last[1]
        assert smaller(X).shape == resnet20(X).shape
        last = cost
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())
    assert all(isinstance(m, BasicBlock) for m in resnet20.layer1)
    assert not any(m._forward_hooks for m in resnet20.modules())


def test_remove_blocks_rejects_unknown_names(resnet20: nn.Module) -> None:
    with pytest.raises(ConfigError, match="layer9"):
        remove_blocks(resnet20, ["layer1.0", "layer9"])


def test_block_importance_output_change_and_loss(resnet20: nn.Module, blocks: list[str]) -> None:
    blocks = blocks[:3]
    change = block_importance(resnet20, blocks, example_inputs=X)
    assert set(change) == set(blocks) and all(v > 0 for v in change.values())
    assert change == block_importance(resnet20, blocks, example_inputs=X)  # pure and deterministic
    batches = [(X, torch.tensor([1, 2]))]
    loss = block_importance(resnet20, blocks, batches=batches, metric="loss")
    assert set(loss) == set(blocks)
    with pytest.raises(ConfigError, match="labels"):
        block_importance(resnet20, blocks, batches=[X], metric="loss")


def test_prune_depth_by_count_removes_the_cheapest(resnet20: nn.Module) -> None:
    before = _state(resnet20)
    smaller, record = prune_depth(resnet20, X, n_blocks=2)
    ranked = sorted(record.scores, key=record.scores.get)
    assert list(record.removed) == ranked[:2]
    assert record.macs[1] < record.macs[0] and record.params[1] < record.params[0]
    assert all(isinstance(smaller.get_submodule(n), nn.Identity) for n in record.removed)
    assert smaller(X).shape == (2, 10)
    assert record.to_dict()["removed"] == list(record.removed)
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())


def test_prune_depth_to_a_mac_target(resnet20: nn.Module) -> None:
    target = 0.8 * count_macs(resnet20, X)
    smaller, record = prune_depth(resnet20, X, target=Target(macs=0.8))
    assert count_macs(smaller, X) == record.macs[1] <= target
    with pytest.raises(ConfigError, match="exactly one"):
        prune_depth(resnet20, X)
    with pytest.raises(ConfigError, match="MACs budget"):
        prune_depth(resnet20, X, target=Target(ratio=0.2))


def test_prune_depth_by_calibration_loss(resnet20: nn.Module) -> None:
    batches = [(X, torch.tensor([3, 7]))]
    smaller, record = prune_depth(resnet20, X, n_blocks=1, batches=batches, metric="loss")
    assert record.metric == "loss" and len(record.removed) == 1
    assert record.removed[0] == min(record.scores, key=record.scores.get)


@pytest.mark.parametrize("name", ["resnet18"])
def test_torchvision_blocks_are_the_non_downsampling_ones(name: str) -> None:
    model = create(name).eval()
    found = residual_blocks(model, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    want = [n for n, m in model.named_modules() if type(m).__name__ == "BasicBlock" and m.downsample is None]
    assert found == want == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
