"""``deeplift.convert``: every PyTorch pattern of DESIGN.md converts, runs forward like the module
and satisfies summation-to-delta; unsupported ops fail loudly, naming the op and the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeplift
from deeplift.frontends.torch import convert_cached
from deeplift.layers import Add, Concat, Dense, Mul, ReLU, Reduce, Reshape
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]

pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def check_converts_exactly(net: nn.Module, inputs, refs=None, n_targets=None) -> deeplift.Model:
    """Convert; forward equals the module's; every DeepLIFT method sums to delta for all targets
    of the first output (delta from the module itself)."""
    inputs = _as_tuple(inputs)
    refs = _as_tuple(refs) if refs is not None else tuple(
        _randn(*x.shape, seed=100 + i) for i, x in enumerate(inputs))
    model = deeplift.convert(net, inputs if len(inputs) > 1 else inputs[0])
    with torch.no_grad():
        expected = _as_tuple(net(*inputs))
        got = _as_tuple(model(*inputs))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
        delta = (expected[0] - _as_tuple(net(*refs))[0]).flatten(1)
    for method in METHODS:
        scores = deeplift.attribute(model, inputs if len(inputs) > 1 else inputs[0],
                                    refs if len(refs) > 1 else refs[0], method=method, target="all")
        total = sum(s.flatten(2).sum(2) for s in _as_tuple(scores))
        assert total.shape == delta.shape
        torch.testing.assert_close(total, delta, rtol=1e-10, atol=1e-10, msg=method)
    return model


def _types(model: deeplift.Model, cls) -> list[str]:
    return [n for n, l in model.layers.items() if type(l) is cls]


# ---------------------------------------------------------------------------------------------
# spellings of the same op


class _Spelled(nn.Module):
    def __init__(self, spelling: str) -> None:
        super().__init__()
        self.spelling = spelling
        self.lin, self.out = nn.Linear(5, 6), nn.Linear(6, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.lin(x)
        if self.spelling == "F.relu":
            h = F.relu(h)
        elif self.spelling == "torch.relu":
            h = torch.relu(h)
        elif self.spelling == "x.relu()":
            h = h.relu()
        else:
            h = self.act(h)
        return self.out(h)


@pytest.mark.parametrize("spelling", ["F.relu", "torch.relu", "x.relu()", "nn.ReLU"])
def test_every_relu_spelling_becomes_one_relu_layer(spelling):
    torch.manual_seed(0)
    model = check_converts_exactly(_Spelled(spelling).double(), _randn(4, 5))
    assert len(_types(model, ReLU)) == 1
    assert len(_types(model, Dense)) == 2


def test_reused_module_becomes_one_layer_per_call_site():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.l1, self.l2, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.act(self.l2(self.act(self.l1(self.act(x))))))

    torch.manual_seed(1)
    model = check_converts_exactly(Reuse().double(), _randn(5, 4))
    relus = _types(model, ReLU)
    assert len(relus) == 3 and len(set(relus)) == 3
    assert all(n.startswith("act") for n in relus)
    # the input, three ReLUs and three dense layers, in call order
    assert len(model.layer_names) == 7
    assert model.layer_names[1:] == [relus[0], "l1", relus[1], "l2", relus[2], "out"]


def test_subclass_of_relu_converts_as_relu():
    class MyReLU(nn.ReLU):
        pass

    net = nn.Sequential(nn.Linear(4, 5), MyReLU(), nn.Linear(5, 2)).double()
    model = check_converts_exactly(net, _randn(3, 4))
    assert len(_types(model, ReLU)) == 1


def test_inplace_add_and_relu_underscore_convert():
    class Inplace(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.lin(x)
            h += x
            h.relu_()
            return self.out(h)

    torch.manual_seed(2)
    model = check_converts_exactly(Inplace().double(), _randn(6, 4))
    assert len(_types(model, Add)) == 1 and len(_types(model, ReLU)) == 1


def test_residual_add_converts_with_both_branches():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.out = nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(x + self.f(x))

    torch.manual_seed(3)
    model = check_converts_exactly(Res().double(), _randn(6, 4))
    (add,) = _types(model, Add)
    assert model.layers[add].inputs[0] == "x"


def test_cat_gating_mean_and_views_convert():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_a, self.conv_b = nn.Conv1d(3, 4, 3, padding=1), nn.Conv1d(3, 4, 3, padding=1)
            self.out = nn.Linear(8 + 8 * 6, 3)

        def forward(self, x):
            g = self.conv_a(x) * torch.sigmoid(self.conv_b(x))       # gating
            h = torch.cat([g, F.relu(self.conv_a(x))], dim=1)       # concat, reused conv
            pooled = h.mean(2)                                       # x.mean(dim)
            flat = h.view(h.size(0), -1)[:, :48]                     # view with x.size(0), slice
            return self.out(torch.cat([pooled, flat.flatten(1)], 1))

    torch.manual_seed(4)
    model = check_converts_exactly(Mixed().double(), _randn(5, 3, 6))
    assert len(_types(model, Mul)) == 1
    assert len(_types(model, Concat)) == 2
    assert len(_types(model, Reduce)) == 1
    assert len(_types(model, Reshape)) >= 1


def test_tuple_outputs_convert_and_either_output_can_be_the_target():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(6, 3)

        def forward(self, x):
            h = torch.tanh(self.body(x))
            return self.a(h), self.b(h)

    torch.manual_seed(5)
    net = TwoHeads().double()
    x, r = _randn(4, 4), _randn(4, 4, seed=1)
    model = check_converts_exactly(net, x, r)
    assert len(model.output_names) == 2
    out_a, out_b = model(x)
    assert out_a.shape == (4, 2) and out_b.shape == (4, 3)
    scores = deeplift.attribute(model, x, r, target="all", target_layer=model.output_names[1])
    with torch.no_grad():
        delta = net(x)[1] - net(r)[1]
    torch.testing.assert_close(scores.sum(-1), delta, rtol=0, atol=1e-10)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Conv1d(4, 3, 3)
        self.side = nn.Linear(2, 3)
        self.out = nn.Linear(3 * 6 + 3, 2)

    def forward(self, seq, side):
        return self.out(torch.cat([F.relu(self.seq(seq)).flatten(1), torch.tanh(self.side(side))], 1))


def test_two_input_model_with_tuple_inputs():
    torch.manual_seed(6)
    net = _TwoInputs().double()
    seq, side = _randn(5, 4, 8), _randn(5, 2, seed=1)
    model = check_converts_exactly(net, (seq, side))
    assert model.input_names == ["seq", "side"]
    scores = deeplift.attribute(model, (seq, side))
    assert isinstance(scores, tuple) and scores[0].shape == seq.shape and scores[1].shape == side.shape


def test_two_input_model_with_dict_inputs_keyed_by_forward_argument_names():
    torch.manual_seed(7)
    net = _TwoInputs().double()
    seq, side = _randn(5, 4, 8), _randn(5, 2, seed=1)
    rseq, rside = _randn(5, 4, 8, seed=2), _randn(5, 2, seed=3)
    model = deeplift.convert(net, (seq, side))
    by_tuple = deeplift.attribute(model, (seq, side), (rseq, rside), target=1)
    by_dict = deeplift.attribute(model, {"side": side, "seq": seq}, {"seq": rseq, "side": rside}, target=1)
    for a, b in zip(by_tuple, by_dict):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # an nn.Module given directly, with a dict whose order differs from forward()'s
    direct = deeplift.attribute(net, {"side": side, "seq": seq}, {"side": rside, "seq": rseq}, target=1)
    for a, b in zip(by_tuple, direct):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with torch.no_grad():
        delta = net(seq, side)[:, 1] - net(rseq, rside)[:, 1]
    torch.testing.assert_close(by_dict[0].flatten(1).sum(1) + by_dict[1].sum(1), delta, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# the module is left alone; dtypes; the conversion cache


class _WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.drop = nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.drop(F.relu(self.bn(self.conv(x)))).mean(2))


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in module.modules())


def test_module_in_train_mode_stays_in_train_mode_and_is_not_mutated():
    torch.manual_seed(8)
    net = _WithBatchNorm().double()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    net.train()
    net.drop.eval()  # a mixed state must come back exactly as it was
    modes = {name: m.training for name, m in net.named_modules()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    hooks = _hooks(net)
    x = _randn(4, 2, 7)
    model = deeplift.convert(net, x)
    assert {name: m.training for name, m in net.named_modules()} == modes
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k in before:  # BatchNorm running statistics untouched (no training-mode forward ran)
        assert torch.equal(before[k], after[k]), k
    assert _hooks(net) == hooks == 0
    # the converted model is the eval-mode network
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)


def test_float64_module_runs_float64_end_to_end():
    torch.manual_seed(9)
    net = _WithBatchNorm().double().eval()
    x = _randn(4, 2, 7)
    model = check_converts_exactly(net, x)
    assert model.dtype == torch.float64
    assert all(t.dtype == torch.float64 for layer in model.layers.values()
               for t in layer.tensors().values() if t.is_floating_point())
    values = model.forward_all([x])
    assert all(v.dtype == torch.float64 for v in values.values())
    for method in ["rescale", "reveal_cancel", "gradient", "integrated_gradients"]:
        assert deeplift.attribute(model, x, method=method).dtype == torch.float64
        assert deeplift.attribute(model, x.numpy(), method=method).dtype == np.float64


def test_parameterless_float64_module_keeps_float64():
    class PoolOnly(nn.Module):
        def forward(self, x):
            return F.max_pool1d(x, 2).flatten(1)

    x = _randn(3, 2, 6)
    model = deeplift.convert(PoolOnly(), x)
    assert model.dtype == torch.float64
    torch.testing.assert_close(model(x), PoolOnly()(x), rtol=0, atol=0)


def test_attribute_on_a_module_converts_once_and_reconverts_after_weights_change():
    torch.manual_seed(10)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    x, r = _randn(6, 4), _randn(6, 4, seed=1)
    first = convert_cached(net, x)
    assert convert_cached(net, x) is first
    s1 = deeplift.attribute(net, x, r, target="all")
    assert convert_cached(net, x) is first  # attribute() used (and kept) the same cached Model
    torch.testing.assert_close(s1, deeplift.attribute(first, x, r, target="all"), rtol=0, atol=0)
    with torch.no_grad():
        net[2].weight.mul_(-2.0)
    second = convert_cached(net, x)
    assert second is not first
    s2 = deeplift.attribute(net, x, r, target="all")
    assert not torch.allclose(s1, s2)
    with torch.no_grad():
        delta = net(x) - net(r)
    torch.testing.assert_close(s2.sum(-1), delta, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# unsupported ops


class _Sort(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values


class _Cumsum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)


class _Atan2(nn.Module):  # an op of two activations with no rule (division by one now has one)
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return torch.atan2(self.a(x), self.b(x))


class _Wrapped(nn.Module):
    """Puts the unsupported op at the module path ``body.1``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), inner)

    def forward(self, x):
        return self.body(x)


