"""Graph coverage over the torchvision zoo: does every classifier trace, prune and export?

Run by hand (not in CI); writes benchmarks/COVERAGE.md from the results collected so far:

    .venv/bin/python benchmarks/coverage.py                      # every model (~1 h on 2 cores)
    .venv/bin/python benchmarks/coverage.py --only resnet18 --only vit_b_16 --skip-onnx
    .venv/bin/python benchmarks/coverage.py --max-size 128       # smaller inputs where a model allows
    .venv/bin/python benchmarks/coverage.py --table              # only rewrite COVERAGE.md

For each model, at its ``prunekit.models.input_shape`` (or ``--max-size``) and batch 1: trace, score (l2), allocate
50 % of the channels of every prunable group, apply with verification (pruned == masked dense, or
shapes only for inexact plans), run the pruned model, check its output shape, export it to ONNX.
Models run one after another in this process; each model's record is saved as soon as it is done
(``runs/coverage/<model>.json``), so a long run can be split into parts (even run side by side)
and resumed.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import prunekit.models
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs, count_params, export_onnx
from prunekit.structured import allocate, apply

RESULTS = Path("runs/coverage")  # one <model>.json per model
TABLE = Path(__file__).with_name("COVERAGE.md")
RATIO = 0.5
# NOTE: the biggest models last, so a run cut short still covers the rest of the zoo.
BIG = ("convnext_large", "regnet_x_32gf", "regnet_y_16gf", "resnext101_64x4d", "wide_resnet101_2",
       "swin_v2_b", "vit_l_32", "vit_l_16", "regnet_y_32gf", "efficientnet_b7", "efficientnet_v2_l",
       "regnet_y_128gf", "vit_h_14")
# NOTE: protobuf/exporter memory grows with the weights; above this ONNX export is skipped by default.
ONNX_MAX_PARAMS = 400_000_000


def _example(model: torch.nn.Module, shape: tuple[int, ...], max_size: int | None,
             batch: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """An input of ``shape``, or of side ``max_size`` when smaller and the model accepts it."""
    if max_size is not None and shape[1] > max_size:
        x = torch.randn(batch, shape[0], max_size, max_size)
        try:
            with torch.no_grad():
                return x, tuple(model(x).shape)
        except Exception:  # NOTE: ViT/MaxViT are built for one size; they keep the default
            pass
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        return x, tuple(model(x).shape)


def check(name: str, *, max_size: int | None = None, onnx: bool = True, batch: int = 1) -> dict[str, Any]:
    """Run every stage on one model; the record says how far it got and, if it failed, why."""
    shape = prunekit.models.input_shape(name)
    record: dict[str, Any] = {"model": name, "input": "x".join(map(str, shape)), "stage": "build", "timings": {}}
    start = last = time.perf_counter()

    def stage(next_stage: str) -> None:
        nonlocal last
        now = time.perf_counter()
        record["timings"][record["stage"]] = round(now - last, 1)
        record["stage"], last = next_stage, now

    try:
        torch.manual_seed(0)
        model = prunekit.models.create(name, num_classes=10).eval()
        x, want_shape = _example(model, shape, max_size, batch)
        record["input"] = "x".join(map(str, x.shape[1:]))
        record["params_before"] = count_params(model)
        record["macs_before"] = count_macs(model, x)
        stage("trace")
        graph = DependencyGraph.trace(model, x)
        record["groups"] = len(graph.groups)
        record["prunable"] = len(graph.prunable)
        record["blocked"] = list(graph.blocked)
        stage("score")
        scores = score(graph, model, "l2")
        stage("allocate")
        plan = allocate(graph, scores, RATIO)
        record["exact"] = all(graph.group(g).exact for g in plan.sizes if plan.removed(g))
        stage("apply")
        pruned = apply(model, graph, plan, example_inputs=x)
        del model
        gc.collect()
        stage("forward")
        with torch.no_grad():
            got_shape = tuple(pruned(x).shape)
        stage("shape")
        if got_shape != want_shape:
            raise RuntimeError(f"output shape {got_shape}, expected {want_shape}")
        record["params_after"] = count_params(pruned)
        record["macs_after"] = count_macs(pruned, x)
        if onnx and record["params_after"] <= ONNX_MAX_PARAMS:
            stage("onnx")
            with tempfile.TemporaryDirectory() as tmp:
                export_onnx(pruned, x, Path(tmp) / f"{name}.onnx")
            record["onnx"] = True
        else:
            record["onnx"] = None  # skipped
        stage("done")
    except Exception as exc:  # NOTE: one model's failure must not stop the survey
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400] if str(exc) else ''}"
        record["trace"] = traceback.format_exc(limit=-4)[-2000:]
    record["seconds"] = round(time.perf_counter() - start, 1)
    gc.collect()
    return record


def _load() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def _save(record: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f"{record['model']}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(RESULTS / f"{record['model']}.json")


# Known causes of failure: (text found in the error, what it means and whose it is).
CAUSES = [
    ("is not on the expected device",
     "tracing mixed meta and CPU tensors (an earlier, since replaced, in-place meta swap): re-run it"),
    ("is invalid for input of size",
     "a hidden integer dependency: MaxViT's attention reads `B, G, P, D = x.shape` and later "
     "reshapes its output to `(B, G, P, D)`, tying the attention's inner width to the block's input "
     "width through a Python int the trace cannot see; cutting one without the other breaks that "
     "reshape. Verification caught it (apply raised, returned nothing). Fix planned: symbolic shapes "
     "(SymInt) in the trace, or bisect-and-freeze of the offending groups when verification fails"),
]


def _cause(error: str) -> str:
    return next((why for text, why in CAUSES if text in error), "not explained yet")


def _claim(name: str) -> bool:
    """Take ``name`` for this process unless it has a result or another part is running it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if (RESULTS / f"{name}.json").exists():
        return False
    try:
        (RESULTS / f"{name}.running").open("x").close()
        return True
    except FileExistsError:
        return False


