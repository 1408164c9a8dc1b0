"""`prunekit sparsify`: baseline (or --weights), profile, zero weights to a sparsity, fine-tune, profile.

``--sparsity`` is the fraction of each sparsified weight set to ZERO (N:M patterns fix it at
1 - N/M). Weights are scored by ``--importance`` (magnitude, random, taylor, movement: masks,
one-shot or ramped by --schedule during fine-tuning), or zeroed by a calibration ``--method``
(wanda, sparsegpt: one-shot from calibration batches). Writes OUT/results.json and
OUT/model/ (weights stored as bitmask + values; prunekit.load reads them back dense).
"""

from __future__ import annotations

import argparse
from typing import Any

from prunekit.cli import options
from prunekit.recover import TrainConfig

__all__ = ["add_parser", "run", "stage"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sparsify`` sub-command."""
    parser = subparsers.add_parser(
        "sparsify", help="zero individual weights (unstructured, N:M, blocks), fine-tune, compare",
        description="Train a short baseline (or load --weights), profile it, set the least important "
                    "weights to zero (in one shot, or gradually while fine-tuning), fine-tune with "
                    "the zeros held, and print the before/after profiles with the sparsity and the "
                    "sparse size on disk. Zeros do not speed up dense kernels; the table says so. "
                    "Writes OUT/results.json and OUT/model/.",
    )
    options.add_model_options(parser, task=True)
    _add_sparsity_options(parser)
    options.add_pipeline_options(parser, finetune_help="under the masks; gradual/iterative schedules prune during them")
    options.add_output_options(parser, default="runs/sparsify")
    options.add_device_option(parser)
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    options.add_config_options(parser, TrainConfig, skip=("epochs",))
    parser.set_defaults(run=run)


def _add_sparsity_options(parser: argparse.ArgumentParser) -> None:
    from prunekit.sparsity import IMPORTANCE
    from prunekit.workflows.sparsify import METHODS, SCHEDULE_CHOICES

    group = parser.add_argument_group("sparsity (same keys as the recipe stage)")
    group.add_argument("--importance", default="magnitude", metavar="NAME",
                       help=f"how weights are scored: {', '.join(IMPORTANCE.names())} (default: magnitude)")
    group.add_argument("--method", default=None, metavar="NAME",
                       help=f"a one-shot calibration algorithm instead of masks from --importance: "
                            f"{', '.join(METHODS)} (default: none)")
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
    group.add_argument("--ignore", action="append", default=[], metavar="MODULE",
                       help="never sparsify this module (repeatable; glob patterns allowed), e.g. "
                            "--ignore features.0. The classifier (the last Linear/Conv the forward "
                            "calls) is always left dense")
    group.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                       help="batches of 64 training images for wanda/sparsegpt and one-shot "
                            "taylor/movement (default: 8)")


def stage(args: argparse.Namespace) -> dict[str, Any]:
    """The sparsify stage (the recipe's keys) the options describe."""
    sparsity = args.sparsity if args.sparsity is not None or ":" in args.pattern else 0.5
    return {"importance": args.importance, "method": args.method, "sparsity": sparsity,
            "pattern": args.pattern, "scope": args.scope, "schedule": args.schedule,
            "ignore": list(args.ignore), "ramp": args.ramp, "updates": args.updates,
            "calibration_batches": args.calibration_batches}


def run(args: argparse.Namespace) -> int:
    """Parse into the workflow call, run it, print the table."""
    from prunekit.workflows.common import is_rank_zero
    from prunekit.workflows.sparsify import sparsify

    results = sparsify(args.model, args.data, stage=stage(args), weights=args.weights,
                       baseline_epochs=args.baseline_epochs, finetune_epochs=args.finetune_epochs,
                       train_config=options.config_from_args(args, TrainConfig), data_dir=args.data_dir,
                       tokenizer=args.tokenizer, block_size=args.block_size, image_size=args.image_size,
                       out_dir=args.out, progress=not args.no_progress,
                       measure=options.measure_from_args(args), device=args.device, task=args.task)
    if not is_rank_zero():  # NOTE: under torchrun only rank 0 writes, so only it reports
        return 0
    print(results["table"])
    stored = "a save_pretrained folder" if results.get("stored_dense") else "stored sparse"
    options.print_written(results, f"sparse model: {args.out}/model/ "
                                   f"({stored}; prunekit.load and --model read it)")
    return 0
