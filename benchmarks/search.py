"""Searched allocations against uniform and global L2 and Torch-Pruning; the latency table's error;
ResNet-50 under an ONNX Runtime latency target; MobileNetV2's Pareto front; sensitivity time.
Writes sections of benchmarks/RESULTS.md.

Parts (run by hand on a quiet machine; ``--quick`` is a smoke run with tiny settings, its numbers
mean nothing and nothing is written unless ``--write``):
    .venv/bin/python benchmarks/search.py --part accuracy     # ResNet-20, VGG-small at 4x fewer MACs, 3 seeds
    .venv/bin/python benchmarks/search.py --part lut          # latency table error, 20 random configs, 2 backends
    .venv/bin/python benchmarks/search.py --part resnet50     # 2x ORT latency target, table-guided
    .venv/bin/python benchmarks/search.py --part front        # MobileNetV2 front over MACs, latency, metric
    .venv/bin/python benchmarks/search.py --part sensitivity  # ResNet-20, all groups x 9 ratios, wall time
    .venv/bin/python benchmarks/search.py --part fidelity     # does the proxy rank configs as fine-tuning does?
    .venv/bin/python benchmarks/search.py --part measured --models resnet20  # latency: table vs measured models
    .venv/bin/python benchmarks/search.py --part faster --latency-strategy local --proxy-steps 32  # issue 20's latency goal

accuracy: a finished row is kept in runs/search-accuracy/rows.json (keyed by model, allocation, trials,
budget and seeds), so an interrupted run resumes; delete the file to measure again. Every row starts
from the same trained baseline (runs/baselines/<model>/model.safetensors,
else trained here for ``--baseline-epochs`` and saved there), reaches the same MACs budget, and gets the same
fine-tune (``FINETUNE``) per seed; each strategy gets the same number of proxy evaluations
(``--trials``), so strategies are compared with each other as well as with the baselines.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from prunekit import data, models, tasks  # noqa: E402
from prunekit.errors import PrunekitError  # noqa: E402
from prunekit.io import load_json, save_json, save_weights  # noqa: E402
from prunekit.graph import DependencyGraph  # noqa: E402
from prunekit.importance import score  # noqa: E402
from prunekit.measure import count_macs, evaluate, measure_latency  # noqa: E402
from prunekit.recover import TrainConfig, train  # noqa: E402
from prunekit.search.cost import Cost  # noqa: E402
from prunekit.search.latency_table import LATENCY_MODELS, LatencyTable  # noqa: E402
from prunekit.search.search import FINALISTS, NEAR  # noqa: E402
from prunekit.search.space import SearchSpace, build  # noqa: E402

STRATEGIES = ("greedy", "backtracking", "nsga2", "tpe", "gp", "rl", "gates", "local", "random")
# NOTE: 150 steps of 128 images (a third of an epoch) per row and seed: the part is 22 rows x 3 seeds
FINETUNE = TrainConfig(epochs=1, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                       scheduler="cosine", seed=0, max_steps_per_epoch=150)
# NOTE: the finalists' fine-tune rung (the uniform start and the 4 best near the budget, 32 batches each);
# rows measured with another search protocol are kept in rows.json under their own keys
RERANK_STEPS = 32
PROTOCOL = f"start uniform filled, finalists {RERANK_STEPS} steps"


def _state(name: str, quick: bool) -> Path:
    """``runs/<name>`` (a resumed search, a latency cache), or a fresh folder for a --quick run, whose
    tiny baseline's trials must never be resumed by a real run."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"prunekit-{name}-")) if quick else Path("runs") / name


def _subset(splits: Any, quick: bool) -> Any:
    from dataclasses import replace

    from torch.utils.data import TensorDataset

    if not quick:
        return splits
    cut = (lambda d, n: TensorDataset(*(t[:n] for t in d.tensors)))  # noqa: E731
    return replace(splits, train=cut(splits.train, 512), val=cut(splits.val, 128), test=cut(splits.test, 128))


def _baseline(name: str, splits: Any, epochs: int, quick: bool) -> nn.Module:
    path = Path(f"runs/baselines/{name}/model.safetensors")
    net = models.create(name, num_classes=10, in_channels=1, weights=str(path) if path.is_file() and not quick else None)
    if not path.is_file() or quick:
        config = TrainConfig(epochs=epochs, batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9,
                             weight_decay=5e-4, scheduler="cosine", max_steps_per_epoch=2 if quick else None)
        train(net, splits, config, progress=False)
        if not quick:  # NOTE: kept, so every part and every later run starts from the same baseline
            save_weights(net, path)
    return net.eval()


def _uniform(model: nn.Module, x: torch.Tensor, keep: float, scope: str) -> nn.Module:
    return _uniform_plan(model, x, keep, scope)[0]


