"""``write_report(run_dir)``: read a run folder, draw what it holds, write ``report.html`` and ``report.md``."""

from __future__ import annotations

import html as html_text
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunekit.io import atomic_path
from prunekit.measure import LatencyControl
from prunekit.report import html, markdown, plots
from prunekit.report.plots import Figure
from prunekit.report.results import (HTML_FILE, MARKDOWN_FILE, Row, Run, load_run, measured_rows, sparse_rows,
                                     summary_rows)

__all__ = ["figures", "write_report"]


def _stages_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A partition's stages as a table of their numbers."""
    keys = [k for k in ("stage", "nodes", "macs", "macs_share", "latency_ms", "latency_share", "bytes_out")
            if any(k in r for r in rows)]
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<h2>Stages</h2><table><tr>{head}</tr>{body}</table>"


def _budget_table(budget: Mapping[str, Any]) -> str:
    """The cuts a metric budget tried (prune --max-metric-drop): what each kept and lost, the one kept."""
    chosen = budget.get("chosen")
    rows = []
    for index, tried in enumerate(budget.get("tries") or ()):
        mark = "kept" if index == chosen else ("within" if tried.get("within") else "over")
        target = ", ".join(f"{k} {v:.4g}" for k, v in (tried.get("target") or {}).items() if k != "batch_size")
        cells = [index + 1, target, *(tried.get(k) for k in ("macs", "params", "metric", "drop")), mark]
        rows.append(f'<tr class="{mark}">' + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{k}</th>" for k in ("try", "target", "MACs kept", "params kept", "validation metric",
                                             "lost", ""))
    verdict = (f"try {chosen + 1} kept" if chosen is not None else "none held: the dense model was kept")
    return (f'<section id="budget"><h2>Metric budget</h2><p>At most {_cell(budget.get("max_metric_drop"))} '
            f'lost on validation (dense {_cell(budget.get("dense"))}); {verdict}.</p>'
            f"<table><tr>{head}</tr>{''.join(rows)}</table></section>")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html_text.escape("-" if value is None else f"{value:,}" if isinstance(value, int) else str(value))


def figures(run: Run) -> list[Figure]:
    """Every figure the run has data for, in reading order."""
    before, after = run.profiles()
    evidence = run.evidence
    label = {"before_label": evidence["before_label"]} if evidence.get("before_label") else {}
    classes = {**evidence["classes"], **label} if evidence.get("classes") else None
    widths = evidence.get("widths") or ()
    found = [
        plots.latency_boxes(before, after, run.latency_controls()),
        plots.widths(widths if any(r["before"] != r["after"] for r in widths) else ()),
        plots.sparsity(run.sparsity()),
        plots.ranks(run.ranks()),
        plots.importance(evidence.get("importance") or ()),
        html.filter_gallery(evidence["gallery"]) if evidence.get("gallery") else None,
        html.head_map(evidence["heads"]) if evidence.get("heads") else None,
        plots.sensitivity(run.sensitivity) if run.sensitivity else None,
        plots.pareto(run.pareto) if run.pareto else None,
        plots.curves(run.histories()),
        plots.class_accuracy(classes, run.class_names) if classes else None,
        plots.confusion_change(classes, run.class_names) if classes else None,
        plots.attribution_grid({**evidence["attribution"], **label}) if evidence.get("attribution") else None,
    ]
    return [f for f in found if f is not None]


def _title(run: Run) -> str:
    results = run.results
    model = results.get("model") if isinstance(results.get("model"), str) else \
        ((results.get("recipe") or {}).get("model") or {}).get("name", "")
    return f"prunekit {run.command}: {model}".rstrip(": ")


def _summary_line(run: Run) -> str:
    results = run.results
    parts = [f"data {results['data']}" if results.get("data") else "",
             f"task {results['task']}" if results.get("task") else "",
             f"target {results['target']}" if results.get("target") else "",
             f"{len(results.get('stages') or [])} stages" if run.command in ("run", "partition") else "",
             f"written {results.get('environment', {}).get('created', '')}".strip()]
    shown = [p for p in parts if p and p != "written"]
    return "; ".join(shown) + "." if shown else ""