def _m(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:,.1f}"


def _row(r: dict[str, Any]) -> str:
    ok = r["stage"] == "done"
    reduced = ok and r["params_after"] < r["params_before"]
    onnx = {True: "yes", None: "skipped", False: "no"}[r.get("onnx", False)]
    status = "ok" if ok else f"**fails at {r['stage']}**: {r.get('error', '')[:160]}"
    params = f"{_m(r.get('params_before'))} → {_m(r.get('params_after'))}"
    macs = f"{r.get('macs_before', 0) / 1e9:,.2f} → " + (f"{r['macs_after'] / 1e9:,.2f}" if "macs_after" in r else "—")
    groups = f"{r.get('prunable', '—')}/{r.get('groups', '—')}"
    blocked = len(r.get("blocked", []))
    exact = "" if r.get("exact", True) else " (inexact)"
    return (f"| {r['model']} | {r['input']} | {status}{exact} | {'yes' if reduced else 'no'} | {onnx} | {params} | "
            f"{macs} | {groups} | {blocked} | {r['seconds']:.0f} |")


def write_table(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """COVERAGE.md: one row per model (a model not run yet says so), then the blocked ops."""
    done = [results[n] for n in names if n in results]
    passed = [r for r in done if r["stage"] == "done"]
    lines = [
        "# Graph coverage: torchvision classifiers",
        "",
        f"Generated by `benchmarks/coverage.py` (torch {torch.__version__}, {platform.machine()}, CPU). Each model: "
        f"trace at the input size shown (each model's default, or at most 128 where the model accepts "
        "it: `--max-size 128`, to fit the run on 2 cores; MACs are counted at that size), batch 1, l2 scores, "
        f"remove {RATIO:.0%} of the channels of every "
        "prunable group, apply with verification (pruned == masked dense model; for inexact plans — a pruned "
        "dim passes through LayerNorm/GroupNorm/softmax — output shapes plus the exact groups by value), "
        "forward, output shape, ONNX export (dynamo exporter). Params in millions, MACs in G.",
        "",
        f"**{len(passed)}/{len(names)} models pass every stage** ({len(done)} run); "
        f"params reduced in {sum(r['params_after'] < r['params_before'] for r in passed)}; "
        f"ONNX export {sum(r.get('onnx') is True for r in passed)} ok, "
        f"{sum(r.get('onnx') is None for r in passed)} skipped.",
        "",
        "| model | input | status | params reduced | ONNX | params M (before → after) | GMACs | prunable/groups "
        "| blocked ops | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        lines.append(_row(results[n]) if n in results else f"| {n} | | not run yet (see below) | | | | | | | |")
    missing = [n for n in names if n not in results]
    if missing:
        lines += ["", f"**Not run yet** ({len(missing)}): {', '.join(missing)}. The run shares 2 CPU cores; "
                  "it was stopped at a deadline. `benchmarks/coverage.py --max-size 128` resumes where it stopped."]
    failed = [r for r in done if r["stage"] != "done"]
    if failed:
        lines += ["", "## Failures by cause", ""]
        by_cause: dict[str, list[str]] = {}
        for r in failed:
            by_cause.setdefault(_cause(r.get("error", "")), []).append(f"{r['model']} ({r['stage']})")
        lines += [f"- {', '.join(models)}: {why}." for why, models in by_cause.items()]
    lines += ["", "## Blocked ops (ops that froze channels), per model", ""]
    for r in done:
        if r.get("blocked"):
            shown = "; ".join(f"`{b}`" for b in r["blocked"][:4])
            more = f" (+{len(r['blocked']) - 4} more)" if len(r["blocked"]) > 4 else ""
            lines.append(f"- **{r['model']}**: {shown}{more}")
    text = "\n".join(lines) + "\n"
    TABLE.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="model name (repeatable); default: every model")
    parser.add_argument("--skip", action="append", default=[], help="model name to leave out (repeatable)")
    parser.add_argument("--skip-onnx", action="store_true", help="do not export to ONNX")
    parser.add_argument("--max-size", type=int, help="input side at most this, for models that accept it "
                        "(faster; MACs are then counted at that size)")
    parser.add_argument("--reverse", action="store_true", help="go through the models last to first "
                        "(a second part run beside the first meets it in the middle)")
    parser.add_argument("--rerun", action="store_true", help="run models that already have a result")
    parser.add_argument("--table", action="store_true", help="only rewrite COVERAGE.md from saved results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    every = prunekit.models.names(source="torchvision")
    ordered = [n for n in every if n not in BIG] + [n for n in BIG if n in every]
    results = _load()
    if not args.table:
        names = args.only or ordered
        for name in reversed(names) if args.reverse else names:
            if name in args.skip or (not args.rerun and not _claim(name)):
                continue
            record = check(name, max_size=args.max_size, onnx=not args.skip_onnx)
            _save(record)
            (RESULTS / f"{name}.running").unlink(missing_ok=True)
            print(_row(record), flush=True)
    write_table(_load(), every)  # NOTE: includes what other parts saved meanwhile


if __name__ == "__main__":
    main()
