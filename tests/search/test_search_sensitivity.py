"""Sensitivity: masking equals pruning, everything is restored, the JSON has the documented shape,
and a second call is served from the cache."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _models import Residual
from torch import nn

from prunekit import tasks
from prunekit.graph import DependencyGraph
from prunekit.search import Proxy, reestimated_bn, sensitivity
from prunekit.search.sensitivity import masked, state_hash
from prunekit.structured import Plan, apply


def _data(seed: int = 0) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(3)]
    return batches[:2], batches[2:]


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_masking_a_group_computes_what_the_pruned_model_does_and_restores_exactly() -> None:
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(2, 3, 8, 8)
    before = copy.deepcopy(model)
    graph = DependencyGraph.trace(model, x)
    for group in graph.prunable:
        cut = (0, group.size - 1)
        keep = tuple(i for i in range(group.size) if i not in cut)
        pruned = apply(model, graph, Plan(keep={group.id: keep}, sizes={group.id: group.size}), verify_result=False)
        with masked(model, group, cut), torch.no_grad():
            got = model(x)
        torch.testing.assert_close(got, pruned(x), rtol=1e-5, atol=1e-5)
        assert _same_state(model, before)


def test_reestimated_bn_changes_the_statistics_only_inside_the_block() -> None:
    model = Residual().train()
    before = copy.deepcopy(model)
    calibration, _ = _data()
    with reestimated_bn(model, calibration, tasks.create("classification")) as ready:
        assert not ready.training and not torch.equal(ready.bn.running_mean, before.bn.running_mean)
        assert ready.bn.momentum is None
    assert model.training and model.bn.momentum == before.bn.momentum and _same_state(model, before)


def test_sensitivity_has_the_documented_shape_and_is_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = Residual(), torch.randn(1, 3, 8, 8)
    before = copy.deepcopy(model)
    calibration, validation = _data()
    proxy = Proxy(tasks.create("classification"), calibration, validation)
    found = sensitivity(model, x, proxy, ratios=(0.25, 0.5, 0.75), cache_dir=tmp_path)
    assert _same_state(model, before)
    assert found["metric_name"] == "accuracy" and 0.0 <= found["baseline"] <= 1.0
    sizes = {g.id: g.size for g in DependencyGraph.trace(model, x).prunable}
    assert {g["name"]: g["size"] for g in found["groups"]} == sizes
    for g in found["groups"]:
        assert g["ratios"] == [0.25, 0.5, 0.75] and len(g["metric"]) == 3
    assert [b["name"] for b in found["blocks"]] == []  # NOTE: Residual's block is not a module of its own
    files = list(tmp_path.glob("sensitivity-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == found
    files[0].write_text(json.dumps({**found, "baseline": -1.0}))  # NOTE: proves the second call reads the cache
    assert sensitivity(model, x, proxy, ratios=(0.25, 0.5, 0.75), cache_dir=tmp_path)["baseline"] == -1.0
    with torch.no_grad():
        model.head.bias.add_(1.0)  # new weights, new key
    assert sensitivity(model, x, proxy, ratios=(0.25, 0.5, 0.75), cache_dir=tmp_path)["baseline"] != -1.0


def test_the_cache_key_follows_weights_and_settings() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert state_hash(a, {"r": 1}) == state_hash(copy.deepcopy(a), {"r": 1})
    assert state_hash(a, {"r": 1}) != state_hash(a, {"r": 2}) != state_hash(b, {"r": 2})


def test_bad_ratios_give_a_clear_error() -> None:
    calibration, validation = _data()
    proxy = Proxy(tasks.create("classification"), calibration, validation)
    with pytest.raises(ValueError, match=r"ratios must be fractions removed in \(0, 1\); got \[1.5\]"):
        sensitivity(Residual(), torch.randn(1, 3, 8, 8), proxy, ratios=[1.5])


def test_the_command_writes_sensitivity_json(tiny_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "prunekit", "sensitivity", "--model", "simple_cnn", "--data",
                           str(tiny_npz), "--ratios", "0.5", "--baseline-epochs", "0", "--val-samples", "32", "--ranks",
                           "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads((out / "sensitivity.json").read_text())
    assert found["groups"] and all(g["ratios"] == [0.5] for g in found["groups"])
    assert "accuracy baseline" in done.stdout and "rank fc1" in done.stdout and found["ranks"]
    assert "Sensitivity" in (out / "report.md").read_text()  # NOTE: the run's report draws the curves


def test_the_recipe_stage_writes_sensitivity_json(tiny_npz: Path, tmp_path: Path) -> None:
    from prunekit.recipes import parse_recipe, run_recipe

    recipe = {"model": "simple_cnn", "data": str(tiny_npz),
              "stages": [{"sensitivity": {"ratios": [0.5], "val_samples": 32, "depth": False, "ranks": ["svd"]}}]}
    results = run_recipe(parse_recipe(recipe), out_dir=tmp_path / "r", progress=False)
    summary = results["stages"][0]["summary"]
    found = json.loads(Path(summary["file"]).read_text())
    assert found["groups"] and summary["blocks"] == 0
    # simple_cnn: two convs and two linears, each factorised alone by SVD
    assert summary["ranks"] == 4 and {r["method"] for r in found["ranks"]} == {"svd"}


def test_rank_sensitivity_scores_each_layer_factorised_alone_and_restores_it() -> None:
    from prunekit.search.ranks import factorise

    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    before = copy.deepcopy(model)
    layers_before = dict(model.named_modules())
    calibration, validation = _data()
    proxy = Proxy(tasks.create("classification"), calibration, validation, metric="loss")
    found = sensitivity(model, x, proxy, ratios=(0.5, 0.75), ranks=True, depth=False)
    assert _same_state(model, before) and dict(model.named_modules()) == layers_before  # NOTE: the same objects
    convs = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {r["name"] for r in found["ranks"]} == convs
    for curve in found["ranks"]:
        assert curve["ratios"] == [0.5, 0.75] and len(curve["ranks"]) == len(curve["metric"]) == 2
        for ratio, metric in zip(curve["ratios"], curve["metric"]):
            # the same layer factorised alone by the search's own factorise, scored by the same proxy
            alone = factorise(model, {curve["name"]: f"{curve['method']}:{1 - ratio:g}"}, x).model
            assert metric == pytest.approx(proxy(alone), rel=1e-5)
    assert "ranks" not in sensitivity(model, x, proxy, ratios=(0.5,), depth=False)


def test_rank_sensitivity_names_a_bad_method() -> None:
    calibration, validation = _data()
    proxy = Proxy(tasks.create("classification"), calibration, validation)
    with pytest.raises(ValueError, match="sensitivity: ranks: unknown decomposition method 'svdd'"):
        sensitivity(Residual(), torch.randn(1, 3, 8, 8), proxy, ratios=[0.5], ranks="svdd")


def test_table_heads_each_ratio_as_given() -> None:
    from prunekit.cli.sensitivity import table

    found = {"metric_name": "accuracy", "baseline": 0.9,
             "groups": [{"name": "conv1.weight:0", "size": 16, "ratios": [0.25, 0.75], "metric": [0.8, 0.4]}]}
    head = table(found).splitlines()[1].split()
    assert head[2:] == ["0.25", "0.75"]
    found["settings"] = {"bn_batches": 4, "finetune_steps": 0}
    assert table(found).splitlines()[0] == ("accuracy baseline 0.9000 (the proxy, as every row: BatchNorm statistics "
                                            "re-estimated on 4 batch(es); not the model's plain evaluation)")
