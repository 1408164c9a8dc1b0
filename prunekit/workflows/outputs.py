"""The output folder a command writes to, checked before any work and held while it runs.

``claim(out, command=..., overwrite=..., resume=...)`` refuses a folder that holds earlier results
(unless ``overwrite`` or ``resume``), a path that is a file, and a folder that cannot be written,
all before seconds of training; then it holds ``OUT/.prunekit.lock`` (the owner's pid) so that a
second run into the same folder is refused. A lock left by a process that no longer runs is taken
over. With ``overwrite`` (not ``resume``) it then removes the record of an earlier run there (the
names in :data:`RUN_RECORDS`; every other file stays), so that nothing of that run, such as its
``pareto.json``, is read as this run's. For a command that cannot resume, that record is only moved
aside while the run works and comes back when the run fails or is interrupted: a failed run leaves
the folder as it found it. A folder the claim created and the run left empty is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from prunekit.errors import OutputError
from prunekit.io.files import TEMP_PREFIX, fresh_name, remove_path

__all__ = ["LOCK_FILE", "RUN_RECORDS", "RESUMABLE", "claim", "check_out", "staged_output"]

LOCK_FILE = ".prunekit.lock"
# NOTE: what describes a run rather than holds a model: the record, the report and the files it
# draws, a search's and a recipe's state (spelled out: the modules owning these names sit above or
# beside this one; tests/workflows checks them). Saved models and weights are never removed: this
# run's input may be one of them (--model OUT/model), and it replaces the ones it writes itself.
RUN_RECORDS = frozenset({"results.json", "evidence.json", "report.html", "report.md", "sensitivity.json",
                         "pareto.json", "search-state", "state.json"})

# NOTE: what each command with --resume continues from, in its folder
RESUMABLE = {"train": "checkpoint.safetensors", "run": "state.json", "search": "search-state"}


def _ours(name: str) -> bool:
    """Entries that are no earlier result: our lock and temporaries a killed save left."""
    return name == LOCK_FILE or name.startswith(TEMP_PREFIX)


def check_out(out: str | os.PathLike[str], *, command: str, overwrite: bool = False,
              resume: bool = False) -> None:
    """Refuse ``out`` before any work: a file, a folder with earlier results (without ``overwrite``
    or ``resume``), or a folder this user cannot write."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{command}: --out '{path}' is a file, not a folder. Pass a folder path, "
                          f"e.g. --out runs/{command or 'out'}-2; nothing was written.")
    if path.is_dir():
        earlier = sorted(p.name for p in path.iterdir() if not _ours(p.name))
        if earlier and not (overwrite or resume):
            shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
            again = ", or --resume to continue the run it holds" if RESUMABLE.get(command) in earlier else ""
            raise OutputError(f"{command}: --out '{path}' already holds results ({shown}). Pass "
                              f"--overwrite to replace them, or pick a new folder with --out{again}; "
                              f"nothing was written.")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{command}: --out '{path}' is not writable by this user. Pass a folder "
                              f"you can write to with --out, or fix its permissions; nothing was run.")
        return
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{command}: --out '{path}' cannot be created ('{parent}' is not a writable "
                          f"folder). Pass a folder you can write to with --out; nothing was run.")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # NOTE: it runs, under another user.
    return True


