"""Captum users' habits: per-example targets, ``baselines=``, ``additional_forward_args=``, and
an error for every ambiguous target spelling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deeplift
from deeplift.errors import InputError


class Net(nn.Module):
    """(N, 3, 8) -> conv -> relu -> dense -> relu -> 4 logits, times an optional (N, 4) mask."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3)
        self.fc = nn.Linear(30, 6)
        self.out = nn.Linear(6, 4)

    def forward(self, x, mask=None):
        logits = self.out(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))
        return logits if mask is None else logits * mask


def _randn(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().double().eval()


@pytest.fixture(scope="module")
def x():
    return _randn(5, 3, 8, seed=1)


@pytest.fixture(scope="module")
def r():
    return _randn(5, 3, 8, seed=2)


@pytest.mark.parametrize("method", ["rescale", "reveal_cancel", "gradient", "integrated_gradients"])
def test_per_example_targets_equal_a_loop_over_single_targets(net, x, r, method):
    labels = torch.tensor([3, 0, 2, 2, 1])
    refs = None if method == "gradient" else r
    together = deeplift.attribute(net, x, refs, method=method, target=labels, steps=8)
    assert together.shape == x.shape
    for i, t in enumerate(labels.tolist()):
        alone = deeplift.attribute(net, x[i:i + 1], None if refs is None else r[i:i + 1],
                                   method=method, target=t, steps=8)
        assert torch.allclose(together[i], alone[0], atol=1e-12), (i, t)
    if method in ("rescale", "reveal_cancel"):
        _, delta = deeplift.attribute(net, x, r, method=method, target=labels, return_delta=True)
        assert delta.shape == (5,) and delta.abs().max() < 1e-9


def test_per_example_targets_from_numpy_lists_of_tuples_and_the_wrapper_agree(net, x, r):
    labels = np.array([1, 1, 0, 3, 2])
    by_array = deeplift.attribute(net, x, r, target=labels)
    by_wrapper = deeplift.attribute(net, x, r, target=deeplift.PerExampleTargets(labels.tolist()))
    by_tuples = deeplift.attribute(net, x, r, target=[(int(t),) for t in labels])
    assert torch.equal(by_array, by_wrapper) and torch.equal(by_array, by_tuples)


def test_baselines_is_references(net, x, r):
    assert torch.equal(deeplift.attribute(net, x, baselines=r, target=1),
                       deeplift.attribute(net, x, references=r, target=1))
    with pytest.raises(InputError, match="not both"):
        deeplift.attribute(net, x, references=r, baselines=r)


def test_additional_forward_args_are_passed_to_forward_and_not_attributed(net, x, r):
    mask = torch.tensor([[1.0, 0.0, 2.0, 1.0]], dtype=torch.float64).expand(5, 4).contiguous()
    scores, delta = deeplift.attribute(net, x, r, method="reveal_cancel", target="all",
                                       additional_forward_args=(mask,), return_delta=True)
    assert scores.shape == (5, 4, 3, 8)  # the attributed input only
    with torch.no_grad():
        expected = net(x, mask) - net(r, mask)
    assert torch.allclose(scores.flatten(2).sum(2), expected, atol=1e-9)
    assert delta.abs().max() < 1e-9
    assert torch.allclose(scores[:, 1], torch.zeros_like(scores[:, 1]))  # masked-out unit


@pytest.mark.parametrize("target, message", [
    ([0, 1, 2, 3, 0], "ambiguous"),                          # N ints for N examples
    (torch.tensor([0, 1]), "got 2 for 5 examples"),         # per-example, wrong length
    (np.array([[0, 1]]), "1-D array of ints"),              # 2-D
    (torch.tensor([0.5, 1, 2, 3, 0]), "1-D array of ints"),  # not ints
    ([(0, 1)] * 5, "has 2 indices"),                          # tuple of the wrong rank
    ("everything", "target must be"),
    ([0, True], "target entries must be ints"),
    (deeplift.PerExampleTargets([9, 0, 0, 0, 0]), "target 9 is out of range"),
])
def test_each_ambiguous_or_wrong_target_spelling_raises_the_documented_error(net, x, target, message):
    with pytest.raises(InputError, match=message):
        deeplift.attribute(net, x, target=target)


def test_several_targets_spelled_explicitly_when_a_list_would_be_ambiguous(net, x, r):
    several = deeplift.attribute(net, x, r, target=deeplift.SeveralTargets([0, 1, 2, 3, 0]))
    assert several.shape == (5, 5, 3, 8)
    # equal to float64 rounding, not bit for bit: the targets are rows of one batched product,
    # and on some CPUs BLAS rounds rows differently (1 ulp seen on an AMD EPYC)
    rounding = dict(rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(several[:, 4], several[:, 0], **rounding)
    torch.testing.assert_close(deeplift.attribute(net, x, r, target=[2, 3]), several[:, 2:4], **rounding)
