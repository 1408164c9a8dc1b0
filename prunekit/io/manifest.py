"""``manifest.json``: the one record of a saved result, and the check of its format version.

``{"format": "prunekit", "version": 1, "source": {"spec": ..., "kwargs": {...}} | null,
"transforms": [{"kind": ...}, ...], "layout": {...}, "metrics": {...}, "hf": {"class": ...} | null,
"data": {"name": ..., "input_shape": [...], "class_names": [...], "mean": [...], "std": [...],
"pixel_scale": ..., "split_seed": ...} | null, "created": ..., "prunekit": ...,
"checksums": {"model.safetensors": "sha256:..."}}``
(``checksums``: every tensor file's sha256, checked on load; folders written before it have none.)
(``data``, what the model was made for and how its inputs were standardised, is optional: folders
written before it read as null, and ``mean``/``std``/``pixel_scale`` are absent before this version).
Transforms are in the order they were applied; kinds are
``prune`` (a Plan), ``depth`` (blocks replaced by nn.Identity), ``factorise`` (layers and ranks),
``sparse`` (how the weights are stored), ``partition`` (the cut points of the stages) and
``quantize`` (backend onnxruntime: an int8 ONNX file made from these weights, method, nodes kept
fp32, which loading ignores; backend torch: how torchao made the int8 module, which loading re-applies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Any

from prunekit.errors import DataError, DataNotFoundError
from prunekit.io.files import CHECKSUM, load_json
from prunekit.io.layout import LAYOUT_KEYS

__all__ = ["Manifest", "read_manifest", "FORMAT", "VERSION", "MANIFEST_FILE", "WEIGHTS_FILE", "BUFFERS_FILE",
           "KINDS"]

FORMAT, VERSION = "prunekit", 1
MANIFEST_FILE, WEIGHTS_FILE = "manifest.json", "model.safetensors"
# NOTE: sliced non-persistent buffers (layout["buffers"]) are kept in a file of their own, so that
# model.safetensors stays the state_dict (and a Hugging Face folder stays a save_pretrained folder).
BUFFERS_FILE = "buffers.safetensors"
KINDS = ("prune", "depth", "factorise", "sparse", "partition", "quantize")

# NOTE: files that name the formats before version 1, and what to do with each.
_OLD = {"plan.json": "an old plan.json folder (save_pruned)",
        "decomposition.json": "an old decomposition.json folder (save_decomposed)",
        "base_layout.json": "an old recipe checkpoint (base_layout.json)",
        "prunekit_layout.json": "an old Hugging Face layout folder (prunekit_layout.json)",
        "sparse.safetensors": "an old sparse.safetensors folder (save_sparse)"}


@dataclass(frozen=True)
class Manifest:
    """What a saved folder holds: the source model, the transforms applied, the layout, metrics."""

    source: dict[str, Any] | None
    transforms: tuple[dict[str, Any], ...]
    layout: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    hf: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    created: str = ""
    prunekit: str = ""
    checksums: dict[str, str] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The transforms of one kind, in order."""
        return [t for t in self.transforms if t["kind"] == kind]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``manifest.json``."""
        return {"format": FORMAT, "version": VERSION, "source": self.source,
                "transforms": list(self.transforms), "layout": self.layout, "metrics": self.metrics,
                "hf": self.hf, "data": self.data, "created": self.created, "prunekit": self.prunekit,
                "checksums": self.checksums}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Check and read a manifest; a foreign file or another version is a one-line DataError."""
        if isinstance(data, dict) and data.get("format") == "prunekit.partition":
            raise DataError(f"'{where}' lists the stage files Partition.save wrote; load them with "
                            f"prunekit.decompose.load_partition, or save the model with "
                            f"prunekit.save(model, folder, transforms=[partition]).")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"'{where}' is not a prunekit manifest (format {got!r}, expected {FORMAT!r}). "
                            f"Save the model with prunekit.save.")
        if data.get("version") != VERSION:
            raise DataError(f"'{where}' has format version {data.get('version')!r}; this prunekit reads "
                            f"version {VERSION}. Load it with the prunekit that wrote it, or re-save it.")
        layout, transforms = data.get("layout"), data.get("transforms")
        if not isinstance(layout, dict) or not set(LAYOUT_KEYS) - {"none"} <= set(layout):
            raise DataError(f"'{where}' has no complete 'layout' ({', '.join(LAYOUT_KEYS)}). The file is "
                            f"damaged; save the model again with prunekit.save.")
        _check_layout(layout, where)
        checksums = data.get("checksums") or {}
        if not isinstance(checksums, dict) or not all(
                _plain_name(k) and isinstance(v, str) and CHECKSUM.fullmatch(v) for k, v in checksums.items()):
            raise DataError(f"'{where}': 'checksums' must map file names to 'sha256:<hex>'; got {_short(checksums)}. "
                            f"The file is damaged; save the model again.")
        if not isinstance(transforms, list) or not all(
                isinstance(t, dict) and t.get("kind") in KINDS for t in transforms):
            raise DataError(f"'{where}' has a 'transforms' list with an unknown kind (known: "
                            f"{', '.join(KINDS)}). The file is damaged; save the model again.")
        made_for = data.get("data")
        if made_for is not None and not isinstance(made_for, dict):
            raise DataError(f"'{where}': 'data' must be null or an object (name, input_shape, class_names); got "
                            f"{made_for!r}. Fix the file or save the model again.")
        source = data.get("source")
        if source is not None and not (isinstance(source, dict) and "spec" in source):
            raise DataError(f"'{where}': 'source' must be null or {{\"spec\": ..., \"kwargs\": {{...}}}}; got "
                            f"{source!r}. Fix the file or save the model again.")
        return cls(source=source, transforms=tuple(transforms), layout=layout,
                   metrics=dict(data.get("metrics") or {}), hf=data.get("hf"), data=made_for,
                   created=str(data.get("created", "")), prunekit=str(data.get("prunekit", "")),
                   checksums=dict(checksums))