def _take_lock(lock: Path, command: str) -> None:
    """Create ``lock`` with this pid; a live owner refuses, a dead one's lock is taken over."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner != os.getpid() and _alive(owner):
                raise OutputError(f"{command}: another prunekit run (pid {owner}) is writing to "
                                  f"'{lock.parent}'. Wait for it to finish, or pass another --out."
                                  ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # NOTE: a stale lock of a process that no longer runs.
            continue
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise OutputError(f"{command}: --out '{lock.parent}' is not writable ({exc.strerror}). "
                                  f"Pass a folder you can write to with --out; nothing was run."
                                  ) from None
            raise
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise OutputError(f"{command}: could not take the lock '{lock}'. Remove it if no prunekit run "
                      f"writes to that folder, then run again.")


@contextlib.contextmanager
def claim(out: str | os.PathLike[str], *, command: str, overwrite: bool = False,
          resume: bool = False) -> Iterator[Path]:
    """Check ``out`` (see :func:`check_out`), create it and hold its lock while the body runs."""
    path = Path(out)
    check_out(path, command=command, overwrite=overwrite, resume=resume)
    created = [p for p in (path, *path.absolute().parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{command}: --out '{path}' cannot be created ({exc.strerror}). Pass a "
                          f"folder you can write to with --out; nothing was run.") from None
    lock = path / LOCK_FILE
    try:
        _take_lock(lock, command)
    except BaseException:
        _remove_empty(created)
        raise
    attic: Path | None = None
    try:
        if overwrite and not resume:
            if command in RESUMABLE:  # NOTE: its partial state is what --resume continues from
                _remove_earlier(path, command)
            else:
                attic = _set_aside(path, command)
        yield path
    except BaseException:
        if attic is not None:
            _bring_back(attic, path)
        raise
    finally:
        if attic is not None:
            remove_path(attic)
        with contextlib.suppress(OSError):
            lock.unlink()
        _remove_empty(created)


def _earlier(path: Path) -> list[Path]:
    return [entry for entry in sorted(path.iterdir()) if entry.name in RUN_RECORDS]


def _remove_earlier(path: Path, command: str) -> None:
    """Remove the files and folders of :data:`RUN_RECORDS` in ``path`` (a link, not what it points to)."""
    for entry in _earlier(path):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise OutputError(f"{command}: --overwrite could not remove the earlier result '{entry}' "
                              f"({exc.strerror}). Remove it yourself or pick a new folder with --out; "
                              f"nothing was run.") from None


def _set_aside(path: Path, command: str) -> Path | None:
    """Move the entries of :data:`RUN_RECORDS` in ``path`` into a hidden folder there (renames
    only); the folder, or None when there was nothing to move."""
    earlier = _earlier(path)
    if not earlier:
        return None
    attic = fresh_name(path / "earlier", "")
    moved: list[Path] = []
    try:
        attic.mkdir()
        for entry in earlier:
            moved.append(entry.rename(attic / entry.name))
    except OSError as exc:
        _bring_back(attic, path)
        remove_path(attic)
        raise OutputError(f"{command}: --overwrite could not move the earlier results in '{path}' aside "
                          f"({exc.strerror}). Remove them yourself or pick a new folder with --out; "
                          f"nothing was run.") from None
    return attic


def _bring_back(attic: Path, path: Path) -> None:
    """Put what :func:`_set_aside` moved back into ``path``, in place of what the failed run
    wrote under the same names."""
    if not attic.is_dir():
        return
    for entry in sorted(attic.iterdir()):
        target = path / entry.name
        with contextlib.suppress(OSError):
            remove_path(target)
            entry.rename(target)


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders the claim created, innermost first, where the run left them empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def staged_output(out: Path, outputs: Collection[str] = ()) -> Iterator[Path]:
    """A hidden folder in ``out`` to write a command's files into; when the body ends they replace
    the entries of the same name in ``out`` (renames only), and when it fails or is interrupted
    (Ctrl-C) they are removed, so that a stopped run leaves nothing half-written in ``out`` for the
    next run to refuse. A killed run's folder is a temporary that the next write into ``out`` removes.

    ``outputs``: every name the command may write; those this run did not write are removed from
    ``out`` as the files are published (all or nothing with them), so that an earlier run's file
    (``quantize --overwrite``'s model.onnx, when this run made a PyTorch module) is not read as this run's."""
    created = [p for p in (out, *out.absolute().parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    stage = fresh_name(out / "output", "")
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        remove_path(stage)
        _remove_empty(created)
        raise
    published: list[Path] = []
    replaced: list[tuple[Path, Path]] = []  # (entry in out, where its old version waits)
    try:
        written = {entry.name for entry in stage.iterdir()}
        for name in sorted(set(outputs) - written):  # NOTE: an earlier run's output this run did not write
            target = out / name
            if target.exists() or target.is_symlink():
                replaced.append((target, target.rename(fresh_name(target, ".old"))))
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if target.exists() or target.is_symlink():  # NOTE: a folder cannot be renamed onto another
                replaced.append((target, target.rename(fresh_name(target, ".old"))))
            entry.rename(target)
            published.append(target)
    except BaseException:  # NOTE: all or nothing: what was renamed in goes, what it replaced comes back
        for target in published:
            remove_path(target)
        for target, old in replaced:
            with contextlib.suppress(OSError):
                old.rename(target)
        raise
    finally:
        for path in (stage, *(old for _, old in replaced)):
            remove_path(path)
