"""The report of runs on users' models and data: ties in attribution maps, recipes that factorise
pruned layers, eval and export folders, custom metrics, recurrent layers, class names, and run folders
whose files are valid JSON of the wrong shape or whose page cannot be drawn."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunekit.errors import DataError
from prunekit.graph import DependencyGraph
from prunekit.measure import Profile
from prunekit.report import load_run, plots, write_report
from prunekit.report.attribution import agreement
from prunekit.report.evidence import collect, widths
from prunekit.structured import Plan
from prunekit.workflows.common import write_run_report


def _write(folder: Path, results: Any, evidence: Any = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    if evidence is not None:
        (folder / "evidence.json").write_text(json.dumps(evidence))
    return folder


def _prune_results() -> dict[str, Any]:
    """A prune run's results.json with two tiny profiles."""
    before = Profile(name="dense", params=100, macs=1000, size_bytes=400, accuracy=0.9).to_dict()
    after = Profile(name="pruned", params=50, macs=500, size_bytes=200, accuracy=0.8).to_dict()
    return {"command": "prune", "model": "tiny", "before": before, "after": after}


def test_attribution_agreement_gives_tied_values_their_average_rank() -> None:
    # Hand-checked: average ranks [0, 1.5, 1.5, 3] and [0, 3, 1.5, 1.5] correlate at 0.5.
    a, b = torch.tensor([[1.0, 2.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0, 2.0]])
    assert agreement(a, b)[0] == pytest.approx(0.5)
    # Two maps zero but for one hot spot each, in different places: unrelated, not "0.99".
    one, other = torch.zeros(1, 28, 28), torch.zeros(1, 28, 28)
    one[0, 3, 3], other[0, 20, 20] = 1.0, 1.0
    # NOTE: with average ranks, Spearman's rho is the Pearson correlation of two disjoint indicators.
    assert agreement(one, other)[0] == pytest.approx(-1 / (28 * 28 - 1))
    assert agreement(one, one.clone())[0] == pytest.approx(1.0)
    assert agreement(one, torch.ones(1, 28, 28)) == [None]


class _Net(nn.Module):
    def __init__(self, width: int = 8, hidden: int = 6) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, hidden, batch_first=True)
        self.fc1 = nn.Linear(hidden, width)
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.out(torch.relu(self.fc1(y[:, -1])))


def test_widths_keep_a_pruned_layer_a_later_stage_factorised_and_count_recurrent_hidden_units() -> None:
    before, after = _Net(), _Net(width=4, hidden=3)
    before.conv = nn.Conv1d(1, 8, 3)
    # NOTE: a decompose stage after the prune replaces fc1 and conv by Sequential shells (same output width).
    after.register_module("fc1", nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4)))
    after.conv = nn.Sequential(nn.Conv1d(1, 2, 1), nn.Conv1d(2, 2, 3), nn.Conv1d(2, 4, 1))
    rows = {r["layer"]: (r["kind"], r["before"], r["after"]) for r in widths(before, after)}
    assert rows == {
        "lstm": ("LSTM", 6, 3),
        "fc1": ("Linear", 8, 4),
        "conv": ("Conv1d", 8, 4),
        "out": ("Linear", 3, 3),
    }
    figure = plots.widths(widths(before, after))
    assert figure is not None and "3 of 4 layers narrowed; 25 -> 14 output channels in all" in figure.caption


def test_the_importance_of_a_recurrent_layer_counts_hidden_units_not_gate_rows() -> None:
    model, x = _Net().eval(), torch.randn(1, 5, 4)
    graph = DependencyGraph.trace(model, x)
    hidden = next(g for g in graph.groups if g.id.startswith("lstm"))
    fc1 = next(g for g in graph.groups if g.id.startswith("fc1"))
    plan = Plan(keep={hidden.id: (0, 2, 4), fc1.id: (0, 1, 2, 3)}, sizes={hidden.id: 6, fc1.id: 8})
    scores = {hidden.id: torch.arange(6.0), fc1.id: torch.arange(8.0)}
    evidence = collect(model, model, example_inputs=x, plan=plan, scores=scores)
    rows = {r["group"]: r for r in evidence["importance"]}
    assert rows[hidden.id]["unit"] == "hidden unit" and rows[hidden.id]["channels_per_unit"] == 1
    figure = plots.importance(evidence["importance"])
    assert figure is not None
    assert "4 of 8 channels and 3 of 6 hidden units removed across 2 groups" in figure.caption


def test_the_report_of_an_eval_and_an_export_folder_shows_their_numbers(tmp_path: Path) -> None:
    eval_run = _write(
        tmp_path / "eval",
        {
            "command": "eval",
            "model": "m",
            "split": "test",
            "task": "classification",
            "metrics": {"loss": 2.5, "accuracy": 0.375, "top5": 0.875, "count": 200},
        },
    )
    write_report(eval_run)
    summary = (eval_run / "report.md").read_text()
    assert "| | before | test split |" in summary
    for line in (
        "| loss | - | 2.5 |",
        "| accuracy | - | 0.375 |",
        "| top5 | - | 0.875 |",
        "| samples | - | 200 |",
    ):
        assert line in summary
    assert "<td>accuracy</td><td>-</td><td>0.3750</td>" in (eval_run / "report.html").read_text()
    bundle = {
        "precision": "int8",
        "metrics": {"accuracy": 0.625, "count": 16},
        "latency_ms": {"batch 1": 0.25},
    }
    export_run = _write(
        tmp_path / "export",
        {"command": "export", "model": "m", "params": 1234, "macs": 5678, "bundle": bundle},
    )
    write_report(export_run)
    summary = (export_run / "report.md").read_text()
    for line in (
        "| params | - | 1234 |",
        "| MACs / sample | - | 5678 |",
        "| accuracy (bundle, int8) | - | 0.625 |",
        "| latency onnxruntime batch 1 (bundle, int8) (ms (median)) | - | 0.25 |",
    ):
        assert line in summary


