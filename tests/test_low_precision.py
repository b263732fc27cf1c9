"""float16/bfloat16 models, the relative summation-to-delta warning, and a 10 kb sequence.

Low-precision models are scored through a float32 copy (``deeplift.precision``): the scores
equal those of the same weights in float32 and sum to Δ to float32 rounding, where bfloat16
arithmetic missed half of Δ (issue 13). The warning's tolerance is relative to the numbers
involved, so a missing half of a small Δ is reported.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import deeplift
from deeplift.conservation import ROUNDING_STEPS, allowed_error
from deeplift.graph import Model
from deeplift.layers import Dense, Input, ReLU
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]
#: summation-to-delta of the float32 pass: |Σ − Δ| ≤ SUM_RTOL·(|Δ| + Σ|scores|)
SUM_RTOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _dna_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 16, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4), nn.Flatten(),
                         nn.Linear(16 * 25, 32), nn.ReLU(), nn.Linear(32, 3)).eval()


def _one_hot(n: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4).permute(0, 2, 1).float()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_low_precision_model_scores_equal_float32_scores_of_its_weights(dtype, method):
    low = _dna_net().to(dtype)
    same_weights = copy.deepcopy(low).float()  # the low-precision weights, exactly, in float32
    x, r = _one_hot(6, 100, 1), torch.full((6, 4, 100), 0.25)
    model = deeplift.convert(low, x[:2].to(dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error", deeplift.SummationToDeltaWarning)
        scores, delta = deeplift.attribute(model, x.to(dtype), r.to(dtype), method=method,
                                           target=[0, 2], return_delta=True)
    expected = deeplift.attribute(deeplift.convert(same_weights, x[:2]), x, r, method=method,
                                  target=[0, 2])
    assert scores.dtype == torch.float32 and delta.dtype == torch.float32  # documented
    scale = expected.abs().max().item()
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5 * scale)
    with torch.no_grad():
        gap = (same_weights(x) - same_weights(r))[:, [0, 2]]  # Δ of the weights in float32
    err = scores.flatten(2).sum(2) - gap
    bound = SUM_RTOL * (gap.abs() + scores.abs().flatten(2).sum(2))
    assert (err.abs() <= bound).all(), f"{method} {dtype}: off by {err.abs().max():.3g}"
    assert ((delta - err).abs() <= bound).all()  # return_delta reports that same error
    assert model.dtype == dtype  # the user's model is not changed


def test_bfloat16_model_scores_sum_to_its_own_outputs_difference_to_bfloat16_rounding():
    low = _dna_net().to(torch.bfloat16)
    x, r = _one_hot(4, 100, 2).bfloat16(), torch.full((4, 4, 100), 0.25, dtype=torch.bfloat16)
    scores = deeplift.attribute(low, x, r, method="reveal_cancel")
    with torch.no_grad():
        fx, fr = low(x)[:, 0].float(), low(r)[:, 0].float()
    err = scores.flatten(1).sum(1) - (fx - fr)
    # what the bfloat16 forward itself rounds: a few units of 2^-8 of the outputs' size
    assert (err.abs() <= 4 * 2.0 ** -8 * (fx.abs() + fr.abs())).all()


def _halving_model() -> Model:
    """Input -> Dense -> a ReLU whose rule passes on only half of the multipliers -> Dense."""

    class HalvingReLU(ReLU):
        def backward(self, state, m_pos, m_neg):
            (p, n), = super().backward(state, m_pos, m_neg)
            return [(0.5 * p, None if n is None else 0.5 * n)]

    g = torch.Generator().manual_seed(0)
    inp = Input((6,), name="in")
    hidden = Dense(weight=torch.rand(5, 6, generator=g) + 0.1, bias=torch.zeros(5), name="h").set_inputs(inp)
    act = HalvingReLU(name="act").set_inputs(hidden)
    out = Dense(weight=torch.rand(1, 5, generator=g) + 0.1, bias=torch.zeros(1), name="out").set_inputs(act)
    return Model([inp, hidden, act, out])


@pytest.mark.parametrize("size", [1e-4, 1e-2, 10.0])
def test_missing_half_of_delta_warns_however_small_delta_is(size):
    model = _halving_model()
    x = torch.full((2, 6), size)
    # only the hidden ReLU (the broken rule) is nonlinear: the contributions add up to Δ/2
    with pytest.warns(deeplift.SummationToDeltaWarning, match=r"0\.5 of \|Δ\|.*example 0, reference 0"):
        scores = deeplift.attribute(model, x)
    with torch.no_grad():
        gap = model(x)[:, 0]
    torch.testing.assert_close(scores.sum(1), gap / 2, rtol=1e-5, atol=0)


def test_allowed_error_reports_half_of_delta_above_rounding_noise():
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        magnitude = torch.tensor([1.0, 1e3, 1e6], dtype=dtype)
        # any Δ more than 2·ROUNDING_STEPS rounding steps of the magnitude: half of it is reported
        delta = 2.5 * ROUNDING_STEPS * eps * magnitude
        assert (0.5 * delta > allowed_error(delta, magnitude, dtype)).all()
        # and float rounding of the magnitude itself stays allowed
        assert (8 * eps * magnitude < allowed_error(torch.zeros_like(delta), magnitude, dtype)).all()


class DilatedCNN(nn.Module):
    """One-hot (4, L) -> conv -> residual dilated convs (dilation 2..256) -> global mean -> head."""

    def __init__(self, channels: int = 8, n_dilated: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv1d(4, channels, 11, padding=5)
        self.dilated = nn.ModuleList(nn.Conv1d(channels, channels, 3, padding=2 ** i, dilation=2 ** i)
                                     for i in range(1, n_dilated + 1))
        self.head = nn.Linear(channels, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for conv in self.dilated:
            h = h + torch.relu(conv(h))
        return self.head(h.mean(-1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_10kb_sequence_through_a_dilated_cnn_sums_to_delta(dtype):
    torch.manual_seed(0)
    net = DilatedCNN().to(dtype).eval()
    x = _one_hot(2, 10_000, 3).to(dtype)
    r = torch.stack([x[:, :, torch.randperm(10_000)] for _ in range(1)])[0]  # shuffled references
    model = deeplift.convert(net, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", deeplift.SummationToDeltaWarning)
        scores = deeplift.attribute(model, x, r, method="genomics_default", target="all")
    with torch.no_grad():
        gap = net(x) - net(r)
    err = scores.flatten(2).sum(2) - gap
    # float64: 1e-9 relative, as every summation test; float32: SUM_RTOL of the summed magnitudes
    rtol = 1e-9 if dtype == torch.float64 else SUM_RTOL
    bound = rtol * (gap.abs() + scores.abs().flatten(2).sum(2))
    assert scores.shape == (2, 2, 4, 10_000)
    assert (err.abs() <= bound).all(), f"off by {err.abs().max():.3g} (Δ up to {gap.abs().max():.3g})"
