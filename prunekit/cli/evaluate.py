"""`prunekit eval`: accuracy and loss of a model (weights or a saved folder) on a dataset split."""

from __future__ import annotations

import argparse

from prunekit.cli import options
from prunekit.cli.render import counted


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure accuracy and loss of a model on a dataset",
        description="Report top-1 accuracy and mean cross-entropy of --model (with --weights, or a "
                    "folder an earlier command saved) on one split of --data.",
    )
    options.add_model_options(parser, task=True)
    parser.add_argument("--split", choices=("train", "val", "test"), default=None,
                        help="which split to evaluate (default: test; val for a text file, which is cut into "
                             "train and val blocks only)")
    parser.add_argument("--batch-size", type=options.positive_int, default=512, metavar="N",
                        help="evaluation batch size (default: 512)")
    parser.add_argument("--max-eval-batches", type=int, default=None, metavar="N",
                        help="evaluate only the first N batches (default: the whole split)")
    options.add_device_option(parser)
    options.add_output_options(parser, default=None)
    parser.set_defaults(run=run)


def _metrics(metrics: dict[str, float], task: str | None) -> str:
    """``accuracy 91.20 %  loss 0.2500  (10000 samples)``; other tasks' numbers as they come (a
    language model's count is of predicted tokens)."""
    parts = [f"{k} {100 * v:.2f} %" if k in ("accuracy", "top5") else f"{k} {v:.4g}"
             for k, v in metrics.items() if k != "count"]
    count = f"  ({counted(int(metrics['count']), task)})" if "count" in metrics else ""
    return "  ".join(parts) + count


def run(args: argparse.Namespace) -> int:
    from prunekit.workflows.common import has_weights
    from prunekit.workflows.evaluate import evaluate

    split = args.split or "test"
    results = evaluate(args.model, args.data, weights=args.weights, data_dir=args.data_dir, tokenizer=args.tokenizer,
                       block_size=args.block_size, image_size=args.image_size,
                       split=args.split, batch_size=args.batch_size, max_batches=args.max_eval_batches,
                       device=args.device, out_dir=args.out, task=args.task)
    if not has_weights(args.model, args.weights):  # NOTE: after evaluate, so only a model that loaded gets it
        print(f"note: '{args.model}' has random weights (no --weights, not a folder an earlier command "
              f"saved), so expect chance-level numbers. Pass --weights FILE (e.g. from `prunekit train`) "
              f"or --model OUT of an earlier command.")
    if results["split"] != split:
        print(f"note: '{args.data}' has no {split} split, so its held-out {results['split']} split was scored "
              f"(pass --split {results['split']} to ask for it).")
    metrics = _metrics(results["metrics"], results.get("task"))
    print(f"{args.model} on {results['data']} [{results['split']}]: {metrics}")
    options.print_written(results)
    return 0
