"""LayerNorm, RMSNorm, GroupNorm and InstanceNorm: exact DeepLIFT rules by decomposition.

The fused rule of :class:`deeplift.layers.Normalize` is checked against the same normalisation
written out by hand in torch (centring, ``(c*c).mean() + eps``, ``rsqrt``, ``c * u``, affine) —
which converts into the generic layers (subtraction, mean, the Shapley product, the Rescale rule
of ``rsqrt``) — and both against summation-to-delta and autograd.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("name", _CASES)
def test_normalization_rule_equals_its_decomposition_into_generic_rules(name):
    net = _net(name)
    hand = nn.Sequential(net[0], HandNorm(net[1]), *net[2:]).eval()
    x, r = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(hand(x), net(x), rtol=0, atol=1e-12)
    fused, composed = deeplift.convert(net, x), deeplift.convert(hand, x)
    assert any(type(l).__name__ == "Normalize" for l in fused.layers.values())
    assert not any(type(l).__name__ == "Normalize" for l in composed.layers.values())
    for method in ["rescale", "gradient"]:
        refs = None if method == "gradient" else r
        a = deeplift.attribute(fused, x, refs, method=method, target="all")
        b = deeplift.attribute(composed, x, refs, method=method, target="all")
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


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
