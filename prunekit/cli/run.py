"""`prunekit run RECIPE.yaml`: validate a recipe, run its stages with checkpoints, print the table."""

from __future__ import annotations

import argparse
import textwrap

from prunekit.cli import options
from prunekit.recipes import STAGE_KINDS, load_recipe, run_recipe
from prunekit.recipes.runner import check_output


def _stage_options() -> str:
    """The epilog of ``run --help``: each stage kind and the option keys it takes."""
    from prunekit.recipes.schema import option_names

    lines = [textwrap.fill(f"{kind}: {', '.join(option_names(kind))}", width=100, initial_indent="  ",
                           subsequent_indent="      ") for kind in STAGE_KINDS]
    return ("stage options (each as the matching command's option; see e.g. prunekit prune --help):\n"
            + "\n".join(lines))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    description = ("Validate RECIPE (every error names the file, line and field, before any work), then run "
                   "its stages in order, writing a checkpoint after each stage and OUT/results.json with a "
                   "profile after each. Stages: " + ", ".join(STAGE_KINDS) + ". Example recipes are in recipes/.")
    parser = subparsers.add_parser(
        "run", help="run a YAML recipe of stages (train, prune, sparsify, gates, ...)",
        description=textwrap.fill(description, width=100), epilog=_stage_options(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", metavar="RECIPE", help="path of the YAML recipe")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: the recipe's 'out', else runs/recipe)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into OUT even when it holds earlier results (they are replaced; an "
                             "earlier run's checkpoints/, export/ and quantize/ are removed first)")
    parser.add_argument("--resume", action="store_true",
                        help="continue after the last completed stage in OUT (same recipe)")
    parser.add_argument("--check", action="store_true", help="only validate the recipe and list its stages")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--device", metavar="DEVICE", default=None,
                        help="where training stages run: cpu, cuda, cuda:1 (default: the CPU); the "
                             "other stages run on the CPU")
    parser.add_argument("--max-eval-batches", type=int, default=None, metavar="N",
                        help="evaluate validation and test accuracy on only the first N batches of 512 "
                             "(per epoch, after every stage, in evaluate stages; default: all)")
    parser.set_defaults(run=run, claim_out=False)  # NOTE: OUT is known once the recipe is read.


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.check:
        from prunekit.recipes.schema import stage_kind

        kinds = ", ".join(stage_kind(s) for s in recipe.stages)
        task = f", task {recipe.task}" if recipe.task else ""
        print(f"{args.recipe}: valid; model {recipe.model.name}, data {recipe.data.name}{task}, stages: {kinds}")
        return 0
    out = args.out or recipe.out or "runs/recipe"
    check_output(recipe, out)  # NOTE: before the claim, which removes an earlier run's records
    with options.claimed(args, out):
        results = run_recipe(recipe, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                             progress=not args.no_progress, device=args.device,
                             max_eval_batches=args.max_eval_batches, source=args.recipe)
    initial = results.get("initial")
    profiles = ([initial] if initial else []) + [record["profile"] for record in results["stages"]]
    metric = _metric(profiles)
    rows = [("stage", "params", "MACs", "size MB", metric, "seconds")]
    if initial:
        rows.append(("(start)", *_cells(initial, metric), "-"))
    for record in results["stages"]:
        rows.append((_label(record), *_cells(_measured(record), metric), f"{record['seconds']:.1f}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    model = results.get("files", {}).get("model")
    options.print_written(results, f"model: {model}/ (prunekit.load and --model read it)" if model else "")
    return 0


def _label(record: dict) -> str:
    """A stage's row label; an ``evaluate`` row names the split it scored."""
    split = record["summary"].get("split") if record["kind"] == "evaluate" else None
    return f"{record['index'] + 1}. {record['kind']}" + (f" ({split})" if split else "")


def _measured(record: dict) -> dict:
    """The profile a stage's row shows: an ``evaluate`` stage's metrics are those of the split it
    scored (the profile's are the test split's)."""
    profile = record["profile"]
    if record["kind"] != "evaluate":
        return profile
    metrics = record["summary"].get("metrics") or {}
    return {**profile, "accuracy": metrics.get("accuracy"), "metrics": metrics}


def _metric(profiles: list[dict]) -> str:
    """The column the task's headline metric goes in: accuracy, else the first other metric
    the profiles carry (perplexity of a language model), else accuracy."""
    if any(isinstance(p.get("accuracy"), (int, float)) for p in profiles):
        return "accuracy"
    names = [k for p in profiles for k in (p.get("metrics") or {}) if k not in ("loss", "count")]
    return names[0] if names else "accuracy"


def _cells(profile: dict, metric: str = "accuracy") -> tuple[str, str, str, str]:
    if metric == "accuracy":
        value = profile.get("accuracy")
        shown = f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "-"
    else:
        value = (profile.get("metrics") or {}).get(metric)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
    return (f"{profile['params']:,}", f"{profile['macs']:,}", f"{profile['size_bytes'] / 1e6:.3f}", shown)
