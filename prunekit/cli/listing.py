"""`prunekit models` and `prunekit datasets`: what can be chosen by name."""

from __future__ import annotations

import argparse

from prunekit import data, models
from prunekit.errors import UnknownNameError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list model names (optionally matching a pattern)",
                                   description="List registered model names.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    parser.add_argument("--source", choices=("prunekit", "torchvision"), default=None,
                        help="only models from this source")
    parser.set_defaults(run=run_models)
    parser = subparsers.add_parser("datasets", help="list dataset names",
                                   description="List registered dataset names. --data also accepts "
                                               "an .npz file or an image folder.")
    parser.set_defaults(run=run_datasets)


def run_models(args: argparse.Namespace) -> int:
    meta = {"source": args.source} if args.source else {}
    found = models.names(args.pattern, **meta)
    if not found:
        within = f" from {args.source}" if args.source else ""
        raise UnknownNameError(f"no model name{within} matches '{args.pattern}'. Patterns are shell-style "
                               f"(e.g. 'resnet*'); run `prunekit models` to list every name.")
    for name in found:
        shape = "x".join(str(d) for d in models.input_shape(name))
        print(f"{name:<32} {models.MODELS.get(name).meta.get('source', ''):<12} input {shape}")
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    for name in data.names():
        print(f"{name:<16} {data.DATASETS.get(name).meta.get('description', '')}")
    return 0
