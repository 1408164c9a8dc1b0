"""`prunekit profile`: params, MACs, size on disk, PyTorch and ONNX Runtime latency (and accuracy)."""

from __future__ import annotations

import argparse

from prunekit.cli import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="measure params, MACs, size and latency of a model",
        description="Profile a model (any --model spec, or a folder an earlier command saved): "
                    "parameters, MACs (torch.utils.flop_counter), size on disk (safetensors), "
                    "latency in PyTorch eager and ONNX Runtime (median and p10-p90 over repeats, "
                    "after warm-up, threads fixed), and the task's metric (accuracy, perplexity) "
                    "when --data is given. Without --data the input comes from the model: a registry "
                    "or timm model's input size, token ids for a Hugging Face text model.",
    )
    options.add_model_options(parser, data_required=False, task=True)
    parser.add_argument("--in-channels", type=int, default=None, metavar="C",
                        help="input channels when no --data is given (default: the model's own)")
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    options.add_output_options(parser, default=None)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.workflows.profile import profile

    _, results = profile(args.model, args.data, weights=args.weights, data_dir=args.data_dir, tokenizer=args.tokenizer,
                         block_size=args.block_size, image_size=args.image_size,
                         in_channels=args.in_channels, measure=options.measure_from_args(args),
                         out_dir=args.out, task=args.task)
    print(results["table"])
    options.print_written(results)
    return 0