def _uniform_plan(model: nn.Module, x: torch.Tensor, keep: float, scope: str) -> tuple[nn.Module, dict[str, int]]:
    """The uniform (or global) L2 cut at ``keep`` of the MACs, and its kept width per group id."""
    from prunekit.structured import Target, apply, search

    graph = DependencyGraph.trace(model, x)
    plan, _ = search(model, graph, score(graph, model, "l2"), Target(macs=keep), example_inputs=x,
                     allocate_kwargs={"scope": scope, "round_to": 1})
    return apply(model, graph, plan, example_inputs=x), {g: len(kept) for g, kept in plan.keep.items()}


def _torch_pruning(model: nn.Module, x: torch.Tensor, keep: float) -> nn.Module:
    import torch_pruning as tp

    dense = count_macs(model, x)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        m = copy.deepcopy(model)
        last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
        tp.pruner.MetaPruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=mid,
                             ignored_layers=[last]).step()
        if count_macs(m, x) <= keep * dense:
            best, hi = m, mid
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"Torch-Pruning could not reach {keep:.2f} of the MACs")
    return best


def _searched(model: nn.Module, splits: Any, keep: float, strategy: str, trials: int, seed: int,
              quick: bool, proxy_steps: int = 0) -> tuple[nn.Module, int]:
    from prunekit.workflows.search import search_model

    found = search_model(model, splits, tasks.create("classification"), strategy=strategy, budget=trials,
                         constraints={"macs": keep}, seed=seed, val_samples=256 if quick else 1024,
                         proxy_steps=min(proxy_steps, 2) if quick else proxy_steps,
                         finetune_steps=0 if quick else RERANK_STEPS)
    result = found["result"]
    return build(model, found["graph"], found["space"], found["best"].config, found["scores"]), result.evaluations


def _finetuned(pruned: nn.Module, splits: Any, seeds: tuple[int, ...], quick: bool) -> list[float]:
    scores = []
    for seed in seeds:
        tuned = copy.deepcopy(pruned)
        config = FINETUNE.model_copy(update={"seed": seed, **({"max_steps_per_epoch": 2} if quick else {})})
        train(tuned, splits, config, progress=False)
        scores.append(evaluate(tuned, splits.test).accuracy)
    return scores


def _rows_file(args: argparse.Namespace) -> Path | None:
    return None if args.quick else Path("runs/search-accuracy/rows.json")


def _rows_done(args: argparse.Namespace) -> dict[str, str]:
    """Rows an interrupted run of the same settings finished (each takes minutes: 3 fine-tunes)."""
    import json

    file = _rows_file(args)
    return json.loads(file.read_text()) if file is not None and file.is_file() else {}


def _row_finished(args: argparse.Namespace, key: str, row: str) -> None:
    import json

    file = _rows_file(args)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({**_rows_done(args), key: row}, indent=1))


def _widths_file(args: argparse.Namespace) -> Path | None:
    """Each row's widths, beside its row (runs/search-accuracy/widths.json)."""
    file = _rows_file(args)
    return file.with_name("widths.json") if file is not None else None


def _widths_done(args: argparse.Namespace) -> dict[str, str]:
    file = _widths_file(args)
    return load_json(file) if file is not None and file.is_file() else {}


def _conv_widths(model: nn.Module) -> str:
    """Each conv's output channels, in order: "8/8/16/..."."""
    return "/".join(str(m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d))


def _widths_finished(args: argparse.Namespace, key: str, model: nn.Module) -> str:
    """Each conv's output channels of a row's model, in order ("8/8/16/..."): what the allocation
    chose; kept for ``key``."""
    widths = _conv_widths(model)
    if (file := _widths_file(args)) is not None:
        save_json({**_widths_done(args), key: widths}, file)
    return widths


