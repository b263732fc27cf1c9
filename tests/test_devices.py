"""Every method gives the same scores on every device: a model and its inputs moved to a device
give the CPU float64 result, on that device, for a 1-D (BPNet-like) and a 2-D (VGG-like) CNN.

The CUDA cases run only where torch sees a GPU (none on the development machines or CI: they
skip, saying so); the CPU cases run the same device-moving code everywhere, so a tensor left
behind on the wrong device shows up as soon as a GPU is present."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import deeplift

METHODS = ["rescale", "reveal_cancel", "genomics_default", "gradient", "gradient_x_input",
           "guided_backprop", "integrated_gradients"]

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device visible to torch on this machine"))]


class SmallBPNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(4, 8, 7, padding=3)
        self.dilated = nn.ModuleList(nn.Conv1d(8, 8, 3, padding=d, dilation=d) for d in (2, 4))
        self.head = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for conv in self.dilated:
            h = h + torch.relu(conv(h))
        return self.head(h.mean(-1))


def small_vgg() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 4))


def _case(kind: str):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "bpnet":
        x = nn.functional.one_hot(torch.randint(0, 4, (6, 50), generator=gen), 4).permute(0, 2, 1)
        return SmallBPNet().double().eval(), x.double(), torch.full((1, 4, 50), 0.25, dtype=torch.float64)
    module = small_vgg().double().eval()
    with torch.no_grad():  # batch norm with non-trivial statistics
        module[1].running_mean.uniform_(-0.5, 0.5, generator=gen)
        module[1].running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.randn(6, 3, 16, 16, generator=gen, dtype=torch.float64)
    return module, x, torch.randn(6, 3, 16, 16, generator=gen, dtype=torch.float64)


@pytest.fixture(scope="module", params=["bpnet", "vgg"])
def case(request):
    module, x, r = _case(request.param)
    return deeplift.convert(module, x[:2]), x, r


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_cpu_result_on_the_device(case, method, device):
    model, x, r = case
    refs = None if method in ("gradient", "gradient_x_input", "guided_backprop") else r
    expected = deeplift.attribute(model, x, refs, method=method, target="all", steps=8)
    moved = copy.deepcopy(model).to(device)
    got = deeplift.attribute(moved, x.to(device), None if refs is None else refs.to(device),
                             method=method, target="all", steps=8, batch_size=5)
    assert got.device.type == device
    assert torch.allclose(got.cpu(), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_numpy_inputs_come_back_as_numpy_from_a_model_on_the_device(case, device):
    model, x, r = case
    moved = copy.deepcopy(model).to(device)
    got = deeplift.attribute(moved, x.numpy(), r.numpy(), method="reveal_cancel", target=1)
    assert isinstance(got, np.ndarray)
    expected = deeplift.attribute(model, x, r, method="reveal_cancel", target=1)
    assert np.allclose(got, expected.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["rescale", "reveal_cancel", "genomics_default"])
def test_fused_rule_kernels_give_the_cpu_result_on_the_device(case, method, device):
    """The compiled kernels (Triton on a GPU, C++ on CPU) against the eager CPU rules."""
    model, x, r = case
    expected = deeplift.attribute(model, x, r, method=method, target="all", fuse=False)
    moved = copy.deepcopy(model).to(device)
    got = deeplift.attribute(moved, x.to(device), r.to(device), method=method, target="all",
                             fuse=True)
    assert got.device.type == device
    assert torch.allclose(got.cpu(), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_no_tensor_is_made_on_the_default_device(case, method):
    """A tensor made without naming a device lands on torch's default device, not the model's —
    on a GPU a crash, or silently wrong scores (indices on another device). With the default
    device set to "meta" (no data at all) the scores still equal the plain CPU run, on CPU."""
    model, x, r = case
    refs = None if method in ("gradient", "gradient_x_input", "guided_backprop") else r
    expected = deeplift.attribute(model, x, refs, method=method, target="all", steps=8)
    per_example = torch.tensor([0, 1, 2, 1, 0, 2])
    expected_each = deeplift.attribute(model, x, refs, method=method, target=per_example, steps=8)
    with torch.device("meta"):
        got = deeplift.attribute(model, x, refs, method=method, target="all", steps=8, batch_size=5)
        got_each = deeplift.attribute(model, x, refs, method=method, target=per_example, steps=8)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-10)
    assert torch.allclose(got_each, expected_each, rtol=1e-9, atol=1e-10)


def test_generated_references_and_hypothetical_scores_ignore_the_default_device():
    from deeplift import references

    module, x, _ = _case("bpnet")
    model = deeplift.convert(module, x[:2])

    def scores():
        shuffles = references.dinuc_shuffle(n=3, seed=0)
        return (deeplift.attribute(model, x, shuffles, method="genomics_default", target="all"),
                deeplift.attribute(model, x, shuffles, method="rescale", hypothetical=True))

    expected = scores()
    with torch.device("meta"):
        got = scores()
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-9, atol=1e-10)
