"""partition: chained stages equal the model, manifest bytes, cut objective vs brute force."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.decompose.partition import load_partition, partition
from prunekit.decompose.partition_cuts import best_cuts, cut_objective
from prunekit.decompose.partition_graph import measure_nodes, trace
from prunekit.errors import ConfigError, DataError, PrunekitError


class Chain(nn.Module):
    """An MLP: every cut is crossed by one tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                                  nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Concat(nn.Module):
    """Two branches joined by a concat, a parameter used directly and two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, padding=1)
        self.right = nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6).view(1, 6, 1, 1))
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.relu(self.stem(x))
        y = torch.cat([self.left(s), self.right(s)], dim=1) * self.scale
        pooled = y.mean(dim=(2, 3))
        return self.head(pooled), s.sum(dim=(1, 2, 3))


class ShapeBranch(nn.Module):
    """Python control flow on a shape: torch.fx cannot trace it, torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > 3:
            x = x * 2
        return self.b(torch.relu(self.a(x)))


class DataBranch(nn.Module):
    """Control flow on values: no tracer can follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if x.sum() > 0 else x


def _stage_count(model: nn.Module, x: torch.Tensor, stages: int, **kw) -> object:
    return partition(model, x, stages, repeats=1, **kw)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_chain_mlp_stages_reproduce_output_exactly(stages: int) -> None:
    torch.manual_seed(0)
    model, x = Chain().eval(), torch.randn(5, 6)
    part = _stage_count(model, x, stages)
    assert len(part.stages) == stages == len(part.manifest["stages"])
    assert torch.equal(part.run(x), model(x))
    for entry in part.manifest["stages"][:-1]:
        assert len(entry["outputs"]) == 1, "an MLP cut is crossed by one tensor"


def test_one_stage_is_the_whole_graph() -> None:
    model, x = Chain().eval(), torch.randn(2, 6)
    part = _stage_count(model, x, 1)
    (entry,) = part.manifest["stages"]
    assert part.manifest["cuts"] == [] and entry["node_range"] == [0, 7] and entry["outputs"] == []
    assert torch.equal(part.run(x), model(x))


def test_resnet20_skip_connections_cross_cuts_and_chain_exactly() -> None:
    model = models.create("resnet20").eval()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    part = _stage_count(model, x, 4)
    assert torch.equal(part.run(x), model(x))
    assert part.manifest["method"] == "torch.fx"
    # each stage's outputs are the next stage's inputs, in order
    for a, b in zip(part.manifest["stages"], part.manifest["stages"][1:]):
        assert a["outputs"] == b["inputs"] and a["bytes_out"] == b["bytes_in"]
    # a cut inside a residual block is crossed by the skip input as well
    module, method = trace(model, (x,))
    costs = measure_nodes(module, (x,), method, latency=False)
    inside = [names for names in costs.crossing if len(names) > 1]
    assert inside and all(costs.cut_bytes[costs.crossing.index(n)] > 0 for n in inside)
    # the MACs of the stages add up to the model's
    assert sum(s["macs"] for s in part.manifest["stages"]) == part.manifest["total"]["macs"]
    from prunekit.measure import count_macs
    assert part.manifest["total"]["macs"] == count_macs(model, x)


def test_concat_branches_parameters_and_tuple_outputs() -> None:
    torch.manual_seed(0)
    model, x = Concat().eval(), torch.randn(3, 3, 8, 8)
    want = model(x)
    for stages in (2, 3, 5):
        got = _stage_count(model, x, stages).run(x)
        assert isinstance(got, tuple) and len(got) == 2
        assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_manifest_bytes_are_the_crossing_tensors_nbytes() -> None:
    torch.manual_seed(0)
    model, x = Concat().eval(), torch.randn(3, 3, 8, 8)
    part = _stage_count(model, x, 3)
    feeds = part.stage_inputs(x)
    for k, entry in enumerate(part.manifest["stages"]):
        assert [i["name"] for i in entry["inputs"]] == [p.name for p in part.stages[k].graph.nodes
                                                        if p.op == "placeholder"]
        real = sum(t.numel() * t.element_size() for t in feeds[k])
        assert entry["bytes_in"] == real == sum(i["bytes"] for i in entry["inputs"])
        assert [tuple(i["shape"]) for i in entry["inputs"]] == [tuple(t.shape) for t in feeds[k]]


def test_model_is_left_unchanged_and_stages_own_their_weights() -> None:
    model = Chain().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    part = _stage_count(model, torch.randn(2, 6), 2)
    assert model.training
    with torch.no_grad():
        for p in part.stages[0].parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_stage_count_beyond_nodes_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"7 nodes into 8 stages.*stages <= 7"):
        _stage_count(Chain().eval(), torch.randn(2, 6), 8)
    with pytest.raises(ConfigError, match="'balance' must be one of macs, latency"):
        partition(Chain(), torch.randn(2, 6), 2, balance="flops")


def test_export_fallback_when_fx_fails() -> None:
    torch.manual_seed(0)
    model, x = ShapeBranch().eval(), torch.randn(3, 4)
    part = _stage_count(model, x, 2)
    assert part.manifest["method"] == "torch.export"
    assert torch.equal(part.run(x), model(x))
    wider = torch.randn(7, 4)  # NOTE: the batch dimension was exported as dynamic.
    assert torch.equal(part.run(wider), model(wider))


def test_untraceable_model_names_both_tracers() -> None:
    with pytest.raises(PrunekitError, match=r"cannot trace DataBranch.*symbolic_trace failed.*"
                                            r"torch.export.export failed"):
        _stage_count(DataBranch(), torch.randn(2, 4), 2)


def _brute_force(costs: list[float], sizes: list[float | None], stages: int,
                 tolerance: float) -> tuple[float, float]:
    options = [cut_objective(costs, sizes, cuts)
               for cuts in itertools.combinations(range(1, len(costs)), stages - 1)]
    options = [(b, s) for b, s in options if math.isfinite(s)]  # NOTE: unusable cuts are out.
    best = min(bottleneck for bottleneck, _ in options)
    return min(((b, s) for b, s in options if b <= best * (1 + tolerance)),
               key=lambda item: (item[1], item[0]))


@pytest.mark.parametrize("tolerance", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("stages", [2, 3, 4])
def test_cuts_match_brute_force(stages: int, tolerance: float) -> None:
    generator = torch.Generator().manual_seed(stages)
    for _ in range(20):
        costs = torch.randint(0, 20, (9,), generator=generator).tolist()
        sizes = torch.randint(1, 50, (8,), generator=generator).tolist()
        sizes[3] = None  # a cut crossed by a Python value
        cuts = best_cuts(costs, sizes, stages, tolerance=tolerance)
        assert len(cuts) == stages - 1 and list(cuts) == sorted(set(cuts)) and 3 + 1 not in cuts
        got = cut_objective(costs, sizes, cuts)
        bottleneck, crossing = _brute_force(costs, sizes, stages, tolerance)
        assert got[1] == crossing and got[0] <= bottleneck * (1 + tolerance)
        if tolerance == 0.0:
            assert got[0] == bottleneck


def test_cuts_hand_made_example() -> None:
    costs = [4, 4, 1, 1, 4, 4]
    # the balanced cut (after node 3) is crossed by 100 bytes; the one after node 2 by 1 byte
    sizes = [50, 1, 100, 50, 50]
    assert best_cuts(costs, sizes, 2, tolerance=0.0) == (3,)
    assert cut_objective(costs, sizes, (3,)) == (9, 100)
    assert best_cuts(costs, sizes, 2, tolerance=0.2) == (2,)  # bottleneck 10 <= 9 * 1.2
    assert math.isinf(cut_objective(costs, [None] * 5, (2,))[1])
    with pytest.raises(ConfigError, match="only 0 of the 5 positions"):
        best_cuts(costs, [None] * 5, 2)


def test_save_and_load_without_pickle(tmp_path: Path) -> None:
    model = models.create("resnet20").eval()
    x = torch.randn(2, 1, 28, 28)
    part = _stage_count(model, x, 3)
    folder = part.save(tmp_path / "stages", onnx=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "stage_0.safetensors", "stage_1.safetensors", "stage_2.safetensors"]
    again = load_partition(models.create("resnet20"), folder)  # other random weights, then loaded
    assert torch.equal(again.run(x), model(x))
    with pytest.raises(DataError, match="does not match the manifest"):
        load_partition(models.create("resnet56"), folder)


@pytest.mark.slow
def test_each_stage_exports_to_onnx(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model, x = Concat().eval(), torch.randn(2, 3, 8, 8)
    part = _stage_count(model, x, 3)
    folder = part.save(tmp_path, onnx=True)
    feeds = part.stage_inputs(x)
    for k, stage in enumerate(part.stages):
        session = ort.InferenceSession(str(folder / f"stage_{k}.onnx"))
        names = [i.name for i in session.get_inputs()]
        got = session.run(None, {n: t.numpy() for n, t in zip(names, feeds[k])})
        with torch.no_grad():
            want = stage(*feeds[k])
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-5)
