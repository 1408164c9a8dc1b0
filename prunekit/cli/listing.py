"""`prunekit models` and `prunekit datasets`: what can be chosen by name."""

from __future__ import annotations

import argparse

from prunekit import data, models
from prunekit.errors import ConfigError, UnknownNameError, require


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list model names (optionally matching a pattern)",
                                   description="List registered model names (prunekit's and torchvision's), "
                                               "or timm's with a 'timm:PATTERN'.")
    parser.add_argument("pattern", nargs="?", default="*",
                        help="shell-style pattern, e.g. 'resnet*'; 'timm:PATTERN' lists timm's architectures "
                             "instead, e.g. 'timm:resnet1*' (each works as --model timm:NAME)")
    parser.add_argument("--source", choices=("prunekit", "torchvision"), default=None,
                        help="only models from this source")
    parser.set_defaults(run=run_models)
    parser = subparsers.add_parser("datasets", help="list dataset names",
                                   description="List registered dataset names. --data also accepts "
                                               "an .npz file or an image folder.")
    parser.set_defaults(run=run_datasets)


def run_models(args: argparse.Namespace) -> int:
    if args.pattern.startswith("timm:"):
        return _timm_models(args)
    meta = {"source": args.source} if args.source else {}
    found = models.names(args.pattern, **meta)
    if not found:
        within = f" from {args.source}" if args.source else ""
        raise UnknownNameError(f"no model name{within} matches '{args.pattern}'. Patterns are shell-style "
                               f"(e.g. 'resnet*'); run `prunekit models` to list every name, or "
                               f"`prunekit models 'timm:{args.pattern}'` for timm's.")
    for name in found:
        shape = "x".join(str(d) for d in models.input_shape(name))
        print(f"{name:<32} {models.MODELS.get(name).meta.get('source', ''):<12} input {shape}")
    return 0


def _timm_models(args: argparse.Namespace) -> int:
    """``timm:PATTERN``: timm's architectures matching PATTERN, as --model specs."""
    pattern = args.pattern.removeprefix("timm:") or "*"
    if args.source:
        raise ConfigError(f"--source {args.source} lists registered models; timm's are not among them. Pass "
                          f"either --source or a 'timm:PATTERN', e.g. `prunekit models '{args.pattern}'`.")
    timm = require("timm", extra="timm", feature=f"Listing '{args.pattern}'")
    found = timm.list_models(pattern)
    if not found:
        raise UnknownNameError(f"no timm model matches '{args.pattern}'. Patterns are shell-style (e.g. "
                               f"'timm:resnet*'); run `prunekit models 'timm:*'` to list every timm name.")
    for name in found:
        cfg = timm.get_pretrained_cfg(name)
        shape = "x".join(str(d) for d in cfg.input_size) if cfg is not None else "?"
        print(f"{'timm:' + name:<32} {'timm':<12} input {shape}")
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    for name in data.names():
        print(f"{name:<16} {data.DATASETS.get(name).meta.get('description', '')}")
    return 0
