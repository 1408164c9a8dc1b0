"""`prunekit search`: search per-group widths (and blocks, and layers' ranks) under a MACs/params/latency
target with a strategy, write the Pareto front, fine-tune the chosen allocation and compare profiles."""

from __future__ import annotations

import argparse
from typing import Any

from prunekit.cli import options
from prunekit.cli.sensitivity import add_proxy_options, ratio_list
from prunekit.recover import TrainConfig


def _workers(text: str) -> int | str:
    """An int, checked by the workflow (so a bad value is its one-line error); else the text itself."""
    return int(text) if text.lstrip("-").isdigit() else text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from prunekit.cli.prune import BACKENDS
    from prunekit.search.latency_table import LATENCY_MODELS
    from prunekit.search.strategies import STRATEGIES

    parser = subparsers.add_parser(
        "search", help="search per-layer widths under a target (greedy, backtracking, Optuna, RL, gates, local)",
        description="Train a short baseline (or load --weights), search each channel group's kept width "
                    "(and, with --depth, which residual blocks stay; with --ranks, each layer's low-rank "
                    "factorisation) under the target, scoring candidates "
                    "by the proxy (metric after BatchNorm re-estimation), fine-tune the best allocation and "
                    "the Pareto front's knee for real, and print both next to the proxy's prediction. Writes "
                    "OUT/pareto.json, OUT/results.json and OUT/model/; an interrupted search continues from "
                    "OUT/search-state/ when run again with --resume.",
    )
    options.add_model_options(parser, task=True)
    group = parser.add_argument_group("search")
    group.add_argument("--strategy", choices=tuple(STRATEGIES), default="greedy",
                       help="greedy (NetAdapt), backtracking (branch and bound), nsga2, tpe, gp (Optuna), "
                            "rl (AMC-style REINFORCE), gates (differentiable), local (evolution near the best "
                            "found, the uniform allocation first), random (default: greedy)")
    group.add_argument("--target-macs", type=float, default=None, metavar="F",
                       help="fraction of the dense MACs to KEEP, in (0, 1]; 0.25 = 4x fewer MACs")
    group.add_argument("--target-params", type=float, default=None, metavar="F",
                       help="fraction of the dense parameters to KEEP, in (0, 1]")
    group.add_argument("--target-latency", type=float, default=None, metavar="F",
                       help="fraction of the dense model's latency to KEEP on --backend at --latency-batch-size, "
                            "in (0, 1]; 0.5 = twice as fast (predicted by the look-up table, or measured with "
                            "--latency-model measured)")
    group.add_argument("--target-latency-ms", type=float, default=None, metavar="MS",
                       help="latency at most this, in ms, on --backend at --latency-batch-size: predicted by the "
                            "look-up table, or measured with --latency-model measured")
    group.add_argument("--objectives", default="metric,macs", metavar="A,B",
                       help="Pareto objectives: metric and any of macs, params, latency (default: metric,macs)")
    group.add_argument("--trials", type=options.positive_int, default=40, metavar="N",
                       help="budget: proxy evaluations, the same for every strategy (default: 40)")
    group.add_argument("--levels", type=ratio_list, default=None, metavar="F[,F...]",
                       help="kept fractions each group may take (default: 1.0,0.9,...,0.1)")
    group.add_argument("--round-to", type=int, default=1, metavar="N",
                       help="kept widths in steps of N channels (default: 1)")
    group.add_argument("--depth", action="store_true", help="also search which residual blocks to remove")
    options.add_ranks_option(group, help="also search each Linear/Conv2d layer's factorisation: none or a method at "
                                         "a fraction of full rank from --levels. Alone: svd for Linear and 1x1 conv, "
                                         "tucker for k x k conv; or the methods to choose from, e.g. svd,cp. The "
                                         "MACs/params target counts the factorised layers as built; the latency table "
                                         "times each as the chain of layers it becomes")
    group.add_argument("--no-widths", dest="widths", action="store_false",
                       help="keep every group's width: search only --ranks (or --depth), for models whose "
                            "widths must not change")
    group.add_argument("--proxy-steps", type=int, default=0, metavar="N",
                       help="fine-tune batches before every proxy evaluation: dearer, and it ranks allocations "
                            "near the budget as fine-tuning does (BatchNorm re-estimation alone does not); "
                            "pairs with --strategy local (default: 0)")
    group.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                       help="fine-tune batches each finalist gets (the uniform start and the 4 best near the "
                            "budget) before the best is chosen (default: 0: the proxy alone)")
    group.add_argument("--backend", choices=BACKENDS, default=None,
                       help="the runtime latency is timed on (the table's layers, or whole models with --latency-model "
                            "measured) (default: torch when "
                            "latency is an objective or constraint)")
    group.add_argument("--latency-model", choices=LATENCY_MODELS, default="table",
                       help="how a configuration's latency is priced: table (each layer timed alone once per "
                            "width, summed; fast) or measured (the whole model timed, once per configuration; "
                            "right where the table is not: small models at batch 1, ONNX Runtime; a second or "
                            "more per configuration, and greedy prices every candidate step: prefer tpe or "
                            "nsga2) (default: table)")
    group.add_argument("--latency-batch-size", type=options.positive_int, default=1, metavar="N",
                       help="the batch size latency is timed at: 1 (one request at a time) or a serving batch "
                            "such as 64 (default: 1)")
    group.add_argument("--storage", default=None, metavar="URL",
                       help="Optuna storage for nsga2/tpe/gp (default: SQLite under OUT/search-state); a "
                            "postgresql:// URL lets workers on several machines share the study")
    group.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="processes sharing the study of nsga2/tpe/gp, each with cores/N torch threads, "
                            "until --trials are done in total; logs in OUT/search-state/worker-<i>.log "
                            "(default: 1, this process)")
    group.add_argument("--seed", type=int, default=0, metavar="S", help="the search's seed (default: 0)")
    add_proxy_options(parser)
    options.add_pipeline_options(parser, finetune_help="of the chosen allocations")
    options.add_output_options(parser, default="runs/search")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search kept in OUT/search-state/ (same options as the interrupted run): "
                             "its evaluations and Optuna trials count")
    options.add_device_option(parser)
    options.add_eval_options(parser)
    options.add_profile_options(parser)
    parser.set_defaults(run=run)


