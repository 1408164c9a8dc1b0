"""`prunekit eval`: accuracy and loss of saved weights on a dataset split."""

from __future__ import annotations

import argparse

from prunekit.workflows import prune as pipeline
from prunekit.cli import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure accuracy and loss of a model's weights on a dataset",
        description="Load --weights into --model and report top-1 accuracy and mean "
                    "cross-entropy on one split of --data.",
    )
    options.add_model_options(parser)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="which split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=512, metavar="N",
                        help="evaluation batch size (default: 512)")
    options.add_output_options(parser, default=None)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = pipeline.evaluate_model(args.model, args.data, weights=args.weights,
                                      data_dir=args.data_dir, split=args.split,
                                      batch_size=args.batch_size, out_dir=args.out)
    m = results["metrics"]
    print(f"{args.model} on {results['data']} [{args.split}]: accuracy {100 * m['accuracy']:.2f} %  "
          f"loss {m['loss']:.4f}  ({m['count']} samples)")
    return 0
