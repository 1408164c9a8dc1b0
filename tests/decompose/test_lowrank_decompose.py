"""decompose(): rank rules, the MACs target, skipped layers, atomicity, ONNX, save/load, pruning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.decompose import METHODS, decompose
from prunekit.errors import ConfigError, UnknownNameError
from prunekit.measure import count_macs
from prunekit.structured import Target


class Net(nn.Module):
    """conv 3x3 -> depthwise 3x3 -> 1x1 conv -> conv 3x3 (stride 2) -> pool -> Linear -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.down = nn.Conv2d(24, 32, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(32, 48)
        self.fc2 = nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pw(F.relu(self.dw(F.relu(self.stem(x))))))
        x = F.relu(self.down(x)).mean((2, 3))
        return self.fc2(F.relu(self.fc1(x)))


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["svd", "tucker", "auto"])
def test_full_rank_model_reproduces_outputs(net: Net, method: str) -> None:
    result = decompose(net, example_inputs=X, method=method, energy=1.0, options={"force": True},
                       progress=False)
    assert {r.name for r in result.layers} >= {"stem", "pw", "down"}
    assert torch.allclose(result.model(X), net(X), atol=1e-4)
    assert all(isinstance(result.model.get_submodule(r.name), nn.Sequential) for r in result.layers)


def test_asvd_full_rank_model_reproduces_outputs(net: Net) -> None:
    calibration = [torch.randn(4, 3, 12, 12), (torch.randn(4, 3, 12, 12), torch.zeros(4))]
    result = decompose(net, example_inputs=X, method="asvd", rank=1.0, calibration=calibration,
                       options={"force": True}, progress=False)
    assert [r.name for r in result.layers] == ["fc1", "fc2"] and {r.kind for r in result.layers} == {"asvd"}
    assert dict(result.skipped)["stem"] == "asvd: asvd factorises nn.Linear only"
    assert torch.allclose(result.model(X), net(X), atol=1e-4)


def test_depthwise_left_alone_and_1x1_by_svd(net: Net) -> None:
    result = decompose(net, example_inputs=X, method="tucker", rank=(2, 3), progress=False)
    assert {r.name: r.ranks for r in result.layers} == {"stem": (2, 3), "pw": (2,), "down": (2, 3)}
    skipped = dict(result.skipped)
    assert "grouped/depthwise" in skipped["dw"]
    assert "fc1" in skipped and {r.name: r.kind for r in result.layers}["pw"] == "svd"
    assert isinstance(result.model.dw, nn.Conv2d)


def test_layers_that_would_not_save_macs_are_left_alone(net: Net) -> None:
    result = decompose(net, example_inputs=X, method="svd", rank=1.0, progress=False)
    assert result.layers == ()
    assert all(why == "the factorised form would not have fewer MACs" for n, why in result.skipped if n != "dw")
    assert result.macs_after == result.macs_before


def test_macs_and_ranks_are_reported_and_match_the_counter(net: Net) -> None:
    result = decompose(net, example_inputs=X, method="auto", rank=3, progress=False)
    ranks = {r.name: r.ranks for r in result.layers}
    assert ranks["stem"] == (3, 3) and ranks["pw"] == (3,) and ranks["fc1"] == (3,)
    saved = sum(r.macs_before - r.macs_after for r in result.layers)
    assert result.macs_before == count_macs(net, X)
    assert result.macs_after == count_macs(result.model, X) == result.macs_before - saved


@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_macs_target_is_reached_and_reported(net: Net, method: str) -> None:
    result = decompose(net, example_inputs=X, method=method, target=Target(macs=0.5),
                       options={"cp_iterations": 10}, progress=False)
    assert result.macs_after == count_macs(result.model, X)
    assert 0.35 < result.macs_kept <= 0.5
    assert result.target == 0.5 and "target macs=0.5" in result.notes[0]
    assert result.model(X).shape == (2, 5)


def test_unreachable_macs_target_is_a_clear_error(net: Net) -> None:
    with pytest.raises(ConfigError, match="cannot be reached"):
        decompose(net, example_inputs=X, method="svd", target={"macs": 0.01}, include=["fc*"], progress=False)


def test_energy_rank_grows_with_energy(net: Net) -> None:
    ranks = [decompose(net, example_inputs=X, method="svd", energy=e, options={"force": True},
                       progress=False).layers[0].ranks[0] for e in (0.5, 0.8, 0.99)]
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]


def test_model_untouched_and_inplace(net: Net) -> None:
    before = _state(net)
    result = decompose(net, example_inputs=X, method="svd", rank=2, progress=False)
    assert result.model is not net and isinstance(net.stem, nn.Conv2d)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    same = decompose(net, example_inputs=X, method="svd", rank=2, inplace=True, progress=False)
    assert same.model is net and isinstance(net.stem, nn.Sequential)


