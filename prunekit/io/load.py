"""``prunekit.load``: rebuild any folder :func:`prunekit.save` wrote, without unpickling anything.

The dense source is built from the manifest's spec (or copied from ``model=``; a Hugging Face
model from the folder's config), reshaped to the recorded layout (pruned modules in their prunekit
classes, recorded non-persistent buffers from ``buffers.safetensors``, tied and untied as saved),
its factorised layers replaced by their shells, and the weights (dense, or decoded from sparse
storage) loaded strictly, then checked against the manifest's checksums. A
partitioned result comes back as :class:`~prunekit.io.stages.Stages`; a ``quantize`` record of the
torch backend is re-applied to the fp32 weights (:func:`prunekit.quantize.torch_int8.restore`), so
the int8 module comes back. Every result is in eval mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._clone import clone_module
from prunekit.errors import ConfigError, DataError
from prunekit.io import sparse as sparse_storage
from prunekit.io.files import load_state, read_weights, verify_checksums
from prunekit.io.layout import (
    restore_attributes,
    restore_buffers,
    restore_modules,
    restore_tensors,
    restore_ties,
    ties_as_recorded,
)
from prunekit.io.manifest import BUFFERS_FILE, MANIFEST_FILE, WEIGHTS_FILE, Manifest, model_folder, read_manifest
from prunekit.io.stages import cut
from prunekit.io.transforms import restore_factorised

__all__ = ["load"]


def _build_source(record: Mapping[str, Any]) -> nn.Module:
    """The dense model a ``{"spec": ..., "kwargs": {...}}`` record names."""
    from prunekit import models

    # NOTE: the saved weights replace the source's, so its own weights file is not read (it may be gone).
    return models.from_source(record, load_weights=False)


def _base(folder: Path, manifest: Manifest, model: nn.Module | None) -> nn.Module:
    if manifest.hf is not None:
        from prunekit import hf

        return hf.build(folder, manifest.hf, type(model) if model is not None else None)
    if model is not None:
        return clone_module(model)
    if manifest.source is None:
        raise ConfigError(f"load: '{folder / MANIFEST_FILE}' records no source model. Pass model=, an "
                          f"un-pruned instance of its architecture (prunekit.load(folder, model=net)).")
    return _build_source(manifest.source)


def _hf_pretrained(folder: Path, manifest: Manifest, model: nn.Module | None, reshape: Any) -> nn.Module | None:
    """A Hugging Face folder (dense weights) through transformers' own loader, reshaped as it is built."""
    if manifest.hf is None or manifest.of_kind("sparse"):
        return None
    from prunekit import hf

    return hf.load_pretrained(folder, manifest.hf, type(model) if model is not None else None, reshape)


def _state(folder: Path, manifest: Manifest) -> dict[str, torch.Tensor]:
    stored = manifest.of_kind("sparse")
    if stored:
        entries, _ = read_weights(folder / WEIGHTS_FILE)
        return sparse_storage.decode(entries, stored[-1].get("tensors", {}), str(folder / WEIGHTS_FILE))
    if manifest.hf is not None:
        from prunekit import hf

        return hf.read_state(folder)
    return read_weights(folder / WEIGHTS_FILE)[0]


def _tied_missing(model: nn.Module, state: Mapping[str, torch.Tensor]) -> frozenset[str]:
    """Keys absent from ``state`` that share their tensor with a key it has (saved once)."""
    groups: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(value), []).append(key)
    return frozenset(k for keys in groups.values() if any(k in state for k in keys)
                     for k in keys if k not in state)


def load(folder: str | os.PathLike[str], *, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the module saved in ``folder``: same outputs as the model that was saved.

    ``model``: an un-pruned instance of the architecture, for models no spec builds (it is
    copied, not changed); for a Hugging Face folder, an instance of the class to build.
    A partitioned result returns :class:`~prunekit.io.stages.Stages` (``stages[k]`` is stage k;
    calling it runs them chained). A command's output folder (``OUT``) loads its ``OUT/model``.
    """
    path = model_folder(folder)
    manifest = read_manifest(path)
    where = str(path / MANIFEST_FILE)
    buffers = read_weights(path / BUFFERS_FILE)[0] if manifest.layout.get("buffers") else {}

    def reshape(built: nn.Module) -> None:
        restore_modules(built, manifest.layout, where=where)
        for transform in manifest.of_kind("factorise"):
            restore_factorised(built, transform, where)
        # NOTE: the shells come back at the widths they were factorised at; pruned after, they are narrower.
        restore_attributes(built, manifest.layout.get("factorised_attributes", {}), where=where)
        restore_tensors(built, manifest.layout, where=where)
        restore_ties(built, manifest.layout, where=where)
        restore_buffers(built, manifest.layout, buffers, where=where)

    loaded = _hf_pretrained(path, manifest, model, reshape)
    if loaded is None:
        built = _base(path, manifest, model)
        reshape(built)
        state = _state(path, manifest)
        restore_ties(built, manifest.layout, state, where=where)  # NOTE: a folder without a record of its ties
        load_state(built, state, str(path / WEIGHTS_FILE), tied=_tied_missing(built, state))
    built = loaded if loaded is not None else built
    if not ties_as_recorded(built, manifest.layout):
        raise DataError(f"load: the model built from '{where}' ties other tensors than the saved one did "
                        f"(tied: {manifest.layout['tied']}); its loader re-tied them. Save the model again with "
                        f"the ties its architecture makes.")
    # NOTE: again after the weights: a loader may re-initialise non-persistent buffers (transformers does).
    restore_buffers(built, manifest.layout, buffers, where=where)
    # NOTE: after the reads, whose errors say more about a damaged file; this catches changed values.
    # Folders written before checksums have none.
    verify_checksums(path, manifest.checksums, where)
    built.eval()
    partitions = manifest.of_kind("partition")
    if partitions:
        return cut(built, partitions[-1], where)
    int8 = [t for t in manifest.of_kind("quantize") if t.get("backend") == "torch"]
    if int8:
        from prunekit.quantize.torch_int8 import restore

        return restore(built, int8[-1], where)
    return built
