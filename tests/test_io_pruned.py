"""Pruned models survive save_pruned -> load_pruned exactly, without pickle, and fail loudly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, DataError, PrunekitError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.io import load_json, load_pruned, save_pruned
from prunekit.models import create
from prunekit.structured import Plan, allocate, apply
from prunekit.structured.depth import remove_blocks

from _models import CONTRACT_PATTERNS as PATTERNS
from _models import Residual, example


def _pruned(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> tuple[nn.Module, Plan]:
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), ratio)
    return apply(model, graph, plan, verify_result=False).eval(), plan


def _assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture(scope="module")
def resnet20() -> tuple[nn.Module, nn.Module, Plan, torch.Tensor]:
    torch.manual_seed(0)
    model = create("resnet20").eval()
    x = example((2, 1, 28, 28))
    pruned, plan = _pruned(model, x)
    return model, pruned, plan, x


def test_resnet20_round_trip_is_exact(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, x = resnet20
    folder = save_pruned(pruned, plan, tmp_path / "r20", architecture={"model": "resnet20"})
    assert sorted(p.name for p in folder.iterdir()) == ["plan.json", "weights.safetensors"]
    _assert_same(load_pruned(folder), pruned, x)
    record = load_json(folder / "plan.json")
    assert Plan.from_dict(record["plan"]) == plan
    assert record["layout"]["attributes"]["conv1"] == {"out_channels": pruned.conv1.out_channels}
    assert record["layout"]["tensors"]["fc.weight"]["shape"] == list(pruned.fc.weight.shape)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_pattern_round_trip_with_user_model(pattern: str, tmp_path: Path) -> None:
    factory, shape = PATTERNS[pattern]
    torch.manual_seed(1)
    original, x = factory().eval(), example(shape)
    pruned, plan = _pruned(original, x)
    save_pruned(pruned, plan, tmp_path / pattern, architecture={"class": factory.__name__}, original=original)
    before = {k: v.clone() for k, v in original.state_dict().items()}
    loaded = load_pruned(tmp_path / pattern, model=factory())
    _assert_same(loaded, pruned, x)
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())


def test_depth_pruned_round_trip_records_identity(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _, _, x = resnet20
    shallow = remove_blocks(model, ["layer1.1", "layer3.2"])
    save_pruned(shallow, None, tmp_path / "d", architecture={"model": "resnet20"})
    assert load_json(tmp_path / "d" / "plan.json")["layout"]["identity"] == ["layer1.1", "layer3.2"]
    loaded = load_pruned(tmp_path / "d")
    assert isinstance(loaded.layer1[1], nn.Identity)
    _assert_same(loaded, shallow, x)


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(self.emb(ids))

    pruned = Tied()
    pruned.emb.weight = nn.Parameter(pruned.emb.weight[:, :5].detach().clone())
    pruned.out.weight = pruned.emb.weight
    pruned.emb.embedding_dim, pruned.out.in_features = 5, 5
    save_pruned(pruned, None, tmp_path / "t", architecture={}, original=Tied())
    loaded = load_pruned(tmp_path / "t", model=Tied())
    assert loaded.out.weight is loaded.emb.weight
    _assert_same(loaded, pruned, torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("name", ["mobilenet_v2", pytest.param("densenet121", marks=pytest.mark.slow)])
def test_torchvision_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = create(name).eval(), example((1, 3, 32, 32))
    pruned, plan = _pruned(model, x)
    save_pruned(pruned, plan, tmp_path / name, architecture={"model": name, "num_classes": 10})
    _assert_same(load_pruned(tmp_path / name), pruned, x)


def test_loading_never_unpickles(resnet20, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, x = resnet20
    save_pruned(pruned, plan, tmp_path / "p", architecture={"model": "resnet20"})

    def forbidden(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("pickle used while loading")

    for target, attr in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(target, attr, forbidden)
    _assert_same(load_pruned(tmp_path / "p"), pruned, x)


def test_corrupt_weights_name_the_file(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, _ = resnet20
    folder = save_pruned(pruned, plan, tmp_path / "c", architecture={"model": "resnet20"})
    (folder / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="weights.safetensors"):
        load_pruned(folder)


def test_mismatched_shape_names_file_and_tensor(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, _ = resnet20
    folder = save_pruned(pruned, plan, tmp_path / "m", architecture={"model": "resnet20"})
    record = json.loads((folder / "plan.json").read_text())
    record["layout"]["tensors"]["fc.weight"]["shape"] = [10, 3]
    (folder / "plan.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"weights\.safetensors.*'fc\.weight'"):
        load_pruned(folder)


def test_wrong_architecture_names_the_module(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, _ = resnet20
    folder = save_pruned(pruned, plan, tmp_path / "w", architecture={"model": "resnet20"})
    with pytest.raises(DataError, match=r"plan\.json.*'(conv1|bn1|layer1.0.conv1)'"):
        load_pruned(folder, model=Residual())


def test_not_a_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"keep": {}}')
    with pytest.raises(DataError, match="plan.json"):
        load_pruned(tmp_path)
    (tmp_path / "plan.json").write_text('{"format": "prunekit.pruned", "vers')
    with pytest.raises(DataError, match="plan.json.*not valid JSON"):
        load_pruned(tmp_path)
    with pytest.raises(PrunekitError, match="does not exist"):
        load_pruned(tmp_path / "missing")


def test_failed_save_keeps_the_good_one(resnet20, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, x = resnet20
    folder = save_pruned(pruned, plan, tmp_path / "a", architecture={"model": "resnet20"})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr("prunekit.io.save_json", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pruned(create("resnet20"), None, folder, architecture={"model": "resnet20"})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary folders left behind
    monkeypatch.undo()
    save_pruned(pruned, plan, folder, architecture={"model": "resnet20"})  # overwriting a save is fine
    _assert_same(load_pruned(folder), pruned, x)


def test_refuses_to_replace_a_foreign_folder(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, pruned, plan, _ = resnet20
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an earlier save_pruned folder"):
        save_pruned(pruned, plan, tmp_path, architecture={"model": "resnet20"})
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_changed_module_types_are_refused(resnet20, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _, _, _ = resnet20
    changed = remove_blocks(model, [])
    changed.fc = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="'fc' is a Sequential"):
        save_pruned(changed, None, tmp_path / "x", architecture={"model": "resnet20"})
    assert not (tmp_path / "x").exists()
