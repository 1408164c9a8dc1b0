"""`prunekit search --workers N`: N spawned processes share one SQLite study and stop at the trial
budget in total; each rebuilds the same model and data (the parent's trained baseline), so what a
worker scored is what this process scores; bad values are one-line errors before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.search.space import DEFAULT_LEVELS

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _args(npz: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--model", "simple_cnn", "--data", str(npz), "--target-macs", "0.5", "--val-samples", "32",
            "--finetune-epochs", "0", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0", "--out", str(out),
            *extra]


def test_two_workers_complete_exactly_the_budget_on_one_sqlite_study(tiny_npz: Path, tmp_path: Path) -> None:
    from prunekit.workflows.search import worker_objective

    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "prunekit", *_args(tiny_npz, out, "--strategy", "tpe", "--trials",
                                                                    "6", "--workers", "2", "--baseline-epochs", "1")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "search 'prunekit-tpe-0': 6/6 trials complete" in done.stderr  # NOTE: the parent's progress
    state = out / "search-state"
    study = optuna.load_study(study_name="prunekit-tpe-0", storage=f"sqlite:///{state / 'study.db'}")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("surplus") for t in trials)
    assert len({t.number for t in complete}) == 6
    assert (state / "worker-0.log").is_file() and (state / "worker-1.log").is_file()

    results = json.loads((out / "results.json").read_text())
    configs = {json.dumps(t.user_attrs["config"], sort_keys=True) for t in complete}
    assert results["search"]["evaluations"] == results["evaluated"] == len(configs)  # NOTE: none counted twice
    best = results["search"]["best"]
    assert best["feasible"] and best["values"]["macs"] <= 0.5
    assert json.dumps(best["config"], sort_keys=True) in configs
    front = json.loads((out / "pareto.json").read_text())
    assert front["objectives"] == ["metric", "macs"] and any(p["chosen"] for p in front["points"])

    # NOTE: the workers scored the trained baseline the parent saved: this process, rebuilding the
    # same evaluator, gets the same values for a worker's trial.
    rebuild = {"model": "simple_cnn", "data": str(tiny_npz), "weights": str(state / "baseline.safetensors"),
               "seed": 0}
    settings: dict[str, Any] = {
        "constraints": {"macs": 0.5}, "levels": list(DEFAULT_LEVELS), "round_to": 1, "depth": False,
        "importance": "l2", "bn_batches": 2, "val_samples": 32, "proxy_steps": 0, "finetune_steps": 0,
        "backend": None, "objectives": ["metric", "macs"], "state_dir": str(state)}
    objective = worker_objective(rebuild, settings)
    trial = complete[0]
    assert objective(optuna.trial.FixedTrial(trial.params)) == pytest.approx(tuple(trial.values), abs=1e-6)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_workers_values_are_one_line_errors(tiny_npz: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    for value in ("0", "-2", "two"):
        got = repr(int(value)) if value.lstrip("-").isdigit() else repr(value)
        err = _one_line_error(_args(tiny_npz, tmp_path / value, "--workers", value), capsys)
        assert err == (f"prunekit search: error: search: --workers must be an int >= 1 (processes working on one "
                       f"study); got {got}. Pass e.g. 2, or 1 to search in this process.")
    err = _one_line_error(_args(tiny_npz, tmp_path / "g", "--workers", "2", "--strategy", "greedy"), capsys)
    assert err == ("prunekit search: error: search: --workers 2 needs a strategy whose trials workers can share "
                   "(nsga2, tpe, gp); got 'greedy', which runs one step after another. Pass --strategy tpe (or "
                   "nsga2, gp), or --workers 1.")
    err = _one_line_error(_args(tiny_npz, tmp_path / "s", "--storage", "sqlite:///x.db", "--strategy", "greedy"),
                          capsys)
    assert err == ("prunekit search: error: search: --storage holds an Optuna study, which only nsga2, tpe, gp keep; "
                   "got --strategy greedy, which would ignore it. Pass --strategy tpe (or nsga2, gp), or drop "
                   "--storage.")
    assert not (tmp_path / "s").exists()


def test_library_workers_need_an_output_folder() -> None:
    from prunekit.workflows.search import search

    with pytest.raises(ConfigError, match=r"^search: --workers 2 need an output folder .* Pass --out DIR"):
        search("simple_cnn", "digits", strategy="tpe", constraints={"macs": 0.5}, workers=2)


def test_the_cli_passes_workers_storage_and_backend_through(tiny_npz: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    import prunekit.workflows.search as workflow

    seen: dict[str, Any] = {}

    def fake(model: str, data: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        raise ConfigError("stop here")
    monkeypatch.setattr(workflow, "search", fake)
    url = "postgresql://u@127.0.0.1:5432/db"
    argv = _args(tiny_npz, tmp_path / "r", "--strategy", "nsga2", "--workers", "3", "--storage", url,
                 "--backend", "onnxruntime")
    assert _one_line_error(argv, capsys) == "prunekit search: error: stop here"
    assert (seen["workers"], seen["storage"], seen["backend"], seen["strategy"]) == (3, url, "onnxruntime", "nsga2")
    _one_line_error(_args(tiny_npz, tmp_path / "d"), capsys)
    assert (seen["workers"], seen["backend"]) == (1, None)


def test_two_workers_search_ranks_on_one_study(tiny_npz: Path, tmp_path: Path) -> None:
    from prunekit.workflows.common import build, task_of
    from prunekit.workflows.search import search_model, worker_objective

    net, splits = build("simple_cnn", str(tiny_npz), seed=0)
    rebuild = {"model": "simple_cnn", "data": str(tiny_npz), "seed": 0}
    state = tmp_path / "state"
    found = search_model(net.eval(), splits, task_of(splits, None), strategy="tpe", budget=4,
                         constraints={"macs": 0.5}, ranks=True, levels=(1.0, 0.5, 0.25), val_samples=32, workers=2,
                         rebuild=rebuild, state_dir=state)
    study = optuna.load_study(study_name="prunekit-tpe-0", storage=f"sqlite:///{state / 'study.db'}")
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and (state / "worker-1.log").is_file()
    space = found["space"]
    ranked = [d.name for d in space.dimensions if d.kind == "rank"]
    # NOTE: the workers searched the same space, rank dimensions included
    assert ranked and all(set(t.user_attrs["config"]) == set(space.names) for t in complete)
    assert found["best"].values["macs"] <= 0.5 and found["ranks"] == space.ranks(found["best"].config)
    settings: dict[str, Any] = {
        "constraints": {"macs": 0.5}, "levels": [1.0, 0.5, 0.25], "round_to": 1, "depth": False,
        "ranks": ["auto"], "widths": True, "importance": "l2", "bn_batches": 2, "val_samples": 32,
        "proxy_steps": 0, "finetune_steps": 0, "backend": None, "objectives": ["metric", "macs"], "state_dir": str(state)}
    objective = worker_objective(rebuild, settings)
    trial = next(t for t in complete if space.ranks(t.user_attrs["config"]))
    assert objective(optuna.trial.FixedTrial(trial.params)) == pytest.approx(tuple(trial.values), abs=1e-6)
