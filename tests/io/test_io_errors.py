"""prunekit.save / prunekit.load refuse bad input in one line, never unpickle, and never leave a
half-written or lost folder behind."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import sys
import warnings
from pathlib import Path

import pytest
import torch
from _io_helpers import assert_same, pruned
from _models import Residual, example
from safetensors.torch import load_file, save_file
from torch import nn

import prunekit
from prunekit.errors import ConfigError, DataError, DataNotFoundError
from prunekit.models import create
from prunekit.sparsity import attach

SOURCE = {"spec": "simple_cnn", "kwargs": {}}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model, x = create("simple_cnn").eval(), example((2, 1, 28, 28))
    small, plan = pruned(model, x)
    return prunekit.save(small, tmp_path / "a", source=SOURCE, transforms=[plan]), small, x


def _edit(folder: Path, **changes: object) -> None:
    record = json.loads((folder / "manifest.json").read_text())
    record.update(changes)
    (folder / "manifest.json").write_text(json.dumps(record))


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_format_version_is_a_one_line_data_error(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    _edit(folder, version=2)
    with pytest.raises(DataError, match=r"manifest\.json' has format version 2; this prunekit reads version 1") as exc:
        prunekit.load(folder)
    _one_line(exc)


def test_foreign_or_damaged_manifest_is_refused(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    _edit(folder, format="prunekit.pruned")
    with pytest.raises(DataError, match="not a prunekit manifest.*'prunekit.pruned'"):
        prunekit.load(folder)
    _edit(folder, format="prunekit.partition")
    with pytest.raises(DataError, match="stage files Partition.save wrote; load them with"):
        prunekit.load(folder)
    _edit(folder, format="prunekit", transforms=[{"kind": "quantise"}])
    with pytest.raises(DataError, match="unknown kind"):
        prunekit.load(folder)
    (folder / "manifest.json").write_text('{"format": "prunekit", "vers')
    with pytest.raises(DataError, match="not valid JSON"):
        prunekit.load(folder)


def test_the_data_record_is_optional_and_checked(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``data`` (what the model was made for) came after version 1: a folder without it still loads."""
    folder, small, x = saved
    assert prunekit.io.read_manifest(folder).data is None
    made_for = {"name": "photos", "input_shape": [1, 28, 28], "class_names": ["Cat", "apple"]}
    again = prunekit.save(small, tmp_path / "b", source=SOURCE, transforms=[], data=made_for)
    assert prunekit.io.read_manifest(again).data == made_for
    record = json.loads((folder / "manifest.json").read_text())
    del record["data"]
    (folder / "manifest.json").write_text(json.dumps(record))
    assert_same(prunekit.load(folder), small, x)
    _edit(folder, data=[1, 28, 28])
    with pytest.raises(DataError, match=r"'data' must be null or an object \(name, input_shape, class_names\)"):
        prunekit.load(folder)


@pytest.mark.parametrize(("file", "said"), [("plan.json", "an old plan.json folder"),
                                            ("decomposition.json", "an old decomposition.json folder"),
                                            ("config.json", "a Hugging Face folder prunekit did not write")])
def test_folder_without_manifest_says_what_it_is(file: str, said: str, tmp_path: Path) -> None:
    (tmp_path / file).write_text("{}")
    with pytest.raises(DataNotFoundError, match=f"has no manifest.json: {said}") as exc:
        prunekit.load(tmp_path)
    _one_line(exc)


