"""``prunekit.save``: any result as a folder of ``model.safetensors`` + ``manifest.json``.

The folder is written beside its final place (``.prunekit-tmp-<pid>-...``, manifest last) and
renamed in, so a failed save leaves what was there before behind, and a killed one leaves only a
temporary that the next save into the same place removes; a folder without its manifest never
loads. A Hugging Face model's folder is also a
``save_pretrained`` folder (``config.json`` + ``model.safetensors``). The working directory (or a
folder above it) is never a target, and state safetensors cannot store (quantised tensors) is
refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.io import sparse as sparse_storage
from prunekit.io.files import as_user_file, checksums, clean_stale, fresh_name, require_json, save_json
from prunekit.io.layout import layout_record, sliced_buffers, state_once
from prunekit.io.manifest import BUFFERS_FILE, MANIFEST_FILE, WEIGHTS_FILE, Manifest, read_manifest
from prunekit.io.transforms import (
    check_factorised,
    factorised_attributes,
    factorised_names,
    note_source_shapes,
    record,
)

__all__ = ["save", "record_metrics", "source_record"]


def source_record(source: None | str | Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"spec": ..., "kwargs": {...}}`` from a spec string or such a mapping (``None`` stays).

    A path in the spec (``my_model.py:build``, ``hf:folder``, a saved folder) and a ``weights`` path
    are made absolute, as :func:`prunekit.models.source_of` makes them: a relative one would name
    another file when the folder is loaded from another working directory.
    """
    if source is None:
        return None
    if isinstance(source, str):
        return {"spec": _absolute_spec(source), "kwargs": {}}
    if isinstance(source, Mapping) and isinstance(source.get("spec"), str):
        kwargs = {k: _absolute_option(k, v) for k, v in dict(source.get("kwargs") or {}).items()}
        out = {"spec": _absolute_spec(source["spec"]), "kwargs": kwargs}
        require_json(out, f"save: source {out!r}", "Pass plain values as kwargs.")
        return out
    raise ConfigError(f"save: source must be a spec string or {{'spec': ..., 'kwargs': {{...}}}}; got "
                      f"{source!r}. Pass e.g. source={{'spec': 'resnet20', 'kwargs': {{'num_classes': 10}}}}.")


# NOTE: the forms of a model spec that name a path, as prunekit.models.parse_spec reads them (the
# spec is resolved there; io only makes the path in it absolute): ``hf:PATH``, ``file.py:factory``,
# and a path (a saved folder). ``hf:.`` is the folder's own config.json (a Hugging Face result).
_HF, _OWN_CONFIG = "hf:", "hf:."
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith(("~", "."))


def _absolute_spec(spec: str) -> str:
    """``spec`` with the path it names made absolute (a zoo name, ``timm:`` or a module stays)."""
    text = spec.strip()
    if text == _OWN_CONFIG or text.startswith("timm:"):
        return spec
    if text.startswith(_HF):
        rest = text[len(_HF):].strip()
        return f"{_HF}{_absolute(rest)}" if rest else spec
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return f"{_absolute(head)}:{tail}"
    return _absolute(text) if _looks_like_path(text) else spec


def _absolute_option(key: str, value: Any) -> Any:
    """A ``weights`` path or an ``os.PathLike`` option made absolute (other options as given)."""
    if isinstance(value, os.PathLike) or (key == "weights" and isinstance(value, str) and (
            _looks_like_path(value) or value.lower().endswith(_WEIGHT_SUFFIXES) or Path(value).exists())):
        return _absolute(os.fspath(value))
    return value


def _check_target(target: Path, overwrite: bool) -> None:
    here = Path.cwd().resolve()
    if target.resolve() in (here, *here.parents):
        raise ConfigError(f"save: '{target}' is the current working directory or a folder above it, which a "
                          f"save would replace whole. Pass a new folder (e.g. 'model'); nothing was written.")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"save: '{target}' is a file, not a folder. Pick a folder path; nothing was written.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ConfigError(f"save: '{target}' exists and is not empty. Pass overwrite=True to replace it, "
                          f"or pick a new folder; nothing was written.")


def _check_plain(model: nn.Module) -> None:
    """Refuse prunekit's own parametrizations (sparsity masks, QAT fake-quant): they are not weights yet.

    A model's own parametrization (``weight_norm``, as in wav2vec2's positional conv) is part of its
    architecture: its tensors are saved as they are, and the rebuilt model has the same parametrization.
    """
    from torch.nn.utils import parametrize

    named = [n for n, m in model.named_modules() if parametrize.is_parametrized(m) and any(
        type(p).__module__.startswith("prunekit.") for ps in m.parametrizations.values() for p in ps)]
    if named:
        raise ConfigError(f"save: module '{named[0]}' still carries parametrizations (sparsity masks). "
                          f"Finalize the sparsifier first (sparsifier.finalize()), then save.")


