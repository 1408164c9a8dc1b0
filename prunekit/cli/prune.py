"""`prunekit prune`: baseline (or --weights), profile, structured pruning to a target, fine-tune, profile.

Targets: ``--ratio`` is the fraction of channels *removed*; ``--target-macs``, ``--target-params``
and ``--target-latency`` are the fraction *kept* of the dense model (``--target-macs 0.5`` = half
the MACs); ``--target-size-mb`` is the most megabytes the saved weights may take. The options
become the same StructuredPruner stage a recipe would hold.
"""

from __future__ import annotations

import argparse
from typing import Any

from prunekit.cli import options
from prunekit.errors import ConfigError
from prunekit.recover import TrainConfig
from prunekit.structured.allocate import AUTO_RULE

# NOTE: prunekit.measure.latency.BACKENDS, spelt out so building the parser imports no torch (a test holds them equal)
BACKENDS = ("torch", "torch-fused", "onnxruntime")
# NOTE: prunekit.structured.model_timing.MODEL_BACKENDS: the runtimes widths are chosen for (int8 is timed whole)
ROUNDING_BACKENDS = (*BACKENDS, "onnxruntime-int8")
MAX_DROP_TARGET = {"macs": 0.1}  # NOTE: the deepest cut --max-metric-drop tries when no target is named
_TARGETS = (("ratio", "ratio"), ("target_macs", "macs"), ("target_params", "params"),
            ("target_latency", "latency"), ("target_size_mb", "size_mb"))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune", help="remove whole channels to reach a target, fine-tune, and compare profiles",
        description="Train a short baseline (or load --weights), profile it, remove the least "
                    "important channels until the target is met, fine-tune, and print the "
                    "before/after profiles. Writes OUT/results.json and OUT/model/ (weights + manifest; "
                    "load it with prunekit.load).",
    )
    options.add_model_options(parser, task=True)
    _add_target_options(parser)
    _add_pruner_options(parser)
    options.add_pipeline_options(parser, finetune_help="after pruning (and between --steps)")
    options.add_output_options(parser, default="runs/prune")
    options.add_device_option(parser)
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    options.add_config_options(parser, TrainConfig, skip=("epochs",))
    parser.set_defaults(run=run)


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target (give exactly one)")
    group.add_argument("--ratio", type=float, default=None, metavar="R",
                       help="fraction of each group's channels to REMOVE, in [0, 1), e.g. 0.3")
    group.add_argument("--target-macs", type=float, default=None, metavar="F",
                       help="fraction of the dense MACs to KEEP, in (0, 1]; 0.5 = half the MACs")
    group.add_argument("--target-params", type=float, default=None, metavar="F",
                       help="fraction of the dense parameters to KEEP, in (0, 1]")
    group.add_argument("--target-latency", type=float, default=None, metavar="F",
                       help="fraction of the dense PyTorch latency to KEEP, in (0, 1] (measured, "
                            "2 threads, at --latency-batch-size)")
    group.add_argument("--target-size-mb", type=float, default=None, metavar="MB",
                       help="the most megabytes (10^6 bytes) the saved weights may take, e.g. 5 for a model "
                            "that fits in 5 MB (fp32; `prunekit quantize` makes it about 4x smaller again)")
    group.add_argument("--max-metric-drop", type=float, default=None, metavar="D",
                       help="lose at most D of the validation metric after fine-tuning (accuracy: 0.01 is "
                            "one point): the target becomes the deepest cut allowed, and the deepest of "
                            "--tries cuts towards it that stays within D is kept; without a target, as deep as "
                            f"{100 * MAX_DROP_TARGET['macs']:g}%% of the MACs kept")
    group.add_argument("--tries", type=int, default=5, metavar="N",
                       help="cuts tried (each pruned and fine-tuned) under --max-metric-drop: the target, "
                            "then a bisection towards nothing cut (default: 5)")
    group.add_argument("--latency-batch-size", type=int, default=1, metavar="N",
                       help="batch size at which --target-latency is measured (default: 1)")


def _round_to(text: str) -> int | str:
    from prunekit.structured.allocate import valid_round_to

    value: int | str = int(text) if text.lstrip("-").isdigit() else text
    if not valid_round_to(value):
        raise argparse.ArgumentTypeError(f"expected 'auto' or an int >= 1, got '{text}'")
    return value


