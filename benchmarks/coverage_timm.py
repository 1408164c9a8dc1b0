"""Graph coverage over timm: one small variant of every timm family (model module), pruned at 0.5.

Run by hand (not in CI); writes benchmarks/COVERAGE_timm.md from the records collected so far:

    nice -n 15 .venv/bin/python benchmarks/coverage_timm.py                 # every family
    nice -n 15 .venv/bin/python benchmarks/coverage_timm.py --only vision_transformer --only beit
    .venv/bin/python benchmarks/coverage_timm.py --table                    # only rewrite the table

A family is a timm model module (``timm.list_modules()``); its smallest variant is picked by the
size word in its name (atto < femto < pico < nano < tiny < small ...) and built with
``pretrained=False`` (random init, nothing downloaded), 10 classes, at 64x64 (``img_size=64`` where
the constructor takes it; the default input size where the model needs it) and ``depth=2`` where
taken. Then ``_coverage_common.prune_and_measure``: ratio 0.5, the classifier's output kept,
verification on, forward, output shape, params and MACs kept, frozen groups and why. Each family
gets a time box (``--seconds``, default 60); one that runs past it is listed as skipped.
"""

from __future__ import annotations

import argparse
import gc
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # NOTE: this checkout's prunekit, not the installed one
import _coverage_common as common  # noqa: E402

RESULTS = Path("runs/coverage_timm")
TABLE = Path(__file__).with_name("COVERAGE_timm.md")
SIZE_WORDS = ("atto", "femto", "pico", "nano", "micro", "xxs", "xxsmall", "xs", "xsmall", "tiny", "t", "s0",
              "small", "s", "b0", "mini", "lite", "base", "b", "medium", "m", "large", "l", "huge", "h", "giant", "g")


def _rank(name: str) -> tuple[int, int, str]:
    """Smaller is smaller: the first size word found in the name, then a number in it, then the name."""
    parts = re.split(r"[_\-.]", name)
    word = min((SIZE_WORDS.index(p) for p in parts if p in SIZE_WORDS), default=len(SIZE_WORDS))
    numbers = [int(n) for n in re.findall(r"\d+", name)]
    return word, sum(numbers[:2]) if numbers else 0, name


def families() -> dict[str, str]:
    """timm model module -> its smallest registered model name."""
    import timm

    found: dict[str, str] = {}
    for module in sorted(timm.list_modules()):
        names = timm.list_models(module=module)
        if names:
            found[module] = min(names, key=_rank)
    return found