class _Bicubic(nn.Module):
    """Bicubic weights can be negative: no sign-preserving rule (nearest/linear have one)."""

    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bicubic")

    def forward(self, x):
        return self.up(x).flatten(1)


@pytest.mark.parametrize("net, x, op, where", [
    (_Wrapped(_Sort()), (3, 4), "aten.sort", "'body.1' (_Sort)"),
    (_Wrapped(_Cumsum()), (3, 4), "aten.cumsum", "'body.1' (_Cumsum)"),
    (_Wrapped(_Atan2()), (3, 4), "aten.atan2", "'body.1' (_Atan2)"),
    (_Bicubic(), (3, 2, 4, 4), "aten.upsample_bicubic2d", "'up' (Upsample)"),
], ids=["sort", "cumsum", "atan2_of_data", "bicubic"])
def test_unsupported_op_raises_naming_the_op_and_the_module_path(net, x, op, where):
    with pytest.raises(deeplift.UnsupportedLayerError) as info:
        deeplift.convert(net.double(), _randn(*x))
    message = str(info.value)
    assert op in message
    assert where in message
    assert isinstance(info.value, deeplift.DeepLiftError)


def test_constant_that_differs_between_examples_is_reported_when_used():
    class ByPosition(nn.Module):
        def forward(self, x):  # a constant per example is fine; one that numbers them is not
            return x + torch.arange(x.size(0), dtype=x.dtype)[:, None]

    with pytest.raises(deeplift.UnsupportedLayerError, match="batch size"):
        deeplift.convert(ByPosition(), _randn(3, 4))