def test_training_curves_draw_a_custom_tasks_validation_metric() -> None:
    history = [
        {"epoch": 0, "train_loss": 1.0, "lr": 0.001, "val_mse": 0.75},
        {"epoch": 1, "train_loss": 0.5, "lr": 0.001, "val_mse": 0.25},
    ]
    figure = plots.curves([("finetune", history)])
    assert figure is not None and "last val_mse 0.25" in figure.caption and "val_mse" in figure.alt
    # A built-in task's headline still comes first.
    figure = plots.curves(
        [("train", [{"epoch": 0, "train_loss": 1.0, "val_top5": 0.9, "val_accuracy": 0.5}])]
    )
    assert figure is not None and "last val_accuracy 0.5" in figure.caption


def test_a_report_that_cannot_be_drawn_warns_and_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prunekit.report.write

    def broken(run_dir: Any) -> Path:
        raise ValueError("Key backend: 'nonsense' is not a valid value for backend")

    monkeypatch.setattr(prunekit.report.write, "write_report", broken)
    out = _write(tmp_path / "run", _prune_results())
    staged = _write(out / ".prunekit-tmp-1-abc-output", _prune_results())
    for folder, shown in ((out, out), (staged, out)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert write_run_report(folder, {"version": 1, "notes": []}) is None
        message = " ".join(str(w.message) for w in caught)
        assert "report could not be drawn (ValueError: Key backend: 'nonsense'" in message
        assert f"prunekit report {shown}`" in message and "\n" not in message
        assert (folder / "results.json").is_file() and (folder / "evidence.json").is_file()

    def interrupted(run_dir: Any) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(prunekit.report.write, "write_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_run_report(out)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("results.json", [1, 2], "results.json' holds a list, not the object of a run's results"),
        ("results.json", [], "results.json' holds a list, not the object of a run's results"),
        ("results.json", {"command": "run", "stages": [1]}, "results.json' holds a malformed record"),
        (
            "results.json",
            {"command": "prune", "before": [1]},
            "results.json': 'before' must be an object; got a list",
        ),
        ("evidence.json", [1, 2], "evidence.json' holds a list, not the object of a run's evidence"),
        (
            "evidence.json",
            {"classes": {"before": [[1, 0], [0, 1]], "after": [[1]]}},
            "evidence.json': 'classes' must hold 'before' and 'after' confusion matrices of the same size",
        ),
        (
            "evidence.json",
            {"widths": [{"layer": "fc", "before": "8"}]},
            "evidence.json': 'widths' must be a list",
        ),
        (
            "evidence.json",
            {"attribution": {"images": [], "before": [1], "after": [], "agreement": [], "targets": []}},
            "evidence.json': 'attribution' must hold one entry per image",
        ),
    ],
)
def test_a_run_file_of_the_wrong_shape_fails_in_one_line(
    tmp_path: Path, file: str, content: Any, message: str
) -> None:
    folder = _write(tmp_path / "run", _prune_results())
    (folder / file).write_text(json.dumps(content))
    with pytest.raises(DataError) as error:
        write_report(folder)
    assert message in str(error.value) and str(folder / file) in str(error.value)
    assert "\n" not in str(error.value)


def test_per_class_figures_name_the_datas_classes_escaped_in_html(tmp_path: Path) -> None:
    names = ["cat", "dog", "<b>bird</b> & $1"]
    folder = _write(
        tmp_path / "run",
        _prune_results(),
        {
            "version": 1,
            "classes": {
                "before": [[5, 0, 0], [0, 5, 0], [0, 0, 5]],
                "after": [[5, 0, 0], [0, 5, 0], [0, 3, 2]],
            },
            "notes": [],
        },
    )
    (folder / "model").mkdir()
    (folder / "model" / "manifest.json").write_text(json.dumps({"data": {"class_names": names}}))
    run = load_run(folder)
    assert run.class_names == tuple(names)
    accuracy = plots.class_accuracy(run.evidence["classes"], run.class_names)
    confusion = plots.confusion_change(run.evidence["classes"], run.class_names)
    assert accuracy is not None and "Class <b>bird</b> & $1 lost most: -60.0 pp" in accuracy.caption
    assert confusion is not None and "class <b>bird</b> & $1 predicted as dog +3 times" in confusion.caption
    page = write_report(folder).read_text()
    assert "class &lt;b&gt;bird&lt;/b&gt; &amp; $1 lost most" in page and "<b>bird</b>" not in page
    # Names that do not match the classes (another data set's) leave the indices.
    other = plots.class_accuracy(run.evidence["classes"], ["a", "b"])
    assert other is not None and "Class 2 lost most" in other.caption


def test_a_run_with_nothing_to_summarise_has_no_lone_full_stop(tmp_path: Path) -> None:
    run = _write(tmp_path / "bare", {"command": "prune", "model": "m"})
    write_report(run)
    lines = (run / "report.md").read_text().splitlines()
    assert lines[0] == "# prunekit prune: m" and "." not in lines, lines[:4]