def _check_storable(model: nn.Module) -> None:
    """Refuse state safetensors cannot store (a quantised module's tensors and packed parameters) before
    anything is written, naming the entry."""
    from safetensors import torch as safetensors_torch

    table = getattr(safetensors_torch, "_TYPES", None)  # NOTE: its own dtype table, where it has one
    storable = frozenset(table.values()) if isinstance(table, dict) else None
    entries = [*model.state_dict().items(), *model.named_buffers(remove_duplicate=False)]
    for name, value in entries:
        quantised = not isinstance(value, torch.Tensor) or value.is_quantized
        if quantised or (storable is not None and value.dtype not in storable):
            what = f"a {type(value).__name__}, not a tensor" if not isinstance(value, torch.Tensor) else value.dtype
            fix = ("Save the float model with the quantize result's record in transforms= (loading re-applies "
                   "int8), or export the quantised model to ONNX" if quantised
                   else "Convert it to a dtype safetensors stores (model.float()) before saving")
            raise ConfigError(f"save: '{name}' is {what}, which safetensors cannot store. {fix}; nothing was "
                              f"written.")


def _metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in dict(metrics or {}).items()}
    try:
        json.loads(json.dumps(out))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save: metrics are not JSON data ({exc}). Pass numbers, strings, lists, dicts "
                          f"or objects with to_dict() (a Profile).") from exc
    return out


def _reference(model: nn.Module, source: dict[str, Any] | None, original: nn.Module | None) -> nn.Module:
    """The architecture the layout is taken against: ``original``, else the built source."""
    if original is not None:
        return original
    if source is None:
        raise ConfigError("save: pass source= (a spec such as 'resnet20', or {'spec': ..., 'kwargs': "
                          "{...}}) or original= (the un-pruned model), so the layout can be recorded.")
    from prunekit.io.load import _build_source

    return _build_source(source)


