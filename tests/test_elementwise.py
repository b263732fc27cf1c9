"""Elementwise ops added for real models: logs, powers, roots, reciprocal/division by an
activation, abs, hardswish/hardsigmoid/mish/softsign, erf- and tanh-GELU, logsumexp, and the
in-place alias of every op with a rule.

Each is checked in a small float64 network: forward equal to the module, summation-to-delta for
the DeepLIFT methods with a random reference, the gradient method equal to autograd, and the
Rescale rule against its definition (``Δy/Δx`` of the op itself, computed here).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeplift
from deeplift.frontends.torch import _rule_for, supported_ops
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


OPS = {
    "log": lambda h: torch.log(F.softplus(h) + 0.1),
    "log1p": lambda h: torch.log1p(h.abs()),
    "exp": lambda h: torch.exp(0.5 * h),
    "sqrt": lambda h: torch.sqrt(F.softplus(h)),
    "rsqrt": lambda h: torch.rsqrt(h * h + 1),
    "reciprocal": lambda h: torch.reciprocal(h * h + 0.5),
    "div_by_activation": lambda h: h / (1 + torch.exp(h)),
    "constant_div_by_activation": lambda h: 2.0 / (1 + h.abs()),
    "pow": lambda h: h ** 2 + 0.2 * h.pow(3),
    "square": lambda h: torch.square(h),
    "scalar_pow": lambda h: 2 ** h,
    "abs": lambda h: h.abs(),
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "mish": F.mish,
    "softsign": F.softsign,
    "gelu_erf": F.gelu,
    "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    "gelu_by_hand": lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))),
    "tanh_gelu_by_hand": lambda h: 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3))),
    "logsumexp": lambda h: torch.cat([torch.logsumexp(h.view(h.shape[0], 2, 4), -1), h[:, 2:]], 1),
    "hardswish_": lambda h: F.hardswish(h, inplace=True),
    "hardsigmoid_": lambda h: F.hardsigmoid(h, inplace=True),
    "dropout_": lambda h: F.dropout(h, 0.3, training=False, inplace=True),
    "relu_": lambda h: h.relu_(),
    "sqrt_": lambda h: (h.abs() + 0.1).sqrt_(),
    "log_": lambda h: (h.abs() + 0.5).log_(),
}


class _Net(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.op = op
        self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.op(self.a(x)))


@pytest.mark.parametrize("name", list(OPS))
def test_elementwise_op_sums_to_delta_and_gradient_equals_autograd(name):
    torch.manual_seed(9)
    net = _Net(OPS[name]).double().eval()
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(4, 5, dtype=torch.float64, generator=gen) * 2
    r = torch.randn(4, 5, dtype=torch.float64, generator=gen)
    model = deeplift.convert(net, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)
        delta = net(x) - net(r)
    for method in METHODS:
        scores = deeplift.attribute(model, x, r, method=method, target="all")
        err = (scores.sum(-1) - delta).abs() / (1 + delta.abs())
        assert err.max().item() <= 1e-9, (method, err.max().item())
    got = deeplift.attribute(model, x, method="gradient", target="all")
    xx = x.clone().requires_grad_(True)
    out = net(xx)
    grads = torch.stack([torch.autograd.grad(out[:, t].sum(), xx, retain_graph=True)[0] for t in range(3)], 1)
    torch.testing.assert_close(got, grads, rtol=0, atol=1e-10)


@pytest.mark.parametrize("layer, f", [
    (deeplift.layers.Log(), torch.log), (deeplift.layers.Sqrt(), torch.sqrt),
    (deeplift.layers.Rsqrt(), torch.rsqrt), (deeplift.layers.Reciprocal(), torch.reciprocal),
    (deeplift.layers.Pow(3.0), lambda t: t ** 3), (deeplift.layers.Abs(), torch.abs),
    (deeplift.layers.Hardswish(), F.hardswish), (deeplift.layers.Mish(), F.mish),
])
def test_rescale_multiplier_is_the_ops_own_difference_quotient(layer, f):
    # one layer on its own: the multiplier of each element is (f(x) − f(r)) / (x − r)
    x = torch.tensor([[0.3, 1.7, 2.5, 4.0]], dtype=torch.float64)
    r = torch.tensor([[1.1, 0.2, 2.5 + 1e-3, 0.5]], dtype=torch.float64)
    inp = deeplift.layers.Input(shape=(4,), name="x", dtype=torch.float64)
    layer.name = "f"
    model = deeplift.Model([inp, layer.set_inputs(inp)])
    mult = deeplift.attribute(model, x, r, method="rescale", target=[0, 1, 2, 3]) / (x - r).unsqueeze(1)
    expected = (f(x) - f(r)) / (x - r)
    torch.testing.assert_close(torch.diagonal(mult[0]), expected[0], rtol=1e-12, atol=0)


def test_every_in_place_alias_of_an_op_with_a_rule_gets_that_rule():
    aten = torch.ops.aten
    for name in supported_ops():
        base = name.removeprefix("aten.")
        alias = getattr(aten, base + "_", None) if not base.endswith("_") else None
        if alias is not None:
            assert _rule_for(alias) is not None, name


def test_a_module_that_works_in_place_on_its_input_is_converted_without_changing_it():
    net = nn.Sequential(nn.Hardswish(inplace=True), nn.Linear(4, 2)).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    before = x.clone()
    deeplift.convert(net, x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)
