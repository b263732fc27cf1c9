"""User-registered rules (``deeplift.rules``) are first-class: an op of the user's gets a layer
that goes through the same checks as the built-in ones."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import deeplift
from deeplift import rules
from deeplift.errors import UnsupportedLayerError
from deeplift.layers import Elementwise


@torch.library.custom_op("deeplift_test::softclip", mutates_args=())
def softclip(x: Tensor) -> Tensor:
    """x / (1 + |x|): an elementwise nonlinearity torch.export keeps as one opaque op."""
    return x / (1 + x.abs())


@softclip.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


def softclip_grad(x: Tensor) -> Tensor:
    return 1 / (1 + x.abs()) ** 2


def _setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad: Tensor) -> Tensor:
    (x,) = ctx.saved_tensors
    return grad * softclip_grad(x)


softclip.register_autograd(_backward, setup_context=_setup)


class SoftclipNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3)
        self.fc = nn.Linear(6 * 10, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.ops.deeplift_test.softclip(self.conv(x)).flatten(1)
        return self.out(torch.ops.deeplift_test.softclip(self.fc(h)))


@pytest.fixture
def registered():
    rules.register_op(torch.ops.deeplift_test.softclip,
                      lambda: Elementwise(lambda x: x / (1 + x.abs()), softclip_grad))
    yield
    rules.unregister_op(torch.ops.deeplift_test.softclip)


@pytest.fixture
def net():
    torch.manual_seed(3)
    return SoftclipNet().double().eval()


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_an_unregistered_custom_op_is_a_named_error(net):
    with pytest.raises(UnsupportedLayerError, match="deeplift_test.softclip"):
        deeplift.convert(net, _randn(2, 4, 12, seed=0))


@pytest.mark.parametrize("method", ["rescale", "reveal_cancel", "genomics_default"])
def test_a_registered_elementwise_op_sums_to_delta(registered, net, method):
    x, r = _randn(7, 4, 12, seed=1), _randn(7, 4, 12, seed=2)
    model = deeplift.convert(net, x[:2])
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-12)
        delta = net(x) - net(r)
    scores, err = deeplift.attribute(model, x, r, method=method, target="all", return_delta=True)
    totals = scores.flatten(2).sum(2)
    assert torch.allclose(totals, delta, rtol=0, atol=1e-9 * (1 + delta.abs().max().item()))
    assert err.abs().max() <= 1e-9 * (1 + delta.abs().max().item())


def test_a_registered_elementwise_op_gives_autograd_gradients(registered, net):
    x = _randn(5, 4, 12, seed=4)
    model = deeplift.convert(net, x[:2])
    ours = deeplift.attribute(model, x, method="gradient", target=1)
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(net(xg)[:, 1].sum(), xg)
    assert torch.allclose(ours, expected, atol=1e-12)


def test_rescale_of_a_registered_op_is_its_secant_slope(registered):
    """One layer y = softclip(x): Rescale's multiplier is (f(x) − f(r)) / (x − r), from the
    definition, elementwise."""

    class One(nn.Module):
        def forward(self, x):
            return torch.ops.deeplift_test.softclip(x).sum(1, keepdim=True)

    x, r = _randn(6, 5, seed=5), _randn(6, 5, seed=6)
    model = deeplift.convert(One().double(), x[:2])
    scores = deeplift.attribute(model, x, r, method="rescale")
    slope = (softclip(x) - softclip(r)) / (x - r)
    assert torch.allclose(scores, slope * (x - r), atol=1e-13)


def test_a_user_nonlinearity_rule_is_registered_by_name_like_the_built_ins():
    assert {"rescale", "reveal_cancel", "gradient"} <= set(rules.nonlinearity_rule_names())
    with pytest.raises(TypeError, match="split"):
        rules.register_nonlinearity_rule("broken", object())
    with pytest.raises(ValueError, match="unknown nonlinearity rule 'nope'"):
        rules.nonlinearity_rule("nope")


def test_a_builder_that_returns_no_layer_is_a_named_error(net):
    rules.register_op(torch.ops.deeplift_test.softclip, lambda: "not a layer")
    try:
        with pytest.raises(UnsupportedLayerError, match="returned str, not a deeplift Layer"):
            deeplift.convert(net, _randn(2, 4, 12, seed=0))
    finally:
        rules.unregister_op(torch.ops.deeplift_test.softclip)
