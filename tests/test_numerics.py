"""Numerical robustness: rounding noise must not turn into meaningless multipliers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import deeplift


def _model(dtype) -> deeplift.Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 5), nn.ReLU(), nn.Linear(5, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.rand(5, 20) + 0.1)  # all positive weights ...
        net[1].bias.fill_(300.0)                      # ... and a bias far larger than the differences
    return deeplift.convert(net.to(dtype).eval(), torch.zeros(2, 4, 5, dtype=dtype))


def test_reveal_cancel_multipliers_with_an_empty_positive_part_agree_between_float32_and_float64():
    # the reference is all ones, so every input difference is <= 0 and each hidden unit has no
    # positive part: the split must say exactly 0 there (not ±1 ulp of the large pre-activations),
    # or RevealCancel divides rounding noise by rounding noise — and the multipliers of inputs
    # equal to their reference (the observed bases here), which hypothetical scores use, get it
    rng = np.random.default_rng(1)
    onehot = np.eye(4)[rng.integers(0, 4, (8, 5))].transpose(0, 2, 1)
    ref = np.ones((1, 4, 5))
    out = {}
    for dtype, np_dtype in ((torch.float32, np.float32), (torch.float64, np.float64)):
        out[dtype] = deeplift.attribute(_model(dtype), onehot.astype(np_dtype), ref.astype(np_dtype),
                                        method="reveal_cancel", hypothetical=True)
    scale = np.abs(out[torch.float64]).max()
    np.testing.assert_allclose(out[torch.float32], out[torch.float64], atol=1e-4 * scale)


def test_hypothetical_scores_are_stable_when_parts_vanish():
    rng = np.random.default_rng(2)
    onehot = np.eye(4)[rng.integers(0, 4, (6, 12))].transpose(0, 2, 1)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv1d(4, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(30, 4), nn.ReLU(),
                        nn.Linear(4, 1))
    out = {}
    for dtype in (torch.float32, torch.float64):
        model = deeplift.convert(net.to(dtype).eval(), torch.zeros(2, 4, 12, dtype=dtype))
        out[dtype] = deeplift.attribute(model, onehot.astype(np.float32 if dtype == torch.float32 else np.float64),
                                        np.full((1, 4, 1), 0.25), method="genomics_default",
                                        hypothetical=True)
    scale = np.abs(out[torch.float64]).max()
    np.testing.assert_allclose(out[torch.float32], out[torch.float64], atol=1e-4 * scale)


def test_a_run_that_breaks_summation_to_delta_warns_and_names_the_example():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(4), nn.Flatten(), nn.Linear(6, 1))
    model = deeplift.convert(net.eval(), torch.zeros(2, 2, 10))
    x, ref = torch.randn(6, 2, 10), torch.randn(6, 2, 10)  # the reference's argmax differs from x's
    with pytest.warns(deeplift.SummationToDeltaWarning, match=r"example \d+, reference 0, target 0"):
        deeplift.attribute(model, x, ref, max_routing="gradient")
    with warnings.catch_warnings():
        warnings.simplefilter("error", deeplift.SummationToDeltaWarning)
        deeplift.attribute(model, x, ref)  # the default max-pool rule conserves: no warning
