"""What the report claims holds: ranks against each kind's own full rank, cuts counted in channels (or
heads), no speed-up without an A/A control, a sparsify run's file size and non-zeros, names as text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.report import plots, write_report
from prunekit.report.evidence import importance
from prunekit.structured import Plan


def _latency(ms: float) -> list[dict[str, Any]]:
    return [{"backend": "torch", "batch_size": 1, "threads": 2, "median_ms": ms, "p10_ms": ms, "p90_ms": ms,
             "mean_ms": ms, "std_ms": 0.0, "repeats": 5, "samples_ms": [ms] * 5}]


def _profile(name: str, ms: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "params": 1000, "macs": 5000, "size_bytes": 4000, "accuracy": 0.9,
            "latency": _latency(ms), **extra}


def _write(folder: Path, results: dict[str, Any], **files: Any) -> tuple[str, str]:
    """Write the run folder's JSON files, then its report; returns (report.html, report.md)."""
    (folder / "results.json").write_text(json.dumps({"model": "m", **results}))
    for name, content in files.items():
        (folder / f"{name}.json").write_text(json.dumps(content))
    page = write_report(folder).read_text()
    return page, (folder / "report.md").read_text()


def test_the_ranks_figure_measures_each_kind_against_its_own_full_rank() -> None:
    """A conv's SVD rank against min(out, in*kh*kw), Tucker-2's two ranks against in and out, CP's
    rank against its break-even rank (where its MACs, linear in the rank, equal the layer's)."""
    svd = [{"name": "c1", "kind": "svd", "shape": [24, 3, 3, 3], "ranks": [6]},
           {"name": "f", "kind": "svd", "shape": [4, 32], "ranks": [2]}]
    figure = plots.ranks(svd)
    assert figure is not None and "2 layers factorised; rank kept 29% of full on average" in figure.caption  # 8 / 28
    tucker = [{"name": "c1", "kind": "tucker2", "shape": [24, 3, 3, 3], "ranks": [3, 8]}]
    figure = plots.ranks(tucker)
    assert figure is not None and "rank kept 41% of full" in figure.caption  # (3 + 8) / (3 + 24)
    cp = [{"name": "c1", "kind": "cp", "shape": [24, 3, 3, 3], "ranks": [9], "macs_before": 165888,
           "macs_after": 76032}]
    figure = plots.ranks(cp)
    assert figure is not None and "CP rank 46% of the break-even rank" in figure.caption  # 9 / 19.6
    assert "of full" not in figure.caption


class _GroupedCnn(nn.Module):
    """conv2 has 4 groups, so conv1's channel j is cut with j + 2, j + 4, j + 6: units of 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(torch.relu(self.conv1(x))).mean((2, 3)))


def test_the_importance_figure_counts_channels_not_units() -> None:
    model, x = _GroupedCnn().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    group = next(g for g in graph.groups if g.id.startswith("conv1"))
    assert group.size == 2
    plan = Plan(keep={group.id: (1,)}, sizes={group.id: 2})
    rows = importance(graph, {group.id: torch.tensor([0.1, 0.9])}, plan)
    assert rows[0]["unit"] == "channel" and rows[0]["channels_per_unit"] == 4
    figure = plots.importance(rows)
    # NOTE: the pruned model loses 4 of conv1's 8 output channels, not "1 of 2".
    assert figure is not None and "4 of 8 channels removed across 1 group" in figure.caption


def test_the_importance_figure_counts_heads_as_heads() -> None:
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    graph = DependencyGraph.trace(layer, torch.randn(1, 5, 16))
    heads = next(g for g in graph.groups if "in_proj_weight" in g.id)
    plan = Plan(keep={heads.id: (0, 2, 3)}, sizes={heads.id: 4})
    rows = importance(graph, {heads.id: torch.tensor([4.0, 1.0, 3.0, 2.0])}, plan)
    figure = plots.importance(rows)
    assert figure is not None and "1 of 4 heads removed across 1 group" in figure.caption


def test_a_sparsify_report_claims_no_uncontrolled_speed_up_and_shows_the_sparse_file(tmp_path: Path) -> None:
    """No latency_control in results.json (the CLI printed "not shown"): the report claims no change;
    the sparse file's size and the non-zero counts are in both files."""
    results = {"command": "sparsify", "before": _profile("dense", 1.0), "after": _profile("dense sparse", 3.0),
               "nonzero_params": {"before": 2803, "after": 1651},
               "sizes": {"dense": 12500, "dense_compressed": 6762, "sparse": 8246, "sparse_compressed": 6716},
               "latency_note": "Zeros in weights give no speed-up in PyTorch's dense kernels."}
    page, summary = _write(tmp_path, results)
    for text in (page, summary):
        assert not re.search(r"\d\.\d\dx (faster|slower)", text)
        assert "not measured against noise" in text and "Zeros in weights give no speed-up" in text
    assert "| non-zero params | 2803 | 1651 |" in summary
    assert "| size on disk (bytes, after in sparse format) | 12500 | 8246 |" in summary
    assert "<td>2,803</td><td>1,651</td>" in page and "<td>12,500</td><td>8,246</td>" in page
    # The table's after/before cell claims no latency ratio either.
    assert re.search(r"<tr><td>latency torch batch 1 [^<]*</td><td>1</td><td>3</td><td>-</td></tr>", page)


