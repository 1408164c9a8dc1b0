"""One Optuna study, many workers: open it on SQLite or PostgreSQL, run it to a number of trials.

``open_study`` keeps a study in a database, so a search is resumable (rerun it and it continues)
and shareable: with ``storage=None`` it is a SQLite file under ``root`` (nothing to start; one
machine), with a ``postgresql://`` URL many workers on one or several machines work on it together.
Every worker records a heartbeat; a trial whose worker stops beating for ``grace_period`` seconds
(killed, out of memory, machine gone) is marked FAIL and queued again with the same parameters
(Optuna's ``RetryHeartbeatStaleTrialCallback``), so it is retried once and counted once.

``optimize`` runs the study until ``n_trials`` trials are COMPLETE in total, in this process
(``workers=1``) or in ``workers`` spawned processes. A trial is started only while fewer than
``n_trials`` are complete or running; a worker that finds the rest already running waits for them
(their workers may die), so the study ends with exactly ``n_trials`` COMPLETE trials. The objective
crosses process boundaries by name (``"package.module:function"``, a top-level function, or a
:class:`Factory` that each worker calls once with plain data to build it), never as a pickled
model: each worker builds what it scores. Workers are spawned (never forked from a process holding
torch's threads), each runs torch on ``cores // workers`` threads, writes its output to
``root/worker-<i>.log``, and the parent prints the progress.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from prunekit.errors import ConfigError, PrunekitError

__all__ = ["open_study", "optimize", "Objective", "Factory", "WorkerError", "SQLITE_FILE", "worker_log"]

Objective = Callable[[optuna.Trial], float | Sequence[float]]
SQLITE_FILE = "study.db"  # NOTE: the default storage, under the search's root folder
_SCHEMES = ("sqlite", "postgresql")
_POLL_S = 0.5  # NOTE: how often a waiting worker looks at the trials others are running


@dataclass(frozen=True)
class _Storage:
    """What a worker process needs to reopen the same study: plain data, no connection."""

    url: str
    heartbeat_interval: int
    grace_period: int

    def open(self) -> optuna.storages.RDBStorage:
        engine: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("sqlite"):
            engine["connect_args"] = {"timeout": 60}  # NOTE: workers wait for SQLite's write lock
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
            return optuna.storages.RDBStorage(
                self.url, engine_kwargs=engine, heartbeat_interval=self.heartbeat_interval,
                grace_period=self.grace_period, heartbeat_stale_trial_callback=retry)


@dataclass(frozen=True)
class Factory:
    """An objective each worker builds once: ``function(**arguments)`` returns the
    :data:`Objective`. ``function`` is ``"package.module:function"``; ``arguments`` are plain JSON
    data (a model spec, a data path, settings), so what a worker scores is rebuilt there, not sent."""

    function: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


class WorkerError(PrunekitError, RuntimeError):
    """A search worker process stopped before the study had its trials."""


_OPENED: weakref.WeakKeyDictionary[optuna.Study, tuple[_Storage, Path]] = weakref.WeakKeyDictionary()


def worker_log(root: str | os.PathLike[str], index: int) -> Path:
    """Where worker ``index`` of a study opened under ``root`` writes its output."""
    return Path(root) / f"worker-{index}.log"


def open_study(name: str, storage: str | None, directions: list[str], sampler: optuna.samplers.BaseSampler,
               *, root: Path, heartbeat_interval: int = 10, grace_period: int | None = None) -> optuna.Study:
    """The study ``name`` in ``storage`` (created, or loaded to resume), with heartbeats on.

    Args:
        name: the study's name in the database.
        storage: None for the SQLite file ``root/study.db``; a ``sqlite:///path`` or
            ``postgresql://user:password@host:port/database`` URL otherwise.
        directions: one ``"minimize"``/``"maximize"`` per objective; a study loaded under the same
            name must have the same ones.
        sampler: how this process proposes parameters (TPE, NSGA-II, ...).
        root: the search's folder (the SQLite file lives there).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat after which a trial is failed and retried
            (default: three intervals).
    """
    if not directions or any(d not in ("minimize", "maximize") for d in directions):
        raise ConfigError(f"open_study: directions must be a non-empty list of 'minimize'/'maximize'; got "
                          f"{directions!r}. Pass e.g. ['maximize', 'minimize'] for (metric, MACs).")
    if not isinstance(heartbeat_interval, int) or heartbeat_interval < 1:
        raise ConfigError(f"open_study: heartbeat_interval must be an int >= 1 (seconds); got {heartbeat_interval!r}.")
    grace = 3 * heartbeat_interval if grace_period is None else grace_period
    if not isinstance(grace, int) or grace <= heartbeat_interval:
        raise ConfigError(f"open_study: grace_period must be an int > heartbeat_interval ({heartbeat_interval} s); "
                          f"got {grace_period!r}. A live worker must beat at least once within it.")
    if storage is None:
        Path(root).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(Path(root) / SQLITE_FILE).absolute()}"
    else:
        url = _check_url(storage)
    spec = _Storage(url, heartbeat_interval, grace)
    rdb = _connect(spec)
    study = optuna.create_study(study_name=name, storage=rdb, sampler=sampler, directions=directions,  # type: ignore[arg-type]
                                load_if_exists=True)
    found = [d.name.lower() for d in study.directions]
    if found != list(directions):
        raise ConfigError(f"open_study: a study named '{name}' already exists in {_safe(url)} with directions "
                          f"{found}, not {list(directions)}. Pick another name or the same objectives.")
    _OPENED[study] = (spec, Path(root).absolute())
    return study


def optimize(study: optuna.Study, objective: Objective | str | Factory, n_trials: int, *, workers: int = 1,
             seed: int, progress: bool = True) -> None:
    """Run trials of ``objective`` on ``study`` until ``n_trials`` of them are COMPLETE in total.

    Resumable: trials completed by an earlier run count, and a trial whose worker was killed is
    retried. With ``workers > 1`` that many processes (spawned: nothing is inherited but the
    arguments) each reopen the study and run trials; the study must come from :func:`open_study`.
    Worker ``i`` writes its output to :func:`worker_log` under the study's ``root``; one that stops
    while trials are missing is a :class:`WorkerError` naming it and its log.

    Args:
        objective: ``"package.module:function"`` or a top-level function taking an ``optuna.Trial``
            and returning the objective value(s), imported by name in every worker; or a
            :class:`Factory` each worker calls once to build that function.
        n_trials: how many COMPLETE trials the study should hold when this returns.
        workers: processes working on the study at once; each runs torch on
            ``cores // workers`` threads (at least 1).
        seed: worker ``i`` reseeds its copy of the sampler with ``seed + i`` (several workers
            share one history, so their order, and with it the proposals, is not reproducible).
        progress: print a line per completed trial to stderr (from this process).
    """
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"optimize: n_trials must be an int >= 1; got {n_trials!r}. Pass how many "
                          f"completed trials the study should hold, e.g. 20.")
    check_workers(workers, "optimize: workers")
    spec = _objective_spec(objective)
    if workers == 1:
        _run(study, _build(spec), n_trials, progress)
        return
    opened = _OPENED.get(study)
    if opened is None:
        raise ConfigError("optimize: workers > 1 needs a study from prunekit.search.study.open_study (the "
                          "workers reopen its storage); open the study with open_study(...).")
    storage, root = opened
    if _counts(study)[0] >= n_trials:
        return  # NOTE: a finished study (a rerun): no process to start
    threads = max(1, _cores() // workers)
    context = multiprocessing.get_context("spawn")
    sampler = _Portable.of(study.sampler)
    processes = [context.Process(target=_worker, name=f"prunekit-search-{i}",
                                 args=(storage, study.study_name, sampler, seed + i, spec, n_trials,
                                       str(worker_log(root, i)), threads))
                 for i in range(workers)]
    try:
        for process in processes:
            process.start()
        _watch(study, processes, n_trials, progress)
    finally:
        for process in processes:  # NOTE: only after an error here (e.g. Ctrl-C): stop our own workers
            if process.pid is None:
                continue
            if process.is_alive():
                process.terminate()
            process.join()
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    complete, _ = _counts(study)
    stopped = ", ".join(f"worker {i} (exit code {processes[i].exitcode}; log {worker_log(root, i)})" for i in failed)
    if failed and complete < n_trials:
        raise WorkerError(f"optimize: search {stopped} stopped with {complete}/{n_trials} trials of study "
                          f"'{study.study_name}' complete. Read the log, fix the cause, and rerun to resume.")
    if failed and progress:
        print(f"search '{study.study_name}': {stopped} stopped; the others finished its trials",
              file=sys.stderr, flush=True)


def check_workers(workers: Any, where: str) -> None:
    """``workers`` must be an int >= 1; ``where`` names the option in the message."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{where} must be an int >= 1 (processes working on one study); got {workers!r}. "
                          f"Pass e.g. 2, or 1 to search in this process.")


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _watch(study: optuna.Study, processes: Sequence[Any], n_trials: int, progress: bool) -> None:
    """Wait for the workers; print a line whenever the study has more trials complete."""
    shown = _counts(study)[0] if progress else 0
    while any(p.is_alive() for p in processes):
        for p in processes:
            p.join(timeout=_POLL_S / len(processes))
        if progress:
            done = min(_counts(study)[0], n_trials)
            if done > shown:
                shown = done
                print(f"search '{study.study_name}': {done}/{n_trials} trials complete", file=sys.stderr, flush=True)


