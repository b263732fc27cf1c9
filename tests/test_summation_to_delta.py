"""Summation-to-delta: DeepLIFT contributions at the inputs sum to target(x) − target(reference).

Property-based over random float64 PyTorch models (``random_models.py``) built from random stacks
of every supported layer, with random inputs and random non-uniform references (a different one
per example). The delta is computed independently, by running the original torch module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch import nn

import deeplift
import random_models
from random_models import HypothesisChooser, RandomChooser, build_model, random_inputs, single_thread

DEEPLIFT_METHODS = ["rescale", "reveal_cancel", "genomics_default"]
TOL = 1e-9

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


#: the rest (fixed draws by default, fresh ones under -m slow) comes from conftest's profiles
PROPERTY_SETTINGS = settings(max_examples=40)


def _torch_delta(net: nn.Module, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """target(x) − target(r) for every logit, from the original module: (N, T)."""
    with torch.no_grad():
        return net(x) - net(r)


def _assert_sums_to(scores: torch.Tensor, delta: torch.Tensor, what: str) -> torch.Tensor:
    """scores (N, T, ...) against delta (N, T); returns the per (example, target) error."""
    err = scores.flatten(2).sum(2) - delta
    bound = TOL * (1 + delta.abs())
    worst = (err.abs() / bound).max().item()
    assert worst <= 1, (f"{what}: summation-to-delta off by {err.abs().max().item():.3g} "
                        f"(delta up to {delta.abs().max().item():.3g})")
    return err


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_deeplift_methods_sum_to_delta_on_random_models(seed):
    # the structure comes from a seeded random.Random: Hypothesis' own draws favour tiny models,
    # a seed gives every example the whole zoo (and a failure is reproducible from its seed)
    net, shape, desc = build_model(RandomChooser(seed), seed)
    note("\n".join(desc))
    x, r = random_inputs(shape, 3, seed)
    model = deeplift.convert(net, x)
    with torch.no_grad():  # the converted forward equals the module's
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-10)
    delta = _torch_delta(net, x, r)
    assert delta.shape[1] >= 2
    for method in DEEPLIFT_METHODS:
        scores, returned = deeplift.attribute(model, x, r, method=method, target="all",
                                              return_delta=True)
        assert scores.dtype == torch.float64
        assert scores.shape == (3, delta.shape[1], *shape)
        err = _assert_sums_to(scores, delta, method)
        # return_delta reports the same error, computed from the library's own pass
        assert returned.shape == err.shape
        assert ((returned - err).abs() <= TOL * (1 + delta.abs())).all(), method


@PROPERTY_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_single_target_contributions_sum_to_that_logits_delta(data, seed):
    net, shape, desc = build_model(HypothesisChooser(data), seed)
    note("\n".join(desc))
    x, r = random_inputs(shape, 2, seed)
    model = deeplift.convert(net, x)
    delta = _torch_delta(net, x, r)
    target = data.draw(st.integers(0, delta.shape[1] - 1))
    method = data.draw(st.sampled_from(DEEPLIFT_METHODS))
    scores = deeplift.attribute(model, x.numpy(), r.numpy(), method=method, target=target)
    assert isinstance(scores, np.ndarray) and scores.shape == (2, *shape)
    _assert_sums_to(torch.from_numpy(scores)[:, None], delta[:, target:target + 1], method)


# ---------------------------------------------------------------------------------------------
# max pooling when the reference's argmax sits elsewhere


class _PoolThenSum(nn.Module):
    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool
        self.out = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.out.weight.fill_(1.0)

    def forward(self, x):
        return self.out(self.pool(x).flatten(1).sum(1, keepdim=True))


def test_maxpool_with_moved_argmax_conserves_delta_and_gradient_routing_does_not():
    # one window of two: the input's max is at 0, the reference's at 1
    net = _PoolThenSum(nn.MaxPool1d(2)).double()
    x = torch.tensor([[[3.0, 1.0]]], dtype=torch.float64)
    r = torch.tensor([[[0.0, 2.0]]], dtype=torch.float64)
    model = deeplift.convert(net, x)
    # Δy = 3 − 2 = 1; λ = (3−1)/((3−1)+(2−0)) = 1/2 → contributions 3/2 and (1−2)/2
    for method in DEEPLIFT_METHODS:
        scores = deeplift.attribute(model, x, r, method=method)
        torch.testing.assert_close(scores, torch.tensor([[[1.5, -0.5]]], dtype=torch.float64))
        assert scores.sum().item() == pytest.approx(1.0, abs=1e-12)
    # the original library's rule: everything to the input's argmax, 3 ≠ Δy = 1
    scores, err = deeplift.attribute(model, x, r, max_routing="gradient", return_delta=True)
    torch.testing.assert_close(scores, torch.tensor([[[3.0, 0.0]]], dtype=torch.float64))
    assert err.item() == pytest.approx(2.0)


def _conserving_pool_then_sum_scores(x: torch.Tensor, r: torch.Tensor, k: int) -> torch.Tensor:
    """The conserving rule from its definition, window by window, for non-overlapping 1-d windows
    of size k followed by a sum: λ·Δx_i to the input's argmax i, (1−λ)·Δx_j to the reference's j
    (first maxima, as PyTorch picks them)."""
    scores = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for w in range(x.shape[2] // k):
                xs, rs = x[b, c, w * k:(w + 1) * k].tolist(), r[b, c, w * k:(w + 1) * k].tolist()
                i, j = xs.index(max(xs)), rs.index(max(rs))
                gap_x, gap_r = xs[i] - xs[j], rs[j] - rs[i]
                lam = 1.0 if gap_x + gap_r == 0 else gap_x / (gap_x + gap_r)
                scores[b, c, w * k + i] += lam * (xs[i] - rs[i])
                scores[b, c, w * k + j] += (1 - lam) * (xs[j] - rs[j])
    return scores


@pytest.mark.parametrize("reference", ["constant", "at the input's argmax", "moved argmax"])
def test_max_pooling_matches_the_conserving_rule_from_its_definition(reference):
    # the first two references put the reference at its window's maximum wherever the input's
    # argmax is (λ = 1 in every window: routed to the input's argmax alone); the last moves it
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((4, 3, 12), generator=gen, dtype=torch.float64)
    if reference == "constant":
        r = torch.full_like(x, 0.3)
    else:
        r = torch.randn((4, 3, 12), generator=gen, dtype=torch.float64)
        if reference == "at the input's argmax":
            windows = r.view(4, 3, 4, 3)
            _, i = x.view(4, 3, 4, 3).max(3, keepdim=True)
            windows.scatter_(3, i, windows.amax(3, keepdim=True) + 1.0)
    expected = _conserving_pool_then_sum_scores(x, r, 3)
    net = _PoolThenSum(nn.MaxPool1d(3)).double()
    model = deeplift.convert(net, x)
    for method in DEEPLIFT_METHODS:
        scores = deeplift.attribute(model, x, r, method=method)
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-12)
    moved = (expected != 0).sum().item() - (x.numel() // 3)
    assert moved == 0 if reference != "moved argmax" else moved > 0


@pytest.mark.parametrize("windows", ["one value per window", "values vary in a window"])
def test_max_pooling_with_one_shared_reference_row_matches_the_definition(windows):
    # a reference given as one row is shared by every example: the routing decides from that row
    # whether each window holds one value (then λ = 1 everywhere, whatever the inputs) or must
    # compare it with every example's argmax
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((6, 2, 12), generator=gen, dtype=torch.float64)
    r = torch.randn((1, 2, 4), generator=gen, dtype=torch.float64).repeat_interleave(3, dim=2)
    if windows == "values vary in a window":
        r[0, 1, 4] += 10.0  # the reference's maximum of this window moves off most argmaxes
    expected = _conserving_pool_then_sum_scores(x, r.expand_as(x), 3)
    model = deeplift.convert(_PoolThenSum(nn.MaxPool1d(3)).double(), x)
    for method in DEEPLIFT_METHODS:
        scores = deeplift.attribute(model, x, r, method=method)
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-12)
    moved = (expected != 0).sum().item() - (x.numel() // 3)
    assert moved == 0 if windows == "one value per window" else moved > 0


def test_global_max_with_tied_inputs_and_a_constant_reference_routes_to_one_maximum():
    # DeepLIFT's conserving rule: Δy = x_i − c goes to one maximum (the first), not shared like
    # the gradient of amax; either way the contributions sum to Δy
    class GlobalMax(nn.Module):
        def forward(self, x):
            return x.amax(dim=2)

    x = torch.tensor([[[1.0, 4.0, 4.0, 2.0]]], dtype=torch.float64)
    model = deeplift.convert(GlobalMax().double(), x)
    scores = deeplift.attribute(model, x, torch.full_like(x, 0.5))
    torch.testing.assert_close(scores, torch.tensor([[[0.0, 3.5, 0.0, 0.0]]], dtype=torch.float64))
    shared = deeplift.attribute(model, x, torch.full_like(x, 0.5), max_routing="gradient")
    torch.testing.assert_close(shared, torch.tensor([[[0.0, 1.75, 1.75, 0.0]]], dtype=torch.float64))


#: max pools with padding, ceil_mode windows, dilation, 3-d and a global maximum
OVERLAPPING_POOLS = [
    nn.MaxPool1d(3, stride=2, padding=1),
    nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    nn.MaxPool2d(2, stride=1, dilation=2),
    nn.MaxPool3d(2, stride=1),
    nn.AdaptiveMaxPool2d(1),
]
OVERLAPPING_POOL_IDS = ["maxpool1d", "maxpool2d_ceil", "maxpool2d_dilated", "maxpool3d", "adaptive_max"]


@pytest.mark.parametrize("pool", OVERLAPPING_POOLS, ids=OVERLAPPING_POOL_IDS)
def test_overlapping_max_pooling_sums_to_delta_for_any_reference(pool):
    nd = {nn.MaxPool1d: 1, nn.MaxPool3d: 3}.get(type(pool), 2)
    net = _PoolThenSum(pool).double()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn((8, 2, *[6] * nd), generator=gen, dtype=torch.float64)
    r = torch.randn((8, 2, *[6] * nd), generator=gen, dtype=torch.float64)
    model = deeplift.convert(net, x)
    delta = _torch_delta(net, x, r)
    for method in DEEPLIFT_METHODS:
        scores = deeplift.attribute(model, x, r, method=method)
        _assert_sums_to(scores[:, None], delta, method)
    # with random references the argmaxes differ in many windows: the gradient rule is off
    scores = deeplift.attribute(model, x, r, max_routing="gradient")
    err = (scores.flatten(1).sum(1) - delta[:, 0]).abs()
    assert err.max().item() > 0.1
    assert (err > 1e-6).sum().item() >= 4


@pytest.mark.parametrize("pool", OVERLAPPING_POOLS, ids=OVERLAPPING_POOL_IDS)
@pytest.mark.parametrize("reference", ["constant", "random"])
def test_max_pooling_with_a_shared_reference_row_scores_as_with_that_row_per_example(pool, reference):
    # one reference row is routed from that row alone (one value per window: λ = 1 everywhere);
    # the same row given once per example goes through the per-pair routing: the same scores,
    # padding, ceil_mode windows, dilation and global maxima included
    nd = {nn.MaxPool1d: 1, nn.MaxPool3d: 3}.get(type(pool), 2)
    net = _PoolThenSum(pool).double()
    gen = torch.Generator().manual_seed(11)
    x = torch.randn((8, 2, *[6] * nd), generator=gen, dtype=torch.float64)
    row = (torch.full((1, 2, *[6] * nd), 0.3, dtype=torch.float64) if reference == "constant"
           else torch.randn((1, 2, *[6] * nd), generator=gen, dtype=torch.float64))
    model = deeplift.convert(net, x)
    delta = _torch_delta(net, x, row.expand_as(x))
    for method in DEEPLIFT_METHODS:
        shared = deeplift.attribute(model, x, row, method=method)
        per_example = deeplift.attribute(model, x, row.expand_as(x).contiguous(), method=method)
        torch.testing.assert_close(shared, per_example, rtol=0, atol=1e-12)
        _assert_sums_to(shared[:, None], delta, method)


def test_global_max_with_moved_argmax_conserves_delta_and_gradient_routing_does_not():
    class GlobalMax(nn.Module):
        def forward(self, x):
            return x.amax(dim=2) * 2.0

    net = GlobalMax().double()
    x = torch.tensor([[[5.0, 0.0, 1.0]]], dtype=torch.float64)
    r = torch.tensor([[[0.0, 4.0, 1.0]]], dtype=torch.float64)
    model = deeplift.convert(net, x)
    scores = deeplift.attribute(model, x, r)
    # Δ = 2·(5 − 4) = 2; λ = (5−0)/((5−0)+(4−0)) = 5/9
    expected = torch.tensor([[[2 * 5 / 9 * 5, 2 * 4 / 9 * -4, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(scores, expected)
    assert scores.sum().item() == pytest.approx(2.0, abs=1e-12)
    gradient_rule = deeplift.attribute(model, x, r, max_routing="gradient")
    assert gradient_rule.sum().item() == pytest.approx(10.0)


@pytest.mark.parametrize("signs", ["positive", "negative", "mixed with zeros"])
def test_batch_norm_split_and_multipliers_equal_the_signed_scale_definition(signs):
    # a⁺·Δx⁺ + a⁻·Δx⁻ and a⁺·Δx⁻ + a⁻·Δx⁺ (a negative scale swaps the parts), and the same
    # for the multipliers going back, written straight from the definition
    from deeplift.layers.linear import BatchNorm

    gen = torch.Generator().manual_seed(11)
    weight = {"positive": torch.tensor([0.5, 2.0, 1.0, 3.0]),
              "negative": torch.tensor([-0.5, -2.0, -1.0, -3.0]),
              "mixed with zeros": torch.tensor([0.5, -2.0, 0.0, 3.0])}[signs].double()
    layer = BatchNorm(torch.randn(4, generator=gen, dtype=torch.float64), torch.rand(4, generator=gen,
                      dtype=torch.float64) + 0.5, weight, torch.randn(4, generator=gen, dtype=torch.float64))
    layer.inputs = ["previous"]
    d = torch.randn(5, 4, 6, generator=gen, dtype=torch.float64)
    p, n = d.clamp(min=0), d.clamp(max=0)

    class SplitOnly:
        def split(self, name):
            assert name == "previous"
            return p, n

    a = (weight / torch.sqrt(layer.running_var + layer.eps)).reshape(4, 1)
    ap, an = a.clamp(min=0), a.clamp(max=0)
    got_p, got_n = layer.split(SplitOnly())
    torch.testing.assert_close(got_p, ap * p + an * n, rtol=0, atol=0)
    torch.testing.assert_close(got_n, ap * n + an * p, rtol=0, atol=0)
    assert (got_p >= 0).all() and (got_n <= 0).all()
    m_pos, m_neg = torch.randn(2, 5, 4, 6, generator=gen, dtype=torch.float64).unbind(0)
    [(back_p, back_n)] = layer.backward(None, m_pos[None], m_neg[None])
    torch.testing.assert_close(back_p, (ap * m_pos + an * m_neg)[None], rtol=0, atol=0)
    torch.testing.assert_close(back_n, (ap * m_neg + an * m_pos)[None], rtol=0, atol=0)


def test_reveal_cancel_sums_to_delta_when_one_part_of_the_difference_is_near_zero():
    # Δz = Δz⁺ + Δz⁻ with Δz⁺ = 5e-8 (below near_zero) and Δz⁻ = −1 into a curved tanh: the
    # multiplier of the tiny part must be the limit ½[f'(r) + f'(r + Δz⁻)] of Δy⁺/Δz⁺, not f'(r)
    net = nn.Sequential(nn.Linear(2, 1, bias=False), nn.Tanh(), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].weight.fill_(1.0)
    r = torch.zeros(1, 2, dtype=torch.float64)
    x = torch.tensor([[5e-8, 1.0]], dtype=torch.float64)
    model = deeplift.convert(net, x)
    scores = deeplift.attribute(model, x, r, method="reveal_cancel")
    delta = _torch_delta(net, x, r)
    assert abs(scores.sum().item() - delta.item()) < 1e-14
    slope = 0.5 * (1 + (1 - math.tanh(-1.0) ** 2))
    assert scores[0, 0].item() == pytest.approx(slope * 5e-8, rel=1e-6)


def test_residual_concat_and_gating_sum_to_delta_with_reveal_cancel():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 5), nn.Linear(5, 4), nn.Linear(5, 4)
            self.out = nn.Linear(9, 3)

        def forward(self, x):
            h = x + torch.relu(self.a(x))
            g = self.b(h) * torch.sigmoid(self.c(h))
            return self.out(torch.cat([torch.tanh(h), g], dim=1))

    torch.manual_seed(3)
    net = Net().double().eval()
    x, r = random_inputs((5,), 16, 3)
    model = deeplift.convert(net, x)
    delta = _torch_delta(net, x, r)
    for method in DEEPLIFT_METHODS:
        _assert_sums_to(deeplift.attribute(model, x, r, method=method, target="all"), delta, method)


def test_random_model_zoo_covers_every_layer_kind():
    """The generator behind the properties really produces every supported layer."""
    text, modules = "", []
    for seed in range(100):
        net, shape, desc = build_model(RandomChooser(seed), seed)
        text += repr(net) + " "
        modules += list(net.modules())
    for needle in ["Conv1d", "Conv2d", "Conv3d", "padding=same", "groups=", "dilation=(2",
                   "stride=(2", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "MaxPool1d",
                   "MaxPool2d", "MaxPool3d", "ceil_mode=True", "AvgPool1d", "AvgPool2d",
                   "AvgPool3d", "AdaptiveAvgPool", "AdaptiveMaxPool", "amax", "x.mean", "x.sum",
                   "Flatten", "x.view(x.size(0), -1)", "reshape", "transpose", "permute", "F.pad",
                   "x[:, 1:]", "ChannelIndex", "unsqueeze", "Dropout", "Residual", "InplaceResidual",
                   "CatBlock", "Gate", "x * ", "x / ", "SoftmaxHidden", "ReLU()", "F.relu",
                   "x.relu()", "LeakyReLU", "PReLU", "ELU", "SELU", "sigmoid", "tanh", "Softplus",
                   "SiLU", "GELU(approximate='none')", "GELU(approximate='tanh')", "exp"]:
        assert needle in text, needle
    avg = [m for m in modules if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))]
    assert any(not m.count_include_pad for m in avg) and any(m.ceil_mode for m in avg)
    convs = [m for m in modules if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    assert any(m.padding == "same" and any(k % 2 == 0 for k in m.kernel_size) for m in convs)
    assert any(m.groups > 1 for m in convs)
    bns = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert any((m.weight < 0).any() for m in bns)
    assert any(isinstance(m, random_models.ChannelIndex) and m.use_index_select for m in modules)


def test_random_model_zoo_covers_the_normalisations_attention_and_elementwise_ops():
    """The properties above see LayerNorm/RMSNorm/GroupNorm/InstanceNorm, attention in each
    spelling and mask, and the elementwise ops of issue 9."""
    text = " ".join(repr(build_model(RandomChooser(seed), seed)[0]) for seed in range(100))
    for needle in ["LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm", "style=sdpa", "style=manual",
                   "style=einsum", "mask=causal", "mask=bool", "mask=float", "mask=None", "Hardswish",
                   "Hardsigmoid", "Mish", "Softsign", "Abs", "torch.log", "logsumexp", "inplace=True"]:
        assert needle in text, needle
    ops = [op for op in random_models._ELEMENTWISE if op in text]
    assert len(ops) >= len(random_models._ELEMENTWISE) - 3, ops  # (each one: test_elementwise.py)


def test_node_deltas_are_rounding_for_exact_rules_and_name_a_leaking_layer():
    from deeplift import layers
    from deeplift.graph import Model

    torch.manual_seed(0)
    inp = layers.Input((6,), name="x")
    dense = layers.Dense(torch.randn(5, 6, dtype=torch.float64), torch.randn(5, dtype=torch.float64),
                         name="dense").set_inputs(inp)
    act = layers.Tanh(name="tanh").set_inputs(dense)

    class HalfRescale(layers.Tanh):
        """Tanh whose backward drops half the multiplier: it breaks conservation by design."""

        def backward(self, state, m_pos, m_neg):
            (p, n), = super().backward(state, m_pos, m_neg)
            return [(0.5 * p, None if n is None else 0.5 * n)]

    leak = HalfRescale(name="leak").set_inputs(act)
    out = layers.Dense(torch.randn(2, 5, dtype=torch.float64), name="out").set_inputs(leak)
    model = Model([inp, dense, act, leak, out])
    x = torch.randn(4, 6, dtype=torch.float64)
    r = torch.randn(4, 6, dtype=torch.float64)
    for method in ("rescale", "reveal_cancel", "genomics_default"):
        with pytest.warns(deeplift.SummationToDeltaWarning):
            _, nodes = deeplift.attribute(model, x, r, method=method, target="all",
                                          return_node_deltas=True)
        assert list(nodes) == ["dense", "tanh", "leak", "out"]
        assert nodes.worst()[0] == "leak" and nodes["leak"] > 0.01
        assert max(nodes["dense"], nodes["tanh"], nodes["out"]) < 1e-12
        assert "leak" in str(nodes).splitlines()[1]
    with pytest.raises(deeplift.InputError, match="return_node_deltas needs a DeepLIFT method"):
        deeplift.attribute(model, x, method="gradient", return_node_deltas=True)
