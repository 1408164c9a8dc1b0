"""``--overwrite``: the record of an earlier run in OUT is removed before the new run writes, so the
new report shows only what this run produced; every other file stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.cli import main
from prunekit.workflows.outputs import RUN_RECORDS, claim

_PARETO = {"version": 1, "x": "macs", "y": "accuracy", "points": [{"x": 0.4375, "y": 0.8}], "chosen": 0}


def _earlier_search(out: Path) -> None:
    """What a search wrote, as a user's ``cp -r`` leaves it, plus a file of the user's own."""
    (out / "search-state" / "model").mkdir(parents=True)
    (out / "search-state" / "study.db").write_bytes(b"old")
    (out / "pareto.json").write_text(json.dumps(_PARETO))
    for name in ("results.json", "evidence.json", "report.md", "report.html"):
        (out / name).write_text("{}")
    (out / "model").mkdir()
    (out / "model" / "manifest.json").write_text("{}")
    (out / "notes.txt").write_text("mine")


def test_the_records_are_the_names_their_writers_use() -> None:
    from prunekit.recipes.runner import STATE_FILE
    from prunekit.recipes.stages import SEARCH_STATE
    from prunekit.report.results import (EVIDENCE_FILE, HTML_FILE, MARKDOWN_FILE, PARETO_FILE, RESULTS_FILE,
                                         SENSITIVITY_FILE)

    assert RUN_RECORDS == {RESULTS_FILE, EVIDENCE_FILE, HTML_FILE, MARKDOWN_FILE, SENSITIVITY_FILE, PARETO_FILE,
                           SEARCH_STATE, STATE_FILE}


@pytest.mark.parametrize("overwrite, resume", [(True, False), (True, True), (False, True)])
def test_overwrite_removes_only_an_earlier_runs_record(tmp_path: Path, overwrite: bool, resume: bool) -> None:
    out = tmp_path / "x"
    out.mkdir()
    _earlier_search(out)
    (tmp_path / "elsewhere").mkdir()
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(tmp_path / "elsewhere")  # NOTE: a link goes, not what it points to
    with claim(out, command="prune", overwrite=overwrite, resume=resume):
        left = sorted(p.name for p in out.iterdir() if not p.name.startswith((".prunekit.lock", ".prunekit-tmp-")))
    if resume:  # NOTE: a resumed run continues from its state
        assert {"pareto.json", "search-state", "results.json"} <= set(left)
    else:
        assert left == ["model", "notes.txt"]
        assert sorted(p.name for p in out.iterdir()) == ["model", "notes.txt"]  # NOTE: nothing set aside is left
        assert (out / "notes.txt").read_text() == "mine" and (tmp_path / "elsewhere").is_dir()


@pytest.mark.parametrize("command", ["prune", "search"])
def test_a_failed_overwrite_brings_the_earlier_record_back(tmp_path: Path, command: str) -> None:
    out = tmp_path / "x"
    out.mkdir()
    _earlier_search(out)
    (out / "results.json").write_text('{"command": "search"}')
    before = {p.name: p.stat().st_ino for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt), claim(out, command=command, overwrite=True):
        (out / "results.json").write_text("{}")  # NOTE: the failed run's own, half-written
        raise KeyboardInterrupt
    if command == "search":  # NOTE: a resumable command's partial state is what --resume continues from
        assert not (out / "pareto.json").exists()
    else:
        assert {p.name: p.stat().st_ino for p in out.iterdir()} == before
        assert json.loads((out / "results.json").read_text()) == {"command": "search"}


def test_prune_overwriting_a_search_folder_reports_only_its_own_run(tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    _earlier_search(out)
    assert main(["prune", "--model", "simple_cnn", "--baseline-epochs", "1", "--finetune-epochs", "0",
                 "--max-steps-per-epoch", "2", "--no-progress", "--no-onnx", "--batch-sizes", "1",
                 "--min-time-s", "0", "--max-eval-batches", "1", "--target-macs", "0.5",
                 "--out", str(out), "--overwrite"]) == 0
    assert not (out / "pareto.json").exists() and not (out / "search-state").exists()
    report = (out / "report.md").read_text()
    assert "Pareto" not in report and "0.4375" not in report
    assert json.loads((out / "results.json").read_text())["command"] == "prune"
    assert (out / "notes.txt").read_text() == "mine"