def _add_pruner_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pruner (same keys as the recipe stage)")
    from prunekit.importance import IMPORTANCE

    group.add_argument("--importance", default="l2", metavar="NAME",
                       help=f"how channels are scored: {', '.join(IMPORTANCE.names())} (default: l2)")
    group.add_argument("--scope", choices=("local", "global"), default="local",
                       help="local: every group loses the same fraction; global: one ranking over "
                            "all groups (default: local)")
    group.add_argument("--round-to", type=_round_to, default="auto", metavar="N",
                       help="round kept widths up to a multiple of N: 1 keeps exact widths, 8 suits "
                            f"CPU kernels; auto: {AUTO_RULE} (default: auto)")
    group.add_argument("--ignore", action="append", default=[], metavar="MODULE",
                       help="never cut channels of this module (repeatable), e.g. --ignore conv1")
    group.add_argument("--layer-channels", action="append", default=[], metavar="MODULE=N",
                       help="remove exactly N output channels of MODULE (repeatable), e.g. conv1=2; "
                            "without a target, only these layers are cut")
    group.add_argument("--layer-ratio", action="append", default=[], metavar="MODULE=R",
                       help="remove this fraction of MODULE's output channels (repeatable), "
                            "overriding the shared ratio, e.g. layer3.0.conv1=0.7")
    group.add_argument("--cost", choices=("none", "latency"), default="none",
                       help="latency: time every layer on this machine (PyTorch, at --cost-batch-size) "
                            "and cut more where time per MAC is high, so the target buys more speed "
                            "(default: none)")
    group.add_argument("--cost-batch-size", type=int, default=1, metavar="N",
                       help="batch size at which --cost latency times the layers (default: 1)")
    group.add_argument("--backend", choices=ROUNDING_BACKENDS, default="torch",
                       help="the runtime --round-to auto times on: torch times each group's layers, "
                            "onnxruntime the whole pruned model with exact widths against rounded ones, "
                            "onnxruntime-int8 the same quantised to static int8 (for `prunekit quantize`); "
                            "rounding is kept only where it is measurably faster there (default: torch)")
    group.add_argument("--steps", type=int, default=1, metavar="K",
                       help="reach the target in K steps, re-scoring (and fine-tuning) between "
                            "steps (default: 1)")


def _pairs(items: list[str], flag: str, kind: type) -> dict[str, Any]:
    """["conv1=2"] -> {"conv1": 2}; a malformed item is a one-line ConfigError."""
    result: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            result[name.strip()] = kind(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"{flag}: expected MODULE={'N' if kind is int else 'R'}; got '{item}'. "
                              f"Pass e.g. {flag} conv1={'2' if kind is int else '0.5'}.")
    return result


_KEPT = {"target_macs": "MACs", "target_params": "parameters", "target_latency": "PyTorch latency"}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_targets(args: argparse.Namespace) -> None:
    """Refuse a missing or second target and values out of range with the flag named, before any work."""
    from prunekit.config import parse_config
    from prunekit.structured import Target

    given = [dest for dest, _ in _TARGETS if getattr(args, dest) is not None]
    example = "Pass e.g. --target-macs 0.5 (keep half the MACs) or --ratio 0.3 (remove 30 % of the channels)."
    if len(given) > 1:
        raise ConfigError(f"give exactly one target; got {' and '.join(map(_flag, given))}. {example}")
    if not given and not (args.layer_channels or args.layer_ratio or args.max_metric_drop is not None):
        raise ConfigError(f"no target given: pass one of {', '.join(_flag(d) for d, _ in _TARGETS)} (or "
                          f"--layer-channels/--layer-ratio, or --max-metric-drop). {example}")
    for dest in given:
        # NOTE: the range is Target's own; the command only says it in terms of its flag
        value, key = getattr(args, dest), dict(_TARGETS)[dest]
        try:
            parse_config(Target, {key: value})
        except ConfigError:
            if dest == "ratio":
                raise ConfigError(f"--ratio is the fraction of each group's channels to remove, in [0, 1); got "
                                  f"{value:g}. Pass e.g. --ratio 0.3.") from None
            if dest == "target_size_mb":
                raise ConfigError(f"--target-size-mb is the most megabytes the saved weights may take, > 0; got "
                                  f"{value:g}. Pass e.g. --target-size-mb 5.") from None
            raise ConfigError(f"{_flag(dest)} is the fraction of the dense {_KEPT[dest]} to keep, in (0, 1]; got "
                              f"{value:g}. Pass e.g. {_flag(dest)} 0.5 to keep half.") from None
    if args.max_metric_drop is not None and not args.max_metric_drop >= 0:
        raise ConfigError(f"--max-metric-drop is the most of the validation metric to lose, >= 0; got "
                          f"{args.max_metric_drop:g}. Pass e.g. --max-metric-drop 0.01 (one accuracy point).")
    for dest in ("tries", "steps", "latency_batch_size", "cost_batch_size"):
        if getattr(args, dest) < 1:
            raise ConfigError(f"{_flag(dest)} must be an integer >= 1; got {getattr(args, dest)}. "
                              f"Pass e.g. {_flag(dest)} 1.")