def test_the_html_table_gives_the_controls_verdict_for_latency(tmp_path: Path) -> None:
    """The profiles' medians say 3x slower; the A/A control, timed interleaved, says within noise."""
    control = {"backend": "torch", "batch_size": 1, "threads": 2, "ratio": 1.02, "noise": 0.05, "rounds": 4,
               "before_ms": 0.9, "after_ms": 0.88}
    page, _ = _write(tmp_path, {"command": "prune", "before": _profile("dense", 1.0),
                                "after": _profile("pruned", 3.0), "latency_control": [control]})
    row = re.search(r"<tr><td>latency torch batch 1.*?</tr>", page)
    assert row is not None and "within noise (A/A ±5 %)" in row.group(0) and "3.000x" not in row.group(0)
    control.update(ratio=2.0, noise=0.03)  # a real change: the control's after/before, not the profiles'
    page, _ = _write(tmp_path, {"command": "prune", "before": _profile("dense", 1.0),
                                "after": _profile("pruned", 3.0), "latency_control": [control]})
    row = re.search(r"<tr><td>latency torch batch 1.*?</tr>", page)
    assert row is not None and "0.500x (A/A ±3 %)" in row.group(0)


def test_names_in_captions_stay_text(tmp_path: Path) -> None:
    """A layer called like an image tag neither becomes one (the page stays self-contained) nor
    disappears from report.md."""
    name = "<img src='http://example.com/x.png'>"
    sensitivity = {"version": 1, "metric": "acc<b>", "baseline": 0.9,
                   "layers": {name: {"ratios": [0.1, 0.5], "metric": [0.89, 0.2]},
                              "conv2": {"ratios": [0.1, 0.5], "metric": [0.9, 0.85]}}}
    pareto = {"version": 1, "x": "macs & <i>", "y": "accuracy", "chosen": 1,
              "points": [{"x": 1.0, "y": 0.9}, {"x": 0.5, "y": 0.85}]}
    page, summary = _write(tmp_path, {"command": "search", "before": _profile("m", 1.0),
                                      "after": _profile("s", 1.0)}, sensitivity=sensitivity, pareto=pareto)
    assert "<img src='http" not in page and "<b>" not in page and "<i>" not in page
    assert "most sensitive layer &lt;img src=&#x27;http://example.com/x.png&#x27;&gt; (acc&lt;b&gt; 0.2" in page
    assert "chosen macs &amp; &lt;i&gt; 0.5" in page
    assert r"most sensitive layer \<img src='http://example.com/x.png'> (acc\<b> 0.2" in summary
    assert r"chosen macs & \<i> 0.5" in summary


def test_one_busy_note_and_no_top5_for_five_classes_or_fewer(tmp_path: Path) -> None:
    """Both profiles noted a busy machine (at other loads): one note, the higher load's. top5 of a
    3-class task is always 1: left out."""
    busy = "machine busy when latency was measured (1-min load average {} on 2 cores): latency is noisy"
    before = _profile("m", 1.0, notes=[busy.format(2.7)], metrics={"top5": 1.0})
    after = _profile("s", 1.0, notes=[busy.format(3.1)], metrics={"top5": 1.0})
    classes = [[3, 0, 0], [0, 3, 0], [0, 0, 3]]
    _, summary = _write(tmp_path, {"command": "prune", "before": before, "after": after},
                        evidence={"version": 1, "widths": [], "classes": {"before": classes, "after": classes}})
    assert summary.count("machine busy") == 1 and busy.format(3.1) in summary
    assert "| top5 " not in summary


def test_a_quantize_report_says_the_metric_budget_was_missed(tmp_path: Path) -> None:
    record = {"kind": "quantize", "budget_met": False, "max_metric_drop": 0.01, "metric": "accuracy",
              "val": {"fp32": 0.945, "int8": 0.44}, "excluded": ["/fc1/Gemm", "/fc2/Gemm"]}
    results = {"command": "quantize", "before": _profile("m fp32", 1.0), "after": _profile("m int8", 0.5),
               "quantize": record}
    page, summary = _write(tmp_path, results)
    for text in (page, summary):
        assert ("int8 misses max_metric_drop 0.01: the best configuration tried reached validation accuracy 0.44 "
                "against fp32 0.945 (2 node(s) kept fp32)") in text
    (tmp_path / "met").mkdir()
    page, _ = _write(tmp_path / "met", {**results, "quantize": {**record, "budget_met": True}})
    assert "misses max_metric_drop" not in page