def _run(study: optuna.Study, objective: Objective, n_trials: int, progress: bool) -> None:
    """Run trials in this process until ``n_trials`` are COMPLETE (see the module docstring)."""
    stop = optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))
    guarded = _Guarded(objective, n_trials)
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # NOTE: a dead worker's trial -> FAIL, queued again
        complete, running = _counts(study)
        if complete >= n_trials:
            return
        if complete + running >= n_trials:
            time.sleep(_POLL_S)  # NOTE: the rest are running; if their workers die, we retry them
            continue
        before = complete
        with quiet_interrupts():
            study.optimize(guarded, n_trials=1, callbacks=[stop], catch=(), gc_after_trial=False,
                           show_progress_bar=False)
        if progress:
            done, _ = _counts(study)
            if done > before:
                print(f"search '{study.study_name}': {min(done, n_trials)}/{n_trials} trials complete",
                      file=sys.stderr, flush=True)


class _Guarded:
    """The objective, refusing to start when ``n_trials`` trials are already complete or running
    ahead of it (two workers can both see room for one more): such a surplus trial is PRUNED,
    never run, so no work is counted past the budget."""

    def __init__(self, objective: Objective, n_trials: int) -> None:
        self.objective, self.n_trials = objective, n_trials

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        trials = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        ahead = sum(t.state == TrialState.COMPLETE or t.number < trial.number
                    for t in trials if t.number != trial.number)
        if ahead >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("surplus: the study's n_trials were already complete or running")
        return self.objective(trial)


