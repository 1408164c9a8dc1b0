"""`prunekit export`: a model (a saved folder, or a name with weights) as a folder + ONNX."""

from __future__ import annotations

import argparse
from dataclasses import replace

from prunekit.cli import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a model as a saved folder and an ONNX file",
        description="Write --model (a folder an earlier command saved, or any spec with "
                    "--weights) to OUT/model/ (prunekit.load and --model read it) and OUT/model.onnx "
                    "(dynamic batch), with OUT/results.json.",
    )
    options.add_model_options(parser, data_required=False, task=True)
    parser.add_argument("--in-channels", type=int, default=None, metavar="C",
                        help="input channels when no --data is given (default: the model's own)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                        help="also write OUT/model.onnx (default: on)")
    parser.add_argument("--bundle", metavar="DIR", default=None,
                        help="also write an edge bundle to DIR (a new folder): model.onnx, manifest.json "
                             "(input, preprocessing, labels, measured metric and latency, sha256 sums) and "
                             "predict.py, which needs only onnxruntime, numpy and Pillow; needs image --data")
    parser.add_argument("--int8", action="store_true",
                        help="the bundle's model is int8 (ONNX Runtime static QDQ, 8 calibration batches)")
    options.add_output_options(parser, default="runs/export")
    options.add_eval_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.workflows.export import export

    measure = options.measure_from_args(args)
    results = export(args.model, args.data, weights=args.weights, data_dir=args.data_dir, tokenizer=args.tokenizer,
                     block_size=args.block_size, image_size=args.image_size,
                     in_channels=args.in_channels, onnx=args.onnx, out_dir=args.out, task=args.task,
                     bundle=args.bundle, int8=args.int8, measure=replace(measure, batch_sizes=(1,)))
    print(f"{args.model}: {results['params']:,} params, {results['macs']:,} MACs")
    files = results["files"]
    onnx = f"  onnx: {files['onnx']}" if "onnx" in files else ""
    if "bundle" in results:
        bundle = results["bundle"]
        metric = ", ".join(f"{k} {v:.4g}" for k, v in bundle["metrics"].items() if k != "count")
        print(f"bundle ({bundle['precision']}): {bundle['folder']}  {metric}; run: python "
              f"{bundle['folder']}/predict.py IMAGE...")
    options.print_written(results, f"model: {files['model']}/{onnx}")
    return 0
