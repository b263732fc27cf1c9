"""``deeplift.attribute``: clear errors for bad input, and the behaviour of every argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deeplift
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]
ALL_METHODS = METHODS + ["gradient", "gradient_x_input", "guided_backprop", "integrated_gradients"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class SeqNet(nn.Module):
    """(N, 4, 12) one-hot-sized sequence -> conv -> relu -> max pool -> dense -> 3 logits."""

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 5, 3)
        self.pool = nn.MaxPool1d(3, 2)
        self.fc = nn.Linear(20, 8)
        self.out = nn.Linear(8, 3)
        self.softmax = softmax

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(x))).flatten(1)
        logits = self.out(torch.relu(self.fc(h)))
        return torch.softmax(logits, dim=1) if self.softmax else logits

    def logits(self, x):
        with torch.no_grad():
            return self.out(torch.relu(self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))))


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SeqNet().double().eval()


@pytest.fixture(scope="module")
def x():
    return _randn(6, 4, 12)


@pytest.fixture(scope="module")
def r():
    return _randn(6, 4, 12, seed=1)


@pytest.fixture(scope="module")
def model(net, x):
    return deeplift.convert(net, x)


class TwoIn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 2)

    def forward(self, a, b):
        return self.out(torch.tanh(self.a(a)) * torch.sigmoid(self.b(b)))


@pytest.fixture(scope="module")
def two_in():
    torch.manual_seed(1)
    net = TwoIn().double()
    return net, deeplift.convert(net, (_randn(4, 3), _randn(4, 2)))


# ---------------------------------------------------------------------------------------------
# errors


def _raises(match: str, *args, **kwargs) -> str:
    with pytest.raises(deeplift.DeepLiftError, match=match) as info:
        deeplift.attribute(*args, **kwargs)
    return str(info.value)


def test_wrong_input_shape_names_the_input_and_both_shapes(model, x):
    msg = _raises("input 'x'", model, x[:, :, :10])
    assert "(6, 4, 10)" in msg and "(N, 4, 12)" in msg


def test_wrong_reference_shape_names_the_reference_and_shapes(model, x):
    msg = _raises("reference for input 'x'", model, x, x[:, :3])
    assert "(6, 3, 12)" in msg and "(4, 12)" in msg
    msg = _raises("reference for input 'x'", model, x, x[:4])
    assert "4 rows" in msg and "6 examples" in msg
    _raises("does not broadcast", model, x, np.zeros(5))


def test_wrong_number_of_inputs_says_how_many_the_model_takes(model, x, two_in):
    _, two = two_in
    msg = _raises("2 inputs", two, (_randn(4, 3), _randn(4, 2), _randn(4, 2)))
    assert "got 3" in msg and "['a', 'b']" in msg
    _raises("2 inputs", two, _randn(4, 3))
    _raises("1 input", model, (x, x))
    _raises("unknown input layer", two, {"a": _randn(4, 3), "c": _randn(4, 2)})
    _raises("no value for input layer", two, {"a": _randn(4, 3)})
    _raises("different numbers of examples", two, (_randn(4, 3), _randn(5, 2)))


def test_target_out_of_range_names_the_target_and_the_layer_size(model, x):
    msg = _raises("target 3 is out of range", model, x, target=3)
    assert "'out'" in msg and "3 output unit" in msg
    _raises("target -4 is out of range", model, x, target=[0, -4])
    _raises("target must be", model, x, target="everything")
    _raises("empty", model, x, target=[])


def test_unknown_target_or_score_layer_names_the_layer(model, x):
    _raises("unknown target layer 'logitz'", model, x, target_layer="logitz")
    _raises("unknown score layer 'conf'", model, x, score_layer="conf")
    _raises("similar names", model, x, score_layer="POO")
    _raises("target layer index 99 is out of range", model, x, target_layer=99)
    _raises("score layer 'out' does not feed", model, x, score_layer="out", target_layer="fc")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_inputs_or_references_is_rejected_naming_the_example(model, x, bad):
    corrupt = x.clone()
    corrupt[2, 1, 3] = bad
    kind = "NaN" if np.isnan(bad) else "Inf"
    msg = _raises(f"input 'x' contains {kind}", model, corrupt)
    assert "examples [2]" in msg
    msg = _raises(f"reference for input 'x' contains {kind}", model, x, corrupt)
    assert "examples [2]" in msg
    _raises(f"contains {kind}", model, x.numpy(), corrupt.numpy())


def test_bad_method_batch_size_and_steps_are_rejected(model, x):
    msg = _raises("unknown method 'deeplift'", model, x, method="deeplift")
    assert "rescale" in msg and "reveal_cancel" in msg
    _raises("batch_size must be a positive integer, got 0", model, x, batch_size=0)
    _raises("batch_size", model, x, batch_size=-3)
    _raises("steps must be a positive integer", model, x, method="integrated_gradients", steps=0)
    _raises("max_routing", model, x, max_routing="argmax")
    _raises("return_delta needs a reference-based method", model, x, method="gradient",
            return_delta=True)


def test_hypothetical_needs_one_hot_input(model, x):
    _raises("one-hot", model, x, hypothetical=True)
    two_ones = torch.zeros(2, 4, 12, dtype=torch.float64)
    two_ones[:, :2, 0] = 1
    _raises("more than one 1", model, two_ones, hypothetical=True)
    onehot = torch.zeros(2, 4, 12, dtype=torch.float64)
    onehot[:, 0] = 1
    _raises("reference-based method", model, onehot, hypothetical=True, method="gradient")
    assert deeplift.attribute(model, onehot, hypothetical=True).shape == onehot.shape


def test_errors_are_value_errors_too(model, x):
    with pytest.raises(ValueError):
        deeplift.attribute(model, x, batch_size=0)


# ---------------------------------------------------------------------------------------------
# types and shapes


def test_numpy_in_gives_numpy_out_and_torch_in_gives_torch_out(model, x, r):
    a = deeplift.attribute(model, x.numpy(), r.numpy())
    assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == x.shape
    t = deeplift.attribute(model, x, r)
    assert isinstance(t, torch.Tensor) and t.device == x.device and t.shape == x.shape
    np.testing.assert_array_equal(a, t.numpy())
    scores, delta = deeplift.attribute(model, x.numpy(), r.numpy(), return_delta=True)
    assert isinstance(delta, np.ndarray) and delta.shape == (6,)
    scores, delta = deeplift.attribute(model, x, r, return_delta=True)
    assert isinstance(delta, torch.Tensor)
    # model forward follows the same rule
    assert isinstance(model(x.numpy()), np.ndarray) and isinstance(model(x), torch.Tensor)


def test_int_target_drops_the_target_axis_and_list_or_all_adds_it(model, x):
    assert deeplift.attribute(model, x, target=1).shape == (6, 4, 12)
    assert deeplift.attribute(model, x, target=np.int64(1)).shape == (6, 4, 12)
    assert deeplift.attribute(model, x, target=[2, 0]).shape == (6, 2, 4, 12)
    assert deeplift.attribute(model, x, target=[1]).shape == (6, 1, 4, 12)
    assert deeplift.attribute(model, x, target="all").shape == (6, 3, 4, 12)
    _, d = deeplift.attribute(model, x, target="all", return_delta=True)
    assert d.shape == (6, 3)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_all_targets_in_one_pass_equal_stacked_single_target_runs(model, x, r, method):
    together = deeplift.attribute(model, x, r, method=method, target="all")
    single = torch.stack([deeplift.attribute(model, x, r, method=method, target=t) for t in range(3)], 1)
    torch.testing.assert_close(together, single, rtol=0, atol=1e-12)
    listed = deeplift.attribute(model, x, r, method=method, target=[2, -3])
    torch.testing.assert_close(listed, single[:, [2, 0]], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# score layers, batching


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", ["conv", "relu", "pool", "fc", "relu_1"])
def test_hidden_score_layer_contributions_sum_to_delta(model, net, x, r, method, layer):
    assert layer in model.layer_names
    delta = net.logits(x) - net.logits(r)
    scores = deeplift.attribute(model, x, r, method=method, target="all", score_layer=layer)
    assert scores.shape[:2] == (6, 3)
    torch.testing.assert_close(scores.flatten(2).sum(2), delta, rtol=0, atol=1e-10)


def test_several_score_layers_give_a_list_each_summing_to_delta(model, net, x, r):
    delta = net.logits(x) - net.logits(r)
    pool, inp = deeplift.attribute(model, x, r, method="reveal_cancel", target=1,
                                   score_layer=["pool", 0])
    assert pool.shape == (6, 5, 4) and inp.shape == x.shape
    for s in (pool, inp):
        torch.testing.assert_close(s.flatten(1).sum(1), delta[:, 1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_batch_size_one_and_256_give_identical_results(model, x, r, method):
    small = deeplift.attribute(model, x, r, method=method, target="all", batch_size=1, steps=8)
    large = deeplift.attribute(model, x, r, method=method, target="all", batch_size=256, steps=8)
    torch.testing.assert_close(small, large, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# reference forms


@pytest.mark.parametrize("method", ["rescale", "reveal_cancel", "integrated_gradients"])
def test_every_reference_form_gives_the_per_example_result(model, x, method):
    n = x.shape[0]
    per_channel = torch.tensor([[0.3], [0.2], [0.1], [0.4]], dtype=torch.float64)  # (4, 1)
    full = per_channel.expand(4, 12)

    def run(refs):
        return deeplift.attribute(model, x, refs, method=method, target="all", steps=10)

    expected = run(full.expand(n, 4, 12).clone())                 # (N, ...)
    torch.testing.assert_close(run(per_channel), expected, rtol=0, atol=1e-12)          # broadcastable
    torch.testing.assert_close(run(full), expected, rtol=0, atol=1e-12)                 # (...)
    torch.testing.assert_close(run(full[None]), expected, rtol=0, atol=1e-12)           # (1, ...)
    torch.testing.assert_close(run(full.numpy()), expected, rtol=0, atol=1e-12)         # array
    torch.testing.assert_close(run(lambda inp: full.expand(inp.shape[0], 4, 12)), expected,
                               rtol=0, atol=1e-12)                                       # callable
    # None is the all-zero reference
    torch.testing.assert_close(run(None), run(torch.zeros(4, 12, dtype=torch.float64)), rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS + ["integrated_gradients"])
def test_several_references_per_example_average_the_single_reference_runs(model, net, x, method):
    n_refs = 3
    refs = _randn(x.shape[0], n_refs, 4, 12, seed=5)               # (N, R, ...)
    singles = [deeplift.attribute(model, x, refs[:, k], method=method, target="all", steps=10)
               for k in range(n_refs)]
    averaged, delta = deeplift.attribute(model, x, refs, method=method, target="all", steps=10,
                                         return_delta=True)
    torch.testing.assert_close(averaged, torch.stack(singles).mean(0), rtol=0, atol=1e-10)
    assert delta.shape == (x.shape[0], n_refs, 3)  # per example and reference, before averaging
    if method != "integrated_gradients":
        assert delta.abs().max().item() < 1e-10
    # (1, R, ...): the same R references for every example
    shared = refs[:1]
    by_shared = deeplift.attribute(model, x, shared, method=method, target="all", steps=10)
    by_repeat = deeplift.attribute(model, x, shared.expand(x.shape[0], -1, -1, -1).clone(),
                                   method=method, target="all", steps=10)
    torch.testing.assert_close(by_shared, by_repeat, rtol=0, atol=1e-12)
    # a callable may return (N, R, ...) too, and may take a seed
    seen = {}

    def maker(inp, seed=None):
        seen["seed"] = seed
        return refs

    by_callable = deeplift.attribute(model, x, maker, method=method, target="all", steps=10, seed=7)
    torch.testing.assert_close(by_callable, averaged, rtol=0, atol=0)
    assert seen["seed"] == 7


def test_failing_reference_callable_is_reported_by_name(model, x):
    def broken_background(inp):
        raise KeyError("oops")

    _raises("broken_background", model, x, broken_background)


def test_per_example_references_pair_each_example_with_its_own_reference(model, x, r):
    together = deeplift.attribute(model, x, r, target="all")
    one_by_one = torch.cat([deeplift.attribute(model, x[i:i + 1], r[i:i + 1], target="all")
                            for i in range(x.shape[0])])
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# softmax targets


@pytest.fixture(scope="module")
def softmax_model():
    torch.manual_seed(0)
    net = SeqNet(softmax=True).double().eval()
    return net, deeplift.convert(net, _randn(2, 4, 12))


@pytest.mark.parametrize("method", METHODS)
def test_softmax_targets_are_mean_centred_unless_turned_off(softmax_model, x, r, method):
    net, model = softmax_model
    assert deeplift.plan.default_target_layer(model) == "out"  # the logits, not the softmax
    raw = deeplift.attribute(model, x, r, method=method, target="all", softmax_centering=False)
    centred = deeplift.attribute(model, x, r, method=method, target="all")
    torch.testing.assert_close(centred, raw - raw.mean(1, keepdim=True), rtol=0, atol=1e-12)
    assert (centred - raw).abs().max().item() > 1e-3
    # the raw scores are the logits' contributions: each sums to its logit's delta
    delta = net.logits(x) - net.logits(r)
    torch.testing.assert_close(raw.flatten(2).sum(2), delta, rtol=0, atol=1e-10)
    torch.testing.assert_close(centred.flatten(2).sum(2), delta - delta.mean(1, keepdim=True),
                               rtol=0, atol=1e-10)
    # a single target gives that slice of the centred scores
    torch.testing.assert_close(deeplift.attribute(model, x, r, method=method, target=2),
                               centred[:, 2], rtol=0, atol=1e-12)
    # centring is about softmax logits: the plain model's scores are unaffected by the flag
    plain = deeplift.convert(SeqNet().double().eval(), x)
    torch.testing.assert_close(deeplift.attribute(plain, x, r, method=method, target="all"),
                               deeplift.attribute(plain, x, r, method=method, target="all",
                                                  softmax_centering=False), rtol=0, atol=0)


def test_original_mode_names_select_the_same_methods():
    from deeplift.layers import NonlinearMxtsMode
    from deeplift.methods import get_method
    assert get_method(NonlinearMxtsMode.RevealCancel).name == "reveal_cancel"
    assert get_method(NonlinearMxtsMode.DeepLIFT_GenomicsDefault).name == "genomics_default"
    assert get_method("guided-backprop").name == "guided_backprop"
    assert {get_method(v).name for v in NonlinearMxtsMode.vals} == {
        "gradient", "rescale", "deconvnet", "guided_backprop", "guided_backprop_rescale",
        "reveal_cancel", "pass_through", "genomics_default"}


def test_a_constant_score_layer_is_a_named_error():
    import torch
    from torch import nn

    class WithMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)
            self.register_buffer("offset", torch.randn(3, 2))

        def forward(self, x):
            return self.lin(x) + self.offset.sum(0)  # a constant layer of the converted model
    x = torch.randn(3, 4)
    model = deeplift.convert(WithMask().eval(), x)
    const = next(n for n in model.layer_names if type(model.layers[n]).__name__ == "Constant")
    with pytest.raises(deeplift.InputError, match="constant.*no scores"):
        deeplift.attribute(model, x, score_layer=const, method="gradient_x_input")
