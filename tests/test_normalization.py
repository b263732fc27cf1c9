"""LayerNorm, RMSNorm, GroupNorm and InstanceNorm: exact DeepLIFT rules by decomposition.

The rule of :class:`deeplift.layers.Normalize` is checked against its definition written with
explicit matrices per example and group (NumPy), its gradient against the same normalisation
written out by hand in torch (centring, ``(c*c).mean() + eps``, ``rsqrt``, ``c * u``, affine,
converted into generic layers), and both against summation-to-delta and autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deeplift
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class HandNorm(nn.Module):
    """The normalisation of ``norm`` written out from its definition, op by op."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x):
        norm, shape = self.norm, x.shape
        centre = not isinstance(norm, nn.RMSNorm)
        if isinstance(norm, nn.GroupNorm):
            x = x.reshape(shape[0], norm.num_groups, -1)
            dims = (-1,)
        elif isinstance(norm, (nn.InstanceNorm1d, nn.InstanceNorm2d)):
            dims = tuple(range(2, x.ndim))
        else:
            dims = tuple(range(-len(norm.normalized_shape), 0))
        c = x - x.mean(dims, keepdim=True) if centre else x
        eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
        u = torch.rsqrt((c * c).mean(dims, keepdim=True) + eps)
        y = (c * u).reshape(shape)
        weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
        per_channel = isinstance(norm, (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d))
        if weight is not None:
            y = y * (weight.reshape(-1, *[1] * (y.ndim - 2)) if per_channel else weight)
        if bias is not None:
            y = y + (bias.reshape(-1, *[1] * (y.ndim - 2)) if per_channel else bias)
        return y


def _norms() -> dict[str, nn.Module]:
    return {
        "layer_norm": nn.LayerNorm(6),
        "layer_norm_2d": nn.LayerNorm([3, 6]),
        "rms_norm": nn.RMSNorm(6),
        "rms_norm_eps": nn.RMSNorm([3, 6], eps=1e-4),
        "group_norm": nn.GroupNorm(3, 3),
        "group_norm_1": nn.GroupNorm(1, 3),
        "instance_norm": nn.InstanceNorm1d(3, affine=True),
        "instance_norm_plain": nn.InstanceNorm1d(3),
    }


#: the default run checks one of each kind; ``-m slow`` every variant
_SLOW = {"layer_norm_2d", "rms_norm_eps", "group_norm_1", "instance_norm_plain"}
_CASES = [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in _norms()]


def _net(name: str) -> nn.Module:
    torch.manual_seed(7)
    norm = _norms()[name]
    with torch.no_grad():
        for p in norm.parameters():  # random affine, some negative scales
            p.copy_(torch.randn(p.shape))
    return nn.Sequential(nn.Conv1d(2, 3, 1), norm, nn.Flatten(), nn.Linear(18, 3)).double().eval()


def _inputs():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(4, 2, 6, dtype=torch.float64, generator=gen)
    r = torch.randn(4, 2, 6, dtype=torch.float64, generator=gen) * 0.5
    return x, r


def _groups_and_gamma(norm: nn.Module, channels: int, length: int):
    """Index sets (into the flattened (C, L) example) normalised together, and γ per element."""
    idx = np.arange(channels * length).reshape(channels, length)
    ones = np.ones((channels, length))
    weight = None if getattr(norm, "weight", None) is None else norm.weight.detach().double().numpy()
    if isinstance(norm, nn.GroupNorm):
        groups = list(idx.reshape(norm.num_groups, -1))
        gamma = ones * weight[:, None]
    elif isinstance(norm, nn.InstanceNorm1d):
        groups = list(idx)
        gamma = ones if weight is None else ones * weight[:, None]
    elif len(norm.normalized_shape) == 2:
        groups, gamma = [idx.reshape(-1)], ones * weight
    else:
        groups, gamma = list(idx), ones * weight[None, :]
    return groups, gamma.reshape(-1)


