"""What a run folder holds, read once into a :class:`Run` the plots and pages draw from.

A run folder is what a command's ``--out`` wrote: ``results.json`` (always), ``evidence.json``
(what the workflow saved for the report: :mod:`prunekit.report.evidence`), and, when a sensitivity
analysis or a search wrote them, ``sensitivity.json`` and ``pareto.json``. Their shapes:

``sensitivity.json`` (one curve per layer: the metric after pruning that layer alone)::

    {"version": 1, "metric": "accuracy", "baseline": 0.91, "higher_is_better": true,
     "layers": {"conv1": {"ratios": [0.1, 0.3, 0.5], "metric": [0.90, 0.86, 0.70]}, ...}}

``pareto.json`` (every trial as a point; ``chosen`` indexes ``points``; ``x_better`` and
``y_better`` say which way is better, default lower x and higher y)::

    {"version": 1, "x": "macs", "y": "accuracy", "x_better": "lower", "y_better": "higher",
     "points": [{"x": 0.42, "y": 0.90, "label": "trial 3"}, ...], "chosen": 0}

``baseline``, ``higher_is_better`` (default true), ``x_better``, ``y_better`` and ``label`` may be left out.

The files ``prunekit sensitivity`` and ``prunekit search`` write (:mod:`prunekit.search.sensitivity`:
``{"metric_name", "baseline", "groups": [{"name", "ratios", "metric"}, ...]}``, and ``"ranks"`` curves
as layers named ``rank <module>``; :mod:`prunekit.search`:
``{"objectives": ["metric", "macs", ...], "points": [{"values": {...}, "chosen": bool}, ...]}``) are
read too, as these shapes: the first non-metric objective is x (lower is better), the metric y.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunekit.errors import DataError
from prunekit.io import MANIFEST_FILE, MODEL_DIR, load_json
from prunekit.measure import LatencyControl, Profile

__all__ = ["EVIDENCE_FILE", "HTML_FILE", "MARKDOWN_FILE", "PARETO_FILE", "RESULTS_FILE", "SENSITIVITY_FILE",
           "Row", "Run", "load_run", "measured_rows", "pareto_front", "sparse_rows", "summary_rows"]

RESULTS_FILE = "results.json"
EVIDENCE_FILE = "evidence.json"
SENSITIVITY_FILE = "sensitivity.json"
PARETO_FILE = "pareto.json"
HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"


@dataclass(frozen=True)
class Row:
    """One line of the before/after table: raw numbers as results.json holds them, and their unit."""

    label: str
    before: float | None
    after: float | None
    unit: str = ""
    latency: tuple[str, int] | None = None  # NOTE: (backend, batch size) of a latency row, to find its A/A control


@dataclass(frozen=True)
class Run:
    """A run folder's JSON files; ``evidence`` is empty when the run saved none; ``class_names`` are the
    data's, as the saved model's manifest records them (empty when it records none)."""

    folder: Path
    results: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, Any] | None = None
    pareto: dict[str, Any] | None = None
    class_names: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        """The command that wrote the folder (prune, sparsify, decompose, partition, run...)."""
        return str(self.results.get("command", "?"))

    def profiles(self) -> tuple[Profile | None, Profile | None]:
        """The model's profile before and after (a recipe: its initial profile and its last stage's;
        quantize: the model's fp32 and int8; train and profile: only "after", the one model they measured)."""
        before, after = self.results.get("before"), self.results.get("after")
        if before is None and after is None:  # NOTE: train and profile measure one model.
            after = self.results.get("profile")
        if self.command == "run":
            stages = self.results.get("stages") or []
            before = self.results.get("initial")
            after = stages[-1].get("profile") if stages else None
        if self.command == "quantize":  # NOTE: the model's fp32 against its int8 (listed after the dense ones)
            profiles = [p for p in self.results.get("profiles") or [] if isinstance(p, Mapping)]
            before = next((p for p in reversed(profiles) if str(p.get("name", "")).endswith("fp32")), None)
            after = next((p for p in reversed(profiles) if str(p.get("name", "")).endswith("int8")), None)
        return (Profile.from_dict(before) if isinstance(before, Mapping) else None,
                Profile.from_dict(after) if isinstance(after, Mapping) else None)

    def latency_controls(self) -> list[LatencyControl]:
        """The A/A latency controls the run measured (``results["latency_control"]``): the verdict the
        command printed on each latency ratio; empty when it measured none."""
        records = self.results.get("latency_control") or []
        return [LatencyControl(**r) for r in records if isinstance(r, Mapping)]

    def histories(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every training history in the run, labelled and in order: baseline, fine-tune, recipe stages."""
        found: list[tuple[str, list[dict[str, Any]]]] = []
        for key in ("train", "baseline", "finetune"):
            if isinstance(part := self.results.get(key), Mapping) and part.get("history"):
                found.append((key, list(part["history"])))
        for stage in self.results.get("stages") or []:
            if not isinstance(stage, Mapping):
                continue
            summary = stage.get("summary") or {}
            for source in (summary, summary.get("train") or {}, summary.get("finetune") or {}):
                if isinstance(source, Mapping) and source.get("history"):
                    found.append((f"stage {stage.get('index', 0) + 1} {stage.get('kind', '')}",
                                  list(source["history"])))
                    break
        return found

    def sparsity(self) -> list[dict[str, Any]]:
        """Per-layer sparsity records of a sparsify run (name, numel, zeros, sparsity)."""
        return [dict(r) for r in self.results.get("layers") or [] if isinstance(r, Mapping) and "sparsity" in r]

    def ranks(self) -> list[dict[str, Any]]:
        """Per-layer decomposition records (name, kind, shape, ranks) of a decompose run."""
        decomposition = self.results.get("decomposition") or {}
        return [dict(r) for r in decomposition.get("layers") or []]


def summary_rows(before: Profile | None, after: Profile | None) -> list[Row]:
    """The before/after table as numbers: params, MACs, size, latency medians per backend and batch,
    accuracy, loss and the task's other metrics."""
    profiles = [p for p in (before, after) if p is not None]
    if not profiles:
        return []

    def pair(get: Any) -> tuple[Any, Any]:
        return (None if before is None else get(before), None if after is None else get(after))

    rows = [Row("params", *pair(lambda p: p.params)), Row("MACs / sample", *pair(lambda p: p.macs)),
            Row("size", *pair(lambda p: p.size_bytes), "bytes")]
    keys = list(dict.fromkeys((s.backend, s.batch_size) for p in profiles for s in p.latency))
    for backend, batch in keys:
        def median(p: Profile, b: str = backend, n: int = batch) -> float | None:
            stats = p.latency_for(b, n)
            return None if stats is None else stats.median_ms
        rows.append(Row(f"latency {backend} batch {batch}", *pair(median), "ms (median)", (backend, batch)))
    if any(p.accuracy is not None for p in profiles):
        rows.append(Row("accuracy", *pair(lambda p: p.accuracy)))
    if any(p.loss is not None for p in profiles):
        rows.append(Row("loss", *pair(lambda p: p.loss)))
    for metric in dict.fromkeys(k for p in profiles for k in p.metrics):
        rows.append(Row(metric, *pair(lambda p, m=metric: p.metrics.get(m))))
    return rows


def sparse_rows(results: Mapping[str, Any]) -> list[Row]:
    """A sparsify run's rows the profiles do not hold: its non-zero parameters and its file in the sparse
    format against the dense one (a profile's size is the dense file's, the same before and after)."""
    rows = []
    nonzero, sizes = results.get("nonzero_params"), results.get("sizes")
    if isinstance(nonzero, Mapping):
        rows.append(Row("non-zero params", nonzero.get("before"), nonzero.get("after")))
    if isinstance(sizes, Mapping) and sizes.get("sparse") is not None:
        rows.append(Row("size on disk", sizes.get("dense"), sizes.get("sparse"), "bytes, after in sparse format"))
    return rows


def pareto_front(points: Sequence[Mapping[str, Any]], *, x_better: str = "lower",
                 y_better: str = "higher") -> list[int]:
    """Indices of the points no other point beats on both axes, in order of x."""
    sx = 1.0 if x_better == "lower" else -1.0
    sy = 1.0 if y_better == "higher" else -1.0
    values = [(sx * float(p["x"]), sy * float(p["y"])) for p in points]
    front = [i for i, (x, y) in enumerate(values)
             if not any((ox <= x and oy >= y) and (ox < x or oy > y) for ox, oy in values)]
    return sorted(front, key=lambda i: float(points[i]["x"]))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric_rows(metrics: Any, suffix: str = "") -> list[Row]:
    """One model's measured numbers as "after" rows (``count``: its samples), ``suffix`` on each label."""
    if not isinstance(metrics, Mapping):
        return []
    rows = [Row(f"{name}{suffix}", None, value) for name, value in metrics.items()
            if name != "count" and _number(value)]
    if _number(metrics.get("count")):
        rows.append(Row(f"samples{suffix}", None, metrics["count"]))
    return rows


def measured_rows(results: Mapping[str, Any]) -> list[Row]:
    """What an ``eval`` or ``export`` run measured of its one model, as "after" rows: eval's metrics on
    its split; export's parameters and MACs, and its bundle's metrics and latency (ONNX Runtime)."""
    if results.get("command") == "eval":
        return _metric_rows(results.get("metrics"))
    if results.get("command") != "export":
        return []
    rows = [Row(label, None, results[key]) for key, label in (("params", "params"), ("macs", "MACs / sample"))
            if _number(results.get(key))]
    bundle = results.get("bundle")
    if isinstance(bundle, Mapping):
        where = f" (bundle, {bundle.get('precision', 'fp32')})"
        rows += _metric_rows(bundle.get("metrics"), where)
        latency = bundle.get("latency_ms")
        rows += [Row(f"latency onnxruntime {key}{where}", None, value, "ms (median)")
                 for key, value in (latency.items() if isinstance(latency, Mapping) else ()) if _number(value)]
    return rows


def _from_search_sensitivity(data: Any) -> Any:
    """``prunekit sensitivity``'s groups list as the ``layers`` mapping (other data unchanged)."""
    if not (isinstance(data, Mapping) and "layers" not in data and isinstance(data.get("groups"), list)):
        return data
    layers = {g.get("name"): {"ratios": g.get("ratios"), "metric": g.get("metric")}
              for g in data["groups"] if isinstance(g, Mapping)}
    layers.update({f"rank {r.get('name')}": {"ratios": r.get("ratios"), "metric": r.get("metric")}
                   for r in data.get("ranks") or [] if isinstance(r, Mapping)})  # NOTE: rank removed, one layer
    return {"version": 1, "metric": data.get("metric_name", "metric"), "baseline": data.get("baseline"),
            "layers": layers, "higher_is_better": data.get("higher_is_better", True)}


def _from_search_pareto(data: Any) -> Any:
    """``prunekit search``'s front (``objectives`` + ``values`` per point) as x/y points."""
    if not (isinstance(data, Mapping) and isinstance(data.get("objectives"), list)
            and isinstance(data.get("points"), list)):
        return data
    others = [o for o in data["objectives"] if o != "metric"]
    if "metric" not in data["objectives"] or not others:
        return data
    x = others[0]
    points = [{"x": p["values"].get(x), "y": p["values"].get("metric"), "label": f"point {i}"}
              for i, p in enumerate(data["points"]) if isinstance(p, Mapping) and isinstance(p.get("values"), Mapping)]
    chosen = next((i for i, p in enumerate(data["points"]) if isinstance(p, Mapping) and p.get("chosen")), None)
    better = "higher" if data.get("higher_is_better", True) is not False else "lower"
    return {"version": 1, "x": x, "y": str(data.get("metric_name") or "metric"), "x_better": "lower",
            "y_better": better, "points": points, "chosen": chosen}


def _check_sensitivity(data: Any, file: Path) -> dict[str, Any]:
    data = _from_search_sensitivity(data)
    fix = f"Write it as the shape in prunekit/report/results.py documents, or remove '{file}'."
    layers = data.get("layers") if isinstance(data, Mapping) else None
    if not isinstance(layers, Mapping) or not layers:
        raise DataError(f"'{file}' has no 'layers' mapping of curves. {fix}")
    for name, curve in layers.items():
        ratios, metric = (curve.get("ratios"), curve.get("metric")) if isinstance(curve, Mapping) else (None, None)
        if not (isinstance(ratios, list) and isinstance(metric, list) and len(ratios) == len(metric) > 0
                and all(map(_number, ratios + metric))):
            raise DataError(f"'{file}': layer '{name}' needs equally long number lists 'ratios' and "
                            f"'metric'. {fix}")
    return dict(data)


def _check_pareto(data: Any, file: Path) -> dict[str, Any]:
    data = _from_search_pareto(data)
    fix = f"Write it as the shape in prunekit/report/results.py documents, or remove '{file}'."
    points = data.get("points") if isinstance(data, Mapping) else None
    if not isinstance(points, list) or not points:
        raise DataError(f"'{file}' has no 'points' list. {fix}")
    if not all(isinstance(p, Mapping) and _number(p.get("x")) and _number(p.get("y")) for p in points):
        raise DataError(f"'{file}': every point needs numbers 'x' and 'y'. {fix}")
    chosen = data.get("chosen")
    if chosen is not None and not (isinstance(chosen, int) and 0 <= chosen < len(points)):
        raise DataError(f"'{file}': 'chosen' must index 'points' (0..{len(points) - 1}); got {chosen!r}. {fix}")
    for key in ("x_better", "y_better"):
        if data.get(key, "lower" if key == "x_better" else "higher") not in ("lower", "higher"):
            raise DataError(f"'{file}': '{key}' must be 'lower' or 'higher'; got {data[key]!r}. {fix}")
    return dict(data)


_FIX_RESULTS = "Pass a folder a prunekit command wrote with --out, or run the command again to re-create it."
_FIX_EVIDENCE = "Run the command again to re-create it, or remove '{file}' to draw the report without it."
# NOTE: the results.json entries the report reads, and the JSON type each must be when present (not null).
_RESULT_TYPES: dict[str, type] = {"before": dict, "after": dict, "initial": dict, "profile": dict, "stages": list,
                                  "profiles": list, "latency_control": list, "train": dict, "baseline": dict,
                                  "finetune": dict, "decomposition": dict, "layers": list, "metrics": dict,
                                  "bundle": dict, "metric_budget": dict}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _check_results(data: Any, file: Path) -> dict[str, Any]:
    """results.json as a :class:`Run` reads it: an object whose entries have their types, and whose
    profiles, histories and latency controls parse."""
    if not isinstance(data, dict):
        raise DataError(f"'{file}' holds {_json_type(data)}, not the object of a run's results. {_FIX_RESULTS}")
    for key, kind in _RESULT_TYPES.items():
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise DataError(f"'{file}': '{key}' must be {_JSON_NAMES[kind]}; got {_json_type(data[key])}. "
                            f"{_FIX_RESULTS}")
    run = Run(folder=file.parent, results=data)
    try:  # NOTE: parsed as the report will read it, so a malformed record fails here in one line
        run.profiles(), run.latency_controls(), run.histories(), run.ranks()
    except DataError as exc:  # NOTE: Profile's own message, with the file it came from
        raise DataError(f"'{file}': {exc}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"'{file}' holds a malformed record ({type(exc).__name__}: {exc}). {_FIX_RESULTS}") from None
    return data


def _is_matrix(value: Any) -> bool:
    """A square list of lists of numbers (a confusion matrix)."""
    return isinstance(value, list) and all(isinstance(row, list) and len(row) == len(value)
                                           and all(map(_number, row)) for row in value)


def _confusions(classes: Any) -> bool:
    """Whether ``classes`` holds 'before' and 'after' confusion matrices of one size."""
    if not isinstance(classes, Mapping):
        return False
    before: Any = classes.get("before")
    after: Any = classes.get("after")
    return _is_matrix(before) and _is_matrix(after) and len(before) == len(after)


def _records(value: Any, check: Callable[[Mapping[str, Any]], bool]) -> bool:
    """Whether ``value`` is a list of objects that each pass ``check``."""
    return isinstance(value, list) and all(isinstance(r, Mapping) and check(r) for r in value)


def _width_row(row: Mapping[str, Any]) -> bool:
    return _number(row.get("before")) and _number(row.get("after"))


def _importance_row(row: Mapping[str, Any]) -> bool:
    scores, kept = row.get("scores"), row.get("kept")
    return isinstance(scores, list) and all(map(_number, scores)) and isinstance(kept, list) \
        and all(isinstance(k, int) for k in kept)


_PART_LISTS = {"gallery": ("filters", "removed"), "heads": ("layers", "importance", "removed"),
               "attribution": ("images", "before", "after", "agreement", "targets")}


def _evidence_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with evidence.json's parts (:mod:`prunekit.report.evidence`), or None."""
    if data.get("widths") is not None and not _records(data["widths"], _width_row):
        return "'widths' must be a list of objects with numbers 'before' and 'after'"
    if data.get("importance") is not None and not _records(data["importance"], _importance_row):
        return "'importance' must be a list of objects with number lists 'scores' and 'kept'"
    if data.get("classes") is not None and not _confusions(data["classes"]):
        return "'classes' must hold 'before' and 'after' confusion matrices of the same size (classes x classes)"
    for key, names in _PART_LISTS.items():
        part = data.get(key)
        lists = [part.get(n) for n in names] if isinstance(part, Mapping) else [None]
        if part is not None and not all(isinstance(v, list) for v in lists):
            return f"'{key}' must be an object with lists {', '.join(repr(n) for n in names)}"
    maps = data.get("attribution")
    if maps is not None and len({len(maps[n]) for n in _PART_LISTS["attribution"]}) != 1:
        return "'attribution' must hold one entry per image in each of its lists"
    if maps is not None and not (maps.get("mean_agreement") is None or _number(maps["mean_agreement"])):
        return "'attribution': 'mean_agreement' must be a number or null"
    if not isinstance(data.get("notes", []), list):
        return f"'notes' must be a list; got {_json_type(data['notes'])}"
    return None


def _check_evidence(data: Any, file: Path) -> dict[str, Any]:
    """evidence.json as the figures read it: an object whose parts have their shapes."""
    fix = _FIX_EVIDENCE.format(file=file)
    if not isinstance(data, dict):
        raise DataError(f"'{file}' holds {_json_type(data)}, not the object of a run's evidence. {fix}")
    if (problem := _evidence_problem(data)) is not None:
        raise DataError(f"'{file}': {problem}. {fix}")
    return data


def _class_names(folder: Path) -> tuple[str, ...]:
    """The data's class names the run's saved model records (its manifest's ``data``), or none."""
    file = folder / MODEL_DIR / MANIFEST_FILE
    try:
        data = load_json(file).get("data") if file.is_file() else None
    except (DataError, AttributeError):  # NOTE: optional: the model's own loading says what is wrong
        return ()
    names = data.get("class_names") if isinstance(data, Mapping) else None
    return tuple(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else ()


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read a run folder; a folder without ``results.json``, or with a malformed one or a malformed
    optional file, fails in one line naming the file and what is wrong."""
    folder = Path(run_dir)
    if not (folder / RESULTS_FILE).is_file():
        raise DataError(f"'{folder}' holds no {RESULTS_FILE}. Pass a folder a prunekit command wrote "
                        f"with --out (e.g. runs/demo/prune-conv1).")
    results = _check_results(load_json(folder / RESULTS_FILE), folder / RESULTS_FILE)
    evidence = _check_evidence(load_json(file), file) if (file := folder / EVIDENCE_FILE).is_file() else {}
    sensitivity = pareto = None
    if (file := folder / SENSITIVITY_FILE).is_file():
        sensitivity = _check_sensitivity(load_json(file), file)
    if (file := folder / PARETO_FILE).is_file():
        pareto = _check_pareto(load_json(file), file)
    return Run(folder=folder, results=results, evidence=evidence, sensitivity=sensitivity, pareto=pareto,
               class_names=_class_names(folder))
