"""Bad input, tried as a new user would: every case fails (or warns) in one line that says what was
wrong and how to fix it, exits non-zero, and leaves every input file byte-identical.

Cases are grouped by class (outputs, model and data that do not fit, silently accepted, hints
that mislead) in parametrised tables; the CLI runs in-process (``prunekit.cli.main``). Argument
strings name workspace files as ``{name}`` (see ``ws``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.io import save_weights
from prunekit.models import create
from prunekit.workflows.outputs import LOCK_FILE

# NOTE: the quick caps: no baseline or fine-tuning, one evaluation batch, no timed latency.
QUICK = ("--baseline-epochs", "0", "--finetune-epochs", "0", "--max-eval-batches", "1", "--min-time-s", "0",
         "--no-onnx", "--batch-sizes", "1", "--no-progress")
TRAIN_QUICK = ("--epochs", "1", "--max-steps-per-epoch", "1", "--max-eval-batches", "1", "--no-progress",
               "--no-profile")


def _npz(path: Path, x: np.ndarray, classes: int) -> Path:
    y = np.arange(len(x)) % classes
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files a new user brings: data of several kinds, weights, saved folders, recipes."""
    root = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    grey = rng.standard_normal((40, 1, 28, 28))
    files: dict[str, Path] = {"root": root}
    files["npz"] = _npz(root / "grey.npz", grey, 10)
    files["npz3"] = _npz(root / "three_classes.npz", grey, 3)
    files["rgb"] = _npz(root / "rgb.npz", rng.standard_normal((40, 3, 28, 28)), 10)
    nan = grey.copy()
    nan[[3, 17, 29], 0, 5, 5] = np.nan
    files["nan"] = _npz(root / "nan.npz", nan, 10)
    inf = grey.copy()
    inf[:, 0, 0, 0] = np.inf
    files["inf"] = _npz(root / "inf.npz", inf, 10)
    files["saved"] = prunekit.save(create("simple_cnn"), root / "saved", source="simple_cnn")
    files["lenet_weights"] = save_weights(create("lenet5"), root / "lenet5.safetensors")
    files["corrupt"] = root / "corrupt.safetensors"
    files["corrupt"].write_bytes(os.urandom(256))
    files["binary_recipe"] = root / "recipe.yaml"
    files["binary_recipe"].write_bytes(bytes(range(256)) * 4)
    files["recipe"] = root / "tiny.yaml"
    files["recipe"].write_text("model: simple_cnn\ndata: digits\nstages:\n  - train: {epochs: 1}\n")
    files["earlier"] = root / "earlier"
    files["earlier"].mkdir()
    (files["earlier"] / "results.json").write_text('{"command": "prune"}\n')
    files["file"] = root / "a_file.txt"
    files["file"].write_text("not a folder\n")
    files["empty_dir"] = root / "empty_dir"
    files["empty_dir"].mkdir()
    files["train_run"] = root / "train_run"  # filled by the --resume case's first step
    return files


def _hashes(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders), by path."""
    found: dict[str, str] = {}
    for path in paths:
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            found[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def _fill(argv: tuple[str, ...], ws: dict[str, Path]) -> list[str]:
    names = {k: str(v) for k, v in ws.items()}
    return [a.format(**names) for a in argv]


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the words that say what was wrong and how to fix it."""

    id: str
    argv: tuple[str, ...]
    what: tuple[str, ...]
    fix: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # workspace names whose files must not change
    stream: str = "err"  # where the message goes: "err" (an error) or "out" (a note)
    code: int = 2
    setup: Callable[[dict[str, Path]], None] | None = field(default=None, compare=False)


