"""``prunekit run --overwrite`` with another recipe: the earlier run's stage checkpoints and the
``export/`` and ``quantize/`` folders its stages wrote go, so that none sits beside the new run's as if
it were its own; the user's files, and a folder the new recipe reads its model from, stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.cli import main


def _run(tmp_path: Path, name: str, text: str, out: Path, *extra: str) -> None:
    file = tmp_path / name
    file.write_text(text)
    assert main(["run", str(file), "--out", str(out), "--no-progress", *extra]) == 0


def test_overwrite_removes_the_earlier_runs_stage_outputs(tiny_npz: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    _run(tmp_path, "a.yaml", f"model: simple_cnn\ndata: {tiny_npz}\nstages:\n  - evaluate: {{}}\n"
                             f"  - export: {{onnx: false}}\n", out)
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "mine.txt").write_text("mine too")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["mine.txt", "stage-01-evaluate",
                                                                       "stage-02-export"]
    # NOTE: this recipe reads its model from the earlier run's export/: that folder stays
    _run(tmp_path, "b.yaml", f"model: {out / 'export'}\ndata: {tiny_npz}\nstages:\n  - evaluate: {{}}\n",
         out, "--overwrite")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["mine.txt", "stage-01-evaluate"]
    assert (out / "export" / "manifest.json").is_file() and (out / "notes.txt").read_text() == "mine"
    _run(tmp_path, "c.yaml", f"model: simple_cnn\ndata: {tiny_npz}\nstages:\n  - evaluate: {{}}\n", out, "--overwrite")
    assert not (out / "export").exists() and (out / "notes.txt").is_file() and (out / "checkpoints" / "mine.txt").is_file()
    capsys.readouterr()