def _latency_notes(controls: Sequence[LatencyControl]) -> list[str]:
    """The caveat the command printed under its table when the A/A control found the machine busy."""
    noisy = [c for c in controls if c.noisy]
    if not noisy:
        return []
    worst = max(c.noise for c in noisy)
    return [f"machine busy: the same model timed twice differed by up to {100 * worst:.0f} %; latency ratios "
            f"are unreliable, re-measure on an idle machine"]


_BUSY = "machine busy when latency was measured"


def _one_busy_note(notes: Sequence[str]) -> list[str]:
    """``notes`` once each, the profiles' "machine busy" load notes (one per profile timed) as one: the
    highest load's, where the first stood."""
    busy = [n for n in notes if n.startswith(_BUSY)]
    if len(busy) < 2:
        return list(notes)

    def load(note: str) -> float:
        found = re.search(r"load average ([\d.]+)", note)
        return float(found.group(1)) if found else 0.0

    worst = max(busy, key=load)
    first = notes.index(busy[0])
    return [worst if i == first else n for i, n in enumerate(notes) if i == first or not n.startswith(_BUSY)]


def _sparse_notes(results: Mapping[str, Any]) -> list[str]:
    """What a sparsify run says about its latency and its stored file, and a quantize run about a
    metric budget its int8 model missed."""
    notes = [str(results["latency_note"])] if results.get("latency_note") else []
    if results.get("stored_dense") and results.get("sizes"):
        notes.append("the model folder is stored dense (a Hugging Face save_pretrained folder); the sparse-format "
                     "size is what storing it sparse would take")
    record = results.get("quantize")
    if isinstance(record, Mapping) and record.get("budget_met") is False:
        val: Mapping[str, Any] = record["val"] if isinstance(record.get("val"), Mapping) else {}
        notes.append(f"int8 misses max_metric_drop {record.get('max_metric_drop')}: the best configuration tried "
                     f"reached validation {record.get('metric')} {val.get('int8')} against fp32 {val.get('fp32')} "
                     f"({len(record.get('excluded') or ())} node(s) kept fp32)")
    return notes


def _rows(run: Run) -> list[Row]:
    """The before/after table: the profiles' rows (top5 left out for 5 classes or fewer, where it is
    always 1), a sparsify run's non-zero parameters and sparse file size, and what an eval or export
    run measured of its one model."""
    rows = summary_rows(*run.profiles()) + sparse_rows(run.results) + measured_rows(run.results)
    classes = (run.evidence.get("classes") or {}).get("before")
    if classes and len(classes) <= 5:
        rows = [r for r in rows if r.label != "top5"]
    return rows


def _one_model(run: Run) -> str:
    """The table's column of a run that measured one model without a profile (eval, export)."""
    if run.command == "eval":
        return f"{run.results.get('split') or 'eval'} split"
    return "exported model" if run.command == "export" else "after"


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md`` into the run folder ``run_dir``;
    returns the HTML file. Reads only the folder's JSON files; fails in one line without results.json."""
    run = load_run(run_dir)
    before, after = run.profiles()
    rows = _rows(run)
    names = (before.name if before else "before", after.name if after else _one_model(run))
    drawn = figures(run)
    notes = _one_busy_note(list(dict.fromkeys([
        *(before.notes if before else ()), *(after.notes if after else ()), *run.evidence.get("notes", ()),
        *_latency_notes(run.latency_controls()), *_sparse_notes(run.results)])))
    title, line = _title(run), _summary_line(run)
    overview = html.table(rows, names, run.latency_controls()) if rows else ""
    if run.command == "partition" and run.results.get("stages"):
        overview += _stages_table(run.results["stages"])
    if isinstance(run.results.get("metric_budget"), Mapping):
        overview += _budget_table(run.results["metric_budget"])
    page = html.page(title, line, overview, drawn, notes)
    target = Path(run_dir) / HTML_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    with atomic_path(Path(run_dir) / MARKDOWN_FILE) as tmp:
        tmp.write_text(markdown.summary(title, line, rows, names, drawn, notes, HTML_FILE), encoding="utf-8")
    return target
