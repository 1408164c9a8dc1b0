"""`prunekit sparsify`: baseline (or --weights), profile, zero weights to a sparsity, fine-tune, profile.

``--sparsity`` is the fraction of each sparsified weight set to ZERO (N:M patterns fix it at
1 - N/M). Methods: magnitude, random, taylor, movement (masks, one-shot or ramped by --schedule
during fine-tuning) and wanda, sparsegpt (one-shot from calibration batches). Writes
OUT/results.json and OUT/sparse.safetensors (bitmask + values; prunekit.sparsity.load_sparse).
"""

from __future__ import annotations

import argparse

from prunekit.cli import options
from prunekit.recover import TrainConfig

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sparsify`` sub-command."""
    parser = subparsers.add_parser(
        "sparsify", help="zero individual weights (unstructured, N:M, blocks), fine-tune, compare",
        description="Train a short baseline (or load --weights), profile it, set the least important "
                    "weights to zero (in one shot, or gradually while fine-tuning), fine-tune with "
                    "the zeros held, and print the before/after profiles with the sparsity and the "
                    "sparse size on disk. Zeros do not speed up dense kernels; the table says so. "
                    "Writes OUT/results.json and OUT/sparse.safetensors.",
    )
    options.add_model_options(parser)
    _add_sparsity_options(parser)
    options.add_pipeline_options(parser, finetune_help="under the masks; gradual/iterative schedules prune during them")
    options.add_output_options(parser, default="runs/sparsify")
    options.add_profile_options(parser)
    options.add_config_options(parser, TrainConfig, skip=("epochs",))
    parser.set_defaults(run=run)


def _add_sparsity_options(parser: argparse.ArgumentParser) -> None:
    from prunekit.sparsity import IMPORTANCE
    from prunekit.sparsity.pipeline import CALIBRATION_METHODS, SCHEDULE_CHOICES

    group = parser.add_argument_group("sparsity")
    methods = [*IMPORTANCE.names(), *CALIBRATION_METHODS]
    group.add_argument("--method", default="magnitude", metavar="NAME",
                       help=f"how weights are scored: {', '.join(methods)} (default: magnitude)")
    group.add_argument("--sparsity", type=float, default=None, metavar="S",
                       help="fraction of weights set to zero, e.g. 0.9 (default: 0.5, or 1 - N/M "
                            "with an N:M pattern)")
    group.add_argument("--pattern", default="unstructured", metavar="P",
                       help="unstructured, N:M along the input dim (2:4, 4:8) or blocks (1x4, 4x4) "
                            "(default: unstructured)")
    group.add_argument("--scope", choices=("layer", "global"), default="layer",
                       help="layer: every weight gets the sparsity; global: one ranking over all "
                            "layers (default: layer)")
    group.add_argument("--schedule", choices=SCHEDULE_CHOICES, default="one_shot",
                       help="one_shot: prune, then fine-tune; gradual: Zhu & Gupta's cubic ramp "
                            "during fine-tuning; iterative: equal geometric steps (default: one_shot)")
    group.add_argument("--ramp", type=float, default=0.75, metavar="F",
                       help="gradual/iterative: fraction of the fine-tuning steps over which the "
                            "sparsity ramps up; the rest trains at the target (default: 0.75)")
    group.add_argument("--updates", type=int, default=20, metavar="N",
                       help="gradual/iterative: number of mask updates during the ramp (default: 20)")
    group.add_argument("--exclude", action="append", default=[], metavar="MODULE",
                       help="never sparsify this module (repeatable; glob patterns allowed), e.g. "
                            "--exclude features.0. The classifier is always left dense")
    group.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                       help="batches of 64 training images for wanda/sparsegpt and one-shot "
                            "taylor/movement (default: 8)")


def run(args: argparse.Namespace) -> int:
    """Parse into the library call, run it, print the table."""
    from prunekit.sparsity.pipeline import sparsify

    sparsity = args.sparsity if args.sparsity is not None or ":" in args.pattern else 0.5
    results = sparsify(
        args.model, args.data, method=args.method, sparsity=sparsity, pattern=args.pattern,
        scope=args.scope, schedule=args.schedule, ignore=args.exclude, weights=args.weights,
        baseline_epochs=args.baseline_epochs, finetune_epochs=args.finetune_epochs,
        train_config=options.config_from_args(args, TrainConfig), ramp=args.ramp,
        updates=args.updates, calibration_batches=args.calibration_batches,
        data_dir=args.data_dir, out_dir=args.out, progress=not args.no_progress,
        batch_sizes=args.batch_sizes, threads=args.threads, backends=options.backends(args),
    )
    print(results["table"])
    print(f"results: {args.out}/results.json  sparse weights: {args.out}/sparse.safetensors "
          f"(prunekit.sparsity.load_sparse reads it)")
    return 0