def test_results_folder_names_the_saved_subfolder(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(DataNotFoundError, match="a results folder; the saved model is in its subfolder a"):
        prunekit.load(tmp_path)
    with pytest.raises(DataNotFoundError, match="no such folder"):
        prunekit.load(tmp_path / "missing")


def test_refuses_a_non_empty_folder_unless_overwrite(saved) -> None:  # type: ignore[no-untyped-def]
    folder, small, x = saved
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty. Pass overwrite=True"):
        prunekit.save(create("simple_cnn"), folder, source=SOURCE)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert_same(prunekit.load(folder), small, x)
    dense = create("simple_cnn").eval()
    prunekit.save(dense, folder, source=SOURCE, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
    assert_same(prunekit.load(folder), dense, x)


def test_failed_save_keeps_the_previous_folder(saved, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    folder, small, x = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(sys.modules["prunekit.io.save"], "save_json", broken)
    with pytest.raises(OSError, match="disk full"):
        prunekit.save(create("simple_cnn"), folder, source=SOURCE, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == ["a"]  # no temporary left behind
    assert_same(prunekit.load(folder), small, x)


def test_files_get_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        folder = prunekit.save(create("simple_cnn"), tmp_path / "u", source=SOURCE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}


def test_no_pickle_on_save_or_load(saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, small, x = saved

    def forbidden(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("pickle used")

    for target, attr in [(torch, "load"), (torch, "save"), (pickle, "load"), (pickle, "loads"),
                         (pickle, "dump"), (pickle, "dumps"), (pickle, "Unpickler")]:
        monkeypatch.setattr(target, attr, forbidden)
    for name, sparse in [("dense", False), ("sparse", True)]:
        folder = prunekit.save(small, tmp_path / name, source=SOURCE, sparse=sparse)
        assert not [p for p in folder.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
        assert_same(prunekit.load(folder), small, x)


def test_corrupt_weights_name_the_file(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="model.safetensors' is not a readable safetensors file"):
        prunekit.load(folder)


def test_mismatched_layout_names_the_tensor(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    record = json.loads((folder / "manifest.json").read_text())
    record["layout"]["tensors"]["fc2.weight"]["shape"] = [10, 3]
    (folder / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"model\.safetensors.*'fc2\.weight'"):
        prunekit.load(folder)


def test_wrong_architecture_names_the_module(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    with pytest.raises(DataError, match=r"manifest\.json: module '(conv1|conv2|fc1)'"):
        prunekit.load(folder, model=Residual())


def test_save_needs_a_source_or_the_original(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass source= .* or original="):
        prunekit.save(Residual(), tmp_path / "x")
    prunekit.save(Residual(), tmp_path / "y", original=Residual())
    with pytest.raises(ConfigError, match="records no source model. Pass model="):
        prunekit.load(tmp_path / "y")
    assert not (tmp_path / "x").exists()


def test_bad_transforms_and_masked_models_are_refused(tmp_path: Path) -> None:
    model = create("simple_cnn")
    with pytest.raises(ConfigError, match="cannot record the transform int"):
        prunekit.save(model, tmp_path / "t", source=SOURCE, transforms=[3])
    with pytest.raises(ConfigError, match="'fc1' is recorded as factorised but the model has Linear"):
        prunekit.save(model, tmp_path / "t", source=SOURCE, transforms=[
            {"kind": "factorise", "layers": [{"name": "fc1", "kind": "svd", "ranks": [2], "shape": [64, 392]}]}])
    changed = create("simple_cnn")
    changed.fc2 = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="'fc2' is a Sequential"):
        prunekit.save(changed, tmp_path / "t", source=SOURCE)
    attach(model, {"conv2.weight": torch.ones_like(model.conv2.weight, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="'conv2' still carries parametrizations"):
        prunekit.save(model, tmp_path / "t", source=SOURCE)
    assert not (tmp_path / "t").exists()


def test_loaded_stages_are_not_saved_as_a_model(tmp_path: Path) -> None:
    from prunekit.decompose import partition

    model, x = create("simple_cnn").eval(), example((1, 1, 28, 28))
    folder = prunekit.save(model, tmp_path / "st", source=SOURCE, transforms=[partition(model, x, 2, repeats=1)])
    with pytest.raises(ConfigError, match="Save the model they were cut from, with transforms="):
        prunekit.save(prunekit.load(folder), tmp_path / "again")


def test_changed_weight_values_are_refused_by_their_checksum(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    file = folder / "model.safetensors"
    weights = load_file(str(file))
    weights["fc2.weight"] = weights["fc2.weight"] * 2  # NOTE: same keys, shapes and dtypes: only values differ
    save_file(weights, str(file), metadata={"format": "pt"})
    with pytest.raises(DataError, match=r"model\.safetensors' does not match the checksum recorded in .*manifest\.json'") as exc:
        prunekit.load(folder)
    _one_line(exc)
    record = json.loads((folder / "manifest.json").read_text())
    del record["checksums"]  # NOTE: a folder written before checksums still loads
    (folder / "manifest.json").write_text(json.dumps(record))
    assert torch.equal(prunekit.load(folder).fc2.weight, weights["fc2.weight"])


def test_the_checksums_are_those_of_the_tensor_files(saved) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert json.loads((folder / "manifest.json").read_text())["checksums"] == {"model.safetensors": f"sha256:{digest}"}


@pytest.mark.parametrize(("where", "value", "said"), [
    ("attributes", {"conv1": {"forward": 1}}, "attribute 'forward' of module 'conv1' is recorded, but that name is a "
                                              "method of the module, not a plain attribute"),
    ("attributes", {"conv1": {"weight": 1}}, "'weight' of module 'conv1' is recorded, but that name is a parameter"),
    ("attributes", {"conv1": {"__class__": "x"}}, "'__class__' of module 'conv1' is recorded, but that name is a "),
    ("attributes", {"conv1": {"out_channels": "8"}}, r"'out_channels' of module 'conv1' is recorded as '8' \(str\) but "
                                                     r"the module holds int values"),
    ("attributes", {"conv1": {"out_channels": {"eval": 1}}}, "is recorded as {'eval': 1}, which is not an encoded"),
    ("identity", [""], "layout 'identity' must be a list of module names; got \\[''\\]"),
    ("tensors", [], "layout 'tensors' must be tensor name -> "),
    ("tied", [["fc1.weight"]], "layout 'tied' must be a list of groups of two or more tensor names"),
    ("checksums", {"../../x": "sha256:00"}, "'checksums' must map file names to 'sha256:<hex>'"),
])
def test_a_tampered_layout_is_a_one_line_data_error(saved, where: str, value: object, said: str) -> None:  # type: ignore[no-untyped-def]
    folder, _, _ = saved
    record = json.loads((folder / "manifest.json").read_text())
    (record if where == "checksums" else record["layout"])[where] = value
    (folder / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=said) as exc:
        prunekit.load(folder)
    _one_line(exc)


def test_saving_into_the_working_directory_or_above_it_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "outer" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for folder, overwrite in ((".", False), (work, True), ("..", True)):
        with pytest.raises(ConfigError, match="is the current working directory or a folder above it") as exc:
            prunekit.save(Residual(), folder, original=Residual(), overwrite=overwrite)
        _one_line(exc)
    assert Path.cwd() == work and os.listdir(work) == [] and os.listdir(tmp_path / "outer") == ["work"]


def test_quantised_state_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NOTE: torch deprecates its eager quantisation
        model.register_buffer("q", torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8))
        dynamic = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(ConfigError, match=r"save: 'q' is torch.qint8, which safetensors cannot store\. .*ONNX") as exc:
        prunekit.save(model, tmp_path / "q", original=model)
    _one_line(exc)
    with pytest.raises(ConfigError, match=r"save: '0._packed_params.dtype' is a dtype, not a tensor"):
        prunekit.save(dynamic, tmp_path / "q", original=nn.Sequential(nn.Linear(4, 4)))
    assert not (tmp_path / "q").exists()
