"""What pruning changes besides widths survives prunekit.save -> prunekit.load: a module replaced
by its prunekit class (PrunedMultiheadAttention) and a sliced non-persistent buffer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _io_helpers import assert_same, outputs, pruned
from safetensors.torch import save_file
from torch import nn

import prunekit
from prunekit.errors import DataError, DataNotFoundError
from prunekit.graph.handlers.attention_modules import PrunedMultiheadAttention


class HeadsAttention(nn.Module):
    """An embedding into nn.MultiheadAttention (4 heads of 2) with a residual, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Linear(6, 8), nn.Linear(8, 3)
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0] + h)


class PositionTable(nn.Module):
    """A fixed table added to a hidden width, held as a non-persistent buffer (not in the state_dict),
    beside a persistent one of the same width, as transformers' sinusoidal position embeddings are."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(5, 12), nn.Linear(12, 3)
        table = torch.sin(torch.arange(4 * 12, dtype=torch.float32).view(4, 12) / 7)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 12), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x) * self.scale + self.table))


def _manifest(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "manifest.json").read_text())


def _heads_cut(model: nn.Module, x: torch.Tensor, heads: int = 4) -> nn.Module:
    """A copy of ``model`` with half the heads of each attention cut, nothing else: the inner width
    ``num_heads * head_dim`` then differs from the embedding width."""
    from prunekit.graph import DependencyGraph
    from prunekit.importance import score
    from prunekit.structured import allocate, apply

    graph = DependencyGraph.trace(model, x)
    scores = score(graph, model, "l2")
    plan = allocate(graph, {g.id: scores[g.id] for g in graph.prunable if g.size == heads}, 0.5)
    return apply(model, graph, plan, example_inputs=x)


def _heads_only(seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """The attention model and a copy with half its heads cut (inner width 4 against embed_dim 8)."""
    torch.manual_seed(seed)
    model, x = HeadsAttention().eval(), torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))
    return model, _heads_cut(model, x), x


def test_pruned_multihead_attention_round_trips(tmp_path: Path) -> None:
    model, small, x = _heads_only()
    assert type(small.attn) is PrunedMultiheadAttention and small.attn.num_heads == 2
    folder = prunekit.save(small, tmp_path / "m", original=model)
    layout = _manifest(folder)["layout"]
    assert layout["replaced"] == {"attn": "prunekit.graph.handlers.attention_modules.PrunedMultiheadAttention"}
    loaded = prunekit.load(folder, model=HeadsAttention())
    assert type(loaded.attn) is PrunedMultiheadAttention and loaded.attn.num_heads == 2
    assert_same(loaded, small, x)


def _vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64,
                             num_classes=5).eval()


def _swin() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2], num_heads=[4], window_size=[4, 4],
                           num_classes=5).eval()


@pytest.mark.parametrize(("factory", "attention", "replaced"), [
    (_vit, "encoder.layers.encoder_layer_0.self_attention", "PrunedMultiheadAttention"),
    (_swin, "features.1.0.attn", "PrunedShiftedWindowAttention")])
def test_torchvision_attention_with_pruned_heads_round_trips(factory, attention: str, replaced: str,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = factory(), torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    small = _heads_cut(model, x)
    assert type(small.get_submodule(attention)).__name__ == replaced
    folder = prunekit.save(small, tmp_path / "m", original=model)
    loaded = prunekit.load(folder, model=factory())
    assert type(loaded.get_submodule(attention)).__name__ == replaced
    assert_same(loaded, small, x)


def test_sliced_non_persistent_buffers_are_saved_and_restored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = PositionTable().eval(), torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    small, plan = pruned(model, x)
    assert small.table.shape == (4, 6) and "table" not in small.state_dict()
    folder = prunekit.save(small, tmp_path / "m", original=model, transforms=[plan])
    assert sorted(p.name for p in folder.iterdir()) == ["buffers.safetensors", "manifest.json", "model.safetensors"]
    assert _manifest(folder)["layout"]["buffers"] == {"scale": {"shape": [6], "dtype": "float32"},
                                                      "table": {"shape": [4, 6], "dtype": "float32"}}
    loaded = prunekit.load(folder, model=PositionTable())
    assert torch.equal(loaded.table, small.table) and torch.equal(loaded.scale, small.scale)
    assert_same(loaded, small, x)
    assert not torch.equal(outputs(PositionTable(), x), outputs(model, x))  # NOTE: the load is not vacuous


def test_a_result_without_them_is_written_as_before(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    small, plan = pruned(model, torch.randn(4, 5))
    folder = prunekit.save(small, tmp_path / "m", original=model, transforms=[plan])
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
    assert list(_manifest(folder)["layout"]) == ["tensors", "attributes", "identity", "none"]


def test_a_replacement_outside_prunekit_is_refused_without_importing_it(tmp_path: Path) -> None:
    model, small, _ = _heads_only()
    folder = prunekit.save(small, tmp_path / "m", original=model)
    record = _manifest(folder)
    record["layout"]["replaced"]["attn"] = "subprocess.Popen"
    (folder / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"module 'attn' is recorded as replaced by 'subprocess.Popen', which is "
                                        r"not a prunekit module class with from_module"):
        prunekit.load(folder, model=HeadsAttention())


def test_damaged_buffers_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = PositionTable().eval(), torch.randn(4, 5)
    small, plan = pruned(model, x)
    folder = prunekit.save(small, tmp_path / "m", original=model, transforms=[plan])
    save_file({"table": torch.zeros(4, 7), "scale": torch.zeros(6)}, str(folder / "buffers.safetensors"))
    with pytest.raises(DataError, match=r"buffer 'table' is recorded as \(4, 6\) float32 but the saved buffers "
                                        r"hold \(4, 7\) torch.float32. The folder is damaged"):
        prunekit.load(folder, model=PositionTable())
    (folder / "buffers.safetensors").unlink()
    with pytest.raises(DataNotFoundError, match="buffers.safetensors' does not exist"):
        prunekit.load(folder, model=PositionTable())
