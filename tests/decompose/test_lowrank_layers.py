"""Layer-level factorisations: exact at full rank, error falls as rank rises, bad ranks rejected."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.decompose import cp_conv, factorize_linear, svd_conv, tucker2_conv
from prunekit.errors import ConfigError


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(12, 9)


@pytest.fixture
def conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(5, 7, 3, stride=2, padding=1, dilation=1)


def test_linear_svd_full_rank_reproduces_outputs(linear: nn.Linear) -> None:
    x = torch.randn(4, 12)
    out = factorize_linear(linear, 9)
    assert [type(m) for m in out] == [nn.Linear, nn.Linear]
    assert out[0].bias is None and out[1].out_features == 9
    assert torch.allclose(out(x), linear(x), atol=1e-4)


def test_activation_aware_full_rank_reproduces_outputs_with_singular_gram(linear: nn.Linear) -> None:
    x = torch.randn(64, 12)
    x[:, 3] = 0.0  # NOTE: a dead input feature makes X^T X singular; damping must handle it.
    x[:, 5] = x[:, 4]
    out = factorize_linear(linear, 9, gram=x.T.double() @ x.double())
    assert torch.allclose(out(x), linear(x), atol=1e-4)


def test_activation_aware_beats_plain_on_its_calibration_inputs(linear: nn.Linear) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 12, generator=g) * torch.linspace(0.01, 3.0, 12)  # very uneven features
    gram = x.T.double() @ x.double()
    plain = (factorize_linear(linear, 3)(x) - linear(x)).norm()
    aware = (factorize_linear(linear, 3, gram=gram)(x) - linear(x)).norm()
    assert aware < 0.8 * plain


def test_conv_svd_and_tucker2_full_rank_reproduce_outputs(conv: nn.Conv2d) -> None:
    x = torch.randn(2, 5, 11, 11)
    assert _close(svd_conv(conv, 7)(x), conv(x)) < 1e-4
    tucker = tucker2_conv(conv, (5, 7))
    assert [m.kernel_size for m in tucker] == [(1, 1), (3, 3), (1, 1)]
    assert tucker[1].stride == (2, 2) and tucker[2].bias is not None
    assert _close(tucker(x), conv(x)) < 1e-4


def test_cp_is_exact_for_a_kernel_of_known_cp_rank() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, (3, 3), padding=(1, 1), stride=(1, 2))
    factors = [torch.randn(d, 3) for d in (6, 4, 3, 3)]
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("nr,cr,hr,wr->nchw", *factors))
    x = torch.randn(2, 4, 9, 9)
    out = cp_conv(conv, 3, iterations=200)
    assert [m.groups for m in out] == [1, 3, 3, 1]
    assert [m.kernel_size for m in out] == [(1, 1), (3, 1), (1, 3), (1, 1)]
    assert _close(out(x), conv(x)) < 1e-4
    assert _close(cp_conv(conv, 2)(x), conv(x)) > 1e-2  # below the true rank it cannot be exact


@pytest.mark.parametrize(("seed", "channels", "rank"), [(0, (8, 16), 200), (48, (4, 32), 48)])
def test_cp_layers_are_finite_and_report_their_own_error(seed: int, channels: tuple[int, int], rank: int) -> None:
    """Above the kernel's rank ALS leaves its factors' scales far apart (one overflowed float32 to
    inf): the layers hold balanced factors, and the error reported is the built layers' own."""
    from prunekit.decompose.cp import cp_factorization

    torch.manual_seed(seed)
    conv = nn.Conv2d(*channels, 3, padding=1)
    out, error = cp_factorization(conv, rank)
    assert all(bool(torch.isfinite(m.weight).all()) for m in out)
    w = [m.weight.detach().double().reshape(m.weight.shape[0], -1) for m in out]
    kernel = conv.weight.detach().double()
    built = torch.einsum("nr,rc,rh,rw->nchw", w[3], w[0], w[1], w[2])
    assert error == pytest.approx(float((built - kernel).norm() / kernel.norm()), rel=1e-6)
    x = torch.randn(2, channels[0], 8, 8)
    assert _close(out(x), conv(x)) < 1e-2


@pytest.mark.parametrize("make", ["linear", "svd_conv", "tucker2"])
def test_error_falls_as_rank_rises(make: str, linear: nn.Linear, conv: nn.Conv2d) -> None:
    if make == "linear":
        layer, x, full = linear, torch.randn(8, 12), 9
        build = lambda r: factorize_linear(layer, r)  # noqa: E731
    elif make == "svd_conv":
        layer, x, full = conv, torch.randn(2, 5, 9, 9), 7
        build = lambda r: svd_conv(layer, r)  # noqa: E731
    else:
        layer, x, full = conv, torch.randn(2, 5, 9, 9), 5
        build = lambda r: tucker2_conv(layer, (r, r + 2))  # noqa: E731
    with torch.no_grad():
        errors = [float((build(r)(x) - layer(x)).norm()) for r in range(1, full + 1)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4 * float(layer(x).detach().norm())


def test_layer_functions_leave_the_layer_unchanged(conv: nn.Conv2d) -> None:
    before = conv.weight.detach().clone()
    tucker2_conv(conv, (2, 3))
    svd_conv(conv, 2)
    assert torch.equal(conv.weight, before)


@pytest.mark.parametrize("call, message", [
    (lambda: factorize_linear(nn.Linear(4, 3), 0), "rank must be an int >= 1"),
    (lambda: factorize_linear(nn.Linear(4, 3), 4), "exceeds the full rank 3"),
    (lambda: factorize_linear(nn.Conv2d(4, 3, 1), 2), "expected an nn.Linear"),
    (lambda: tucker2_conv(nn.Conv2d(4, 6, 3), (5, 2)), "ranks (r_in, r_out) must be within (1..4, 1..6)"),
    (lambda: svd_conv(nn.Conv2d(4, 4, 3, groups=4), 2), "groups=4"),
    (lambda: cp_conv(nn.Conv2d(4, 4, 3), 0), "rank must be an int >= 1"),
    (lambda: cp_conv(nn.Conv2d(3, 64, 3), 32), "TensorLy could not fit rank 32 to a kernel of shape (64, 3, 3, 3)"),
])
def test_bad_layer_arguments_raise_clear_errors(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()
