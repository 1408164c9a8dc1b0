"""Every kind of result survives prunekit.save -> prunekit.load with the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _io_helpers import assert_same, outputs, pruned
from _models import CONTRACT_PATTERNS, Residual, example
from torch import nn

import prunekit
from prunekit.decompose import decompose, partition
from prunekit.io import Stages, read_manifest
from prunekit.models import create
from prunekit.structured import Plan
from prunekit.structured.depth import remove_blocks

SOURCE = {"spec": "simple_cnn", "kwargs": {"num_classes": 10}}


@pytest.fixture
def cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return create("simple_cnn", num_classes=10).eval(), example((2, 1, 28, 28))


def _manifest(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "manifest.json").read_text())


def test_pruned_round_trip_from_the_spec(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = cnn
    small, plan = pruned(model, x)
    folder = prunekit.save(small, tmp_path / "p", source=SOURCE, transforms=[plan], metrics={"top1": 0.5})
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
    assert_same(prunekit.load(folder), small, x)
    record = _manifest(folder)
    assert (record["format"], record["version"], record["source"]) == ("prunekit", 1, SOURCE)
    assert [t["kind"] for t in record["transforms"]] == ["prune"]
    assert Plan.from_dict(record["transforms"][0]["plan"]) == plan
    assert record["layout"]["attributes"]["conv1"] == {"out_channels": small.conv1.out_channels}
    assert record["metrics"] == {"top1": 0.5}


@pytest.mark.parametrize("pattern", sorted(CONTRACT_PATTERNS))
def test_pruned_user_model_round_trip_with_model_argument(pattern: str, tmp_path: Path) -> None:
    factory, shape = CONTRACT_PATTERNS[pattern]
    torch.manual_seed(1)
    original, x = factory().eval(), example(shape)
    small, plan = pruned(original, x)
    prunekit.save(small, tmp_path / pattern, original=original, transforms=[plan])
    assert _manifest(tmp_path / pattern)["source"] is None
    before = {k: v.clone() for k, v in original.state_dict().items()}
    assert_same(prunekit.load(tmp_path / pattern, model=factory()), small, x)
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())


class _WeightNormed(nn.Module):
    """A conv whose weight is the model's own parametrization (weight_norm, as wav2vec2's positional conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3, padding=1), dim=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(-1))


def test_a_models_own_parametrization_is_saved_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _WeightNormed().eval(), torch.randn(2, 4, 8)
    folder = prunekit.save(model, tmp_path / "wn", original=_WeightNormed())
    loaded = prunekit.load(folder, model=_WeightNormed())
    assert "conv.parametrizations.weight.original0" in loaded.state_dict()
    assert_same(loaded, model, x)


def test_depth_pruned_round_trip_records_identity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = create("resnet20").eval(), example((2, 1, 28, 28))
    shallow = remove_blocks(model, ["layer1.1", "layer3.2"])
    prunekit.save(shallow, tmp_path / "d", source="resnet20")
    record = _manifest(tmp_path / "d")
    assert record["layout"]["identity"] == ["layer1.1", "layer3.2"]
    assert record["transforms"] == [{"kind": "depth", "blocks": ["layer1.1", "layer3.2"]}]
    loaded = prunekit.load(tmp_path / "d")
    assert isinstance(loaded.layer1[1], nn.Identity)
    assert_same(loaded, shallow, x)


