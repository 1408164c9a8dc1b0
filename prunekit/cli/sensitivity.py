"""`prunekit sensitivity`: the proxy metric after cutting each channel group (and residual block) alone."""

from __future__ import annotations

import argparse
from typing import Any

from prunekit.cli import options
from prunekit.recover import TrainConfig


def ratio_list(text: str) -> tuple[float, ...]:
    """Parse "0.1,0.5" into (0.1, 0.5) for argparse."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions such as 0.1,0.5; got '{text}'") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions in (0, 1) such as 0.1,0.5; got '{text}'")
    return values


def add_proxy_options(parser: argparse.ArgumentParser) -> None:
    """--bn-batches, --val-samples: how the proxy metric is computed (shared with `prunekit search`)."""
    parser.add_argument("--bn-batches", type=int, default=2, metavar="N",
                        help="training batches of 128 that re-estimate BatchNorm statistics (default: 2)")
    parser.add_argument("--val-samples", type=options.positive_int, default=1024, metavar="N",
                        help="validation samples the proxy metric is computed on (default: 1024)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sensitivity", help="how much the metric drops when each layer group is cut alone",
        description="Train a short baseline (or load --weights), then for every prunable channel group "
                    "remove each ratio of its lowest-importance channels alone (and each residual block "
                    "alone) and score the proxy: the metric on a fixed validation subset after "
                    "re-estimating BatchNorm. Writes OUT/sensitivity.json; cached by model and settings.",
    )
    options.add_model_options(parser, task=True)
    parser.add_argument("--ratios", type=ratio_list, default=None, metavar="R[,R...]",
                        help="fractions of each group removed (default: 0.1,0.2,...,0.9)")
    parser.add_argument("--importance", default="l2", metavar="NAME",
                        help="which channels go first: a data-free importance, l2, l1, fpgm (default: l2)")
    parser.add_argument("--no-depth", action="store_true", help="skip removing residual blocks")
    options.add_ranks_option(parser, help="also factorise each Linear/Conv2d alone at each ratio of its rank removed: "
                                          "svd for Linear and 1x1 convs, tucker for k x k (or the methods named, e.g. "
                                          "svd,cp)")
    add_proxy_options(parser)
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="where results are cached (default: $PRUNEKIT_CACHE/sensitivity or "
                             "~/.cache/prunekit/sensitivity)")
    parser.add_argument("--baseline-epochs", type=int, default=1, metavar="N",
                        help="epochs of baseline training when no --weights are given (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress line")
    options.add_output_options(parser, default="runs/sensitivity")
    options.add_device_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.search.sensitivity import DEFAULT_RATIOS
    from prunekit.workflows.sensitivity import sensitivity

    results = sensitivity(args.model, args.data, weights=args.weights, task=args.task, data_dir=args.data_dir,
                          tokenizer=args.tokenizer, block_size=args.block_size, image_size=args.image_size,
                          ratios=args.ratios or DEFAULT_RATIOS, importance=args.importance, depth=not args.no_depth,
                          bn_batches=args.bn_batches, val_samples=args.val_samples,
                          baseline_epochs=args.baseline_epochs, train_config=TrainConfig(),
                          cache_dir=args.cache_dir, out_dir=args.out, progress=not args.no_progress,
                          device=args.device, ranks=args.ranks)
    print(table(results["sensitivity"]))
    options.print_written(results, f"sensitivity: {args.out}/sensitivity.json")
    return 0


def table(found: dict[str, Any]) -> str:
    """One row per group: its size and the metric at each ratio."""
    groups = found["groups"]
    ratios = groups[0]["ratios"] if groups else []
    head = f"{'group':<34} {'size':>5} " + " ".join(f"{r:>6g}" for r in ratios)
    settings = found.get("settings", {})
    steps = settings.get("finetune_steps")
    proxy = (f" (the proxy, as every row: BatchNorm statistics re-estimated on {settings['bn_batches']} batch(es)"
             f"{f', then {steps} fine-tune step(s)' if steps else ''}; not the model's plain evaluation)"
             if settings.get("bn_batches") else "")
    rows = [f"{found['metric_name']} baseline {found['baseline']:.4f}{proxy}", head]
    rows += [f"{g['name'][:34]:<34} {g['size']:>5} " + " ".join(f"{m:>6.3f}" for m in g["metric"]) for g in groups]
    rows += [f"block {b['name']:<28} removed: {b['metric']:.3f}" for b in found.get("blocks", [])]
    rows += [f"rank {r['name'][:22]:<22} {r['method']:>6} " + " ".join(f"{m:>6.3f}" for m in r["metric"])
             for r in found.get("ranks", [])]
    return "\n".join(rows)
