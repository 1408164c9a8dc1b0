"""`prunekit decompose`: baseline (or --weights), profile, low-rank factorisation, fine-tune, profile.

The rank rule is one of ``--target-macs`` (the target ``{macs: F}``: fraction of the dense MACs
to KEEP; ranks chosen over the whole model), ``--rank`` (an int, a fraction of full rank such as 0.5, or ``vbmf``) or
``--energy`` (fraction of squared singular values kept). Prints the per-layer table and the
before/after profiles; writes OUT/results.json and OUT/model/ (model.safetensors + manifest.json).
"""

from __future__ import annotations

import argparse
from typing import Any

from prunekit.cli import options
from prunekit.recover import TrainConfig

METHODS = ("auto", "svd", "asvd", "tucker", "cp")


def _rank(text: str) -> int | float | str:
    """--rank: "16" -> 16, "0.5" -> 0.5, "vbmf" -> "vbmf"."""
    if text.lower() == "vbmf":
        return "vbmf"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int rank (16), a fraction of full rank (0.5) or "
                                         f"'vbmf'; got '{text}'") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``decompose`` sub-command and its options."""
    parser = subparsers.add_parser(
        "decompose", help="factorise Linear/Conv2d layers into low-rank ones, fine-tune, compare profiles",
        description="Train a short baseline (or load --weights), profile it, replace Linear and Conv2d "
                    "layers by low-rank factorisations (SVD, activation-aware SVD, Tucker-2, CP), "
                    "fine-tune, and print the per-layer table and the before/after profiles. Writes "
                    "OUT/results.json and OUT/model/ (prunekit.load reads it).")
    options.add_model_options(parser, task=True)
    group = parser.add_argument_group("decomposition (same keys as the recipe stage)")
    group.add_argument("--method", choices=METHODS, default="auto",
                       help="svd (Linear, Conv2d), asvd (Linear, whitened by calibration batches), "
                            "tucker (Tucker-2, Conv2d), cp (Conv2d), auto (Linear: asvd, k x k conv: "
                            "tucker, 1x1 conv: svd) (default: auto)")
    rule = group.add_mutually_exclusive_group()
    rule.add_argument("--target-macs", type=float, default=None, metavar="F",
                      help="the target {macs: F}: fraction of the dense MACs to KEEP, in (0, 1]; "
                           "0.5 = half the MACs")
    rule.add_argument("--rank", type=_rank, default=None, metavar="R",
                      help="an int rank, a fraction of each layer's full rank (0.5) or 'vbmf'")
    rule.add_argument("--energy", type=float, default=None, metavar="E",
                      help="fraction of squared singular values each layer keeps, e.g. 0.9 (the "
                           "default rule)")
    group.add_argument("--include", action="append", default=None, metavar="PATTERN",
                       help="only factorise layers whose name matches (fnmatch, repeatable), e.g. 'layer3.*'")
    group.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                       help="never factorise layers whose name matches (repeatable), e.g. fc")
    group.add_argument("--calibration-batches", type=int, default=4, metavar="N",
                       help="training batches of 64 used to whiten inputs for asvd (default: 4)")
    group.add_argument("--force", action="store_true",
                       help="factorise chosen layers even where it does not save MACs")
    options.add_pipeline_options(parser, finetune_help="after factorising")
    options.add_output_options(parser, default="runs/decompose")
    options.add_device_option(parser)
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    options.add_config_options(parser, TrainConfig, skip=("epochs",))
    parser.set_defaults(run=run)


def stage(args: argparse.Namespace) -> dict[str, Any]:
    """The decompose stage (the recipe's keys) the options describe."""
    return {"method": args.method, "rank": args.rank, "energy": args.energy,
            "target": {"macs": args.target_macs} if args.target_macs is not None else None,
            "include": args.include, "ignore": list(args.ignore),
            "options": {"force": True} if args.force else None,
            "calibration_batches": args.calibration_batches}


def run(args: argparse.Namespace) -> int:
    """Run the workflow (prunekit.workflows.decompose.decompose) and print its tables; returns 0."""
    from prunekit.workflows.common import is_rank_zero
    from prunekit.workflows.decompose import decompose

    results = decompose(args.model, args.data, stage=stage(args), weights=args.weights,
                        baseline_epochs=args.baseline_epochs, finetune_epochs=args.finetune_epochs,
                        train_config=options.config_from_args(args, TrainConfig), data_dir=args.data_dir,
                        tokenizer=args.tokenizer, block_size=args.block_size, image_size=args.image_size,
                        out_dir=args.out, progress=not args.no_progress,
                        measure=options.measure_from_args(args), device=args.device, task=args.task)
    if not is_rank_zero():  # NOTE: under torchrun only rank 0 writes, so only it reports
        return 0
    print(results["layers_table"])
    print(results["table"])
    options.print_written(results, f"factorised model: {args.out}/model/ "
                                   f"(prunekit.load reads it)")
    return 0
