"""The report from a run folder: the Markdown numbers are results.json's, the page is self-contained,
and sensitivity.json / pareto.json in the documented shape become figures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from prunekit.cli import main
from prunekit.errors import DataError
from prunekit.report import load_run, write_report
from prunekit.report.results import pareto_front


def _table(markdown: str) -> dict[str, tuple[str, str]]:
    """The Markdown summary's before/after rows: label -> (before cell, after cell)."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): (cells[1].strip(), cells[2].strip()) for cells in rows[1:]}


def _expected(profile: dict[str, Any]) -> dict[str, float]:
    """What each Markdown row must hold, read straight from a results.json profile."""
    want = {"params": profile["params"], "MACs / sample": profile["macs"], "size (bytes)": profile["size_bytes"],
            "accuracy": profile["accuracy"], "loss": profile["loss"], **profile["metrics"]}
    for stats in profile["latency"]:
        want[f"latency {stats['backend']} batch {stats['batch_size']} (ms (median))"] = stats["median_ms"]
    return want


def _check_markdown_equals_results(folder: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    table = _table((folder / "report.md").read_text())
    want_before, want_after = _expected(before), _expected(after)
    assert set(table) == set(want_before)
    for label, (b, a) in table.items():
        # NOTE: exact: the summary writes each number in its shortest round-trip form.
        assert float(b) == want_before[label] and float(a) == want_after[label], label


def test_a_prune_run_writes_its_report_and_the_markdown_numbers_equal_results_json(prune_run: Path) -> None:
    results = json.loads((prune_run / "results.json").read_text())
    assert sorted(p.name for p in prune_run.iterdir()) == ["baseline.safetensors", "evidence.json", "model",
                                                           "report.html", "report.md", "results.json"]
    _check_markdown_equals_results(prune_run, results["before"], results["after"])
    page = (prune_run / "report.html").read_text()
    # Self-contained: no address outside the page, every image inline, every image with alt text.
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    assert "http://" not in page and "https://" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r"<img [^>]*>", page)
    assert images and all('src="data:image/png;base64,' in tag and re.search(r'alt="[^"]+"', tag) for tag in images)
    # Every figure has a caption with a number in it.
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == page.count("<figure ") and all(re.search(r"\d", c) for c in captions)
    for key in ("latency", "widths", "importance", "gallery", "curves", "classes", "confusion", "attribution"):
        assert f'<section id="{key}">' in page, key


def test_a_recipe_run_writes_its_report(recipe_run: Path) -> None:
    results = json.loads((recipe_run / "results.json").read_text())
    assert (recipe_run / "report.html").is_file()
    _check_markdown_equals_results(recipe_run, results["initial"], results["stages"][-1]["profile"])
    page = (recipe_run / "report.html").read_text()
    assert '<section id="curves">' in page and '<section id="classes">' in page
    # NOTE: per-class and attribution compare the model before the first compressing stage (trained).
    assert "before (the model before the first compressing stage)" in page
    # The prune stage's plan marks the gallery: as many filters removed as conv1 lost.
    evidence = json.loads((recipe_run / "evidence.json").read_text())
    conv1 = next(r for r in evidence["widths"] if r["layer"] == "conv1")
    assert len(evidence["gallery"]["removed"]) == conv1["before"] - conv1["after"] > 0
    assert page.count('class="tile removed"') == conv1["before"] - conv1["after"]


def test_prunekit_report_rewrites_the_report_and_fails_in_one_line_elsewhere(
        prune_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("results.json", "evidence.json"):
        (folder / name).write_bytes((prune_run / name).read_bytes())
    assert main(["report", str(folder)]) == 0
    assert f"report: {folder / 'report.html'}" in capsys.readouterr().out
    assert (folder / "report.html").read_text().count("<figure ") >= 8
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "holds no results.json. Pass a folder a prunekit command wrote" in err


def _profile(name: str, accuracy: float) -> dict[str, Any]:
    return {"name": name, "params": 1000, "macs": 5000, "size_bytes": 4000, "accuracy": accuracy,
            "latency": [{"backend": "torch", "batch_size": 1, "threads": 2, "median_ms": 1.5, "p10_ms": 1.0,
                         "p90_ms": 2.0, "mean_ms": 1.5, "std_ms": 0.1, "repeats": 5}]}


def test_sensitivity_and_pareto_files_become_figures(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"command": "search", "model": "m",
                                                       "before": _profile("m", 0.9), "after": _profile("s", 0.8)}))
    (tmp_path / "sensitivity.json").write_text(json.dumps({
        "version": 1, "metric": "accuracy", "baseline": 0.9,
        "layers": {"conv1": {"ratios": [0.1, 0.5], "metric": [0.89, 0.6]},
                   "conv2": {"ratios": [0.1, 0.5], "metric": [0.9, 0.85]}}}))
    points = [{"x": 1.0, "y": 0.9}, {"x": 0.5, "y": 0.85}, {"x": 0.6, "y": 0.8}, {"x": 0.3, "y": 0.7}]
    (tmp_path / "pareto.json").write_text(json.dumps({"version": 1, "x": "macs", "y": "accuracy",
                                                      "points": points, "chosen": 1}))
    page = write_report(tmp_path).read_text()
    assert "most sensitive layer conv1 (accuracy 0.6 at ratio 0.5)" in page
    assert "3 of 4 trials on the front; chosen macs 0.5, accuracy 0.85" in page
    assert pareto_front(points) == [3, 1, 0]  # NOTE: (0.6, 0.8) is beaten by (0.5, 0.85).
    # A hand-made results.json with no samples still gets its latency box plot (p10-p90 boxes).
    assert '<section id="latency">' in page


