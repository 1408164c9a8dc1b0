"""What pruning changes besides widths survives prunekit.save -> prunekit.load: a module replaced
by its prunekit class (PrunedMultiheadAttention, and only the classes a folder may name) and
non-persistent buffers (sliced, cast to another dtype, or set after construction)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
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


_SCALED = '''import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)
        self.register_buffer("mult", torch.full((8,), 1.1), persistent=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x * self.mult)))


def build():
    return Scaled()
'''


def _scaled_spec(tmp_path: Path) -> str:
    """A file spec of a model with a non-persistent buffer that its constructor fills (not sliced by pruning)."""
    (tmp_path / "scaled.py").write_text(_SCALED)
    return f"{tmp_path / 'scaled.py'}:build"


def test_an_unsliced_non_persistent_buffer_keeps_its_dtype(tmp_path: Path) -> None:
    spec = _scaled_spec(tmp_path)
    torch.manual_seed(0)
    model = prunekit.models.resolve(spec).to(torch.bfloat16).eval()
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    folder = prunekit.save(model, tmp_path / "m", source=spec)
    loaded = prunekit.load(folder)
    assert loaded.mult.dtype == torch.bfloat16
    assert_same(loaded, model, x)


@pytest.mark.parametrize("against", ["source", "original"])
def test_a_non_persistent_buffer_changed_after_construction_keeps_its_value(against: str, tmp_path: Path) -> None:
    spec = _scaled_spec(tmp_path)
    torch.manual_seed(0)
    dense, x = prunekit.models.resolve(spec).eval(), torch.randn(4, 8)
    dense.mult.fill_(3.0)  # NOTE: on the dense model, so original= holds it too
    small, plan = pruned(dense, x)
    if against == "source":
        folder = prunekit.save(small, tmp_path / "m", source=spec, transforms=[plan])
        loaded = prunekit.load(folder)
    else:
        folder = prunekit.save(small, tmp_path / "m", original=dense, transforms=[plan])
        loaded = prunekit.load(folder, model=prunekit.models.resolve(spec))
    assert torch.equal(loaded.mult, small.mult)
    assert_same(loaded, small, x)


def test_a_manifest_naming_a_prunekit_module_never_imports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, small, _ = _heads_only()
    folder = prunekit.save(small, tmp_path / "m", original=model)
    record = _manifest(folder)
    record["layout"]["replaced"]["attn"] = "prunekit.__main__.Anything"  # NOTE: importing it runs the CLI
    (folder / "manifest.json").write_text(json.dumps(record))
    monkeypatch.delitem(sys.modules, "prunekit.__main__", raising=False)
    monkeypatch.setattr(sys, "argv", ["prunekit", "models"])
    with pytest.raises(DataError, match=r"module 'attn' is recorded as replaced by 'prunekit.__main__.Anything'"):
        prunekit.load(folder, model=HeadsAttention())
    assert "prunekit.__main__" not in sys.modules


def test_every_class_a_saved_folder_may_name_is_listed_and_loads() -> None:
    from prunekit.io.layout import RECORDABLE_CLASSES

    listed = {importlib.import_module(path.rpartition(".")[0]).__dict__[path.rpartition(".")[2]]: path
              for path in RECORDABLE_CLASSES}
    for klass in listed:
        assert callable(getattr(klass, "from_module", None)) or callable(getattr(klass, "from_layout", None))
    handlers = importlib.import_module("prunekit.graph.handlers")
    for info in pkgutil.iter_modules(handlers.__path__, "prunekit.graph.handlers."):
        for klass in vars(importlib.import_module(info.name)).values():
            recordable = callable(getattr(klass, "from_module", None)) or callable(getattr(klass, "layout_fields", None))
            if isinstance(klass, type) and klass.__module__ == info.name and recordable:
                assert klass in listed, f"add {info.name}.{klass.__qualname__} to RECORDABLE_CLASSES"
