"""`prunekit partition`: cut a model into K pipeline stages, measure them, save stages + ONNX."""

from __future__ import annotations

import argparse

from prunekit.cli import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `prunekit partition` and its options."""
    parser = subparsers.add_parser(
        "partition", help="split a model into K sequential stages (pipeline parallelism)",
        description="Split a model's traced graph (torch.fx, else torch.export) into K sequential "
                    "stages that balance MACs or measured latency and, within --tolerance of the "
                    "best bottleneck, cross the fewest bytes. Prints the whole model and each "
                    "stage (nodes, MACs, latency, bytes out) and writes the stages (safetensors "
                    "+ ONNX), manifest.json and results.json under --out when it is given.",
    )
    options.add_model_options(parser, data_required=False, task=True)
    parser.add_argument("--in-channels", type=int, default=None, metavar="C",
                        help="input channels when no --data is given (default: the model's own)")
    parser.add_argument("--stages", type=int, default=2, metavar="K",
                        help="number of stages (default: 2)")
    parser.add_argument("--balance", choices=("macs", "latency"), default="macs",
                        help="what the stages balance: counted MACs or latency measured per node "
                             "(default: macs)")
    parser.add_argument("--tolerance", type=float, default=0.05, metavar="F",
                        help="how far above the best bottleneck a cut may go to cross fewer bytes "
                             "(default: 0.05 = 5%%)")
    parser.add_argument("--batch-size", type=options.positive_int, default=1, metavar="N",
                        help="batch size of the example input and of the latency (default: 1)")
    parser.add_argument("--threads", type=options.positive_int, default=2, metavar="N",
                        help="intra-op threads for latency (default: 2)")
    parser.add_argument("--min-time-s", type=float, default=1.0, metavar="S",
                        help="seconds of timed calls per latency measurement, at least 5 calls "
                             "(default: 1.0)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                        help="also export each stage to ONNX under --out (default: on)")
    parser.add_argument("--pipeline", action="store_true",
                        help="also run the stages as a pipeline of K processes (gloo, CPU) and "
                             "compare its output with the model's")
    parser.add_argument("--microbatches", type=int, default=None, metavar="M",
                        help="micro-batches for --pipeline (default: K)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    options.add_output_options(parser, default=None)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Partition, print the before/after table; 0 when the chained stages match the model."""
    from prunekit.workflows.partition import partition

    results = partition(
        args.model, stages=args.stages, balance=args.balance, data=args.data,
        weights=args.weights, data_dir=args.data_dir, tokenizer=args.tokenizer,
        block_size=args.block_size, image_size=args.image_size, in_channels=args.in_channels,
        batch_size=args.batch_size, threads=args.threads, tolerance=args.tolerance,
        onnx=args.onnx, pipeline=args.pipeline, n_microbatches=args.microbatches,
        min_time_s=args.min_time_s,
        out_dir=args.out, progress=not args.no_progress, task=args.task)
    print(results["table"])
    options.print_written(results, f"stages: {results['files']['stages']}/" if "files" in results
                          else "the stages (safetensors + ONNX + manifest)")
    ok = results["check"]["exact"] and results.get("pipeline", {}).get("allclose", True)
    return 0 if ok else 1