def part_accuracy(args: argparse.Namespace) -> list[str]:
    splits = _subset(data.load("fashion_mnist"), args.quick)
    seeds = (0,) if args.quick else (0, 1, 2)
    rows = ["| model | allocation | proxy evaluations | MACs kept | accuracy (mean) | per seed |", "|---|---|---|---|---|---|"]
    widths: list[str] = []
    for name in args.models:
        base = _baseline(name, splits, args.baseline_epochs, args.quick)
        x = splits.example_input(1)
        dense = count_macs(base, x)
        rows.append(f"| {name} | dense baseline | - | 100.0 % | {100 * evaluate(base, splits.test).accuracy:.2f} % | - |")
        makers: list[tuple[str, Any]] = [("uniform L2", lambda: (_uniform(base, x, args.keep, "local"), 0)),
                                         ("global L2", lambda: (_uniform(base, x, args.keep, "global"), 0))]
        if not args.quick:
            makers.append(("Torch-Pruning uniform", lambda: (_torch_pruning(base, x, args.keep), 0)))
        for strategy in args.strategies:
            makers.append((f"search: {strategy}", lambda s=strategy: _searched(base, splits, args.keep, s, args.trials,
                                                                                 0, args.quick, args.proxy_steps)))
        done = _rows_done(args)
        for label, make in makers:
            key = f"{name} | {label} | {args.trials} | {args.keep} | {seeds} | {FINETUNE.model_dump(exclude_defaults=True)}"
            key += f" | {PROTOCOL}" if label.startswith("search") else ""
            key += f", proxy {args.proxy_steps} steps" if label.startswith("search") and args.proxy_steps else ""
            if key in done:  # NOTE: a restarted run keeps the rows it finished (same settings only)
                print(done[key], flush=True)
                rows.append(done[key])
                if (kept := _widths_done(args).get(key)) is not None:
                    widths.append(f"- {name}, {label}: {kept}")
                continue
            if args.finished_only:
                rows.append(f"| {name} | {label} | - | - | not run yet | - |")
                continue
            try:
                pruned, evaluations = make()
            except PrunekitError as exc:  # NOTE: a strategy that finds nothing feasible is a row, not a crash
                row = f"| {name} | {label} | {args.trials} | - | no allocation ({' '.join(str(exc).split())[:90]}) | - |"
                print(row, flush=True)
                rows.append(row)
                continue
            widths.append(f"- {name}, {label}: {_widths_finished(args, key, pruned)}")
            accs = _finetuned(pruned, splits, seeds, args.quick)
            row = (f"| {name} | {label} | {evaluations or '-'} | {100 * count_macs(pruned, x) / dense:.1f} % | "
                   f"{100 * statistics.fmean(accs):.2f} % | {', '.join(f'{100 * a:.2f}' for a in accs)} |")
            print(row, flush=True)
            rows.append(row)
            _row_finished(args, key, row)
    proxy = "training images" + (f" after {args.proxy_steps} SGD steps on 16 cycled training batches of 128"
                                 if args.proxy_steps else "")
    if args.proxy_steps >= RERANK_STEPS:
        last = "returns the best feasible configuration by that proxy."
    else:
        last = (f"then fine-tunes its finalists (the uniform start and the {FINALISTS} best by the proxy among "
                f"configurations using at least {100 * (1 - NEAR):.0f} % of the budget) {RERANK_STEPS} batches each "
                "and returns the best.")
    rows += ["", f"Budget: {args.keep:.2f} of the dense MACs kept; fine-tune {FINETUNE.model_dump(exclude_defaults=True)}, "
             f"seeds {seeds}; every strategy at {args.trials} proxy evaluations (BatchNorm re-estimation on 2x128 "
             f"{proxy}, accuracy on 1024 validation images); each search first scores the uniform allocation at "
             f"the budget, {last}"]
    if widths:
        rows += ["", "Output channels of each convolution, in order (rows measured since the widths were kept):", "",
                 *widths]
    return rows


def _space(name: str, shape: tuple[int, ...], levels: tuple[float, ...]) -> tuple:
    model = models.create(name, num_classes=10, in_channels=shape[1]).eval()
    x = torch.randn(*shape)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=levels, round_to=8 if shape[-1] > 64 else 1)
    return model, x, graph, space


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


def _spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation: whether the table orders configurations as measuring does (what a search needs)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else float("nan")


