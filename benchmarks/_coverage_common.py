"""Shared by coverage_timm.py and coverage_hf.py: prune one model at ratio 0.5 and measure it.

Each model is traced, scored (l2), cut by half in every prunable group (the model's output width is
kept: the graph freezes it), applied with verification (pruned == masked dense model, shapes for
inexact groups), run, and measured (params and MACs). ``ideal`` is what a per-group cut of half the
channels would keep if no op froze a group: every group the graph found except the model's output
is halved, counted on the tensors it slices. Each model runs under a time box of CPU seconds
(SIGPROF) so that one slow family cannot stop the survey, and a loaded machine does not skip models
that a quiet one would have run.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs, count_params
from prunekit.structured import allocate, apply

RATIO = 0.5
OUTPUT = "model output"


class TimeBox(Exception):
    """A model took longer than its time box."""


@contextmanager
def time_box(seconds: int) -> Iterator[None]:
    """Raise :class:`TimeBox` in the main thread after ``seconds`` of this process's CPU time (restores
    the old handler). CPU time, not wall time: on a machine shared with other jobs a model gets the same
    budget as on a quiet one."""

    def alarm(signum: int, frame: Any) -> None:
        raise TimeBox(f"skipped after {seconds} CPU s (time box)")

    old = signal.signal(signal.SIGPROF, alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def tensors(out: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def ideal_params(model: nn.Module, graph: DependencyGraph) -> int:
    """Params kept if every group except the model's output lost half its channels."""
    removed: dict[tuple[str, int], int] = defaultdict(int)
    for group in graph.groups:
        if group.size < 2 or any(OUTPUT in r for r in group.reasons):
            continue
        seen: set[tuple[str, int, int]] = set()
        for m in group.members:
            if (m.tensor, m.axis, m.start) not in seen:
                seen.add((m.tensor, m.axis, m.start))
                removed[(m.tensor, m.axis)] += (group.size // 2) * m.inner
    state = dict(model.named_parameters())
    total = 0
    for name, p in state.items():
        kept = 1
        for axis, size in enumerate(p.shape):
            kept *= max(size - removed.get((name, axis), 0), min(size, 1))
        total += kept
    return total


def frozen_reasons(graph: DependencyGraph) -> list[str]:
    """Why groups are not prunable, most common first (groups of the model output left out: kept on
    purpose, whatever else also holds them)."""
    counts: Counter[str] = Counter()
    for g in graph.groups:
        if not g.prunable and g.size > 1 and not any(OUTPUT in r for r in g.reasons):
            counts[_short(g.reasons[0])] += 1
    return [f"{n}x {r}" for r, n in counts.most_common(3)]


def _short(reason: str) -> str:
    """A reason without the module path, so that one cause in every block counts once."""
    return reason.split(" in '")[0].split(" (")[0][:140]


def prune_and_measure(model: nn.Module, inputs: tuple[Any, ...], record: dict[str, Any],
                      stage: Callable[[str], None]) -> nn.Module:
    """Trace, prune at RATIO with verification, run; fill ``record``; return the pruned model."""
    with torch.no_grad():
        want = [tuple(t.shape) for t in tensors(model(*inputs))]
    record["params_before"] = count_params(model)
    record["macs_before"] = _macs(model, inputs, record)
    stage("trace")
    graph = DependencyGraph.trace(model, inputs)
    record["groups"], record["prunable"] = len(graph.groups), len(graph.prunable)
    record["heads"] = sum(1 for g in graph.prunable if any(m.inner > 1 and m.role == "producer" and
                                                            m.tensor.endswith("weight") for m in g.members))
    record["frozen"] = frozen_reasons(graph)
    record["ideal_params"] = ideal_params(model, graph)
    stage("prune")
    plan = allocate(graph, score(graph, model, "l2"), RATIO)
    record["exact"] = all(graph.group(g).exact for g in plan.sizes if plan.removed(g))
    pruned = apply(model, graph, plan, example_inputs=inputs)  # verification on
    stage("forward")
    with torch.no_grad():
        got = [tuple(t.shape) for t in tensors(pruned(*inputs))]
    record["output"] = "x".join(map(str, got[0])) if got else "—"
    if got != want:
        raise RuntimeError(f"output shapes {got}, expected {want}")
    record["params_after"] = count_params(pruned)
    record["macs_after"] = _macs(pruned, inputs, record)
    return pruned


def _macs(model: nn.Module, inputs: tuple[Any, ...], record: dict[str, Any]) -> int | None:
    """MACs, or None with the reason noted (torch's flop counter fails on a few models: CaiT, PiT)."""
    try:
        return count_macs(model, inputs)
    except Exception as exc:  # NOTE: a metric, not a check: the family still runs
        record["macs_error"] = f"count_macs: {type(exc).__name__}: {str(exc)[:120]}"
        return None


def run_one(name: str, body: Callable[[dict[str, Any], Callable[[str], None]], None], seconds: int) -> dict[str, Any]:
    """``body(record, stage)`` under a time box; the record says how far it got and why it stopped."""
    record: dict[str, Any] = {"model": name, "stage": "build"}
    start = time.perf_counter()

    def stage(next_stage: str) -> None:
        record["stage"] = next_stage

    try:
        with time_box(seconds):
            body(record, stage)
        record["stage"] = "done"
    except Exception as exc:  # NOTE: one model's failure must not stop the survey
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        record["trace"] = traceback.format_exc(limit=-3)[-1500:]
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


# Known causes of failure shared by both surveys: (text found in the error, the named reason).
CAUSES = [
    ("time box", "skipped: ran past the time box on this 2-core machine"),
    ("Sizes of tensors must match except in dimension 1",
     "prunekit bug (issue 19, graph class 1, harden-graph): `cat(cls_token, dist_token, x)` -- the token "
     "parameters never join the embedding group; verification caught it, apply returned nothing"),
    ("shape '[64, 1, 1]' is invalid",
     "prunekit bug (issue 19, graph class 2, harden-graph): a parameter viewed to a shape stored at "
     "`__init__` (`self.scale.view(self.shape)`); verification caught it"),
    ("weight should contain",
     "prunekit bug: NF-Net's ScaledStdConv2d standardises its weight with a per-row gain through batch_norm, "
     "not modelled; verification caught it"),
    ("Given groups=", "prunekit bug (not diagnosed yet): a grouped conv's groups do not follow the cut; "
                      "verification caught it"),
    ("fails on the example input",
     "prunekit bug (issue 19, hidden integer dependency, harden-graph): a width read from a shape or stored "
     "at `__init__` ties groups the trace cannot see; verification caught it, apply returned nothing"),
]


def cause(record: dict[str, Any], extra: list[tuple[str, str]]) -> str:
    """The named reason a record failed, or where it failed and the error."""
    error = record.get("error", "")
    named = next((why for text, why in extra + CAUSES if text in error), None)
    return named or f"fails at {record['stage']}: {error[:160]}"


def save(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{record['model']}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(folder / f"{record['model']}.json")


def load(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def pct(a: int | None, b: int | None) -> str:
    return "—" if not a or not b else f"{100 * b / a:.0f} %"


def median(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
