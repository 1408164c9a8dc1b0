"""`prunekit quantize`: a trained (perhaps pruned) model as int8 (an ONNX file, or a PyTorch module
through torchao), compared with fp32."""

from __future__ import annotations

import argparse

from prunekit.cli import options

METHODS = ("minmax", "entropy", "percentile")
BACKENDS = ("onnxruntime", "torch")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``quantize`` sub-command and its options."""
    parser = subparsers.add_parser(
        "quantize", help="int8 by ONNX Runtime (static or dynamic) or by torchao in PyTorch, compared with fp32",
        description="Export --model (a folder an earlier command saved, or a spec with --weights) to ONNX "
                    "and quantise it to int8 with ONNX Runtime: static QDQ calibrated on training "
                    "batches (per-channel weights), or --dynamic for transformers' linear layers. With "
                    "--max-metric-drop the layers int8 hurts most stay fp32 until the validation metric is "
                    "within the budget. Prints fp32 against int8 (and the dense model's fp32 and int8 for "
                    "a pruned folder): metric, ONNX file size, ONNX Runtime latency. Writes OUT/model.onnx "
                    "(int8), OUT/model.fp32.onnx, OUT/model/ and OUT/results.json. With --backend torch, "
                    "torchao makes the int8 PyTorch module instead (--dynamic: int8 linear layers, eager or "
                    "--compile; static: PT2E, --compile only), timed in PyTorch; OUT/model/ then loads back "
                    "as that int8 module (prunekit.load).")
    options.add_model_options(parser, task=True)
    group = parser.add_argument_group("quantisation (same keys as the recipe stage)")
    group.add_argument("--method", choices=METHODS, default="minmax",
                       help="how activation ranges are calibrated: minmax, entropy (KL), percentile "
                            "(default: minmax)")
    group.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                       help="training batches of 64 observed for activation ranges (default: 8)")
    group.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                       help="one weight scale per output channel (default: on)")
    group.add_argument("--dynamic", action="store_true",
                       help="dynamic int8 for transformers instead of static: MatMul/Gemm weights (onnxruntime), "
                            "nn.Linear weights (torch)")
    group.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                       help="who quantises and runs int8: onnxruntime (an ONNX file) or torch (torchao, a "
                            "PyTorch module; minmax calibration, no --max-metric-drop) (default: onnxruntime)")
    group.add_argument("--compile", action="store_true",
                       help="torch backend: run int8 and the fp32 models it is compared with through "
                            "torch.compile (needs a C compiler; static int8 requires it)")
    group.add_argument("--max-metric-drop", type=float, default=None, metavar="D",
                       help="keep the most damaging layers fp32 until the validation metric drops by at "
                            "most D (metric units: 0.01 = one accuracy point; default: quantise all)")
    options.add_output_options(parser, default="runs/quantize")
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress messages")
    parser.set_defaults(run=run)


def stage(args: argparse.Namespace) -> dict[str, object]:
    """The quantize stage (the recipe's keys) the options describe."""
    return {"method": args.method, "calibration_batches": args.calibration_batches,
            "per_channel": args.per_channel, "dynamic": args.dynamic, "max_metric_drop": args.max_metric_drop}


def run(args: argparse.Namespace) -> int:
    """Run the workflow (prunekit.workflows.quantize.quantize) and print its table; returns 0."""
    from prunekit.workflows.quantize import check_backend, quantize

    # NOTE: checked here first so that the errors name the command's options (--method), not the arguments
    check_backend(args.backend, dynamic=args.dynamic, compile=args.compile, method=args.method,
                  max_metric_drop=args.max_metric_drop, cli=True)
    results = quantize(args.model, args.data, weights=args.weights, data_dir=args.data_dir,
                       tokenizer=args.tokenizer, block_size=args.block_size, image_size=args.image_size, task=args.task,
                       measure=options.measure_from_args(args), out_dir=args.out, backend=args.backend,
                       compile=args.compile, progress=not args.no_progress, **stage(args))  # type: ignore[arg-type]
    record = results["quantize"]
    if args.backend == "torch":
        compiled = ", torch.compile" if record["compile"] else ""
        print(f"{args.model}: int8 in PyTorch (torchao, {record['scheme']}{compiled})")
        print(results["table"])
        options.print_written(results, f"int8 model (prunekit.load rebuilds it): {results['files'].get('model', '')}")
        return 0
    kept = ", ".join(record["excluded"]) or "none"
    print(f"{args.model}: int8 ({record['format']}, method {record['method'] or 'dynamic'}); layers kept fp32: {kept}")
    if record.get("budget_met") is False:
        val = record["val"]
        print(f"metric budget NOT met: {record['metric']} {val['int8']:.4g} int8 against {val['fp32']:.4g} fp32 "
              f"(--max-metric-drop {record['max_metric_drop']:g}); the int8 model below is the best one tried")
    print(results["table"])
    options.print_written(results, f"int8 model: {results['files'].get('onnx', '')}")
    return 0
