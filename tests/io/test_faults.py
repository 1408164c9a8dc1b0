"""Faults: a save killed with SIGKILL never leaves a folder that loads and its temporary is cleaned
by the next save; files get the user's umask; two runs into one output folder are refused (a
stale lock is taken over); Ctrl-C during `prunekit train`, then the printed --resume command, ends
bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.errors import OutputError, PrunekitError
from prunekit.io.files import TEMP_PREFIX, read_weights, save_json
from prunekit.models import create
from prunekit.workflows.outputs import LOCK_FILE, claim

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

# NOTE: the child saves, but stops between the weights and the manifest (``_fill`` writes the
# manifest last) and says so; the test then kills it with SIGKILL, as a crash or OOM killer would.
_KILLED_SAVE = textwrap.dedent("""
    import importlib, sys, time
    from pathlib import Path
    import torch
    import prunekit
    from prunekit.models import create

    save_module = importlib.import_module("prunekit.io.save")  # NOTE: prunekit.io.save is also a function.

    def stalled(data, path):
        Path(sys.argv[2]).write_text("weights written")
        time.sleep(60)

    torch.manual_seed(1)
    save_module.save_json = stalled
    prunekit.save(create("simple_cnn"), sys.argv[1], source="simple_cnn", overwrite=True)
""")


def _kill_mid_save(target: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(target), str(marker)], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child exited before the save stalled"
            assert time.monotonic() < deadline, "the child never reached the stall"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_a_killed_first_save_leaves_no_folder_that_loads_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model"
    _kill_mid_save(target, tmp_path)
    left = _temporaries(target.parent)
    assert not target.exists()
    assert len(left) == 1 and (left[0] / "model.safetensors").is_file()  # killed after the weights
    for folder in (target, left[0]):
        with pytest.raises(PrunekitError, match="has no manifest.json"):
            prunekit.load(folder)
    net = create("simple_cnn")
    prunekit.save(net, target, source="simple_cnn")
    assert _temporaries(target.parent) == []  # the dead process's temporary is gone
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(prunekit.load(target)(x), net.eval()(x), rtol=0, atol=0)


def test_a_killed_overwrite_keeps_the_old_folder_loading(tmp_path: Path) -> None:
    target = tmp_path / "model"
    torch.manual_seed(0)
    old = create("simple_cnn").eval()
    prunekit.save(old, target, source="simple_cnn")
    _kill_mid_save(target, tmp_path)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(prunekit.load(target)(x), old(x), rtol=0, atol=0)


def test_a_torn_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    target = prunekit.save(create("simple_cnn"), tmp_path / "model", source="simple_cnn")
    text = (target / "manifest.json").read_text()
    (target / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(PrunekitError, match="is not valid JSON"):
        prunekit.load(target)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        folder = prunekit.save(create("simple_cnn"), tmp_path / "model", source="simple_cnn")
        results = save_json({"a": 1}, tmp_path / "results.json")
        from prunekit.recover import checkpoint

        checkpoint.save({"version": checkpoint.VERSION}, tmp_path / checkpoint.FILE)
    finally:
        os.umask(old)
    for file in (folder / "model.safetensors", folder / "manifest.json", results, tmp_path / "checkpoint.safetensors"):
        assert file.stat().st_mode & 0o777 == 0o666 & ~mask, file


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_second_run_into_the_same_folder_is_refused_and_a_stale_lock_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    owner = _sleeper()
    try:
        out.mkdir()
        (out / LOCK_FILE).write_text(f"{owner.pid}\n")
        with pytest.raises(OutputError, match=f"another prunekit run \\(pid {owner.pid}\\) is writing"):
            with claim(out, command="prune"):
                pass
    finally:
        owner.kill()
        owner.wait()
    # NOTE: the owner is dead now: its lock is stale and taken over.
    with claim(out, command="prune"):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_FILE).exists()


def test_two_cli_runs_into_one_folder_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    owner = _sleeper()
    try:
        (out / LOCK_FILE).write_text(f"{owner.pid}\n")
        code = main(["train", "--model", "simple_cnn", "--epochs", "1", "--max-steps-per-epoch", "1",
                     "--out", str(out), "--no-progress", "--no-profile"])
    finally:
        owner.kill()
        owner.wait()
    err = capsys.readouterr().err
    assert code == 2
    assert f"another prunekit run (pid {owner.pid}) is writing to '{out}'" in err
    assert "pass another --out" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing was written


# NOTE: a real SIGINT, sent by the process to itself right after the first epoch's checkpoint.
_INTERRUPT_AFTER_FIRST_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import prunekit.recover.checkpoint as checkpoint
    from prunekit.cli import main

    save = checkpoint.save

    def save_then_interrupt(state, path):
        save(state, path)
        os.kill(os.getpid(), signal.SIGINT)

    if sys.argv[1] == "interrupt":
        checkpoint.save = save_then_interrupt
        # NOTE: Ctrl-C as a terminal delivers it: a process started in the background without job
        # control (`cmd &` in a script, as a CI runner may) inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main(sys.argv[2:]))
""")


def _train(mode: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _INTERRUPT_AFTER_FIRST_CHECKPOINT, mode, *argv],
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_ctrl_c_during_train_then_the_printed_resume_command_ends_bit_identical(tmp_path: Path) -> None:
    def argv(out: Path) -> list[str]:
        return ["train", "--model", "simple_cnn", "--epochs", "3", "--batch-size", "32",
                "--max-steps-per-epoch", "4", "--max-eval-batches", "1", "--no-progress", "--no-profile",
                "--out", str(out)]

    whole = _train("plain", argv(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    stopped = _train("interrupt", argv(tmp_path / "stopped"))
    assert stopped.returncode == 130, stopped.stderr
    line = stopped.stderr.strip().splitlines()[-1]
    assert f"a checkpoint was saved in {tmp_path / 'stopped' / 'checkpoint.safetensors'}" in line
    command = shlex.split(line.split("Resume with: ", 1)[1])
    assert command[:2] == ["prunekit", "train"] and command[-1] == "--resume"
    resumed = _train("plain", command[1:])
    assert resumed.returncode == 0, resumed.stderr
    got, _ = read_weights(tmp_path / "stopped" / "model.safetensors")
    want, _ = read_weights(tmp_path / "whole" / "model.safetensors")
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_ctrl_c_during_a_recipe_names_its_state_and_the_resume_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import prunekit.cli.run as run_command

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("model: simple_cnn\ndata: digits\nstages:\n  - train: {epochs: 1}\n")
    out = tmp_path / "out"

    def stopped_after_a_stage(recipe: Any, *, out_dir: Any, **kwargs: Any) -> Any:
        (Path(out_dir) / "state.json").write_text('{"completed": 1}')
        raise KeyboardInterrupt

    monkeypatch.setattr(run_command, "run_recipe", stopped_after_a_stage)
    assert main(["run", str(recipe), "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; a checkpoint was saved in {out / 'state.json'}" in err
    assert f"Resume with: prunekit run {recipe} --out {out} --no-progress --resume" in err
    assert not (out / LOCK_FILE).exists()