# ---------------------------------------------------------------------------------------------
# patterns a user review turned up


class _ReverseComplementAveraged(nn.Module):
    """The genomics habit: average the predictions for a sequence and its reverse complement."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(4, 5, 3), nn.Linear(5, 2)

    def strand(self, x):
        return self.out(torch.relu(self.conv(x)).amax(-1))

    def forward(self, x):
        return (self.strand(x) + self.strand(x.flip(1, 2))) / 2


class _ChunkedGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(4, 8, 3), nn.Linear(4, 2)

    def forward(self, x):
        value, gate = self.conv(x).chunk(2, dim=1)
        first, rest = (value * torch.sigmoid(gate)).split([1, 3], dim=1)
        return self.out(torch.cat([rest, first], 1).mean(-1))


@pytest.mark.parametrize("net_cls", [_ReverseComplementAveraged, _ChunkedGate])
def test_flip_chunk_and_split_convert_and_sum_to_delta(net_cls):
    torch.manual_seed(0)
    check_converts_exactly(net_cls().double().eval(), _randn(3, 4, 12))


def test_a_squeezed_single_output_is_one_target_per_example():
    class Regression(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            return self.head(x).squeeze(-1)  # (N,): one output per example

    torch.manual_seed(0)
    net = Regression().double().eval()
    x, ref = _randn(5, 6), _randn(5, 6, seed=1)
    scores, delta = deeplift.attribute(net, x, ref, return_delta=True)
    assert scores.shape == (5, 6)
    with torch.no_grad():
        torch.testing.assert_close(scores.sum(1), net(x) - net(ref), rtol=0, atol=1e-12)
    assert delta.abs().max() < 1e-12


def test_a_model_returning_a_dict_is_refused_clearly():
    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return {"logits": self.lin(x)}

    with pytest.raises(deeplift.UnsupportedLayerError, match="returns dict.*tensor or a tuple"):
        deeplift.convert(DictOut().eval(), torch.zeros(2, 3))


def test_an_op_mixing_examples_is_reported_with_its_op_and_place():
    class Centred(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x - x.mean(0))

    with pytest.raises(deeplift.UnsupportedLayerError, match=r"aten\.mean.*batch axis"):
        deeplift.convert(Centred().eval(), torch.zeros(2, 3))


def test_attribute_on_a_module_converts_again_for_a_new_sequence_length():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(4, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                        nn.Linear(3, 1)).double().eval()
    for length in (20, 30):
        x, ref = _randn(2, 4, length), _randn(2, 4, length, seed=1)
        scores, delta = deeplift.attribute(net, x, ref, return_delta=True)
        assert scores.shape == (2, 4, length) and delta.abs().max() < 1e-12


class _Bounded(nn.Module):
    """clamp / hardtanh / relu6 and a log-softmax inside the network, a log-softmax at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.clamp(self.a(x), -0.5, 0.7) + F.hardtanh(self.a(x)) + F.relu6(3 * self.a(x))
        h = F.log_softmax(self.b(h), dim=1)
        return F.log_softmax(self.c(h), dim=1)


def test_clamp_relu6_and_log_softmax_convert_sum_to_delta_and_match_autograd():
    torch.manual_seed(0)
    net = _Bounded().double().eval()

    def logits(t):  # the input of the final log-softmax: the default target
        h = torch.clamp(net.a(t), -0.5, 0.7) + F.hardtanh(net.a(t)) + F.relu6(3 * net.a(t))
        return net.c(F.log_softmax(net.b(h), dim=1))

    x, ref = _randn(5, 6), _randn(5, 6, seed=1)
    model = deeplift.convert(net, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)
        delta = logits(x) - logits(ref)
    for method in METHODS:
        scores = deeplift.attribute(model, x, ref, method=method, target="all",
                                    softmax_centering=False)
        torch.testing.assert_close(scores.sum(2), delta, rtol=1e-10, atol=1e-10, msg=method)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(logits(xg)[:, 1].sum(), xg)
    torch.testing.assert_close(deeplift.attribute(model, x, method="gradient", target=1,
                                                  softmax_centering=False), grad,
                               rtol=1e-10, atol=1e-12)