def stage(args: argparse.Namespace) -> dict[str, Any]:
    """The StructuredPruner parameters (the recipe stage) the options describe (checked by
    :func:`check_targets` first)."""
    check_targets(args)
    target = {key: getattr(args, dest) for dest, key in _TARGETS if getattr(args, dest) is not None}
    if args.target_latency is not None:
        target["batch_size"] = args.latency_batch_size
    layers = {"layer_channels": _pairs(args.layer_channels, "--layer-channels", int),
              "layer_ratios": _pairs(args.layer_ratio, "--layer-ratio", float)}
    if not target and any(layers.values()):
        target = {"ratio": 0.0}  # NOTE: only the named layers are cut.
    elif not target and args.max_metric_drop is not None:
        target = dict(MAX_DROP_TARGET)
    extra: dict[str, Any] = {k: v for k, v in layers.items() if v}
    if args.cost != "none":
        extra.update(cost=args.cost, cost_batch_size=args.cost_batch_size)
    if args.backend != "torch":
        extra["backend"] = args.backend
    return {"target": target, "importance": args.importance, "scope": args.scope,
            "round_to": args.round_to, "ignore": list(args.ignore), "steps": args.steps,
            "options": extra or None}


def run(args: argparse.Namespace) -> int:
    from prunekit.workflows.common import is_rank_zero
    from prunekit.workflows.prune import prune

    results = prune(args.model, args.data, stage=stage(args), weights=args.weights, task=args.task,
                    baseline_epochs=args.baseline_epochs, finetune_epochs=args.finetune_epochs,
                    train_config=options.config_from_args(args, TrainConfig), data_dir=args.data_dir,
                    tokenizer=args.tokenizer, block_size=args.block_size, image_size=args.image_size,
                    out_dir=args.out, progress=not args.no_progress,
                    measure=options.measure_from_args(args), device=args.device,
                    max_metric_drop=args.max_metric_drop, tries=args.tries)
    if not is_rank_zero():  # NOTE: under torchrun only rank 0 writes, so only it reports
        return 0
    print(results["table"])
    print(_achieved_line(results))
    if "metric_budget" in results:
        print(_budget_line(results["metric_budget"]))
    options.print_written(results, f"pruned model: {args.out}/model/ (prunekit.load and --model read it)")
    return 0


def _wanted(key: str, value: float) -> str:
    if key == "size_mb":
        return f"size at most {value:g} MB"
    return f"{key} {'removed' if key == 'ratio' else 'kept'} {value}"


def _achieved_line(results: dict[str, Any]) -> str:
    achieved, target = results["achieved"], results["target"]
    wanted = ", ".join(_wanted(k, v) for k, v in target.items() if k != "batch_size")
    got = (f"MACs kept {100 * achieved['macs']:.1f} %, params kept {100 * achieved['params']:.1f} %, "
           f"channels removed {100 * achieved['channels_removed']:.1f} %")
    if "latency" in achieved:
        got += f", latency kept {100 * achieved['latency']:.1f} %"
    line = f"target: {wanted or 'none'} -> achieved: {got}"
    rounding = achieved.get("rounding")
    if not rounding:
        return line
    from prunekit.structured.model_timing import describe

    return f"{line}\n{describe(rounding)}"


def _budget_line(budget: dict[str, Any]) -> str:
    tries = budget["tries"]
    chosen = budget.get("chosen")
    kept = (f"kept try {chosen + 1} ({tries[chosen]['drop']:+.4g} lost)" if chosen is not None
            else "none held: the dense model is kept")
    return (f"metric budget: at most {budget['max_metric_drop']:g} lost on validation (dense {budget['dense']:.4g}); "
            f"{len(tries)} tr{'y' if len(tries) == 1 else 'ies'}, {kept}")
