"""`prunekit train`: train a baseline (or fine-tune from --weights), then print its profile."""

from __future__ import annotations

import argparse

from prunekit.cli import options
from prunekit.cli.render import print_profile, print_training
from prunekit.recover import TrainConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on a dataset and profile the result",
        description="Train (or fine-tune from --weights) a model, with a checkpoint after every "
                    "epoch, then print params, MACs, latency and accuracy. Runs unchanged under "
                    "`torchrun --nproc_per_node=N -m prunekit train ...` (DistributedDataParallel).",
    )
    options.add_model_options(parser, task=True)
    options.add_output_options(parser, default="runs/train")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.safetensors (same options as the interrupted run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the profile (params, MACs, latency) after training")
    options.add_device_option(parser)
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    options.add_config_options(parser, TrainConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.workflows.common import is_rank_zero
    from prunekit.workflows.train import train

    config = options.config_from_args(args, TrainConfig)
    results = train(args.model, args.data, config, data_dir=args.data_dir,
                    tokenizer=args.tokenizer, block_size=args.block_size,
                    image_size=args.image_size, weights=args.weights,
                    out_dir=args.out, resume=args.resume, progress=not args.no_progress,
                    profile_after=not args.no_profile, measure=options.measure_from_args(args),
                    device=args.device, task=args.task)
    if is_rank_zero():
        print_training(results)
        if "profile" in results:
            print_profile(results)
        options.print_written(results)
    return 0