def test_factorised_round_trip(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = cnn
    result = decompose(model, example_inputs=x, method="svd", rank=3, progress=False)
    assert result.layers
    prunekit.save(result.model, tmp_path / "f", source=SOURCE, transforms=[result])
    layers = _manifest(tmp_path / "f")["transforms"][0]["layers"]
    assert [(e["name"], e["kind"], e["ranks"]) for e in layers] == [
        (r.name, r.kind, list(r.ranks)) for r in result.layers]
    loaded = prunekit.load(tmp_path / "f")
    assert all(isinstance(loaded.get_submodule(r.name), nn.Sequential) for r in result.layers)
    assert_same(loaded, result.model, x)


def test_pruned_then_factorised_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    original, x = Residual().eval(), example((2, 3, 16, 16))
    small, plan = pruned(original, x)
    result = decompose(small, example_inputs=x, method="svd", rank=2, progress=False)
    prunekit.save(result.model, tmp_path / "pf", original=original, transforms=[plan, result])
    assert [t["kind"] for t in _manifest(tmp_path / "pf")["transforms"]] == ["prune", "factorise"]
    assert_same(prunekit.load(tmp_path / "pf", model=Residual()), result.model, x)


def test_sparse_round_trip_stores_compressed_and_loads_dense(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = cnn
    with torch.no_grad():
        for layer in (model.conv2, model.fc1):
            w = layer.weight
            w[w.abs() < w.abs().flatten().kthvalue(int(0.8 * w.numel())).values] = 0.0
    folder = prunekit.save(model, tmp_path / "s", source=SOURCE, sparse=True)
    dense = prunekit.save(model, tmp_path / "dense", source=SOURCE)
    sparse_bytes = (folder / "model.safetensors").stat().st_size
    assert sparse_bytes < 0.5 * (dense / "model.safetensors").stat().st_size
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert "fc1.weight::mask" in set(handle.keys()) and "fc1.weight" not in set(handle.keys())
    storage = _manifest(folder)["transforms"][-1]
    assert storage["kind"] == "sparse" and storage["tensors"]["fc1.weight"]["layout"] == "bitmask"
    from prunekit.sparsity import sparse_sizes

    assert sparse_sizes(model).sparse == sparse_bytes
    assert_same(prunekit.load(folder), model, x)


def test_partitioned_round_trip_gives_the_stages(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = cnn
    part = partition(model, x, 2, repeats=1)
    prunekit.save(model, tmp_path / "st", source=SOURCE, transforms=[part])
    record = _manifest(tmp_path / "st")["transforms"][0]
    assert record["kind"] == "partition" and record["cuts"] == part.manifest["cuts"]
    loaded = prunekit.load(tmp_path / "st")
    assert isinstance(loaded, Stages) and len(loaded.stages) == 2
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    again = loaded.partition()
    assert torch.equal(again.run(x), part.run(x))


def test_recipe_checkpoint_is_a_saved_folder(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prunekit.recipes.checkpoint import load_state, save_model

    model, x = cnn
    small, plan = pruned(model, x)
    result = decompose(small, example_inputs=x, method="svd", rank=3, progress=False)
    architecture = {"model": "simple_cnn", "num_classes": 10}
    folder = save_model(result.model, architecture, tmp_path / "ck", plans=[plan.to_dict()],
                        factorised=result.layers)
    manifest = read_manifest(folder)
    assert manifest.source == SOURCE
    assert [t["kind"] for t in manifest.transforms] == ["prune", "factorise"]
    assert_same(prunekit.load(folder), result.model, x)
    resumed, layers = load_state(folder)
    assert [layer.name for layer in layers] == [r.name for r in result.layers]
    assert_same(resumed, result.model, x)
    save_model(small, architecture, folder, plans=[plan.to_dict()])  # a later checkpoint replaces it
    assert_same(prunekit.load(folder), small, x)


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(self.emb(ids))

    small = Tied()
    small.emb.weight = nn.Parameter(small.emb.weight[:, :5].detach().clone())
    small.out.weight = small.emb.weight
    small.emb.embedding_dim, small.out.in_features = 5, 5
    prunekit.save(small, tmp_path / "t", original=Tied())
    loaded = prunekit.load(tmp_path / "t", model=Tied())
    assert loaded.out.weight is loaded.emb.weight
    assert_same(loaded, small, torch.tensor([[1, 2, 3]]))


class _TiedLM(nn.Module):
    """An embedding tied to the output layer at construction, as GPT-2 ties them."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(20, 8), nn.Linear(8, 20, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(ids)))


class _TwoLayers(nn.Module):
    """Two layers of one shape, untied at construction."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _untied() -> nn.Module:
    """A _TiedLM whose output layer was untied and trained apart from the embedding."""
    torch.manual_seed(0)
    model = _TiedLM().eval()
    model.out.weight = nn.Parameter(model.emb.weight.detach() * 3)
    return model


def test_a_tie_broken_after_construction_comes_back_untied(tmp_path: Path) -> None:
    model, ids = _untied(), torch.tensor([[1, 2, 3, 4]])
    folder = prunekit.save(model, tmp_path / "u", original=_TiedLM())
    loaded = prunekit.load(folder, model=_TiedLM())
    assert loaded.out.weight is not loaded.emb.weight
    assert_same(loaded, model, ids)
    assert _manifest(folder)["layout"]["tied"] == []


def test_a_folder_without_a_tie_record_loads_a_broken_tie_untied(tmp_path: Path) -> None:
    model, ids = _untied(), torch.tensor([[1, 2, 3, 4]])
    folder = prunekit.save(model, tmp_path / "u", original=_TiedLM())
    record = _manifest(folder)
    record["layout"].pop("tied", None)  # NOTE: as a folder written before ties were recorded
    (folder / "manifest.json").write_text(json.dumps(record))
    assert_same(prunekit.load(folder, model=_TiedLM()), model, ids)


def test_a_tie_made_after_construction_comes_back_tied(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _TwoLayers().eval(), torch.randn(3, 8)
    model.b.weight = model.a.weight
    folder = prunekit.save(model, tmp_path / "t", original=_TwoLayers())
    loaded = prunekit.load(folder, model=_TwoLayers())
    assert loaded.b.weight is loaded.a.weight and loaded.b.bias is not loaded.a.bias
    assert_same(loaded, model, x)
    assert _manifest(folder)["layout"]["tied"] == [["a.weight", "b.weight"]]


def test_a_tied_tensor_is_stored_once_and_sized_as_stored(tmp_path: Path) -> None:
    from safetensors import safe_open

    from prunekit.measure import size_on_disk

    torch.manual_seed(0)
    model, ids = _TiedLM().eval(), torch.tensor([[1, 2, 3, 4]])
    folder = prunekit.save(model, tmp_path / "t", original=_TiedLM())
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["emb.weight"]  # NOTE: out.weight is the same tensor
    # NOTE: the saved file's header holds a little metadata more; the tensor (640 bytes) counts once
    assert abs(size_on_disk(model) - (folder / "model.safetensors").stat().st_size) <= 32
    loaded = prunekit.load(folder, model=_TiedLM())
    assert loaded.out.weight is loaded.emb.weight
    assert_same(loaded, model, ids)
    sparse = prunekit.save(model, tmp_path / "s", original=_TiedLM(), sparse=True)
    assert_same(prunekit.load(sparse, model=_TiedLM()), model, ids)


def test_a_source_file_is_recorded_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, act in (("a", "ReLU"), ("b", "Tanh")):  # NOTE: same shapes, other outputs
        (tmp_path / name).mkdir()
        (tmp_path / name / "my_model.py").write_text(
            f"from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(4, 8), nn.{act}(), "
            f"nn.Linear(8, 2))\n")
    monkeypatch.chdir(tmp_path / "a")
    torch.manual_seed(0)
    model, x = prunekit.models.resolve("my_model.py:build").eval(), torch.randn(3, 4)
    folder = prunekit.save(model, tmp_path / "saved", source="my_model.py:build")
    monkeypatch.chdir(tmp_path / "b")
    assert_same(prunekit.load(folder), model, x)
    assert _manifest(folder)["source"]["spec"] == f"{tmp_path / 'a' / 'my_model.py'}:build"


class _Sized(nn.Module):
    """A layer whose forward reads plain attributes: a list of sizes and an unset limit."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.sizes, self.limit = nn.Linear(4, 4), [2, 2], None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x) * (len(self.sizes) + getattr(self, "seen", 0))
        return y.clamp(max=self.limit) if self.limit is not None else y


def test_plain_attributes_changed_in_kind_or_set_later_come_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _Sized().eval(), torch.randn(2, 4)
    model.sizes, model.limit, model.seen = (2, 2, 1), 1, 3  # NOTE: a tuple for a list, an int for None, a new one
    folder = prunekit.save(model, tmp_path / "s", original=_Sized())
    loaded = prunekit.load(folder, model=_Sized())
    assert (loaded.sizes, loaded.limit, loaded.seen) == ((2, 2, 1), 1, 3)
    assert_same(loaded, model, x)


class _Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_factorised_then_pruned_layers_keep_their_widths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _Wide().eval(), torch.randn(4, 6)
    result = decompose(model, example_inputs=x, method="svd", rank=4, options={"force": True}, progress=False)
    assert [r.name for r in result.layers] == ["a", "b", "c"]
    small, plan = pruned(result.model, x)
    assert small.b[0].in_features < 16  # NOTE: pruned after factorising, inside the shells
    prunekit.save(small, tmp_path / "fp", original=model, transforms=[result, plan])
    loaded = prunekit.load(tmp_path / "fp", model=_Wide())
    for name, module in small.named_modules():
        if isinstance(module, nn.Linear):
            got = loaded.get_submodule(name)
            assert (got.in_features, got.out_features) == (module.in_features, module.out_features), name
            assert tuple(got.weight.shape) == (got.out_features, got.in_features), name
    assert_same(loaded, small, x)


def test_a_loaded_result_pruned_again_saves_with_the_earlier_manifest(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = cnn
    small, plan = pruned(model, x)
    first = prunekit.save(small, tmp_path / "one", source=SOURCE, transforms=[plan], sparse=True)
    earlier = read_manifest(first)
    smaller, again = pruned(prunekit.load(first), x)
    folder = prunekit.save(smaller, tmp_path / "two", source=earlier.source, transforms=[*earlier.transforms, again])
    assert [t["kind"] for t in _manifest(folder)["transforms"]] == ["prune", "prune"]  # stored dense now
    assert_same(prunekit.load(folder), smaller, x)


def test_torchvision_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = create("mobilenet_v2", num_classes=10).eval(), example((1, 3, 32, 32))
    small, plan = pruned(model, x)
    prunekit.save(small, tmp_path / "mb", source={"spec": "mobilenet_v2", "kwargs": {"num_classes": 10}},
                  transforms=[plan])
    assert_same(prunekit.load(tmp_path / "mb"), small, x)