def test_failure_leaves_model_unchanged_even_inplace(net: Net) -> None:
    before = _state(net)
    with pytest.raises(ConfigError, match="needs calibration batches"):
        decompose(net, example_inputs=X, method="asvd", rank=2, inplace=True, progress=False)
    assert isinstance(net.fc1, nn.Linear) and net.training is False
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"rank": 0}, ConfigError, "'rank' must be >= 1"),
    ({"energy": 1.5}, ConfigError, r"'energy' must be a float in \(0, 1\]"),
    ({"rank": 2, "energy": 0.5}, ConfigError, "either 'rank' or 'energy'"),
    ({"target": {"macs": 0.0}}, ConfigError, r"'macs' must be a float in \(0, 1\]"),
    ({"target": 0.5}, ConfigError, r"Target of kind macs; got 0.5. Pass e.g. Target\(macs=0.5\)"),
    ({"target": Target(ratio=0.5)}, ConfigError, "ranks are chosen for a MACs budget"),
    ({"target": {"macs": 0.5}, "rank": 2}, ConfigError, "'target' chooses every rank itself"),
    ({"method": "tuker"}, UnknownNameError, "Did you mean 'tucker'"),
    ({"rank": "vbfm"}, ConfigError, "must be 'vbmf'"),
    ({"rank": (2, 3), "method": "svd"}, ConfigError, "pair is for method='tucker'"),
    ({"include": ["stm"]}, ConfigError, "matches no Linear or conv layer. Did you mean 'stem'"),
    ({"options": {"dampin": 1}}, ConfigError, "dampin"),
])
def test_bad_arguments_raise_clear_errors(net: Net, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        decompose(net, example_inputs=X, progress=False, **kwargs)


def test_user_registered_method_is_used(net: Net) -> None:
    class OnlyFc1(METHODS.get("svd").factory):
        def supports(self, module: nn.Module) -> str | None:
            return None if module is net.fc1 else "not fc1"

    METHODS.add("only_fc1", OnlyFc1)
    try:
        result = decompose(net, example_inputs=X, method="only_fc1", rank=2, progress=False)
    finally:
        METHODS.remove("only_fc1")
    assert [r.name for r in result.layers] == ["fc1"]


def test_save_load_round_trip(net: Net, tmp_path) -> None:
    result = decompose(net, example_inputs=X, method="auto", rank=3, progress=False)
    folder = prunekit.save(result.model, tmp_path / "dec", original=Net(), transforms=[result])
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
    loaded = prunekit.load(folder, model=Net())
    assert torch.equal(loaded.eval()(X), result.model(X))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_onnx_export_matches_pytorch(net: Net, method: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from prunekit.measure import export_onnx

    model = decompose(net, example_inputs=X, method=method, rank=3, options={"cp_iterations": 10},
                      progress=False).model
    path = export_onnx(model, X, tmp_path / "dec.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: X.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), model(X), atol=1e-4)


def test_load_rejects_a_different_architecture(net: Net, tmp_path) -> None:
    from prunekit.errors import DataError

    result = decompose(net, example_inputs=X, method="svd", rank=2, progress=False)
    prunekit.save(result.model, tmp_path / "dec", original=Net(), transforms=[result])
    other = Net()
    other.stem = nn.Conv2d(3, 8, 3, padding=1)
    with pytest.raises(DataError, match="'stem' had weight shape"):
        prunekit.load(tmp_path / "dec", model=other)


def test_vbmf_rank_finds_the_rank_of_a_noisy_low_rank_layer() -> None:
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(96, 64)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(64, 4, generator=g) @ torch.randn(4, 96, generator=g)
                           + 0.05 * torch.randn(64, 96, generator=g))
    model = nn.Sequential(layer)
    result = decompose(model, example_inputs=torch.randn(3, 96), method="svd", rank="vbmf", progress=False)
    assert [r.ranks for r in result.layers] == [(4,)]


def test_missing_tensorly_names_the_install_line(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from prunekit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tensorly", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'prunekit\[decompose\]'"):
        decompose(net, example_inputs=X, method="tucker", rank=2, progress=False)


class SharedScales(nn.Module):
    """A conv run at 16x16 and again at 4x4 (a head shared over FPN levels), another at 8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.shared = nn.Conv2d(32, 32, 3, padding=1)
        self.other = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        levels = (self.shared(h), self.shared(F.avg_pool2d(h, 4)), self.other(F.avg_pool2d(h, 2)))
        return self.head(sum(level.mean((2, 3)) for level in levels))


@pytest.mark.parametrize("method", ["tucker", "cp"])
@pytest.mark.parametrize("goal", [0.7, 0.5])
def test_macs_target_counts_every_call_of_a_layer_run_on_two_input_sizes(method: str, goal: float) -> None:
    """Calls x the last (smallest) call's MACs once put a 0.7 target at 0.09 and refused 0.5 as unreachable."""
    torch.manual_seed(0)
    model, x = SharedScales().eval(), torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = decompose(model, example_inputs=x, method=method, target=Target(macs=goal),
                       options={"cp_iterations": 5}, progress=False)
    assert "shared" in {r.name for r in result.layers}
    saved = sum(r.macs_before - r.macs_after for r in result.layers)
    assert result.macs_after == count_macs(result.model, x) == result.macs_before - saved
    assert goal - 0.1 < result.macs_kept <= goal
    assert f"estimated {result.macs_kept:.4f}" in result.notes[0]


def test_table_of_a_result_with_no_factorised_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 4))
    result = decompose(model, example_inputs=torch.zeros(2, 5), method="svd", rank=1.0, progress=False)
    assert result.layers == ()
    lines = result.table().splitlines()
    assert lines[0].split() == ["layer", "kind", "weight", "shape", "ranks", "MACs", "before", "MACs",
                                "after", "rel.", "error"]
    assert lines[-1].startswith("0 layers factorised, 2 left alone")


@pytest.mark.parametrize("method", ["svd", "asvd", "tucker", "cp"])
def test_decompose_leaves_the_global_rng_state_as_it_was(net: Net, method: str) -> None:
    """The factorised layers were built with nn.init, which drew from the caller's RNG."""
    calibration = [torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))]
    state = torch.random.get_rng_state()
    result = decompose(net, example_inputs=X, method=method, rank=3, calibration=calibration,
                       options={"cp_iterations": 5}, progress=False)
    assert result.layers and torch.equal(torch.random.get_rng_state(), state)
