"""`prunekit eval`: accuracy and loss of a model (weights or a saved folder) on a dataset split."""

from __future__ import annotations

import argparse

from prunekit.cli import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure accuracy and loss of a model on a dataset",
        description="Report top-1 accuracy and mean cross-entropy of --model (with --weights, or a "
                    "folder an earlier command saved) on one split of --data.",
    )
    options.add_model_options(parser)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="which split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=512, metavar="N",
                        help="evaluation batch size (default: 512)")
    parser.add_argument("--max-eval-batches", type=int, default=None, metavar="N",
                        help="evaluate only the first N batches (default: the whole split)")
    options.add_device_option(parser)
    options.add_output_options(parser, default=None)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.workflows.evaluate import evaluate

    results = evaluate(args.model, args.data, weights=args.weights, data_dir=args.data_dir,
                       split=args.split, batch_size=args.batch_size, max_batches=args.max_eval_batches,
                       device=args.device, out_dir=args.out)
    m = results["metrics"]
    print(f"{args.model} on {results['data']} [{args.split}]: accuracy {100 * m['accuracy']:.2f} %  "
          f"loss {m['loss']:.4f}  ({m['count']} samples)")
    options.print_written(results)
    return 0