def reference_contributions(norm: nn.Module, hx: np.ndarray, hr: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Contributions at a normalisation's input for output multipliers ``m``, from the rule's
    definition with explicit matrices, one example and group at a time (float64 NumPy)."""
    n_ex, channels, length = hx.shape
    groups, gamma = _groups_and_gamma(norm, channels, length)
    centre = not isinstance(norm, nn.RMSNorm)
    eps = norm.eps if norm.eps is not None else np.finfo(np.float64).eps
    out = np.zeros_like(hx).reshape(n_ex, -1)
    for e in range(n_ex):
        x, r, me = hx[e].reshape(-1), hr[e].reshape(-1), m[e].reshape(-1)
        for g in groups:
            n = len(g)
            P = np.eye(n) - (np.ones((n, n)) / n if centre else 0)
            cx, cr = P @ x[g], P @ r[g]
            vx, vr = (cx @ cx) / n + eps, (cr @ cr) / n + eps
            ux, ur = vx ** -0.5, vr ** -0.5
            s_u = (ux - ur) / (vx - vr)
            c_bar = (cx + cr) / 2
            u_w, c_w = (ux, cr) if ur >= ux else (ur, cx)  # 1/σ moves first where it is larger at r
            M = np.diag(gamma[g]) @ (u_w * P + 2 * s_u * np.outer(c_w, c_bar @ P) / n)
            assert np.allclose(M @ (x[g] - r[g]), gamma[g] * (cx * ux - cr * ur))  # exact per pair
            out[e, g] = (M.T @ me[g]) * (x[g] - r[g])
    return out.reshape(hx.shape)


@pytest.mark.parametrize("name", _CASES)
def test_normalization_rule_equals_its_definition(name):
    net = _net(name)
    x, r = _inputs()
    model = deeplift.convert(net, x)
    with torch.no_grad():
        hx, hr = net[0](x).numpy(), net[0](r).numpy()
    w_out = net[3].weight.detach().numpy()
    for method in ("rescale", "reveal_cancel"):  # the same map for both (no nonlinearity before it)
        got = deeplift.attribute(model, x, r, method=method, target="all", score_layer="0")
        for t in range(3):
            m = np.broadcast_to(w_out[t].reshape(1, 3, 6), hx.shape)
            expected = reference_contributions(net[1], hx, hr, m)
            np.testing.assert_allclose(got[:, t].numpy(), expected, rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", _CASES)
def test_normalization_gradient_equals_its_decomposition_into_generic_rules(name):
    net = _net(name)
    hand = nn.Sequential(net[0], HandNorm(net[1]), *net[2:]).eval()
    x, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(hand(x), net(x), rtol=0, atol=1e-12)
    fused, composed = deeplift.convert(net, x), deeplift.convert(hand, x)
    assert any(type(l).__name__ == "Normalize" for l in fused.layers.values())
    assert not any(type(l).__name__ == "Normalize" for l in composed.layers.values())
    a = deeplift.attribute(fused, x, method="gradient", target="all")
    b = deeplift.attribute(composed, x, method="gradient", target="all")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_layer_norm_contributions_stay_bounded_at_an_all_zero_reference():
    # σ_ref = sqrt(eps): the symmetric Shapley split of c·(1/σ) would give contributions ~1/sqrt(eps)
    torch.manual_seed(14)
    net = nn.Sequential(nn.LayerNorm(16, eps=1e-12), nn.Linear(16, 3)).eval()
    x = torch.randn(8, 16)
    model = deeplift.convert(net, x)
    scores, delta = deeplift.attribute(model, x, torch.zeros_like(x), target="all", return_delta=True)
    with torch.no_grad():
        d = net(x) - net(torch.zeros_like(x))
    assert (delta.abs() / (1 + d.abs())).max().item() < 1e-5  # float32
    assert scores.abs().max().item() < 2 * d.abs().max().item()


@pytest.mark.parametrize("name", _CASES)
def test_normalization_sums_to_delta_and_gradient_equals_autograd(name):
    net = _net(name)
    x, r = _inputs()
    model = deeplift.convert(net, x)
    with torch.no_grad():
        delta = net(x) - net(r)
    for refs, d in ((r, delta), (torch.zeros_like(x), net(x) - net(torch.zeros_like(x)))):
        for method in METHODS:
            scores = deeplift.attribute(model, x, refs, method=method, target="all")
            err = (scores.flatten(2).sum(2) - d.detach()).abs() / (1 + d.detach().abs())
            assert err.max().item() <= 1e-9, (method, err.max().item())
    got = deeplift.attribute(model, x, method="gradient", target="all")
    xx = x.clone().requires_grad_(True)
    out = net(xx)
    grads = torch.stack([torch.autograd.grad(out[:, t].sum(), xx, retain_graph=True)[0] for t in range(3)], 1)
    torch.testing.assert_close(got, grads, rtol=0, atol=1e-10)


def test_instance_norm_with_running_statistics_is_a_fixed_affine_map():
    norm = nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(3))
        norm.running_var.copy_(torch.rand(3) + 0.5)
    net = nn.Sequential(norm, nn.Flatten(), nn.Linear(18, 2)).double().eval()
    x = torch.randn(3, 3, 6, dtype=torch.float64)
    model = deeplift.convert(net, x)
    assert "BatchNorm" in [type(l).__name__ for l in model.layers.values()]
    torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)