_NAMES = "a list of module names"
_TENSORS = "tensor name -> {\"shape\": [...], \"dtype\": ...}"
_ATTRIBUTES = "module -> {attribute: value}"
# NOTE: what each layout key must hold (LAYOUT_KEYS always, but ``none`` in folders written before it;
# the others only where a result has them), checked before anything is built from it.
_LAYOUT_SHAPES = {"tensors": _TENSORS, "attributes": _ATTRIBUTES, "identity": _NAMES, "none": _NAMES,
                  "replaced": "module -> class path", "buffers": _TENSORS,
                  "tied": "a list of groups of two or more tensor names", "factorised_attributes": _ATTRIBUTES}


def _check_layout(layout: dict[str, Any], where: str) -> None:
    """Each layout key holds what :func:`prunekit.io.layout.layout_record` writes (a one-line DataError)."""
    for key, expected in _LAYOUT_SHAPES.items():
        if key in layout and not _holds(key, layout[key]):
            raise DataError(f"'{where}': layout '{key}' must be {expected}; got {_short(layout[key])}. The file "
                            f"is damaged; save the model again.")


def _holds(key: str, value: Any) -> bool:
    def names(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(n, str) and n for n in v)

    def tensor(v: Any) -> bool:
        return (isinstance(v, dict) and isinstance(v.get("dtype"), str) and isinstance(v.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v["shape"]))

    if key in ("identity", "none"):
        return names(value)
    if key == "tied":
        return isinstance(value, list) and all(names(g) and len(g) > 1 for g in value)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return False
    if key in ("tensors", "buffers"):
        return all(tensor(v) for v in value.values())
    if key == "replaced":
        return all(k and isinstance(v, str) for k, v in value.items())
    return all(isinstance(v, dict) and all(isinstance(a, str) and a for a in v) for v in value.values())


def _plain_name(name: Any) -> bool:
    """A file name inside the folder (no path, not hidden)."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


MODEL_DIR = "model"  # where every command writes its saved model: OUT/model/


def model_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder``, or ``folder/model`` when ``folder`` is a command's output folder (no manifest of
    its own, the saved model under ``model/``): the folder a command wrote stands for its model."""
    path = Path(folder)
    if not (path / MANIFEST_FILE).is_file() and (path / MODEL_DIR / MANIFEST_FILE).is_file():
        return path / MODEL_DIR
    return path


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a saved folder; a folder without one gets an error naming what it is."""
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise DataNotFoundError(f"'{folder}' has no {MANIFEST_FILE}: {_what(folder)}.")
    return Manifest.from_dict(load_json(file), str(file))


def _what(folder: Path) -> str:
    if not folder.exists():
        return "no such folder. Check the path"
    if not folder.is_dir():
        return "it is a file, not a folder prunekit.save wrote. Pass the folder"
    for name, what in _OLD.items():
        if (folder / name).is_file():
            return f"{what}; re-save it with prunekit.save from the prunekit version that wrote it"
    if (folder / "config.json").is_file():
        return ("a Hugging Face folder prunekit did not write; load it with transformers' "
                "from_pretrained, or name it as the spec 'hf:PATH'")
    saved = sorted(p.name for p in folder.iterdir() if (p / MANIFEST_FILE).is_file())
    if saved:
        return f"a results folder; the saved model is in its subfolder {', '.join(saved)}"
    return "not a folder prunekit.save wrote. Pass the folder that holds manifest.json"