@pytest.mark.parametrize(("name", "content", "words"), [
    ("sensitivity.json", {"layers": {"conv1": {"ratios": [0.1], "metric": []}}},
     "layer 'conv1' needs equally long number lists 'ratios' and 'metric'"),
    ("sensitivity.json", {"metric": "accuracy"}, "has no 'layers' mapping of curves"),
    ("pareto.json", {"points": [{"x": 1}]}, "every point needs numbers 'x' and 'y'"),
    ("pareto.json", {"points": [{"x": 1, "y": 2}], "chosen": 3}, "'chosen' must index 'points' (0..0); got 3"),
])
def test_malformed_optional_files_fail_in_one_line(tmp_path: Path, name: str, content: dict[str, Any],
                                                   words: str) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"command": "prune"}))
    (tmp_path / name).write_text(json.dumps(content))
    with pytest.raises(DataError, match=re.escape(words)):
        load_run(tmp_path)


@pytest.mark.slow
def test_the_resnet20_report_stays_under_5_mb(tmp_path: Path) -> None:
    """`make demo`'s third run (ResNet-20 to half the MACs) at tiny training budgets."""
    out = tmp_path / "resnet20-half-macs"
    assert main(["prune", "--model", "resnet20", "--data", "fashion-mnist", "--target-macs", "0.5", "--importance",
                 "l2", "--baseline-epochs", "1", "--finetune-epochs", "1", "--max-steps-per-epoch", "2",
                 "--max-eval-batches", "1", "--no-progress", "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size < 5 * 1024 * 1024
    for key in ("latency", "widths", "importance", "gallery", "classes", "confusion", "attribution"):
        assert f'<section id="{key}">' in page, key


def test_a_train_folder_reports_its_one_profile_and_its_curves(tmp_path: Path) -> None:
    history = [{"epoch": i, "train_loss": 1.0 / (i + 1), "val_loss": 1.2 / (i + 1), "val_accuracy": 0.5 + i / 10}
               for i in range(3)]
    (tmp_path / "results.json").write_text(json.dumps({"command": "train", "model": "m", "profile": _profile("m", 0.7),
                                                       "train": {"history": history}}))
    write_report(tmp_path)
    table = _table((tmp_path / "report.md").read_text())
    assert table["params"] == ("-", "1000") and table["accuracy"] == ("-", "0.7")
    assert "3 epochs in 1 phase; last val_accuracy 0.7" in (tmp_path / "report.html").read_text()


def test_a_metric_budget_s_tries_are_a_table_with_the_kept_one_marked(tmp_path: Path) -> None:
    tries = [{"cut": 1.0, "target": {"macs": 0.1}, "metric": 0.81, "drop": 0.05, "within": False, "macs": 0.098,
              "params": 0.11},
             {"cut": 0.5, "target": {"macs": 0.55}, "metric": 0.86, "drop": 0.002, "within": True, "macs": 0.54,
              "params": 0.5}]
    budget = {"max_metric_drop": 0.01, "dense": 0.862, "tries": tries, "chosen": 1}
    (tmp_path / "results.json").write_text(json.dumps({"command": "prune", "model": "m", "before": _profile("m", 0.86),
                                                       "after": _profile("m pruned", 0.86), "metric_budget": budget}))
    page = write_report(tmp_path).read_text()
    section = page[page.index('<section id="budget">'):]
    assert "At most 0.01 lost on validation (dense 0.862); try 2 kept." in section
    assert '<tr class="over"><td>1</td><td>macs 0.1</td><td>0.098</td>' in section
    assert '<tr class="kept"><td>2</td><td>macs 0.55</td><td>0.54</td><td>0.5</td><td>0.86</td><td>0.002</td>' in section


def test_report_gives_the_latency_controls_verdict_and_caveat(tmp_path: Path) -> None:
    """The CLI printed "within noise (A/A ±67 %) ... latency ratios are unreliable"; the report says the same."""
    before, after = _profile("m", 0.9), _profile("s", 0.9)
    after["latency"][0].update(median_ms=1.05, p10_ms=1.0, p90_ms=1.1)
    control = {"backend": "torch", "batch_size": 1, "threads": 2, "ratio": 1.18, "noise": 0.67, "rounds": 4,
               "before_ms": 0.257, "after_ms": 0.217}
    (tmp_path / "results.json").write_text(json.dumps({"command": "prune", "model": "m", "before": before,
                                                       "after": after, "latency_control": [control]}))
    page = write_report(tmp_path).read_text()
    summary = (tmp_path / "report.md").read_text()
    for text in (page, summary):
        assert "1.43x faster" not in text
        assert "within noise: 0.257 -&gt; 0.217 ms" in text or "within noise: 0.257 -> 0.217 ms" in text
        assert "differed by up to 67 %; latency ratios are unreliable, re-measure on an idle machine" in text
    control.update(noise=0.02, ratio=1.43)  # an idle machine: the ratio stands, with its band
    (tmp_path / "results.json").write_text(json.dumps({"command": "prune", "model": "m", "before": before,
                                                       "after": after, "latency_control": [control]}))
    write_report(tmp_path)
    summary = (tmp_path / "report.md").read_text()
    assert "(against an A/A control: 1.43x faster: 0.257 -> 0.217 ms in the same rounds (A/A ±2 %))" in summary
    assert "unreliable" not in summary
