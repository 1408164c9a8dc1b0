"""Prune channels, then factorise, then fine-tune: a few calls, and the result stays an ordinary model."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from _models import Residual
from prunekit.data import DataSplits
import prunekit
from prunekit.decompose import decompose
from prunekit.measure import count_macs
from prunekit.recover import TrainConfig, train
from prunekit.structured import StructuredPruner


def _splits() -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 8, 8, generator=g), torch.randint(0, 5, (48,), generator=g)
    part = TensorDataset(x[:16], y[:16])
    return DataSplits("toy", TensorDataset(x, y), part, part, 5, (3, 8, 8))


def test_prune_then_factorise_then_finetune(tmp_path) -> None:
    torch.manual_seed(0)
    dense, splits = Residual().eval(), _splits()
    x = splits.example_input(2)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(dense, x)
    assert (pruned.stem.out_channels, pruned.a.out_channels) == (4, 3)
    result = decompose(pruned, example_inputs=x, method="auto", rank=2,
                       calibration=[splits.train.tensors[0][:16]], progress=False)
    kinds = {r.name: r.kind for r in result.layers}
    assert kinds == {"stem": "tucker2", "a": "tucker2", "b": "tucker2", "head": "asvd"}
    assert result.macs_after < count_macs(pruned, x) < count_macs(dense, x)
    before = [p.detach().clone() for p in result.model.parameters()]
    train(result.model, splits, TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=2), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, result.model.parameters()))
    # The factorised pruned model saves and rebuilds from the pruned model + the record.
    prunekit.save(result.model, tmp_path / "dec", original=pruned, transforms=[result])
    loaded = prunekit.load(tmp_path / "dec", model=pruned).eval()
    assert torch.allclose(loaded(x), result.model.eval()(x), atol=1e-6)