def _run(case: Case, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> str:
    watched = [ws[name] for name in case.inputs]
    before = _hashes(watched)
    capsys.readouterr()
    code = main(_fill(case.argv, ws))
    out, err = capsys.readouterr()
    text = err if case.stream == "err" else out
    assert code == case.code, f"exit {code}\nstdout: {out}\nstderr: {err}"
    if case.stream == "err":
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
    message = " ".join(text.split())
    for words in (*case.what, *case.fix):
        assert words.format(**{k: str(v) for k, v in ws.items()}) in message, message
    assert _hashes(watched) == before, "an input file changed"
    return message


# ---- outputs: an existing --out, a file, an uncreatable folder, a folder in use -------------------------

_EARLIER = ("already holds results (results.json)",)
_OVERWRITE = ("Pass --overwrite to replace them, or pick a new folder with --out", "nothing was written")

OUTPUT_CASES = [
    Case("prune-existing-out", ("prune", "--model", "simple_cnn", "--ratio", "0.5", "--out", "{earlier}", *QUICK),
         _EARLIER, _OVERWRITE, ("earlier",)),
    Case("train-existing-out", ("train", "--model", "simple_cnn", "--out", "{earlier}", *TRAIN_QUICK),
         _EARLIER, _OVERWRITE, ("earlier",)),
    Case("sparsify-existing-out", ("sparsify", "--model", "simple_cnn", "--out", "{earlier}", *QUICK),
         _EARLIER, _OVERWRITE, ("earlier",)),
    Case("decompose-existing-out", ("decompose", "--model", "simple_cnn", "--out", "{earlier}", *QUICK),
         _EARLIER, _OVERWRITE, ("earlier",)),
    Case("export-existing-out", ("export", "--model", "{saved}", "--out", "{earlier}"),
         _EARLIER, _OVERWRITE, ("earlier", "saved")),
    Case("eval-existing-out", ("eval", "--model", "{saved}", "--data", "{npz}", "--out", "{earlier}"),
         _EARLIER, _OVERWRITE, ("earlier", "saved", "npz")),
    Case("profile-existing-out", ("profile", "--model", "simple_cnn", "--out", "{earlier}"),
         _EARLIER, _OVERWRITE, ("earlier",)),
    Case("partition-existing-out", ("partition", "--model", "simple_cnn", "--out", "{earlier}"),
         _EARLIER, _OVERWRITE, ("earlier",)),
    Case("run-existing-out", ("run", "{recipe}", "--out", "{earlier}"),
         _EARLIER, _OVERWRITE, ("earlier", "recipe")),
    Case("out-is-a-file", ("prune", "--model", "simple_cnn", "--ratio", "0.5", "--out", "{file}", *QUICK),
         ("--out '{file}' is a file, not a folder",), ("Pass a folder path",), ("file",)),
    Case("out-under-a-file", ("train", "--model", "simple_cnn", "--out", "{file}/run", *TRAIN_QUICK),
         ("--out '{file}/run' cannot be created", "is not a writable folder"),
         ("Pass a folder you can write to with --out",), ("file",)),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=lambda c: c.id)
def test_outputs(case: Case, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _run(case, ws, capsys)


def test_default_out_is_refused_when_it_holds_results(ws: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "train" / "model.safetensors").write_bytes(b"earlier weights")
    message = _run(Case("default-out", ("train", "--model", "simple_cnn", *TRAIN_QUICK),
                        ("--out 'runs/train' already holds results (model.safetensors)",), _OVERWRITE), ws, capsys)
    assert "train:" in message
    assert (tmp_path / "runs" / "train" / "model.safetensors").read_bytes() == b"earlier weights"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_fails_before_the_work(ws: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        _run(Case("read-only-out", ("train", "--model", "simple_cnn", "--out", str(out), *TRAIN_QUICK),
                  ("is not writable",), ("Pass a folder you can write to with --out",)), ws, capsys)
    finally:
        out.chmod(0o755)


def test_unwritable_out_fails_before_the_work(ws: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As root every folder is writable, so the permission answer is what a normal user would get."""
    import prunekit.workflows.outputs as outputs
    import prunekit.workflows.prune as prune_workflow

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the work started")

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    monkeypatch.setattr(prune_workflow, "prune", never)
    out = tmp_path / "ro"
    out.mkdir()
    _run(Case("unwritable-out", ("prune", "--model", "simple_cnn", "--ratio", "0.5", "--out", str(out), *QUICK),
              (f"--out '{out}' is not writable by this user",), ("Pass a folder you can write to with --out",
                                                               "nothing was run")), ws, capsys)
    _run(Case("uncreatable-out", ("prune", "--model", "simple_cnn", "--ratio", "0.5", "--out", str(out / "new"),
                                  *QUICK),
              (f"--out '{out / 'new'}' cannot be created ('{out}' is not a writable folder)",),
              ("Pass a folder you can write to with --out",)), ws, capsys)


@pytest.fixture
def busy_out(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """An output folder whose lock a live process holds."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "busy"
    out.mkdir()
    (out / LOCK_FILE).write_text(f"{owner.pid}\n")
    yield out, owner.pid
    owner.kill()
    owner.wait()


@pytest.mark.parametrize("command", [("prune", "--model", "simple_cnn", "--ratio", "0.5", *QUICK),
                                     ("train", "--model", "simple_cnn", *TRAIN_QUICK)], ids=["prune", "train"])
def test_two_runs_into_one_folder(command: tuple[str, ...], busy_out: tuple[Path, int], ws: dict[str, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out, pid = busy_out
    _run(Case("busy", (*command, "--out", str(out)), (f"another prunekit run (pid {pid}) is writing to '{out}'",),
              ("Wait for it to finish, or pass another --out",)), ws, capsys)


def test_overwrite_writes_into_a_folder_with_results(ws: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "again"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert main(["profile", "--model", "simple_cnn", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0",
                 "--out", str(out), "--overwrite"]) == 0
    assert f"results: {out / 'results.json'}" in capsys.readouterr().out
    assert '"command"' in (out / "results.json").read_text()
    assert not (out / LOCK_FILE).exists()


def test_a_failed_run_leaves_no_folder_it_created(ws: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "run"
    assert main(["prune", "--model", "simple_cnn", "--data", "digits", "--ratio", "0.5", "--out", str(out),
                 *QUICK]) == 2
    assert not (tmp_path / "new").exists()


# ---- model and data that do not fit each other -----------------------------------------------------

FIT_CASES = [
    Case("simple-cnn-on-digits", ("prune", "--model", "simple_cnn", "--data", "digits", "--ratio", "0.5",
                                  "--out", "{root}/o-digits", *QUICK),
         ("model 'simple_cnn' does not fit data 'digits'", "its 1x8x8 inputs",
          "it is built for 1x28x28 inputs"),
         ("Pick a model made for 1x8x8 inputs", "`prunekit models` lists input sizes")),
    Case("simple-cnn-on-digits-train", ("train", "--model", "simple_cnn", "--data", "digits",
                                        "--out", "{root}/o-digits-train", *TRAIN_QUICK),
         ("does not fit data 'digits'", "built for 1x28x28"), ("Pick a model made for 1x8x8 inputs",)),
    Case("saved-10-classes-on-3", ("eval", "--model", "{saved}", "--data", "{npz3}"),
         ("gives 10 outputs per sample but data '{npz3}' has 3 classes",),
         ("Pass a model with 3 outputs",), ("saved", "npz3")),
    Case("grey-model-on-rgb", ("eval", "--model", "{saved}", "--data", "{rgb}"),
         ("model '{saved}' does not fit data '{rgb}'", "its 3x28x28 inputs"),
         ("Pick a model made for 3x28x28 inputs",), ("saved", "rgb")),
    Case("weights-of-another-model", ("eval", "--model", "simple_cnn", "--weights", "{lenet_weights}",
                                      "--data", "{npz}"),
         ("tensor 'conv1.bias' has shape (6,) but the model expects (4,)", "another architecture"),
         ("pass weights saved from this model",),
         ("lenet_weights", "npz")),
]


@pytest.mark.parametrize("case", FIT_CASES, ids=lambda c: c.id)
def test_model_and_data_that_do_not_fit(case: Case, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _run(case, ws, capsys)


def test_resume_with_another_architecture(ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run = ws["root"] / "resume_run"
    base = ("--data", "{npz}", "--out", str(run), *TRAIN_QUICK)
    assert main(_fill(("train", "--model", "simple_cnn", *base), ws)) == 0
    _run(Case("resume-other-arch", ("train", "--model", "lenet5", *base, "--resume"),
              (f"--resume: '{run / 'checkpoint.safetensors'}' was saved from another architecture", "has shape"),
              ("Resume with the --model (and --data) of the interrupted run",), ("npz",)), ws, capsys)


# ---- silently accepted before: now refused, naming the reason ---------------------------------------

SILENT_CASES = [
    Case("sparsity-1", ("sparsify", "--model", "simple_cnn", "--sparsity", "1", "--out", "{root}/o-s1", *QUICK),
         ("sparsity 1 zeroes every weight",), ("--sparsity 0.9",)),
    Case("ratio-1", ("prune", "--model", "simple_cnn", "--ratio", "1", "--out", "{root}/o-r1", *QUICK),
         ("ratio",), ("[0, 1)",)),
    Case("nan-inputs", ("train", "--model", "simple_cnn", "--data", "{nan}", "--out", "{root}/o-nan", *TRAIN_QUICK),
         ("data '{nan}':", "3 of 40 rows of its array 'x' hold NaN or inf inputs (the first is row 3)"),
         ("numpy.nan_to_num", "drop those samples"), ("nan",)),
    Case("inf-inputs", ("prune", "--model", "simple_cnn", "--data", "{inf}", "--ratio", "0.5",
                        "--out", "{root}/o-inf", *QUICK),
         ("40 of 40 rows of its array 'x' hold NaN or inf inputs (the first is row 0)",), ("numpy.nan_to_num",),
         ("inf",)),
]


@pytest.mark.parametrize("case", SILENT_CASES, ids=lambda c: c.id)
def test_silently_accepted(case: Case, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _run(case, ws, capsys)


def _scripted() -> Any:
    with pytest.warns(FutureWarning):  # NOTE: torch deprecates TorchScript; users still bring it.
        return torch.jit.script(create("simple_cnn"))


def _on_meta() -> Any:
    with torch.device("meta"):
        return create("simple_cnn")


_X = torch.randn(1, 1, 28, 28)
API_CASES = [
    ("torchscript", _scripted, lambda: _X, "is a TorchScript module", "Pass the Python nn.Module"),
    ("function", lambda: (lambda x: x * 2), lambda: _X, "the model is a plain function, not a torch.nn.Module",
     "Pass an nn.Module instance"),
    ("meta-device", _on_meta, lambda: _X, "is on the meta device", "model.to_empty(device='cpu')"),
    ("lazy", lambda: torch.nn.Sequential(torch.nn.LazyConv2d(4, 3), torch.nn.ReLU(), torch.nn.LazyConv2d(2, 3)),
     lambda: _X, "is an uninitialised parameter of a lazy module", "Run the model once on an example input"),
    ("inputs-list", lambda: create("simple_cnn"), lambda: [_X], "example_inputs is a list of 1",
     "Pass tuple(example_inputs)"),
    ("inputs-none", lambda: create("simple_cnn"), lambda: None, "example_inputs is None", "torch.randn("),
]


@pytest.mark.parametrize("entry", ["StructuredPruner.fit", "DependencyGraph.trace"])
@pytest.mark.parametrize(("model", "inputs", "what", "fix"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_entry_refuses(entry: str, model: Callable[[], Any], inputs: Callable[[], Any], what: str,
                           fix: str) -> None:
    from prunekit import StructuredPruner
    from prunekit.graph import DependencyGraph

    net, example = model(), inputs()
    before = {k: v.clone() for k, v in net.state_dict().items()} if isinstance(net, torch.nn.Module) \
        and not _is_meta(net) else None
    with pytest.raises(PrunekitError) as caught:
        if entry == "StructuredPruner.fit":
            StructuredPruner({"ratio": 0.5}).fit(net, example)
        else:
            DependencyGraph.trace(net, example)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(entry + ":")
    assert what in message and fix in message
    if before is not None:
        for key, value in net.state_dict().items():
            assert torch.equal(value, before[key])


def _is_meta(net: torch.nn.Module) -> bool:
    """No values to compare before and after: on the meta device, or lazy and not yet run."""
    from torch.nn.parameter import is_lazy

    return any(is_lazy(p) or p.is_meta for p in net.parameters())


# ---- hints that mislead: each fix names a real flag, a real kind of path, a real command ------------

HINT_CASES = [
    Case("models-no-match", ("models", "zzz*"), ("no model name matches 'zzz*'",),
         ("run `prunekit models` to list every name",)),
    Case("models-no-match-source", ("models", "resnet20", "--source", "torchvision"),
         ("no model name from torchvision matches 'resnet20'",), ("Patterns are shell-style",)),
    Case("binary-recipe", ("run", "{binary_recipe}"), ("is a binary file, not a YAML recipe",),
         ("Pass the path of a YAML recipe",), ("binary_recipe",)),
    Case("recipe-is-a-folder", ("run", "{empty_dir}"), ("'{empty_dir}' is a folder; expected a recipe file",),
         ("Pass the path of a YAML recipe",)),
    Case("recipe-missing", ("run", "{root}/nope.yaml"), ("'{root}/nope.yaml' does not exist (expected a recipe file (YAML))",),
         ("Pass the path of a YAML recipe",)),
    Case("weights-is-a-folder", ("eval", "--model", "simple_cnn", "--weights", "{empty_dir}", "--data", "{npz}"),
         ("'{empty_dir}' is a folder; expected a weights file",), ("--weights takes a file",), ("npz",)),
    Case("weights-missing", ("eval", "--model", "simple_cnn", "--weights", "{root}/none.safetensors",
                             "--data", "{npz}"),
         ("'{root}/none.safetensors' does not exist",), ("Check the path",), ("npz",)),
    Case("weights-corrupt", ("eval", "--model", "simple_cnn", "--weights", "{corrupt}", "--data", "{npz}"),
         ("'{corrupt}' is not a readable state dict",), ("Re-save it with",), ("corrupt", "npz")),
    Case("data-missing", ("eval", "--model", "simple_cnn", "--data", "{root}/none/data.npz"),
         ("does not exist",), ("check the path",)),
    Case("model-folder-not-saved", ("eval", "--model", "{empty_dir}", "--data", "{npz}"),
         ("'{empty_dir}'",), ("prunekit",), ("npz",)),
    Case("unknown-model", ("eval", "--model", "simple_cn", "--data", "{npz}"),
         ("simple_cn",), ("Did you mean 'simple_cnn'?",), ("npz",)),
    Case("unknown-data", ("eval", "--model", "simple_cnn", "--data", "fashion_mnst"),
         ("Unknown dataset 'fashion_mnst'",), ("Did you mean",)),
    Case("resume-without-checkpoint", ("train", "--model", "simple_cnn", "--data", "{npz}", "--out",
                                       "{empty_dir}", "--resume", *TRAIN_QUICK),
         ("resume=True but '{empty_dir}/checkpoint.safetensors' does not exist",),
         ("Train once without resume",), ("npz",)),
    Case("layer-channels-malformed", ("prune", "--model", "simple_cnn", "--layer-channels", "conv1",
                                      "--out", "{root}/o-lc", *QUICK),
         ("--layer-channels: expected MODULE=N; got 'conv1'",), ("Pass e.g. --layer-channels conv1=2",)),
    Case("max-eval-batches-0", ("eval", "--model", "{saved}", "--data", "{npz}", "--max-eval-batches", "0"),
         (">= 1",), ("--max-eval-batches",), ("saved", "npz")),
    Case("unknown-importance", ("prune", "--model", "simple_cnn", "--ratio", "0.5", "--importance", "l3",
                                "--out", "{root}/o-imp", *QUICK),
         ("Unknown importance 'l3'",), ("Known: activation",)),
    Case("eval-random-weights", ("eval", "--model", "simple_cnn", "--data", "{npz}"),
         ("note: 'simple_cnn' has random weights (no --weights, not a folder an earlier command saved)",),
         ("Pass --weights FILE",), ("npz",), stream="out", code=0),
]


@pytest.mark.parametrize("case", HINT_CASES, ids=lambda c: c.id)
def test_hints(case: Case, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _run(case, ws, capsys)


def test_load_of_a_folder_without_manifest(ws: dict[str, Path]) -> None:
    with pytest.raises(PrunekitError, match="has no manifest.json: not a folder prunekit.save wrote. Pass the "
                                            "folder that holds manifest.json"):
        prunekit.load(ws["empty_dir"])


def test_interrupted_before_any_checkpoint_says_so(ws: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import prunekit.workflows.train as train_workflow

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_workflow, "train", interrupted)
    code = main(["train", "--model", "simple_cnn", "--out", str(tmp_path / "run"), *TRAIN_QUICK])
    assert code == 130
    assert "interrupted; no checkpoint was saved yet" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cases_count() -> None:
    """Item 8 asks for at least 40 cases; the tables above hold them (API cases run at two entries)."""
    tables = OUTPUT_CASES + FIT_CASES + SILENT_CASES + HINT_CASES
    assert len({c.id for c in tables}) == len(tables)
    assert len(tables) + 2 * len(API_CASES) + 8 >= 40


# NOTE: flags of other programs that prunekit's messages name on purpose (torchrun, apt-get, the
# benchmarks' own scripts) and the placeholders of its docstrings.
_FOREIGN_FLAGS = {"--nproc": "torchrun --nproc_per_node", "--reinstall": "apt-get install --reinstall",
                  "--part": "benchmarks/vs_torch_pruning.py --part", "--flag": "a placeholder",
                  "--flags": "a placeholder", "--field-name": "a placeholder"}


def test_every_flag_a_message_names_exists() -> None:
    """A hint that names a flag no command has (e.g. --exclude for --ignore) sends the user nowhere."""
    import ast
    import re

    from prunekit.cli import build_parser

    parser = build_parser()
    flags = set(parser._option_string_actions)
    for sub in parser._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        flags |= set(sub._option_string_actions)
    pattern = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
    unknown = []
    for file in sorted(Path(prunekit.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                unknown += [f"{file.name}:{node.lineno}: {flag}" for flag in pattern.findall(node.value)
                            if flag not in flags and flag not in _FOREIGN_FLAGS]
    assert unknown == []


# ---- numbers that mislead: latency ratios only against an A/A control of the same run ---------------

def test_prune_prints_latency_ratios_only_with_the_a_a_control(ws: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "run"
    assert main(["prune", "--model", "simple_cnn", "--data", str(ws["npz"]), "--ratio", "0.5", "--out", str(out),
                 *QUICK]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("torch batch 1"))
    assert "(A/A ±" in row and ("within noise" in row or "faster" in row or "slower" in row)
    assert "latency first/last: median of 4 interleaved rounds" in table
    control = json.loads((out / "results.json").read_text())["latency_control"]
    assert [(c["backend"], c["batch_size"], c["rounds"]) for c in control] == [("torch", 1, 4)]


@pytest.mark.parametrize("command", [
    ("eval", "--model", "{saved}", "--data", "{npz}"),
    ("profile", "--model", "{saved}", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0"),
    ("partition", "--model", "{saved}", "--no-onnx", "--min-time-s", "0", "--no-progress"),
], ids=["eval", "profile", "partition"])
def test_read_only_commands_write_results_where_they_say(command: tuple[str, ...], ws: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    before = _hashes([ws["saved"], ws["npz"]])
    assert main([*_fill(command, ws), "--out", str(out)]) == 0
    assert f"results: {out / 'results.json'}" in capsys.readouterr().out
    assert (out / "results.json").is_file() and not (out / LOCK_FILE).exists()
    assert _hashes([ws["saved"], ws["npz"]]) == before
    assert main(_fill(command, ws)) == 0  # NOTE: without --out nothing is written, and it says how to keep it
    assert "nothing written (pass --out DIR to keep results.json" in capsys.readouterr().out