class _QuietInterrupt(logging.Filter):
    """Drops Optuna's two warnings about a trial a KeyboardInterrupt stopped (its traceback, then 'failed
    with value None'): Ctrl-C is no failure to report, and the command prints one line for it."""

    def __init__(self) -> None:
        super().__init__()
        self.trial: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        kind = record.exc_info[0] if record.exc_info else None
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.trial = record.getMessage().split(" ")[1]  # NOTE: "Trial <n> failed with parameters: ..."
            return False
        if self.trial is not None and record.getMessage().startswith(f"Trial {self.trial} failed with value"):
            self.trial = None
            return False
        return True


_QUIET = _QuietInterrupt()


@contextlib.contextmanager
def quiet_interrupts() -> Iterator[None]:
    """While the body runs, a Ctrl-C in a trial leaves no Optuna traceback (see :class:`_QuietInterrupt`)."""
    logger = logging.getLogger("optuna.study._optimize")
    if _QUIET in logger.filters:
        yield
        return
    logger.addFilter(_QUIET)
    try:
        yield
    finally:
        logger.removeFilter(_QUIET)


def _counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


@dataclass(frozen=True)
class _Portable:
    """A sampler as a spawned worker receives it: its class and attributes without the thread locks
    a pickle cannot hold (Optuna's NSGA-II keeps one); the worker gives it fresh locks."""

    kind: type
    state: Mapping[str, Any]
    locks: tuple[str, ...]

    @classmethod
    def of(cls, sampler: optuna.samplers.BaseSampler) -> _Portable:
        lock = type(threading.Lock())
        locks = tuple(k for k, v in vars(sampler).items() if isinstance(v, lock))
        return cls(type(sampler), {k: v for k, v in vars(sampler).items() if k not in locks}, locks)

    def build(self) -> optuna.samplers.BaseSampler:
        sampler = self.kind.__new__(self.kind)
        vars(sampler).update(self.state)
        for name in self.locks:
            setattr(sampler, name, threading.Lock())
        return cast(optuna.samplers.BaseSampler, sampler)


def _worker(storage: _Storage, name: str, portable: _Portable, seed: int,
            spec: Objective | str | Factory, n_trials: int, log: str, threads: int) -> None:
    """One spawned worker: output to ``log``, torch on ``threads`` threads, reopen the study,
    reseed its sampler, build the objective and run until the study is done."""
    _die_with_parent()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:  # NOTE: this process's own fds 1 and 2; the parent's are untouched
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    import torch  # NOTE: imported already with prunekit.search, the package this module is in

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sampler = portable.build()
        _reseed(sampler, seed)
        study = optuna.load_study(study_name=name, storage=_connect(storage), sampler=sampler)
        _run(study, _build(spec), n_trials, progress=True)
    finally:
        torch.set_num_threads(before)


