"""Integrated gradients: ``batch_size`` bounds the rows of every forward pass whatever ``steps`` is
(issue 13: steps=8000 used to allocate memory proportional to steps), the Riemann sum accumulated
over chunks of steps equals the sum written straight from its definition with autograd, and the
return_delta check does not run the whole path twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch import nn

import deeplift
from random_models import RandomChooser, build_model, random_inputs


def _net() -> nn.Module:
    """Starts with a linear stem (a convolution), which integrated gradients runs once per pair."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.Softplus(), nn.MaxPool1d(2), nn.Flatten(),
                         nn.Linear(5 * 4, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()


class _Residual(nn.Module):
    """The input feeds two layers: no linear stem."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv1d(3, 3, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(24, 5), nn.ReLU(), nn.Linear(5, 2))

    def forward(self, x):
        return self.head(torch.nn.functional.softplus(self.conv(x)) + x)


def _stem_of_two_dense_layers() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Flatten(), nn.Linear(24, 10), nn.Linear(10, 6), nn.ELU(),
                         nn.Linear(6, 2)).double().eval()


def _autograd_midpoint_ig(net: nn.Module, x: torch.Tensor, r: torch.Tensor, steps: int,
                          target: int) -> torch.Tensor:
    """Σ_k ∇f(r + (k+½)/steps·(x−r)) / steps · (x − r), one step at a time (the definition)."""
    total = torch.zeros_like(x)
    for k in range(steps):
        p = (r + (k + 0.5) / steps * (x - r)).requires_grad_(True)
        (g,) = torch.autograd.grad(net(p)[:, target].sum(), p)
        total += g
    return total / steps * (x - r)


@pytest.fixture(scope="module")
def setup():
    net = _net()
    model = deeplift.convert(net, torch.zeros(2, 3, 8, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 8, dtype=torch.float64, generator=g)
    r = torch.randn(3, 3, 8, dtype=torch.float64, generator=g)
    return net, model, x, r


def _rows_per_forward(model, monkeypatch) -> list[int]:
    rows: list[int] = []
    forward_all = model.forward_all

    def counting(inputs, *args, **kwargs):
        given = list((kwargs.get("given") or {}).values())  # a linear stem's interpolated outputs
        rows.append(max(int(t.shape[0]) for t in [*inputs, *given]))
        return forward_all(inputs, *args, **kwargs)

    monkeypatch.setattr(model, "forward_all", counting)
    return rows


@pytest.mark.parametrize("batch_size, steps", [(1, 30), (7, 100), (500, 8000)])
def test_integrated_gradients_forward_rows_are_bounded_by_batch_size_for_any_steps(
        setup, monkeypatch, batch_size, steps):
    net, model, x, r = setup
    model(x[:1])  # the model knows its layer shapes: no one-example shape probe below
    rows = _rows_per_forward(model, monkeypatch)
    scores = deeplift.attribute(model, x[:2], r[:2], method="integrated_gradients", steps=steps,
                                batch_size=batch_size)
    assert max(rows) <= batch_size
    # every interpolation point once, none twice (from the conv stem on), plus each pair's
    # example and reference once through the stem
    assert sum(rows) == 2 * steps + 2 * 2
    if steps <= 100:
        expected = _autograd_midpoint_ig(net, x[:2], r[:2], steps, 0)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    else:  # a small model lets all 16000 points go in one pass, for comparison
        monkeypatch.undo()
        at_once = deeplift.attribute(model, x[:2], r[:2], method="integrated_gradients",
                                     steps=steps, batch_size=2 * steps)
        np.testing.assert_allclose(scores, at_once, rtol=0, atol=1e-12)


def _stem_of_a_global_average_pool() -> nn.Module:
    # its transpose hands back expanded (broadcast) multipliers
    torch.manual_seed(7)
    return nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 5), nn.Tanh(),
                         nn.Linear(5, 2)).double().eval()


@pytest.mark.parametrize("make_net", [_net, lambda: _Residual().double().eval(),
                                      _stem_of_two_dense_layers, _stem_of_a_global_average_pool],
                         ids=["conv_stem", "no_stem", "dense_stem", "pool_stem"])
def test_integrated_gradients_in_chunks_equal_the_riemann_sum_by_definition(setup, make_net):
    _, _, x, r = setup
    net = make_net()
    model = deeplift.convert(net, x[:2])
    steps = 37  # not a multiple of any chunk size below
    expected = _autograd_midpoint_ig(net, x, r, steps, 1)
    for batch_size in (5, 40, 111, 10_000):  # chunks of steps, one pair per batch, all at once
        got = deeplift.attribute(model, x, r, method="integrated_gradients", steps=steps,
                                 batch_size=batch_size, target=1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=f"batch_size={batch_size}")


def test_integrated_gradients_delta_adds_one_forward_of_examples_and_references(setup, monkeypatch):
    net, model, x, r = setup
    model(x[:1])  # the model knows its layer shapes: no one-example shape probe below
    rows = _rows_per_forward(model, monkeypatch)
    scores, delta = deeplift.attribute(model, x, r, method="integrated_gradients", steps=20,
                                       batch_size=1000, return_delta=True)
    # x and r through the linear stem, the path once (from the stem on), then x and r together
    assert rows == [3, 3, 3 * 20, 3 + 3]
    with torch.no_grad():
        gap = net(x)[:, 0] - net(r)[:, 0]
    np.testing.assert_allclose(delta, scores.sum((1, 2)) - gap, rtol=0, atol=1e-12)


def test_integrated_gradients_interpolate_after_a_stem_of_convolution_batch_norm_and_pooling():
    # every layer before the ReLU is affine: the path is interpolated after the average pool,
    # so neither the convolution nor the batch norm runs on the 37 interpolation points
    torch.manual_seed(6)
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()  # some negative scales
        bn.bias.normal_()
    net = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), bn, nn.AvgPool1d(2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16, 2)).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 8, dtype=torch.float64, generator=g)
    r = torch.randn(3, 3, 8, dtype=torch.float64, generator=g)
    model = deeplift.convert(net, x[:2])
    rows_seen: dict[str, list[int]] = {}
    for name, layer in model.layers.items():
        if type(layer).__name__ in ("Conv", "BatchNorm", "AvgPool", "ReLU"):
            def counting(t, _forward=layer.forward, _name=type(layer).__name__):
                rows_seen.setdefault(_name, []).append(int(t.shape[0]))
                return _forward(t)
            layer.forward = counting
    steps = 37
    got = deeplift.attribute(model, x, r, method="integrated_gradients", steps=steps,
                             batch_size=40, target=1)
    np.testing.assert_allclose(got, _autograd_midpoint_ig(net, x, r, steps, 1), rtol=0, atol=1e-12)
    assert max(rows_seen["BatchNorm"]) <= len(x) and max(rows_seen["Conv"]) <= len(x)
    assert sum(rows_seen["ReLU"]) == steps * len(x)  # the first layer after the stem: every point


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_integrated_gradients_equal_the_riemann_sum_by_definition_on_random_models(seed):
    """Whatever affine layers the model starts with (the stem interpolated and taken backward
    once per pair), and whatever follows: the midpoint sum of autograd's gradients, step by
    step, on the random-model zoo (smooth activations: no kink for rounding to cross)."""
    net, shape, desc = build_model(RandomChooser(seed), seed, smooth=True)
    note("\n".join(desc))
    x, r = random_inputs(shape, 2, seed)
    model = deeplift.convert(net, x)
    got = deeplift.attribute(model, x, r, method="integrated_gradients", steps=3, target=0,
                             batch_size=4)
    np.testing.assert_allclose(got, _autograd_midpoint_ig(net, x, r, 3, 0), rtol=1e-9, atol=1e-12)