def _build(name: str, size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model with the smallest overrides its constructor takes, and an input it runs on."""
    import timm

    last: Exception | None = None
    for overrides in ({"img_size": size, "depth": 2}, {"img_size": size}, {}):
        try:
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, num_classes=10, **overrides).eval()
        except Exception as exc:  # NOTE: the constructor does not take these keywords
            last = exc
            continue
        default = model.pretrained_cfg.get("input_size", (3, 224, 224))
        for shape in ((default[0], size, size), tuple(default)):
            x = torch.randn(1, *shape)
            try:
                with torch.no_grad():
                    model(x)
                return model, x
            except Exception as exc:
                last = exc
    raise RuntimeError(f"no small configuration builds and runs: {last}")


def check(family: str, name: str, *, seconds: int, size: int) -> dict[str, Any]:
    def body(record: dict[str, Any], stage: Any) -> None:
        record["family"], record["variant"] = family, name
        model, x = _build(name, size)
        record["input"] = "x".join(map(str, x.shape[1:]))
        common.prune_and_measure(model, (x,), record, stage)

    record = common.run_one(family, body, seconds)
    gc.collect()
    return record


# Known causes of failure of this survey (the shared ones are in _coverage_common.CAUSES).
CAUSES = [
    ("no small configuration", "timm: the model does not build or run at a small size"),
]


# Families with attention whose heads are kept whole by the model's own design (not a missing rule).
HEADS_KEPT = {
    "iformer": "one head (single-head modulation attention)",
    "shvit": "one head (single-head attention on part of the channels)",
    "swiftformer": "one head (efficient additive attention)",
}
# Families whose heads are all kept but each cut in width (its input chunk, query/key and value widths).
HEADS_THINNED = {
    "efficientvit_msra": "cascaded group attention, one conv per head (qkvs[i]): no tensor axis spans the heads "
                         "but the attention biases and proj's columns, and those columns and each head's value rows "
                         "already belong to the residual stream's groups (head i's output is added to input chunk "
                         "i+1), so a whole head is not one channel group; every head's input chunk, query/key and "
                         "value widths are cut instead",
}


def _cause(record: dict[str, Any]) -> str:
    return common.cause(record, CAUSES)


def _row(r: dict[str, Any]) -> str:
    ok = r["stage"] == "done"
    status = ("ok" + ("" if r.get("exact", True) else " (inexact: shapes + exact groups by value)")) if ok \
        else f"**{_cause(r)}**"
    frozen = "; ".join(r.get("frozen", [])) or "—"
    return (f"| {r['model']} | {r.get('variant', '')} | {r.get('input', '—')} | {status} | {r.get('output', '—')} | "
            f"{common.pct(r.get('params_before'), r.get('params_after'))} | "
            f"{common.pct(r.get('params_before'), r.get('ideal_params'))} | "
            f"{common.pct(r.get('macs_before'), r.get('macs_after'))} | {r.get('heads', '—')} | {frozen} |")


def write_table(results: dict[str, dict[str, Any]], names: list[str], command: str) -> str:
    done = [results[n] for n in names if n in results]
    passed = [r for r in done if r["stage"] == "done"]
    kept = common.median([r["params_after"] / r["params_before"] for r in passed])
    ideal = common.median([r["ideal_params"] / r["params_before"] for r in passed])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cut = [r["model"] for r in done if r.get("heads")]
    whole = [r["model"] for r in done if not r.get("heads") and any("split into several dims" in f
                                                                   for f in r.get("frozen", []))]
    kept_whole = {r["model"]: HEADS_KEPT[r["model"]] for r in done if not r.get("heads") and r["model"] in HEADS_KEPT}
    thinned = {r["model"]: HEADS_THINNED[r["model"]] for r in done
               if not r.get("heads") and r["model"] in HEADS_THINNED}
    lines = [
        "# Graph coverage: timm families",
        "",
        f"Generated by `{command}` at commit {commit} (torch {torch.__version__}, {platform.machine()}, CPU). "
        "One smallest variant per timm model module, random init (`pretrained=False`), 10 classes, small input "
        f"(64x64 where the model takes it), `depth=2` where the constructor takes it; ratio {common.RATIO} in every "
        "prunable group (l2), the classifier's output kept, apply with verification (pruned == masked dense; "
        "for inexact groups output shapes plus the exact groups by value), forward, output shape. "
        "*ideal*: params a per-group cut of half the channels keeps if no group were frozen. "
        "*heads*: prunable groups of whole attention heads.",
        "",
        f"**{len(passed)}/{len(names)} families pass every check** ({len(done)} run, "
        f"{len(names) - len(done)} not run in this pass); median params kept {_p(kept)} "
        f"vs {_p(ideal)} for a per-group cut of half the channels.",
        "",
        f"Attention heads cut in {len(cut)} families ({', '.join(cut)}). Heads kept whole by the model's design in "
        f"{len(kept_whole)} ({'; '.join(f'{n}: {why}' for n, why in kept_whole.items())}). Heads all kept but cut in "
        f"width in {len(thinned)} ({'; '.join(f'{n}: {why}' for n, why in thinned.items())}). Channels split into "
        f"several dims (heads, radix groups) with a count the trace cannot follow, so kept whole, in {len(whole)} "
        f"({', '.join(whole)}); the variants surveyed of the other families have no attention heads (convolutions, MLPs, "
        "pooling or state-space mixers).",
        "",
        "| family | variant | input | status | output | params kept | ideal | MACs kept | heads | frozen groups (why) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(results[n]) for n in names if n in results]
    lines += [f"| {n} | | | not run in this pass | | | | | | |" for n in names if n not in results]
    return "\n".join(lines) + "\n"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="families (timm modules) to run")
    parser.add_argument("--seconds", type=int, default=60, help="time box per family, in CPU seconds")
    parser.add_argument("--size", type=int, default=64, help="input side where the model takes it")
    parser.add_argument("--table", action="store_true", help="only rewrite the table")
    parser.add_argument("--rerun", action="store_true", help="run families that already have a record")
    parser.add_argument("--command", default="", help="how the records were made, for the table's header")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = families()
    names = list(found)
    if not args.table:
        done = common.load(RESULTS)
        for family in args.only or names:
            if family in done and not args.rerun:
                continue
            record = check(family, found[family], seconds=args.seconds, size=args.size)
            common.save(RESULTS, record)
            print(f"{family:32s} {record['stage']:8s} {record.get('error', '')[:100]}", flush=True)
    command = args.command or "nice -n 15 .venv/bin/python benchmarks/coverage_timm.py " + " ".join(sys.argv[1:])
    TABLE.write_text(write_table(common.load(RESULTS), names, command.strip()))


if __name__ == "__main__":
    main()