def _die_with_parent() -> None:
    """On Linux, have the kernel stop this worker when the process that spawned it dies, even by
    ``kill -9`` (where no ``finally`` of its runs): no worker scores trials on for a search that is gone.
    Its running trial is failed by the heartbeat and retried when the search is resumed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # NOTE: 1 is PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # NOTE: the parent died before the line above: nobody is left to work for


def _reseed(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    # NOTE: Optuna's samplers keep their generator in a LazyRandomState; reseed_rng() draws a
    # fresh random seed, so a seeded one is set where the sampler has that attribute. TPE, NSGA-II
    # and GP draw their startup trials from an inner RandomSampler with its own generator: reseeded
    # too, or every worker proposes the same startup configurations.
    rng = getattr(getattr(sampler, "_rng", None), "rng", None)
    if rng is not None and hasattr(rng, "seed"):
        rng.seed(seed)
    else:
        sampler.reseed_rng()
    for inner in ("_random_sampler", "_independent_sampler"):
        nested = getattr(sampler, inner, None)
        if isinstance(nested, optuna.samplers.BaseSampler) and nested is not sampler:
            _reseed(nested, seed)


def _objective_spec(objective: Objective | str | Factory) -> Objective | str | Factory:
    """The objective as something a spawned worker can import: checked here, in the parent."""
    if isinstance(objective, str):
        _resolve(objective)
        return objective
    if isinstance(objective, Factory):
        _resolve(objective.function)
        try:
            json.dumps(dict(objective.arguments))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"optimize: the arguments of Factory '{objective.function}' must be plain JSON data "
                              f"({exc}). Pass specs and paths, not models or tensors: each worker builds its own."
                              ) from None
        return objective
    qualname = getattr(objective, "__qualname__", "")
    if not callable(objective) or "<" in qualname or not getattr(objective, "__module__", None):
        raise ConfigError(f"optimize: the objective must be a top-level function or a 'package.module:function' "
                          f"string; got {objective!r}. Lambdas, closures and bound methods cannot be sent to "
                          f"worker processes; define it at module level.")
    return objective


def _build(spec: Objective | str | Factory) -> Objective:
    """The callable objective in this process: imported, or built by its factory."""
    if isinstance(spec, Factory):
        factory = cast(Callable[..., Objective], _resolve(spec.function))
        return factory(**spec.arguments)
    return _resolve(spec) if isinstance(spec, str) else spec


def _resolve(spec: str) -> Objective:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"optimize: objective '{spec}' must be 'package.module:function'. Name a function "
                          f"importable in every worker, e.g. 'mysearch:objective'.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"optimize: objective '{spec}': no module '{module_name}' can be imported ({exc}). "
                          f"Put it on PYTHONPATH or install it.") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"optimize: objective '{spec}': module '{module_name}' has no function '{attr}'. "
                          f"Name a function defined there.")
    return function  # type: ignore[no-any-return]


def _check_url(storage: str) -> str:
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        url = sqlalchemy.engine.make_url(storage)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"open_study: storage '{storage}' is not a database URL ({exc}). Pass "
                          f"'postgresql://user:password@host:5432/database', 'sqlite:///path/study.db', or "
                          f"nothing for a SQLite file in the output folder.") from None
    if url.get_backend_name() not in _SCHEMES:
        raise ConfigError(f"open_study: storage '{_safe(storage)}' uses '{url.get_backend_name()}'; expected "
                          f"a postgresql:// or sqlite:/// URL. Pass one, or nothing for SQLite in the output folder.")
    if url.get_backend_name() == "postgresql" and not url.database:
        raise ConfigError(f"open_study: storage '{_safe(storage)}' names no database; expected "
                          f"'postgresql://user:password@host:5432/database'. Add the database name.")
    if url.drivername == "postgresql":  # NOTE: SQLAlchemy 2.1 means psycopg 3 by this; use the driver installed
        import importlib.util

        driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
        return str(url.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False))
    return storage


def _connect(spec: _Storage) -> optuna.storages.RDBStorage:
    """The storage, or one line saying why the database cannot be reached and what to do."""
    import sqlalchemy.exc

    try:
        return spec.open()
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        if spec.url.startswith("postgresql"):
            raise ConfigError(f"open_study: the PostgreSQL server at {_safe(spec.url)} does not answer ({reason}). "
                              f"Start it (e.g. 'pg_ctlcluster 15 main start', or scripts/ensure_postgres.sh "
                              f"to install one), or leave the storage unset to use SQLite in the output "
                              f"folder.") from None
        raise ConfigError(f"open_study: cannot open the SQLite study {_safe(spec.url)} ({reason}). Check the "
                          f"folder exists and is writable.") from None
    except ImportError as exc:
        raise ConfigError(f"open_study: the database driver for {_safe(spec.url)} is not installed ({exc}). "
                          f"Install psycopg2 for PostgreSQL.") from None


def _safe(url: str) -> str:
    """``url`` with any password (and the driver prunekit picked) hidden, for messages."""
    import sqlalchemy.engine

    try:
        parsed = sqlalchemy.engine.make_url(url)
        return str(parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True))
    except Exception:  # NOTE: only for display; an unparsable URL is shown as given
        return url
