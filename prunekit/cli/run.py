"""`prunekit run RECIPE.yaml`: validate a recipe, run its stages with checkpoints, print the table."""

from __future__ import annotations

import argparse

from prunekit.cli import options
from prunekit.recipes import STAGE_KINDS, load_recipe, run_recipe


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a YAML recipe of stages (train, prune, sparsify, gates, ...)",
        description="Validate RECIPE (every error names the file, line and field, before any work), "
                    "then run its stages in order, writing a checkpoint after each stage and "
                    "OUT/results.json with a profile after each. Stages: " + ", ".join(STAGE_KINDS)
                    + ". Example recipes are in recipes/.",
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
    with options.claimed(args, out):
        results = run_recipe(recipe, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                             progress=not args.no_progress, device=args.device,
                             max_eval_batches=args.max_eval_batches)
    initial = results.get("initial")
    profiles = ([initial] if initial else []) + [record["profile"] for record in results["stages"]]
    metric = _metric(profiles)
    rows = [("stage", "params", "MACs", "size MB", metric, "seconds")]
    if initial:
        rows.append(("(start)", *_cells(initial, metric), "-"))
    for record in results["stages"]:
        rows.append((f"{record['index'] + 1}. {record['kind']}", *_cells(record["profile"], metric),
                     f"{record['seconds']:.1f}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    model = results.get("files", {}).get("model")
    options.print_written(results, f"model: {model}/ (prunekit.load and --model read it)" if model else "")
    return 0


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
