"""A recipe's ``search`` stage with ``workers: N``: N spawned processes share one SQLite study on the
model as the earlier stages left it (saved to OUT/search-state/model/, rebuilt in each worker), the
next ``prune: {allocation: search}`` applies the result, a resumed run does not search again, and bad
values are one-line errors before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from prunekit.errors import ConfigError
from prunekit.recipes import parse_recipe, run_recipe

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# NOTE: on the pruned simple_cnn (2, 4, 32 channels) each worker's first random proposals (seeds 1, 2)
# include a configuration under 0.6 of the MACs, however the 4 trials fall between the workers.
SEARCH = {"target": {"macs": 0.6}, "strategy": "tpe", "trials": 4, "workers": 2, "val_samples": 32,
          "levels": [0.5, 0.25]}
STUDY = "prunekit-tpe-1"  # NOTE: stage 1 searches with seed recipe.seed + 1


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 training and 64 test images of the real Fashion-MNIST, as an .npz."""
    from prunekit import data

    x, y = data.load("fashion_mnist").train.tensors
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x[:256].numpy(), y_train=y[:256].numpy(), x_test=x[256:320].numpy(),
             y_test=y[256:320].numpy())
    return path


def _recipe(npz: Path, **search: Any) -> dict[str, Any]:
    return {"model": "simple_cnn", "data": str(npz),
            "stages": [{"prune": {"target": {"ratio": 0.5}, "round_to": 1}},
                       {"search": {**SEARCH, **search}},
                       {"prune": {"allocation": "search"}}]}


def _complete(out: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'search-state' / 'study.db'}")
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def test_search_workers_score_the_pruned_model_and_feed_the_next_prune(tiny_npz: Path, tmp_path: Path) -> None:
    from prunekit import load
    from prunekit.workflows.search import worker_objective

    out = tmp_path / "run"
    recipe = parse_recipe(_recipe(tiny_npz))
    first = run_recipe(recipe, out_dir=out, stop_after=2)
    assert first["completed"] == 2
    state = out / "search-state"
    complete = _complete(out)
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    assert (state / "worker-0.log").is_file() and (state / "worker-1.log").is_file()
    searched = first["stages"][1]["summary"]
    configs = {json.dumps(t.user_attrs["config"], sort_keys=True) for t in complete}
    assert searched["evaluations"] == len(configs)  # NOTE: each configuration counted once
    assert json.dumps(searched["best"]["config"], sort_keys=True) in configs

    # NOTE: the workers built their space from the pruned model (conv1 4 -> 2 channels, ...), not the
    # recipe's dense simple_cnn: each width dimension's widest choice is the pruned group's size.
    pruned = load(out / "checkpoints" / "stage-01-prune")
    assert [pruned.conv1.out_channels, pruned.conv2.out_channels, pruned.fc1.out_features] == [2, 4, 32]
    widest = sorted(max(d.choices) for d in complete[0].distributions.values())
    assert widest == [2, 4, 32]
    # NOTE: and scored its weights: this process, rebuilding the evaluator from the prune stage's own
    # checkpoint, gets the values a worker recorded for its trial.
    rebuild = {"model": str(out / "checkpoints" / "stage-01-prune"), "data": str(tiny_npz), "seed": 0}
    settings: dict[str, Any] = {
        "constraints": {"macs": 0.6}, "levels": [0.5, 0.25], "round_to": 1, "depth": False, "importance": "l2",
        "bn_batches": 2, "val_samples": 32, "proxy_steps": 0, "finetune_steps": 0, "backend": None,
        "objectives": ["metric", "macs"], "state_dir": str(state)}
    objective = worker_objective(rebuild, settings)
    for trial in complete[:2]:
        assert objective(optuna.trial.FixedTrial(trial.params)) == pytest.approx(tuple(trial.values), abs=1e-6)

    # NOTE: resumed after the search stage: no search again (no new trial, logs untouched), and the
    # prune stage applies the searched widths from results.json.
    logs = {p: p.stat().st_mtime_ns for p in state.glob("worker-*.log")}
    done = run_recipe(recipe, out_dir=out, resume=True)
    assert done["completed"] == 3 and len(_complete(out)) == 4
    assert {p: p.stat().st_mtime_ns for p in state.glob("worker-*.log")} == logs
    plan = done["stages"][2]["summary"]["plan"]
    assert {k: len(v) for k, v in plan["keep"].items()} == searched["best"]["config"]
    final = done["model"]
    widths = sorted([final.conv1.out_channels, final.conv2.out_channels, final.fc1.out_features])
    assert widths == sorted(searched["best"]["config"].values())
    with torch.no_grad():
        assert final(torch.zeros(1, 1, 28, 28)).shape == (1, 10)

    # NOTE: resumed during the search stage (a run killed after its study was complete): the stage
    # reruns on the stored study, so no worker starts and it chooses the same widths.
    (out / "state.json").write_text(json.dumps({**json.loads((out / "state.json").read_text()), "completed": 1}))
    again = run_recipe(recipe, out_dir=out, resume=True)
    assert len(_complete(out)) == 4
    assert {p: p.stat().st_mtime_ns for p in state.glob("worker-*.log")} == logs
    assert again["stages"][1]["summary"]["best"] == searched["best"]


def _error(recipe: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_recipe(recipe, source="r.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_search_workers_are_one_line_errors(tiny_npz: Path) -> None:
    assert _error(_recipe(tiny_npz, strategy="greedy")) == (
        "r.yaml: stages[1].search: workers: 2 needs a strategy whose trials workers can share (nsga2, tpe, gp); "
        "got 'greedy', which runs one step after another. Use strategy: tpe (or nsga2, gp), or workers: 1.")
    for bad in (0, -1, True, "2"):
        assert _error(_recipe(tiny_npz, workers=bad)) == (
            f"r.yaml: stages[1].search.workers: workers must be an int >= 1 (processes working on one study); "
            f"got {bad!r}. Pass e.g. 2, or 1 to search in this process.")
    assert _error(_recipe(tiny_npz, storage="mysql://me:secret@host/db")) == (
        "r.yaml: stages[1].search: storage must be a postgresql:// or sqlite:/// database URL; got a 'mysql:' URL. "
        "Use e.g. postgresql://user:password@host:5432/database, or remove it for SQLite in OUT/search-state.")
    assert "secret" not in _error(_recipe(tiny_npz, storage="mysql://me:secret@host/db"))
    assert _error(_recipe(tiny_npz, strategy="greedy", workers=1, storage="sqlite:///s.db")).endswith(
        "storage holds an Optuna study, which only nsga2, tpe, gp keep; got strategy 'greedy'. Use strategy: tpe "
        "(or nsga2, gp), or remove storage.")


def test_a_run_resumed_after_its_search_stage_applies_the_searched_widths(tiny_npz: Path, tmp_path: Path) -> None:
    recipe = parse_recipe({"model": "simple_cnn", "data": str(tiny_npz),
                           "stages": [{"search": {"target": {"macs": 0.5}, "trials": 3, "val_samples": 32}},
                                      {"prune": {"allocation": "search"}}]})
    searched = run_recipe(recipe, out_dir=tmp_path / "r", stop_after=1)["stages"][0]["summary"]
    done = run_recipe(recipe, out_dir=tmp_path / "r", resume=True)
    plan = done["stages"][1]["summary"]["plan"]
    assert plan == searched["plan"]
    assert {k: len(v) for k, v in plan["keep"].items()} == searched["best"]["config"]