def _weights(model: nn.Module, sparse: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    # NOTE: a tied tensor once (the layout records the ties, and load makes them again)
    state = {k: v.to("cpu").contiguous().clone() for k, v in state_once(model).items()}
    if not sparse:
        return state, None
    entries, tensors = sparse_storage.encode(state)
    kept = sum(t.get("nonzero", 0) for t in tensors.values() if t["layout"] != "dense")
    stored = sum(1 for t in tensors.values() if t["layout"] != "dense")
    return entries, {"kind": "sparse", "encoding": sparse_storage.ENCODING, "sparse_tensors": stored,
                     "nonzero": kept, "tensors": tensors}


def save(model: nn.Module, folder: str | os.PathLike[str], *, source: None | str | Mapping[str, Any] = None,
         original: nn.Module | None = None, transforms: Iterable[Any] = (),
         metrics: Mapping[str, Any] | None = None, sparse: bool = False, overwrite: bool = False,
         data: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to ``folder`` (``model.safetensors`` + ``manifest.json``); returns the folder.

    Args:
        source: the dense model's spec, ``"resnet20"`` or ``{"spec": ..., "kwargs": {...}}``;
            :func:`prunekit.load` rebuilds it. Not needed for Hugging Face models (their config is).
        original: an un-pruned instance, for models no spec builds (then load takes ``model=``).
        transforms: in the order applied: a Plan, a DecomposeResult, a Partition, or records
            ``{"kind": "prune" | "depth" | "factorise" | "partition", ...}`` (an earlier
            manifest's ``transforms`` can be passed on; its ``sparse`` record is replaced).
        metrics: measured numbers to keep beside the model (Profiles become dicts).
        sparse: store the weights as bitmask + non-zero values (loaded dense).
        overwrite: replace a non-empty ``folder``; otherwise such a folder is refused.
        data: what the model was made for (``name``, ``input_shape``, ``class_names``): images of
            another size are resized to it, and data naming its classes in another order is relabelled.
    """
    from prunekit import hf

    target = Path(folder)
    _check_target(target, overwrite)
    records = _records(model, transforms)
    _check_storable(model)
    is_hf = hf.is_hf(model)
    if is_hf and sparse:
        raise ConfigError("save: sparse storage is not a save_pretrained folder; save a Hugging Face "
                          "model with sparse=False (its zeros compress well with any archiver).")
    source_rec = source_record(source)
    reference = hf.reference(model) if is_hf else _reference(model, source_rec, original)
    settled = hf.settle_config(model, reference) if is_hf else []
    try:
        if settled:  # NOTE: the config now builds what the model became
            reference = hf.reference(model)
        return _save(model, target, records, source_rec, reference, metrics, is_hf, sparse, data,
                     every_buffer=original is not None and not is_hf)
    except BaseException:
        hf.restore_config(settled)
        raise


def _save(model: nn.Module, target: Path, records: list[dict[str, Any]], source_rec: dict[str, Any] | None,
          reference: nn.Module, metrics: Mapping[str, Any] | None, is_hf: bool, sparse: bool,
          data: Mapping[str, Any] | None = None, every_buffer: bool = False) -> Path:
    # NOTE: a model saved against original= is loaded into the model= given then, whose non-persistent
    # buffers hold what its constructor makes, not what this model computes with: all of them are kept.
    layout = layout_record(model, reference, opaque=factorised_names(records), every_buffer=every_buffer)
    inside = factorised_attributes(model, reference, records)
    if inside:
        layout["factorised_attributes"] = inside
    note_source_shapes(records, reference)
    if layout["identity"] and not any(r["kind"] == "depth" for r in records):
        records.append({"kind": "depth", "blocks": list(layout["identity"])})
    entries, storage = _weights(model, sparse) if not is_hf else ({}, None)
    if storage is not None:
        records.append(storage)
    if is_hf and source_rec is None:
        source_rec = {"spec": "hf:.", "kwargs": {}}  # NOTE: the config.json in the folder itself.
    manifest = _manifest(source_rec, records, layout, _metrics(metrics),
                         {"class": type(model).__name__} if is_hf else None, data)
    buffers = sliced_buffers(model, layout)
    _write_folder(target, lambda tmp: _fill(tmp, model if is_hf else None, entries, buffers, manifest))
    return target


def record_metrics(folder: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Keep ``metrics`` (replacing the earlier ones) in the manifest of the saved ``folder``: for
    numbers measured after it was written. Only ``manifest.json`` is rewritten, atomically."""
    path = Path(folder)
    manifest = dataclasses.replace(read_manifest(path), metrics=_metrics(metrics))
    save_json(manifest.to_dict(), path / MANIFEST_FILE)
    return path


def _records(model: nn.Module, transforms: Iterable[Any]) -> list[dict[str, Any]]:
    """The transforms' records, checked against the model being saved."""
    from prunekit.io.stages import Stages

    if isinstance(model, Stages):
        raise ConfigError("save: a loaded Stages module holds only the cut stages. Save the model they "
                          "were cut from, with transforms=[stages.partition()].")
    _check_plain(model)
    # NOTE: how weights are stored is this save's choice (``sparse``), not an earlier one's record.
    records = [r for r in (record(t) for t in transforms) if r["kind"] != "sparse"]
    check_factorised(model, records)
    return records


def _manifest(source: dict[str, Any] | None, records: list[dict[str, Any]], layout: dict[str, Any],
              metrics: dict[str, Any], hf_record: dict[str, Any] | None,
              data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from prunekit.version import __version__

    manifest = Manifest(source=source, transforms=tuple(records), layout=layout, metrics=metrics,
                        hf=hf_record, data=dict(data) if data is not None else None,
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        prunekit=__version__).to_dict()
    json.dumps(manifest)  # NOTE: fail before writing anything.
    return manifest


def _fill(tmp: Path, hf_model: nn.Module | None, entries: dict[str, torch.Tensor],
          buffers: dict[str, torch.Tensor], manifest: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    if hf_model is not None:
        from prunekit import hf

        hf.write(hf_model, tmp)
    else:
        save_file(entries, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    if buffers:
        save_file(buffers, str(tmp / BUFFERS_FILE), metadata={"format": "pt"})
    # NOTE: every tensor file (a Hugging Face model's shards too), verified on load.
    save_json({**manifest, "checksums": checksums(tmp)}, tmp / MANIFEST_FILE)


def _write_folder(target: Path, fill: Any) -> None:
    """Fill a new folder beside ``target``, then rename it in (an existing one moved aside first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)
    tmp = fresh_name(target, ".tmp")
    os.mkdir(tmp, 0o777)  # NOTE: the user's umask applies, unlike tempfile.mkdtemp's 0700.
    try:
        fill(tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                as_user_file(path)
        if not target.exists():
            os.replace(tmp, target)
            return
        old = fresh_name(target, ".old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