def constraints(args: argparse.Namespace) -> dict[str, float]:
    """The constraints the target options describe."""
    from prunekit.search.search import check_constraints

    flags = {"macs": "--target-macs", "params": "--target-params", "latency": "--target-latency",
             "latency_ms": "--target-latency-ms"}
    found = {key: value for key in flags if (value := getattr(args, f"target_{key}")) is not None}
    check_constraints(found, flags=flags)
    return found


def run(args: argparse.Namespace) -> int:
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    results = _search(args, objectives)
    print(results["table"])
    for line in chosen_lines(results):
        print(line)
    options.print_written(results, f"Pareto front: {args.out}/pareto.json  model: {args.out}/model/")
    return 0


def _search(args: argparse.Namespace, objectives: list[str]) -> dict[str, Any]:
    from prunekit.search.space import DEFAULT_LEVELS
    from prunekit.workflows.search import search

    return search(args.model, args.data, strategy=args.strategy, constraints=constraints(args),
                  objectives=objectives, trials=args.trials, seed=args.seed, weights=args.weights,
                  task=args.task, data_dir=args.data_dir,
                  tokenizer=args.tokenizer, block_size=args.block_size,
                  image_size=args.image_size, levels=args.levels or DEFAULT_LEVELS,
                  round_to=args.round_to, depth=args.depth, ranks=args.ranks, widths=args.widths,
                  bn_batches=args.bn_batches,
                  val_samples=args.val_samples, proxy_steps=args.proxy_steps,
                  finetune_steps=args.finetune_steps,
                  backend=args.backend, latency_model=args.latency_model,
                  latency_batch_size=args.latency_batch_size, storage=args.storage, workers=args.workers,
                  baseline_epochs=args.baseline_epochs, finetune_epochs=args.finetune_epochs,
                  train_config=TrainConfig(), out_dir=args.out, progress=not args.no_progress,
                  measure=options.measure_from_args(args), device=args.device)


def chosen_lines(results: dict[str, Any]) -> list[str]:
    """One line per chosen allocation: the proxy's prediction next to the fine-tuned result."""
    lines = [f"search: {results['strategy']}, {results['search']['evaluations']} proxy evaluations, "
             f"{results['evaluated']} configurations, front of {len(results['search']['front'])}"]
    for row in results["chosen"]:
        proxy, tuned = row["proxy"], row["finetuned"]
        named = results["search"].get("metric_name")  # NOTE: the proxy's metric, read from the same table
        metric = named if named in tuned else "accuracy" if "accuracy" in tuned else next(iter(tuned))
        result = (f"fine-tuned {metric} {tuned[metric]:.4f}" if row.get("finetune_epochs", 1) else
                  f"{metric} {tuned[metric]:.4f} (not fine-tuned: --finetune-epochs 0)")
        lines.append(f"{row['which']}: MACs kept {100 * proxy.get('macs', 1.0):.1f} %, proxy "
                     f"{named if named in tuned else 'metric'} {proxy['metric']:.4f}"
                     f" -> {result}")
    if results.get("ranks"):
        lines.append("ranks: " + ", ".join(f"{layer} {choice}" for layer, choice in results["ranks"].items()))
    return lines