def part_lut(args: argparse.Namespace) -> list[str]:
    """The latency look-up table's error: predicted against measured end-to-end latency of random
    configurations of ResNet-50 and MobileNetV2 (random weights), on PyTorch and ONNX Runtime."""
    count = 2 if args.quick else args.configs
    # NOTE: --quick checks the code path on small stand-ins (filling ResNet-50's table on ONNX Runtime
    # exports every layer shape: minutes even at 32x32 on a shared 2-core machine)
    shapes = ({"resnet20": (1, 1, 28, 28), "vgg_small": (1, 1, 28, 28)} if args.quick else
              {"resnet50": (1, 3, 224, 224), "mobilenet_v2": (1, 3, 224, 224)})
    cache = _state("latency-table", args.quick)
    levels = (1.0, 0.75, 0.5, 0.25)
    # NOTE: 2 threads on a busy 2-core machine time OpenMP waits, not layers (ResNet-20's layers summed
    # to 488 ms at 2 threads against 1.1 ms at 1): --quick uses 1 so even its smoke numbers are sane
    threads = args.threads or (1 if args.quick else 2)
    rows = ["| model | backend | configurations | dense measured ms | measured ms (mean) | mean abs. error | "
            "max abs. error | mean signed error | rank correlation | table entries | time |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, shape in shapes.items():
        model, x, graph, space = _space(name, shape, levels)
        configs = [space.sample(random.Random(args.seed + i)) for i in range(count)]
        for backend in ("torch", "onnxruntime"):
            start = time.perf_counter()
            table = LatencyTable(model, graph, space, x, backend=backend, cache_dir=cache, threads=threads,
                                 min_time_s=0.02 if args.quick else 0.2)
            report = table.error(configs)
            dense = table.measure(space.dense())
            predicted = [r["predicted_ms"] for r in report["rows"]]
            measured = [r["measured_ms"] for r in report["rows"]]
            signed = statistics.fmean((p - m) / m for p, m in zip(predicted, measured))
            row = (f"| {name} | {backend} | {count} | {dense:.2f} | {statistics.fmean(measured):.2f} | "
                   f"{100 * report['mean_relative_error']:.1f} % | {100 * report['max_relative_error']:.1f} % | "
                   f"{100 * signed:+.1f} % | {_spearman(predicted, measured):.2f} | {len(table.entries)} | "
                   f"{time.perf_counter() - start:.0f} s |")
            print(row, flush=True)
            rows.append(row)
    side = "x".join(str(n) for n in next(iter(shapes.values()))[1:])
    rows += ["", f"Random weights, input {side}, batch 1, {threads} thread(s); {count} random configurations "
             f"(seeds {args.seed}..{args.seed + count - 1}; each channel group keeps one of {levels} of its "
             f"channels, widths rounded to {8 if '224' in side else 1}). Predicted: the sum of each conv/linear layer's table entry (the "
             "layer alone at its pruned widths, measured once and cached) plus the rest of the model (dense "
             "latency minus the dense layers' sum) scaled by the output activations kept. Measured: the built "
             "model end to end. Errors are relative to measured (signed > 0: the table over-predicts); the "
             "rank correlation (Spearman) is what ranking candidates needs. `time` includes filling the table."]
    return rows


def part_resnet50(args: argparse.Namespace) -> list[str]:
    from prunekit.search.evaluator import Evaluator
    from prunekit.search.search import search

    shape = (1, 3, 32, 32) if args.quick else (1, 3, 224, 224)
    model, x, graph, space = _space("resnet50", shape, tuple(round(1 - 0.05 * i, 2) for i in range(19)))
    table = LatencyTable(model, graph, space, x, backend="onnxruntime", cache_dir=_state("latency-table", args.quick),
                         min_time_s=0.0 if args.quick else 0.2)
    dense_ms = table.predict(space.dense())
    goal = dense_ms / 2
    cost = Cost(model, graph, space, x)
    # NOTE: random weights: the metric here is MACs kept, so the search keeps the most work at the latency goal
    evaluator = Evaluator(space, {}, cost=cost, latency=table.predict, metric_of=lambda c: cost(c)["macs_kept"])
    result = search(space, ["metric", "latency"], {"latency_ms": goal}, "greedy", 4 if args.quick else 200, 0,
                    evaluator=evaluator)
    best = result.best
    rows = ["| allocation | MACs kept | predicted ORT ms | measured ORT ms | measured speed-up |", "|---|---|---|---|---|"]
    dense_measured = table.measure(space.dense())
    if best is not None:
        measured = table.measure(best.config)
        rows.append(f"| table-guided greedy | {100 * best.values['macs']:.1f} % | {best.values['latency']:.2f} | "
                    f"{measured:.2f} | {dense_measured / measured:.2f}x |")
    for keep in ((0.5,) if args.quick else (0.6, 0.5, 0.45, 0.4, 0.35)):
        uniform = _uniform(model, x, keep, "local")
        ms = measure_latency(uniform, x, backend="onnxruntime", threads=2, min_time_s=0.0 if args.quick else 1.0).median_ms
        rows.append(f"| uniform L2, {keep:.2f} MACs | {100 * count_macs(uniform, x) / count_macs(model, x):.1f} % | - | "
                    f"{ms:.2f} | {dense_measured / ms:.2f}x |")
    rows += ["", f"Goal: half the dense predicted ONNX Runtime latency ({dense_ms:.2f} ms predicted, "
             f"{dense_measured:.2f} ms measured), batch 1, 2 threads; the uniform rows show what MACs a uniform cut "
             "keeps at a similar measured latency."]
    return rows


def part_front(args: argparse.Namespace) -> list[str]:
    from prunekit.workflows.search import search_model

    splits = _subset(data.load("fashion_mnist"), args.quick)
    base = _baseline("mobilenet_v2", splits, 1 if args.quick else 3, args.quick)
    found = search_model(base, splits, tasks.create("classification"), strategy="nsga2", budget=args.trials,
                         constraints={"macs": 1.0}, objectives=("metric", "macs", "latency"),
                         levels=(1.0, 0.75, 0.5, 0.25), val_samples=256 if args.quick else 1024,
                         state_dir=_state("search-front", args.quick))
    result = found["result"]
    rows = ["| point | metric (proxy) | MACs kept | predicted latency ms |", "|---|---|---|---|"]
    for i in result.front:
        v = result.records[i].values
        rows.append(f"| {i} | {v['metric']:.4f} | {100 * v['macs']:.1f} % | {v['latency']:.3f} |")
    rows += ["", f"NSGA-II, {result.evaluations} proxy evaluations: a front of {len(result.front)} points over the "
             "proxy metric, MACs and table latency (torch, batch 1, 2 threads)."]
    return rows


def part_sensitivity(args: argparse.Namespace) -> list[str]:
    from prunekit.workflows.sensitivity import sensitivity_of

    splits = data.load("fashion_mnist")
    net = models.create("resnet20", num_classes=10, in_channels=1).eval()
    ratios = (0.5,) if args.quick else tuple(round(0.1 * i, 1) for i in range(1, 10))
    torch.set_num_threads(2)
    start = time.perf_counter()
    found = sensitivity_of(net, splits, tasks.create("classification"), ratios=ratios, cache_dir=None)
    seconds = time.perf_counter() - start
    evaluations = len(found["groups"]) * len(ratios) + len(found["blocks"]) + 1
    return ["| model | groups x ratios | blocks | proxy evaluations | wall time |", "|---|---|---|---|---|",
            f"| resnet20 | {len(found['groups'])} x {len(ratios)} | {len(found['blocks'])} | {evaluations} | "
            f"{seconds:.1f} s |", "", "2 threads; proxy: BatchNorm re-estimated on 2x128 training images, accuracy "
            "on 1024 validation images."]


def part_fidelity(args: argparse.Namespace) -> list[str]:
    """The proxy at each fidelity against the accuracy after the benchmark's fine-tune (one seed), on the
    uniform allocation and random configurations near the 4x budget: whether the proxy ranks
    configurations as fine-tuning does (Spearman), which is what choosing among them needs."""
    from prunekit.search.cost import Cost
    from prunekit.search.space import DEFAULT_LEVELS
    from prunekit.workflows.sensitivity import proxy_for

    splits = _subset(data.load("fashion_mnist"), args.quick)
    task = tasks.create("classification")
    count = 3 if args.quick else args.configs
    rows = ["| model | configuration | MACs kept | proxy, 0 steps, 1024 val | 32 steps, 1024 val | 32 steps, 5000 val | "
            "100 steps, 5000 val | fine-tuned test accuracy |", "|---|---|---|---|---|---|---|---|"]
    settings = [(0, 1024), (32, 1024), (32, 5000), (100, 5000)]
    proxies = {(steps, n): proxy_for(splits, task, val_samples=256 if args.quick else n, finetune_steps=steps)
               for steps, n in settings}
    summary = []
    for name in args.models:
        base = _baseline(name, splits, args.baseline_epochs, args.quick)
        x = splits.example_input(1)
        graph = DependencyGraph.trace(base, x)
        scores = score(graph, base, "l2")
        space = SearchSpace.from_graph(graph, levels=DEFAULT_LEVELS)
        cost = Cost(base, graph, space, x)
        rng = random.Random(args.seed)
        configs = [("uniform (levels)", space.uniform(0.5))]
        while len(configs) < count:
            config = space.sample(rng)
            if args.keep - 0.03 <= cost(config)["macs_kept"] <= args.keep + 0.005:
                configs.append((f"random {len(configs)}", config))
        table: list[list[float]] = []
        for label, config in configs:
            net = build(base, graph, space, config, scores)
            values = [proxies[s](net, finetune_steps=s[0]) for s in settings]
            values.append(_finetuned(net, splits, (0,), args.quick)[0])
            table.append(values)
            row = (f"| {name} | {label} | {100 * cost(config)['macs_kept']:.1f} % | "
                   + " | ".join(f"{100 * v:.2f} %" for v in values) + " |")
            print(row, flush=True)
            rows.append(row)
        final = [t[-1] for t in table]
        summary.append(f"| {name} | " + " | ".join(f"{_spearman([t[i] for t in table], final):.2f}"
                                                  for i in range(len(settings))) + " |")
    rows += ["", "Rank correlation (Spearman) of each proxy with the fine-tuned accuracy over these configurations:", "",
             "| model | 0 steps, 1024 val | 32 steps, 1024 val | 32 steps, 5000 val | 100 steps, 5000 val |",
             "|---|---|---|---|---|", *summary, "",
             f"Configurations: the uniform allocation on the search space's levels (every group at half its width) and "
             f"random ones from the same space within {args.keep - 0.03:.2f}-{args.keep + 0.005:.3f} of the MACs "
             f"(seed {args.seed}); proxy: BatchNorm re-estimated on 2x128 training images after that many SGD steps "
             f"(lr 0.01, momentum 0.9, on 16 cycled training batches), accuracy on that many validation images; "
             f"fine-tune: {FINETUNE.model_dump(exclude_defaults=True)}, seed 0, test split."]
    return rows


def part_measured(args: argparse.Namespace) -> list[str]:
    """Latency priced by the look-up table against each configuration's whole model measured
    (``latency_model``): a search (``--latency-strategy``) for a 2x ONNX Runtime speed-up of a trained model at batch 1,
    each result then measured side by side with the dense model and a uniform cut of the same MACs."""
    import tempfile

    from prunekit.measure import export_onnx
    from prunekit.measure.latency import interleaved_onnx_latencies
    from prunekit.search.space import DEFAULT_LEVELS
    from prunekit.workflows.search import search_model

    splits = _subset(data.load("fashion_mnist"), args.quick)
    name, seeds = args.models[0], (0,) if args.quick else (0, 1, 2)
    base = _baseline(name, splits, args.baseline_epochs, args.quick)
    x = splits.example_input(1)
    dense_macs = count_macs(base, x)
    state = _state(f"search-measured-{name}", args.quick)
    graph = DependencyGraph.trace(base, x)
    space = SearchSpace.from_graph(graph, levels=DEFAULT_LEVELS)
    table = LatencyTable(base, graph, space, x, backend="onnxruntime", cache_dir=state / "table" / "latency")
    goals = {"table": table.predict(space.dense()) / args.speedup,
             "measured": table.measure(space.dense()) / args.speedup}
    built: dict[str, tuple[nn.Module, dict[str, float] | None]] = {"dense": (base, None)}
    for latency_model, goal in goals.items():
        started = time.perf_counter()
        found = search_model(base, splits, tasks.create("classification"), strategy=args.latency_strategy,
                             budget=args.trials,
                             constraints={"latency_ms": goal}, objectives=("metric", "latency"), seed=0,
                             backend="onnxruntime", latency_model=latency_model, val_samples=256 if args.quick else 1024,
                             finetune_steps=0 if args.quick else RERANK_STEPS, state_dir=state / latency_model)
        values = {**found["best"].values, "goal": goal, "seconds": time.perf_counter() - started}
        if found["retimed"] is not None:  # NOTE: the kept configuration's second timing (measured latency)
            values["retimed"] = next(t["retimed_ms"] for t in found["retimed"]["tried"]
                                     if t["config"] == found["best"].config)
            values["retimes"] = len(found["retimed"]["tried"])
        built[f"{args.latency_strategy}, {latency_model}"] = (build(base, found["graph"], found["space"], found["best"].config,
                                                   found["scores"]), values)
    kept = count_macs(built[f"{args.latency_strategy}, measured"][0], x) / dense_macs
    built[f"uniform L2 at {100 * kept:.1f} % of the MACs"] = (_uniform(base, x, kept, "local"), None)
    folder = Path(tempfile.mkdtemp(prefix="prunekit-measured-"))
    paths = {label: export_onnx(model.eval(), x, folder / f"{i}.onnx") for i, (label, (model, _)) in enumerate(built.items())}
    rounds = 5
    timed = interleaved_onnx_latencies(paths, x, batch_sizes=(1,), threads=2, rounds=rounds,
                                       min_time_s=0.2 if args.quick else 3.0)
    dense_ms = timed["dense"][0].median_ms
    rows = ["| allocation | goal (its own ms) | search time | its ms in the search (timed again) | MACs kept | proxy | "
            "ORT b1 ms, measured | speed-up | "
            "accuracy (mean) | per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, (model, values) in built.items():
        accs = _finetuned(model, splits, seeds, args.quick) if label != "dense" else []
        ms = timed[label][0].median_ms
        cells = ["-", "-", "-", "-"] if values is None else [
            f"{values['goal']:.3f}", f"{values['seconds']:.0f} s", f"{values['metric']:.4f}",
            f"{values['latency']:.3f}" + (f" ({values['retimed']:.3f}, {values['retimes']} timed again)"
                                          if "retimed" in values else "")]
        mean = f"{100 * statistics.fmean(accs):.2f} %" if accs else "-"
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {cells[3]} | {100 * count_macs(model, x) / dense_macs:.1f} % | "
                    f"{cells[2]} | {ms:.3f} | {dense_ms / ms:.2f}x | {mean} | "
                    f"{', '.join(f'{100 * a:.2f}' for a in accs) or '-'} |")
    rows += ["", f"{name} (trained {args.baseline_epochs} epochs), goal {args.speedup:g}x faster than dense at batch 1 "
             f"on ONNX Runtime with 2 threads: in the table's own ms (half its prediction of the dense model) for "
             f"`latency_model='table'`, in measured ms for `'measured'`; {args.latency_strategy}, {args.trials} proxy "
             f"evaluations, "
             f"finalists fine-tuned {RERANK_STEPS} batches; widths at levels 1.0, 0.9, ..., 0.1 of each group. "
             f"'its ms in the search': the table's prediction, or the measured search's timing of the kept configuration "
             f"with its second timing (the chosen one is timed again before it is kept; where it misses, the next "
             f"best are). Latency: every model exported and timed in {rounds} interleaved rounds. Accuracy: fine-tune "
             f"{FINETUNE.model_dump(exclude_defaults=True)}, seeds {seeds}, test split."]
    return rows


def part_faster(args: argparse.Namespace) -> list[str]:
    """Issue 20's second goal: equal accuracy at 1.2x lower measured latency than the uniform L2 cut at the
    same MACs budget. The search (``--latency-strategy``, widths and residual blocks) is held to the budget
    and to the uniform cut's latency divided by ``--faster``, priced on PyTorch at ``--latency-batch-size`` by the
    look-up table or (``--latency-model measured``) whole-model timings; it keeps the best allocation by the proxy. Every row is then fine-tuned alike and
    timed side by side (PyTorch and ONNX Runtime, batch 1 and ``--latency-batch-size``)."""
    import tempfile

    from prunekit.measure import export_onnx
    from prunekit.measure.latency import interleaved_onnx_latencies, paired_latency
    from prunekit.search.space import DEFAULT_LEVELS
    from prunekit.workflows.search import search_model

    splits = _subset(data.load("fashion_mnist"), args.quick)
    seeds = (0,) if args.quick else (0, 1, 2)
    batch, rounds = args.latency_batch_size, 5
    rows = [f"| model | allocation | MACs kept | {args.latency_model} ms (b{batch}) | accuracy (mean) | per seed | "
            f"PyTorch b1 | PyTorch b{batch} | ORT b1 | ORT b{batch} |", "|---|---|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for name in args.models:
        base = _baseline(name, splits, args.baseline_epochs, args.quick)
        x = splits.example_input(1)
        dense_macs = count_macs(base, x)
        # NOTE: one folder per goal: a search resumes from its folder's state, made under that state's constraints
        state = _state(f"search-faster-{name}-b{batch}-{args.latency_model}-x{args.faster:g}", args.quick)
        uniform, kept = _uniform_plan(base, x, args.keep, "local")
        graph = DependencyGraph.trace(base, x)
        space = SearchSpace.from_graph(graph, levels=DEFAULT_LEVELS)
        table = LatencyTable(base, graph, space, x, backend="torch", batch_size=batch,
                             cache_dir=state / "latency")  # NOTE: the folder the search's own table uses
        priced = table.measure if args.latency_model == "measured" else table.predict
        uniform_ms = priced({**space.dense(), **kept})
        goal = uniform_ms / args.faster
        started = time.perf_counter()
        found = search_model(base, splits, tasks.create("classification"), strategy=args.latency_strategy,
                             budget=args.trials, constraints={"macs": args.keep, "latency_ms": goal},
                             objectives=("metric", "macs", "latency"), seed=0, depth=True, backend="torch",
                             latency_batch_size=batch, latency_model=args.latency_model,
                             val_samples=256 if args.quick else 1024,
                             proxy_steps=min(args.proxy_steps, 2) if args.quick else args.proxy_steps,
                             finetune_steps=0 if args.quick else RERANK_STEPS, state_dir=state)
        seconds = time.perf_counter() - started
        best = found["best"]
        searched = build(base, found["graph"], found["space"], best.config, found["scores"])
        built: dict[str, tuple[nn.Module, float | None]] = {
            "dense": (base, priced(space.dense())), "uniform L2": (uniform, uniform_ms),
            f"search: {args.latency_strategy}": (searched, best.values["latency"])}
        if (start := found.get("start")) is not None:
            built["uniform at the goal (the search's start)"] = (
                build(base, found["graph"], found["space"], start, found["scores"]), priced(start))
        models_ = {label: model.eval() for label, (model, _) in built.items()}
        torch_ms = {size: paired_latency(models_, x, reference="uniform L2", rounds=rounds, batch_size=size,
                                         min_time_s=0.2 if args.quick else 1.0) for size in (1, batch)}
        with tempfile.TemporaryDirectory(prefix="prunekit-faster-") as tmp:
            paths = {label: export_onnx(model, x, Path(tmp) / f"{i}.onnx") for i, (label, model) in enumerate(models_.items())}
            ort = interleaved_onnx_latencies(paths, x, batch_sizes=(1, batch), threads=2, rounds=rounds,
                                             min_time_s=0.2 if args.quick else 2.0)
        for label, (model, predicted) in built.items():
            accs = _finetuned(model, splits, seeds, args.quick) if label != "dense" else [evaluate(base, splits.test).accuracy]
            cells = []
            for size in (1, batch):
                cells.append(f"{torch_ms[size][label].median_ms:.3f} ms ({1 / torch_ms[size][label].ratio:.2f}x)")
            for i in range(2):
                ms, ref = ort[label][i].median_ms, ort["uniform L2"][i].median_ms
                cells.append(f"{ms:.3f} ms ({ref / ms:.2f}x)")
            widths = _conv_widths(model)
            rows.append(f"| {name} | {label} | {100 * count_macs(model, x) / dense_macs:.1f} % | "
                        f"{predicted:.3f} | {100 * statistics.fmean(accs):.2f} % | "
                        f"{', '.join(f'{100 * a:.2f}' for a in accs)} | {' | '.join(cells)} |")
            print(rows[-1], flush=True)
            notes.append(f"- {name}, {label}: {widths}")
        removed = found["blocks"]
        notes.append(f"- {name}: search {seconds:.0f} s, goal {goal:.3f} {args.latency_model} ms (uniform L2 {uniform_ms:.3f} / "
                     f"{args.faster:g}), blocks removed: {', '.join(removed) or 'none'}")
    priced_by = "each configuration timed whole" if args.latency_model == "measured" else "the look-up table"
    rows += ["", f"Budget: {args.keep:.2f} of the dense MACs kept and the uniform L2 cut's latency / {args.faster:g} "
             f"(PyTorch, batch {batch}, 2 threads, {priced_by}); {args.latency_strategy}, {args.trials} proxy "
             f"evaluations over widths (levels 1.0, 0.9, ..., 0.1) and residual blocks, "
             f"{args.proxy_steps} fine-tune steps per proxy evaluation, finalists {RERANK_STEPS} steps. "
             f"Latency: the models of one network timed side by side in {rounds} interleaved rounds, 2 threads; "
             f"(x) = how much faster than the uniform L2 cut. Accuracy: fine-tune "
             f"{FINETUNE.model_dump(exclude_defaults=True)}, seeds {seeds}, test split (the dense row: the baseline).",
             "", "Output channels of each convolution, in order:", "", *notes]
    return rows


PARTS = {"accuracy": ("Search: searched allocations at 4x fewer MACs", part_accuracy),
         "lut": ("Search: latency look-up table error", part_lut),
         "resnet50": ("Search: ResNet-50 at a 2x ONNX Runtime latency target", part_resnet50),
         "front": ("Search: MobileNetV2 Pareto front", part_front),
         "sensitivity": ("Search: sensitivity analysis time", part_sensitivity),
         "fidelity": ("Search: does the proxy rank configurations as fine-tuning does", part_fidelity),
         "measured": ("Search: latency from the table or measured (ONNX Runtime, batch 1)", part_measured),
         "faster": ("Search: equal accuracy at lower latency, 4x fewer MACs", part_faster)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=tuple(PARTS), action="append", help="which parts (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, numbers mean nothing")
    parser.add_argument("--write", action="store_true", help="write the sections even with --quick")
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg_small"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--trials", type=int, default=None, help="proxy evaluations per strategy (default 60; quick 24)")
    parser.add_argument("--keep", type=float, default=0.25, help="fraction of the dense MACs kept (default 0.25)")
    parser.add_argument("--baseline-epochs", type=int, default=10)
    parser.add_argument("--speedup", type=float, default=2.0, help="measured: the latency goal, x faster than dense")
    parser.add_argument("--faster", type=float, default=1.25,
                        help="faster: the latency goal, x faster than the uniform L2 cut as the search prices it "
                             "(default 1.25)")
    parser.add_argument("--latency-model", default="table", choices=LATENCY_MODELS,
                        help="faster: how the search prices latency (default table)")
    parser.add_argument("--latency-batch-size", "--latency-batch", type=int, default=64,
                        help="faster: the batch the table times (default 64)")
    parser.add_argument("--latency-strategy", default="tpe", choices=STRATEGIES,
                        help="measured, faster: the strategy (default tpe: one whole-model timing per trial; greedy "
                             "times every candidate step, minutes per step with measured latency)")
    parser.add_argument("--proxy-steps", type=int, default=0,
                        help="accuracy: fine-tune steps before every proxy evaluation of a search (default 0); the "
                             "rows go to a section of their own")
    parser.add_argument("--finished-only", action="store_true",
                        help="accuracy: write the rows finished so far (runs/search-accuracy/rows.json), the rest as not run")
    parser.add_argument("--configs", type=int, default=20,
                        help="random configurations for --part lut (default 20) and --part fidelity (with uniform)")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the random configurations (lut)")
    parser.add_argument("--threads", type=int, default=None, help="threads the lut part times with (default 2; quick 1)")
    args = parser.parse_args()
    args.trials = args.trials or (24 if args.quick else 60)
    for part in args.part or list(PARTS):
        title, run = PARTS[part]
        if part == "accuracy" and args.proxy_steps:
            title += f", every proxy evaluation after {args.proxy_steps} fine-tune steps"
        if part == "faster":
            title += f", PyTorch batch {args.latency_batch_size}, {args.latency_model} latency, goal {args.faster:g}x"
        rows = run(args)
        command = "benchmarks/search.py --part " + part + (" --quick" if args.quick else "")
        if not args.quick or args.write:
            write_section(title, rows, script=command)
        print("\n".join(rows))


if __name__ == "__main__":
    main()
