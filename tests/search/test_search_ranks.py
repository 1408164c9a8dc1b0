"""Rank dimensions in the application layer: ``search_model(..., ranks=...)`` searches each layer's
factorisation (with widths or alone), its cost is the built model's as ``count_macs`` counts it, the
recipe's ``decompose: {allocation: search}`` applies exactly the searched ranks and resumes, and bad
combinations are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunekit import data, models
from prunekit.decompose import decompose
from prunekit.errors import ConfigError
from prunekit.measure import count_macs, count_params
from prunekit.recipes import parse_recipe, run_recipe
from prunekit.recipes.schema import stage_options
from prunekit.recipes.stages import STAGES, RunState
from prunekit.search.ranks import factorise, rank_choices
from prunekit.structured import Plan
from prunekit.search.space import SearchSpace, build
from prunekit.workflows.common import task_of
from prunekit.workflows.search import search_model


def _setup(npz: Path) -> tuple[nn.Module, Any, Any, torch.Tensor]:
    splits = data.load(str(npz))
    torch.manual_seed(0)
    net = models.create("simple_cnn").eval()
    return net, splits, task_of(splits, None), splits.train.tensors[0][:1]


def test_factorise_gives_what_decompose_gives_layer_by_layer() -> None:
    torch.manual_seed(0)
    net, x = models.create("simple_cnn").eval(), torch.randn(2, 1, 28, 28)
    ranks = {"conv2": "tucker:0.5", "fc1": "svd:0.3", "conv1": "cp:0.5"}
    got = factorise(net, ranks, x)
    want = net
    for layer, choice in ranks.items():
        method, fraction = choice.split(":")
        want = decompose(want, example_inputs=x, method=method, rank=float(fraction), include=[layer],
                         options={"force": True}).model
    assert {r.name: (r.kind, r.ranks) for r in got.layers} == {"conv2": ("tucker2", (2, 4)), "fc1": ("svd", (20,)),
                                                               "conv1": ("cp", (2,))}
    torch.testing.assert_close(got.model(x), want(x))
    assert got.macs_after == count_macs(got.model, x) and got.macs_before == count_macs(net, x)
    assert isinstance(net.fc1, nn.Linear)  # NOTE: the input model is not changed
    with pytest.raises(ConfigError, match="Cannot factorise 'fc9' as svd:0.5: no such layer"):
        factorise(net, {"fc9": "svd:0.5"}, x)
    with pytest.raises(ConfigError, match="Cannot factorise 'fc1' as tucker:0.5: Linear is not an nn.Conv2d"):
        factorise(net, {"fc1": "tucker:0.5"}, x)
    with pytest.raises(ConfigError, match="A rank choice is '<method>:<fraction of full rank>'"):
        factorise(net, {"fc1": "svd:half"}, x)


def test_shells_price_as_the_factorised_model_and_the_cache_gives_the_same_layers() -> None:
    torch.manual_seed(0)
    net, x = models.create("simple_cnn").eval(), torch.randn(2, 1, 28, 28)
    ranks = {"conv2": "tucker:0.5", "fc1": "svd:0.3"}
    real = factorise(net, ranks, x)
    shells = factorise(net, ranks, x, weights=False)
    assert [(r.name, r.kind, r.ranks, r.macs_after) for r in shells.layers] == \
        [(r.name, r.kind, r.ranks, r.macs_after) for r in real.layers]
    assert count_macs(shells.model, x) == count_macs(real.model, x)
    assert count_params(shells.model) == count_params(real.model)
    cache: dict[Any, Any] = {}
    first = factorise(net, ranks, x, cache=cache)
    assert len(cache) == 2
    again = factorise(net, ranks, x, cache=cache)
    assert again.model.fc1 is not first.model.fc1  # NOTE: a copy: training one candidate leaves the cache as it was
    torch.testing.assert_close(again.model(x), real.model(x))


def test_a_removed_block_takes_its_layers_ranks_with_it() -> None:
    from prunekit.graph import DependencyGraph
    from prunekit.importance import score
    from prunekit.structured import residual_blocks

    net, x = models.create("resnet20", in_channels=1).eval(), torch.randn(1, 1, 28, 28)
    graph = DependencyGraph.trace(net, x)
    block = residual_blocks(net, x)[1]
    inside = f"{block}.conv1"
    space = SearchSpace.from_graph(graph, groups=(), blocks=[block],
                                   ranks={inside: ["svd:0.5"], "fc": ["svd:0.5"]})
    config = {f"block:{block}": False, f"rank:{inside}": "svd:0.5", "rank:fc": "svd:0.5"}
    assert space.ranks(config) == {"fc": "svd:0.5"}
    built = build(net, graph, space, config, score(graph, net, "l2"), example_inputs=x, weights=False)
    assert isinstance(built.fc, nn.Sequential) and built(x).shape == (1, 10)


def test_rank_choices_fall_in_macs_and_only_save() -> None:
    net, x = models.create("simple_cnn").eval(), torch.randn(1, 1, 28, 28)
    choices = rank_choices(net, x, ["svd", "tucker"], (1.0, 0.75, 0.5, 0.25))
    assert set(choices) == {"conv1", "conv2", "fc1", "fc2"}
    dense = count_macs(net, x)
    for layer, options in choices.items():
        macs = [count_macs(factorise(net, {layer: c}, x).model, x) for c in options]
        assert all(m < dense for m in macs) and macs == sorted(macs, reverse=True), (layer, options, macs)
    assert all(c.startswith("svd:") for c in choices["fc1"])  # NOTE: tucker does not take a Linear


@pytest.mark.parametrize("widths", [False, True])
def test_a_rank_search_meets_the_target_as_the_built_model_counts_it(tiny_npz: Path, widths: bool) -> None:
    net, splits, task, x = _setup(tiny_npz)
    found = search_model(net, splits, task, budget=4, constraints={"macs": 0.5}, ranks=True, widths=widths,
                         levels=(1.0, 0.5, 0.25), val_samples=32)
    space, best = found["space"], found["best"]
    kinds = {d.kind for d in space.dimensions}
    assert kinds == ({"rank", "width"} if widths else {"rank"})
    assert found["ranks"] == space.ranks(best.config) and all(f"rank:{m}" in best.config for m in found["ranks"])
    built = build(net, found["graph"], space, best.config, found["scores"], example_inputs=x)
    counted = count_macs(built, x) / count_macs(net, x)
    assert counted == pytest.approx(best.values["macs"]) and counted <= 0.5
    if not widths:  # NOTE: ranks alone: every width as it was, and the target met by factorising
        assert found["ranks"] and found["plan"].keep == {}
        factorised = {n for n, m in built.named_modules() if isinstance(m, nn.Sequential)}
        assert factorised == set(found["ranks"])


def test_bad_rank_options_are_one_line_errors(tiny_npz: Path) -> None:
    net, splits, task, _ = _setup(tiny_npz)

    def run(**kwargs: Any) -> None:
        search_model(net, splits, task, budget=2, constraints=kwargs.pop("constraints", {"macs": 0.5}),
                     val_samples=32, **kwargs)
    cases = [({"ranks": ["asvd"]}, "asvd needs calibration batches"),
             ({"ranks": "svdd"}, "unknown decomposition method 'svdd'"),
             ({"widths": False}, "--no-widths leaves nothing to search"),
             ({"ranks": True, "strategy": "gates"}, "strategy 'gates' learns widths only"),
             ({"ranks": True, "levels": (1.0,)}, "no layer of the model can be factorised")]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message) as caught:
            run(**kwargs)
        assert "\n" not in str(caught.value)


def _recipe(npz: Path, *stages: dict[str, Any], **search: Any) -> dict[str, Any]:
    options = {"target": {"macs": 0.5}, "trials": 4, "val_samples": 32, "levels": [1.0, 0.5, 0.25], **search}
    return {"model": "simple_cnn", "data": str(npz), "stages": [{"search": options}, *stages]}


def test_a_recipe_decompose_stage_applies_exactly_the_searched_ranks_and_resumes(tiny_npz: Path,
                                                                                 tmp_path: Path) -> None:
    from prunekit import load

    recipe = parse_recipe(_recipe(tiny_npz, {"decompose": {"allocation": "search"}}, {"evaluate": {}},
                                  ranks=True, widths=False))
    out = tmp_path / "run"
    first = run_recipe(recipe, out_dir=out, stop_after=1)
    searched = first["stages"][0]["summary"]
    assert searched["ranks"] and json.loads(Path(searched["pareto_file"]).read_text())["points"]
    resumed = run_recipe(recipe, out_dir=out, resume=True)
    assert resumed["stages"][0] == json.loads(json.dumps(first["stages"][0]))  # NOTE: not searched again
    applied = resumed["stages"][1]["summary"]
    kind = {"svd": "svd", "tucker": "tucker2", "cp": "cp"}
    x = torch.randn(1, 1, 28, 28)
    dense = models.create("simple_cnn").eval()
    want = factorise(dense, searched["ranks"], x).layers
    assert applied["ranks"] == searched["ranks"]
    assert [(r["name"], r["kind"], tuple(r["ranks"])) for r in applied["layers"]] == \
        [(r.name, kind[searched["ranks"][r.name].split(":")[0]], r.ranks) for r in want]
    model = resumed["model"]
    for layer in searched["ranks"]:
        assert isinstance(model.get_submodule(layer), nn.Sequential)
    assert count_macs(model, x) / count_macs(dense, x) <= 0.5
    assert resumed["stages"][2]["kind"] == "evaluate" and "accuracy" in resumed["stages"][2]["summary"]["metrics"]
    loaded = load(out / "model").eval()
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_a_recipe_applies_searched_widths_then_ranks(tiny_npz: Path, tmp_path: Path) -> None:
    recipe = _recipe(tiny_npz, {"prune": {"allocation": "search"}}, {"decompose": {"allocation": "search"}},
                     ranks=["svd"], trials=6, levels=[1.0, 0.5], target={"macs": 0.3})
    run_recipe(parse_recipe(recipe), out_dir=tmp_path / "r", stop_after=2)
    results = run_recipe(parse_recipe(recipe), out_dir=tmp_path / "r", resume=True)  # NOTE: the ranks outlive the prune
    searched, pruned, applied = (s["summary"] for s in results["stages"])
    assert {k: len(v) for k, v in pruned["plan"]["keep"].items()} == \
        {k: v for k, v in searched["best"]["config"].items() if not k.startswith("rank:")}
    plan = pruned["plan"]
    assert searched["ranks"] and any(len(v) < plan["sizes"][k] for k, v in plan["keep"].items())  # NOTE: both
    assert {r["name"] for r in applied["layers"]} == set(searched["ranks"])
    x = torch.randn(1, 1, 28, 28)
    assert count_macs(results["model"], x) / count_macs(models.create("simple_cnn"), x) == \
        pytest.approx(searched["best"]["values"]["macs"])


def test_bad_decompose_allocations_are_one_line_errors(tiny_npz: Path, tmp_path: Path) -> None:
    decompose_searched = {"decompose": {"allocation": "search"}}
    # NOTE: read before any stage runs, with the stage's place in the file
    with pytest.raises(ConfigError, match=r"stages\[0\]: decompose: allocation: search needs a search stage "
                                          r"before it. Add - search: \{target: \{macs: 0.25\}, ranks: true\}"):
        parse_recipe({"model": "simple_cnn", "data": str(tiny_npz), "stages": [decompose_searched]})
    with pytest.raises(ConfigError, match=r"stages\[0\] searches widths only. Set ranks: true in it."):
        parse_recipe(_recipe(tiny_npz, decompose_searched))
    with pytest.raises(ValueError, match="remove its 'rank'"):
        parse_recipe(_recipe(tiny_npz, {"decompose": {"allocation": "search", "rank": 0.5}}, ranks=True))
    with pytest.raises(ValueError, match="strategy 'gates' learns widths only"):
        parse_recipe(_recipe(tiny_npz, ranks=True, strategy="gates"))
    with pytest.raises(ValueError, match="widths: false leaves nothing to search"):
        parse_recipe(_recipe(tiny_npz, widths=False))
    # NOTE: widths and ranks searched together: the widths go first (a prune stage), then the ranks
    with pytest.raises(ConfigError, match=r"Add - prune: \{allocation: search\} before this decompose stage"):
        parse_recipe(_recipe(tiny_npz, decompose_searched, ranks=True))
    # NOTE: and the run itself refuses the same, for a RunState driven without parse_recipe's checks
    state = RunState(model=models.create("simple_cnn"), splits=data.load(str(tiny_npz)),
                     original=models.create("simple_cnn"), architecture={"model": "simple_cnn"}, seed=0,
                     out=tmp_path / "s")
    stage = parse_recipe(_recipe(tiny_npz, decompose_searched, ranks=True, widths=False)).stages[1]
    with pytest.raises(ConfigError, match="decompose: allocation: search needs a search stage with ranks"):
        STAGES.get("decompose").factory(state, stage_options(stage), 0)
    half = Plan(keep={"g": (0,)}, sizes={"g": 2}).to_dict()
    state.searched = {"plan": half, "blocks": [], "ranks": {"fc1": "svd:0.5"}}
    with pytest.raises(ConfigError, match=r"Add - prune: \{allocation: search\} before this decompose stage"):
        STAGES.get("decompose").factory(state, stage_options(stage), 0)


def test_the_search_command_searches_ranks_alone(tiny_npz: Path, tmp_path: Path) -> None:
    import prunekit

    out = tmp_path / "run"
    args = [sys.executable, "-m", "prunekit", "search", "--model", "simple_cnn", "--data", str(tiny_npz),
            "--target-macs", "0.5", "--trials", "3", "--ranks", "svd,tucker", "--no-widths", "--levels", "0.5,0.25",
            "--baseline-epochs", "0", "--finetune-epochs", "0", "--val-samples", "32", "--no-progress", "--no-onnx",
            "--batch-sizes", "1", "--min-time-s", "0", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["ranks"] and results["plan"]["keep"] == {}
    assert "ranks: " in done.stdout
    front = json.loads((out / "pareto.json").read_text())
    assert all(any(k.startswith("rank:") for k in p["config"]) for p in front["points"])
    loaded = prunekit.load(out / "model")
    assert {n for n, m in loaded.named_modules() if isinstance(m, nn.Sequential)} == set(results["ranks"])
    bad = subprocess.run(args[:8] + ["--ranks", "asvd"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "asvd needs calibration batches" in bad.stderr


class _SharedHead(nn.Module):
    """One conv run on two feature sizes (a head shared across pyramid levels)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = nn.functional.avg_pool2d(x, 4)
        return self.head(x).mean((2, 3)) + self.head(small).mean((2, 3))


def test_factorised_macs_count_every_call_of_a_shared_layer() -> None:
    torch.manual_seed(0)
    model, x = _SharedHead().eval(), torch.randn(1, 16, 16, 16)
    result = factorise(model, {"head": "svd:0.25"}, x)
    assert result.macs_after == count_macs(result.model, x)
    assert result.layers[0].macs_before == count_macs(model, x)
