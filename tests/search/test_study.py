"""open_study / optimize on SQLite: kill-and-resume, exact trial counts, workers, one-line errors.

The objectives are top-level functions of this module so worker processes can import them by name
(``test_study:hanging``); ``hanging`` blocks the first trial numbered >= 2 until it is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from prunekit.errors import ConfigError
from prunekit.search.study import Factory, WorkerError, open_study, optimize, worker_log

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DIR_VAR = "PRUNEKIT_TEST_STUDY_DIR"
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # NOTE: retried_trial_number


def quadratic(trial: optuna.Trial) -> float:
    """A cheap objective."""
    return trial.suggest_float("x", -1.0, 1.0) ** 2


def hanging(trial: optuna.Trial) -> float:
    """Log the call; the first trial numbered >= 2 writes its pid to ``hang`` and blocks."""
    folder = Path(os.environ[DIR_VAR])
    x = trial.suggest_float("x", -1.0, 1.0)
    with open(folder / "calls.log", "a") as log:
        log.write(f"{trial.number}\n")
    if trial.number >= 2:
        try:
            fd = os.open(folder / "hang", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(120)  # NOTE: killed here
    time.sleep(0.05)
    return x * x


def crashing(trial: optuna.Trial) -> float:
    """Every trial fails: the worker stops with a traceback in its log."""
    trial.suggest_float("x", -1.0, 1.0)
    raise RuntimeError("boom in the objective")


def offset_objective(offset: float) -> Callable[[optuna.Trial], float]:
    """A Factory function: built once per worker from plain data; records the worker's torch threads."""
    import torch

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("threads", torch.get_num_threads())
        trial.set_user_attr("pid", os.getpid())
        return offset + trial.suggest_float("x", -1.0, 1.0) ** 2
    return objective


