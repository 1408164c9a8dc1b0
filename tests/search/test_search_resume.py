"""An interrupted `prunekit search` resumes from OUT/search-state with --resume (a rerun without it is
refused with that hint), Ctrl-C shows prunekit's one line only, and killed parents take their workers along."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.cli import main
from prunekit.search.evaluator import Evaluator, key_of

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _args(npz: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--model", "simple_cnn", "--data", str(npz), "--target-macs", "0.5", "--val-samples", "32",
            "--bn-batches", "1", "--baseline-epochs", "0", "--finetune-epochs", "0", "--no-onnx", "--batch-sizes",
            "1", "--min-time-s", "0", "--max-eval-batches", "1", "--no-progress", "--strategy", "random",
            "--trials", "4", "--out", str(out), *extra]


def test_an_interrupted_search_resumes_with_resume(tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fresh: list[str] = []
    original = Evaluator.metric_value

    def counted(self: Evaluator, config: dict, fidelity: int | None = None) -> float:
        known = f"{self.fidelity if fidelity is None else fidelity}|{key_of(config)}" in self.memo
        if stop and not known and len(fresh) == 2:
            raise KeyboardInterrupt  # NOTE: Ctrl-C during the third proxy evaluation
        value = original(self, config, fidelity)
        fresh.extend([] if known else [key_of(config)])
        return value

    monkeypatch.setattr(Evaluator, "metric_value", counted)
    out, stop = tmp_path / "run", True
    assert main(_args(tiny_npz, out)) == 130
    err = capsys.readouterr().err
    assert "interrupted; the search state was saved in" in err and "--resume" in err
    saved = json.loads((out / "search-state" / "search-random-0.json").read_text())
    assert saved["evaluations"] == 2

    assert main(_args(tiny_npz, out)) == 2  # NOTE: refused, and told how to continue
    assert "--resume" in capsys.readouterr().err

    fresh.clear()
    stop = False
    assert main(_args(tiny_npz, out, "--resume")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["search"]["evaluations"] == 4 and len(fresh) == 2  # NOTE: the first two were kept


def test_resuming_with_another_target_is_refused_and_the_state_left_alone(
        tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    original = Evaluator.metric_value
    calls: list[int] = []

    def interrupted(self: Evaluator, config: dict, fidelity: int | None = None) -> float:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, config, fidelity)

    monkeypatch.setattr(Evaluator, "metric_value", interrupted)
    out = tmp_path / "run"
    assert main(_args(tiny_npz, out)) == 130
    file = out / "search-state" / "search-random-0.json"
    before = file.read_bytes()
    capsys.readouterr()
    # NOTE: the saved records' feasibility was judged against 0.5 of the MACs; a 0.3 budget must not reuse them
    argv = _args(tiny_npz, out, "--resume")
    argv[argv.index("--target-macs") + 1] = "0.3"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "was made with other constraints (constraints {'macs': 0.5} there, {'macs': 0.3} now)" in err
    assert file.read_bytes() == before


def _interrupted(trial: object) -> float:
    raise KeyboardInterrupt


def test_ctrl_c_in_a_trial_leaves_no_optuna_traceback(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import optuna

    from prunekit.search.study import open_study, optimize

    study = open_study("quiet", None, ["maximize"], optuna.samplers.RandomSampler(seed=0), root=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        optimize(study, _interrupted, 2, seed=0, progress=False)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed with" not in err


def test_ctrl_c_in_a_tpe_search_leaves_no_optuna_traceback(tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    from test_search_strategies import _evaluator

    from prunekit.search.search import search

    calls: list[int] = []

    def metric(config: dict) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 0.5

    evaluator = _evaluator(metric)
    with pytest.raises(KeyboardInterrupt):
        search(evaluator.space, ["metric", "macs"], {"macs": 0.9}, "tpe", 4, evaluator=evaluator, state_dir=tmp_path)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed with" not in err


def test_workers_stop_when_their_parent_is_killed(tiny_npz: Path, tmp_path: Path) -> None:
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    argv = _args(tiny_npz, out, "--workers", "2", "--trials", "500")
    argv[argv.index("random")] = "tpe"
    parent = subprocess.Popen([sys.executable, "-m", "prunekit", *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def workers() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if pid.isdigit() and int(stat[1]) == parent.pid and b"multiprocessing" in command and stat[0] != "Z":
                found.append(int(pid))
        return found

    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not ((out / "search-state" / "worker-1.log").is_file() and len(workers()) >= 2):
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
        pids = workers()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [p for p in pids if Path(f"/proc/{p}").exists()
                     and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        pids += workers() if parent.poll() is None else []
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in pids:  # NOTE: only where the test failed: none of ours runs on
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
