"""Files without pickle: safetensors weights and JSON records, each written atomically.

A write goes to a temporary name beside its target and is renamed into place, so a crash never
leaves a half-written file where a good one was. Temporaries are named ``.prunekit-tmp-<pid>-...``;
one whose process no longer runs (a save killed with ``kill -9``) is removed by the next write
into the same folder. New files get the user's umask (as ``open`` gives), not the 0600 of
``tempfile.mkstemp`` or safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, DataError, path_error

__all__ = ["atomic_path", "save_weights", "load_weights", "read_weights", "save_json", "load_json",
           "fresh_name", "umask", "as_user_file", "require_json", "clean_stale", "checksums", "verify_checksums",
           "remove_path", "CHECKSUM", "TEMP_PREFIX"]

TEMP_PREFIX = ".prunekit-tmp-"  # every temporary file or folder prunekit writes starts with this
CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")  # how a file's checksum is written: "sha256:<hex digest>"


def umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # NOTE: elsewhere the only way to read it is to set it, then restore it.
    os.umask(old)
    return old


def as_user_file(path: Path) -> None:
    """Give ``path`` the mode ``open`` would (safetensors writes its files as 0600)."""
    os.chmod(path, 0o666 & ~umask())


def fresh_name(target: Path, suffix: str) -> Path:
    """An unused hidden name beside ``target``: ``.prunekit-tmp-<pid>-<random>-<name><suffix>``."""
    return target.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}-{target.name}{suffix}"


def _owner_alive(name: str) -> bool:
    try:
        pid = int(name[len(TEMP_PREFIX):].split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def remove_path(path: Path) -> None:
    """Remove the file or folder ``path`` (a link, not what it points to), if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_stale(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writing process no longer runs; returns them."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not path.name.startswith(TEMP_PREFIX) or _owner_alive(path.name):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)
    tmp = fresh_name(target, ".tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # NOTE: umask applies.
    try:
        yield tmp
        as_user_file(tmp)  # NOTE: writers that recreate the file (safetensors) make it 0600.
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # NOTE: safetensors refuses shared or non-contiguous storage; clone each tensor on its own.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a model's ``state_dict`` (or a tensor dict) as safetensors; returns the path."""
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else model
    with atomic_path(path) as tmp:
        save_file(_plain(state), str(tmp), metadata=dict(metadata or {}))
        as_user_file(tmp)
    return Path(path)


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file; a missing or damaged file is named."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise path_error(file, "a weights file (.safetensors)", "Check the path, or save the model again "
                                                                "with prunekit.save (it writes model.safetensors).")
    try:
        with safe_open(str(file), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"'{file}' is not a readable safetensors file ({exc}). Re-create it with "
                        f"prunekit.save or prunekit.io.save_weights.") from exc


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str, *, strict: bool = True,
               tied: frozenset[str] = frozenset()) -> nn.Module:
    """Load ``state`` into ``model`` in place; a wrong shape names the tensor, a wrong key set the keys.

    ``tied`` keys may be missing (weights saved once and tied again by the model).
    """
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise DataError(
                f"'{where}': tensor '{key}' has shape {tuple(value.shape)} but the model expects "
                f"{tuple(own[key].shape)}. The file was saved from a different architecture "
                f"(another model, class count or input channels).")
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if k not in tied]
    if strict and (missing or unexpected):
        raise DataError(f"'{where}' does not match the model: missing {list(missing)[:5]}, unexpected "
                        f"{list(unexpected)[:5]}. Load it into the architecture it was saved from.")
    return model


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Load safetensors weights into ``model`` in place; shape mismatches name the tensor."""
    state, _ = read_weights(path)
    return load_state(model, state, str(path), strict=strict)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def checksums(folder: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    """``{file name: "sha256:<hex>"}`` of the files in ``folder`` matching ``pattern`` (the tensor files)."""
    return {p.name: _sha256(p) for p in sorted(folder.glob(pattern)) if p.is_file()}


def verify_checksums(folder: Path, recorded: Mapping[str, str], where: str) -> None:
    """Each file ``recorded`` names must be in ``folder`` with that checksum (a one-line DataError naming
    the file otherwise): tensors changed after saving are never loaded as the saved model."""
    for name, expected in recorded.items():
        file = folder / name
        if not file.is_file():
            raise path_error(file, f"a file with the checksum recorded in '{where}'",
                             "The folder is incomplete; copy it again or save the model again.")
        if _sha256(file) != expected:
            raise DataError(f"'{file}' does not match the checksum recorded in '{where}': it was changed or "
                            f"damaged after prunekit.save wrote it. Restore the file, or save the model again.")


def save_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`save_json`."""
    file = Path(path)
    if not file.is_file():
        raise path_error(file, "a JSON file", "Check the path.")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"'{file}' is not valid JSON ({exc}). Re-create it.") from exc


def require_json(value: Any, what: str, fix: str) -> None:
    """Fail before anything is written when ``value`` is not JSON data: "``what`` is not JSON data
    (why). ``fix``"."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON data ({exc}). {fix}") from exc