def paired(trial: optuna.Trial) -> float:
    """Propose, then wait (up to 90 s) until two trials have started: each of two workers runs one."""
    folder = Path(os.environ[DIR_VAR])
    x = trial.suggest_float("x", -1.0, 1.0)
    (folder / f"started-{trial.number}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 90
    while len(list(folder.glob("started-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return x * x


def _open(root: Path, **kwargs) -> optuna.Study:
    return open_study("s", kwargs.pop("storage", None), kwargs.pop("directions", ["minimize"]),
                      optuna.samplers.RandomSampler(seed=0), root=root, heartbeat_interval=1, grace_period=2,
                      **kwargs)


def worker_command(storage: str | None, root: Path, n_trials: int, workers: int) -> list[str]:
    """A Python process that opens study 's' and runs ``hanging`` on it."""
    code = ("import optuna, pathlib\n"
            "from prunekit.search.study import open_study, optimize\n"
            f"study = open_study('s', {storage!r}, ['minimize'], optuna.samplers.RandomSampler(seed=0), "
            f"root=pathlib.Path({str(root)!r}), heartbeat_interval=1, grace_period=2)\n"
            f"optimize(study, 'test_study:hanging', {n_trials}, workers={workers}, seed=0)\n")
    return [sys.executable, "-c", code]


def worker_env(folder: Path) -> dict[str, str]:
    return {**os.environ, DIR_VAR: str(folder), "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 90.0) -> int:
    """The pid written to ``path`` once it appears (the worker is mid-trial); spawned workers import
    torch first, which takes tens of seconds on a loaded 2-core machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        if process.poll() is not None:
            raise AssertionError(f"the worker exited ({process.returncode}) before blocking")
        time.sleep(0.05)
    raise AssertionError(f"no worker blocked within {timeout} s")


def check_retried_once(study: optuna.Study, n_trials: int, calls: list[int]) -> None:
    """Exactly ``n_trials`` COMPLETE; the killed trial FAIL and retried once with its parameters."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == n_trials
    assert len(failed) == 1
    killed = failed[0]
    retries = [t for t in complete if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # NOTE: every trial ran its objective once: the killed one started and never finished.
    assert sorted(calls) == sorted([t.number for t in complete] + [killed.number])
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.PRUNED)


def test_sqlite_kill_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = subprocess.Popen(worker_command(None, tmp_path, 6, 1), env=worker_env(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(tmp_path / "hang", worker)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    study = _open(tmp_path)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]

    monkeypatch.setenv(DIR_VAR, str(tmp_path))
    optimize(study, hanging, 6, seed=0, progress=False)  # NOTE: resumes; waits out the grace period
    calls = [int(n) for n in (tmp_path / "calls.log").read_text().split()]
    check_retried_once(study, 6, calls)
    assert study.get_trials()[2].state == TrialState.FAIL

    optimize(_open(tmp_path), hanging, 6, seed=0, progress=False)  # NOTE: already done: runs nothing
    assert len((tmp_path / "calls.log").read_text().split()) == len(calls)


def test_resume_counts_complete_trials(tmp_path: Path) -> None:
    optimize(_open(tmp_path), quadratic, 3, seed=0, progress=False)
    study = _open(tmp_path)
    optimize(study, "test_study:quadratic", 5, seed=0, progress=False)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 5
    assert (tmp_path / "study.db").is_file()


def test_two_workers_sqlite_exact_count(tmp_path: Path) -> None:
    study = _open(tmp_path)
    optimize(study, quadratic, 6, workers=2, seed=0, progress=False)
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("surplus") for t in trials)


@pytest.mark.parametrize("sampler", [optuna.samplers.TPESampler, optuna.samplers.NSGAIISampler,
                                     optuna.samplers.GPSampler])
def test_workers_draw_different_startup_trials(sampler: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: TPE, NSGA-II and GP start from an inner random sampler; a worker reseeding only the outer
    # one proposed the same first configuration as every other worker (and NSGA-II, holding a thread
    # lock, could not be sent to a worker at all).
    monkeypatch.setenv(DIR_VAR, str(tmp_path))
    study = open_study("s", None, ["minimize"], sampler(seed=0), root=tmp_path, heartbeat_interval=1, grace_period=2)
    optimize(study, paired, 2, workers=2, seed=0, progress=False)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len({(tmp_path / f"started-{t.number}").read_text() for t in complete}) == 2  # NOTE: one per worker
    assert len(complete) == 2 and complete[0].params["x"] != complete[1].params["x"]


def test_two_workers_build_their_objective_once_with_cores_over_n_threads(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    import torch

    threads = torch.get_num_threads()
    study = _open(tmp_path)
    optimize(study, Factory("test_study:offset_objective", {"offset": 1.0}), 5, workers=2, seed=0)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and all(t.value == pytest.approx(1.0 + t.params["x"] ** 2) for t in complete)
    cores = len(os.sched_getaffinity(0))
    assert {t.user_attrs["threads"] for t in complete} == {max(1, cores // 2)}
    assert os.getpid() not in {t.user_attrs["pid"] for t in complete}  # NOTE: run in the workers
    assert torch.get_num_threads() == threads
    assert "5/5 trials complete" in capsys.readouterr().err  # NOTE: printed by this (the parent) process
    assert worker_log(tmp_path, 0).is_file() and worker_log(tmp_path, 1).is_file()
    worker_log(tmp_path, 0).unlink()
    optimize(_open(tmp_path), Factory("test_study:offset_objective", {"offset": 1.0}), 5, workers=2, seed=0)
    assert not worker_log(tmp_path, 0).exists()  # NOTE: a finished study starts no worker
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials()) == 5


def test_a_crashed_worker_is_one_line_naming_it_and_its_log(tmp_path: Path) -> None:
    study = _open(tmp_path)
    with pytest.raises(WorkerError) as info:
        optimize(study, crashing, 3, workers=2, seed=0, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"optimize: search worker 0 (exit code 1; log {worker_log(tmp_path, 0)}), worker 1 "
                              f"(exit code 1; log {worker_log(tmp_path, 1)}) stopped with 0/3 trials of study 's' "
                              f"complete.")
    assert message.endswith("Read the log, fix the cause, and rerun to resume.")
    assert "RuntimeError: boom in the objective" in worker_log(tmp_path, 0).read_text()


def test_bad_workers_and_factories_are_refused(tmp_path: Path) -> None:
    study = _open(tmp_path)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"^optimize: workers must be an int >= 1 \(processes working on one "
                                              rf"study\); got {bad!r}\. Pass e\.g\. 2, or 1"):
            optimize(study, quadratic, 2, workers=bad, seed=0)
    with pytest.raises(ConfigError, match=r"^optimize: the arguments of Factory 'test_study:offset_objective' must "
                                          r"be plain JSON data"):
        optimize(study, Factory("test_study:offset_objective", {"offset": object()}), 2, workers=2, seed=0)
    assert study.get_trials() == []


@pytest.mark.parametrize("storage, message", [
    ("mysql://u@localhost/db", "open_study: storage 'mysql://u@localhost/db' uses 'mysql'; expected a "
                               "postgresql:// or sqlite:/// URL. Pass one, or nothing for SQLite in the output folder."),
    ("not a url", "open_study: storage 'not a url' is not a database URL"),
    ("postgresql://u@127.0.0.1:5432", "open_study: storage 'postgresql://u@127.0.0.1:5432' names no database; "
                                      "expected 'postgresql://user:password@host:5432/database'. Add the database name."),
])
def test_bad_storage_url(tmp_path: Path, storage: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _open(tmp_path, storage=storage)
    assert str(info.value).startswith(message)


def test_postgres_not_answering(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^open_study: the PostgreSQL server at postgresql://u:\*\*\*@127.0.0.1:1/db "
                                          r"does not answer \(.*\)\. Start it .* or leave the storage unset to use "
                                          r"SQLite in the output folder\.$"):
        _open(tmp_path, storage="postgresql://u:secret@127.0.0.1:1/db")


def test_direction_clash(tmp_path: Path) -> None:
    _open(tmp_path, directions=["maximize", "minimize"])
    with pytest.raises(ConfigError) as info:
        _open(tmp_path, directions=["maximize"])
    assert str(info.value).startswith("open_study: a study named 's' already exists in sqlite:///")
    assert str(info.value).endswith("with directions ['maximize', 'minimize'], not ['maximize']. Pick another "
                                    "name or the same objectives.")


def test_objective_must_be_importable(tmp_path: Path) -> None:
    study = _open(tmp_path)
    with pytest.raises(ConfigError, match="must be a top-level function"):
        optimize(study, lambda t: 0.0, 2, seed=0)
    with pytest.raises(ConfigError, match="no module 'no_such_module' can be imported"):
        optimize(study, "no_such_module:f", 2, seed=0)
    with pytest.raises(ConfigError, match="must be 'package.module:function'"):
        optimize(study, "quadratic", 2, seed=0)
    assert study.get_trials() == []
