"""Gradient-based methods against plain PyTorch autograd on random float64 models.

* ``gradient`` equals ``torch.autograd`` input gradients of each target logit;
* ``gradient_x_input`` equals those gradients times the input;
* ``guided_backprop`` equals a hook-based reference (ReLU backward hooks that zero negative
  gradients) on ReLU networks;
* ``integrated_gradients``' completeness error shrinks as ``steps`` grows.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch import nn

import deeplift
from random_models import RandomChooser, build_model, random_inputs, single_thread

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

#: the rest (fixed draws by default, fresh ones under -m slow) comes from conftest's profiles
PROPERTY_SETTINGS = settings(max_examples=25)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def autograd_input_gradients(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d logit_t / d x for every target t: (N, T, ...). Examples are independent, so the
    gradient of the batch sum of a logit is each example's own gradient."""
    xx = x.clone().requires_grad_(True)
    out = net(xx)
    grads = [torch.autograd.grad(out[:, t].sum(), xx, retain_graph=True)[0] for t in range(out.shape[1])]
    return torch.stack(grads, 1)


@contextlib.contextmanager
def guided_relu_hooks(net: nn.Module):
    """Guided backprop the textbook way: every ``nn.ReLU`` passes back only positive gradients.
    The hooks are removed on exit, whatever happens."""
    handles = []

    def hook(module, grad_input, grad_output):
        return (grad_input[0].clamp(min=0),)

    try:
        for m in net.modules():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_full_backward_hook(hook))
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def _random_case(seed: int, **kwargs):
    net, shape, desc = build_model(RandomChooser(seed), seed, **kwargs)
    note("\n".join(desc))
    x, r = random_inputs(shape, 3, seed)
    return net, x, r


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_gradient_equals_autograd_input_gradient_of_each_logit(seed):
    net, x, _ = _random_case(seed)
    model = deeplift.convert(net, x)
    expected = autograd_input_gradients(net, x)
    got = deeplift.attribute(model, x, method="gradient", target="all")
    assert got.shape == expected.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    # a single target gives that slice, without the target axis
    one = deeplift.attribute(model, x, method="gradient", target=1)
    torch.testing.assert_close(one, expected[:, 1], rtol=0, atol=1e-10)


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_gradient_x_input_equals_autograd_gradient_times_input(seed):
    net, x, _ = _random_case(seed)
    model = deeplift.convert(net, x)
    expected = autograd_input_gradients(net, x) * x[:, None]
    got = deeplift.attribute(model, x, method="gradient_x_input", target="all")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_guided_backprop_equals_relu_hook_reference_on_relu_nets(seed):
    net, x, _ = _random_case(seed, relu_only=True)
    model = deeplift.convert(net, x)
    with guided_relu_hooks(net):
        expected = autograd_input_gradients(net, x)
    assert all(not m._backward_hooks for m in net.modules())  # the reference cleaned up
    got = deeplift.attribute(model, x, method="guided_backprop", target="all")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_guided_backprop_differs_from_gradient_where_relus_see_negative_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    with guided_relu_hooks(net) as n_hooks:
        expected = autograd_input_gradients(net, x)
    assert n_hooks == 2
    guided = deeplift.attribute(net, x, method="guided_backprop", target="all")
    plain = deeplift.attribute(net, x, method="gradient", target="all")
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-10)
    assert (guided - plain).abs().max().item() > 1e-3


def test_deconvnet_through_a_per_channel_prelu_applies_each_channels_slope():
    """DeconvNet sends the multipliers through f itself; with a per-channel PReLU, channel c's
    slope applies to channel c of every target's and example's multipliers (the multipliers
    carry a target axis the layer's own shape does not have)."""
    torch.manual_seed(0)
    slopes = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    per_channel = nn.PReLU(3).double()
    with torch.no_grad():
        per_channel.weight.copy_(slopes)
    conv = nn.Conv1d(2, 3, 3, padding=1).double()
    net = nn.Sequential(conv, per_channel, nn.Flatten(), nn.Linear(3 * 5, 4)).double().eval()
    x = torch.randn(6, 2, 5, dtype=torch.float64)
    got = deeplift.attribute(net, x, method="deconvnet", target="all")
    # by hand: m at the PReLU's output is the head's weight row per target, then f(m), then conv^T
    head = net[3].weight.detach().reshape(4, 3, 5)
    m = torch.where(head > 0, head, head * slopes.reshape(3, 1))
    expected = torch.nn.functional.conv_transpose1d(m, conv.weight.detach(), padding=1)
    torch.testing.assert_close(got, expected.unsqueeze(0).expand(6, 4, 2, 5), rtol=0, atol=1e-12)


class _Smooth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.c(nn.functional.softplus(self.b(torch.tanh(self.a(x))) * 1.5))


def _ig_completeness_errors(net, model, x, r, steps_list):
    with torch.no_grad():
        delta = net(x) - net(r)
    errors = []
    for steps in steps_list:
        scores, returned = deeplift.attribute(model, x, r, method="integrated_gradients", steps=steps,
                                              target="all", return_delta=True)
        err = scores.flatten(2).sum(2) - delta
        torch.testing.assert_close(returned, err, rtol=0, atol=1e-10)  # return_delta agrees
        errors.append(err.abs().max().item())
    return errors


def test_integrated_gradients_completeness_error_shrinks_with_steps():
    torch.manual_seed(1)
    net = _Smooth().double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2
    r = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    model = deeplift.convert(net, x)
    e5, e20, e100 = _ig_completeness_errors(net, model, x, r, [5, 20, 100])
    assert e5 > e20 > e100
    assert e5 > 1e-4  # the model is curved enough for the check to mean something
    # the midpoint rule's error falls like 1/steps²: 25× from 20 to 100 steps, allow slack
    assert e100 < e20 / 10


@pytest.mark.parametrize("seed", [3, 11, 20])
def test_integrated_gradients_completeness_error_shrinks_on_random_smooth_models(seed):
    net, shape, desc = build_model(RandomChooser(seed), seed, smooth=True)
    x, r = random_inputs(shape, 3, seed)
    model = deeplift.convert(net, x)
    e5, e20, e100 = _ig_completeness_errors(net, model, x, r, [5, 20, 100])
    assert e5 > e20 > e100, desc
    assert e100 < e20 / 10, desc


def test_integrated_gradients_with_many_steps_approach_the_exact_path_integral():
    # f(x) = Σ w·x²: from the zero reference the exact integrated gradients are w·x²
    class Square(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1, bias=False)

        def forward(self, x):
            return self.lin(x * x)

    net = Square().double()
    with torch.no_grad():
        net.lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    scores = deeplift.attribute(net, x, method="integrated_gradients", steps=10)
    # the gradient 2·w·αx is linear in α, so the midpoint rule is exact at any number of steps
    torch.testing.assert_close(scores, net.lin.weight.detach() * x * x, rtol=0, atol=1e-12)
