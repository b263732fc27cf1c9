"""Issue 9 part B: structure ops (roll, unflatten, expand/repeat, constants repeated per example,
constant masks), upsampling, transposed convolution, token embeddings and LSTM/GRU convert from
unmodified modules, run forward like them, sum to delta for every DeepLIFT method and give
autograd's gradient; the linear ones are checked against DeepLIFT's linear rule written out on
their brute-force matrix, the embedding against its per-token definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeplift
from deeplift.layers import Mul, Sigmoid, Tanh
from deeplift.layers.embedding import Embedding
from deeplift.layers.structure import BatchConstant, Expand, Repeat, Roll, Upsample
from deeplift.layers.transposed import ConvTranspose
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]

pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def check_exact(net: nn.Module, x: torch.Tensor, seed: int = 1) -> deeplift.Model:
    """Forward equals the module; rescale/reveal_cancel/genomics_default sum to delta for every
    output (float64, relative 1e-9) against a random reference; gradient equals autograd."""
    net = net.double().eval()
    model = deeplift.convert(net, x)
    ref = _randn(*x.shape, seed=seed)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)
        delta = (net(x) - net(ref)).flatten(1)
    for method in METHODS:
        scores = deeplift.attribute(model, x, ref, method=method, target="all")
        total = scores.flatten(2).sum(2)
        assert (total - delta).abs().max().item() <= 1e-9 * (1 + delta.abs().max().item()), method
    xx = x.clone().requires_grad_(True)
    for t in range(delta.shape[1]):
        (g,) = torch.autograd.grad(net(xx).flatten(1)[:, t].sum(), xx)
        torch.testing.assert_close(deeplift.attribute(model, x, method="gradient", target=t), g,
                                   rtol=1e-10, atol=1e-12)
    return model


def _layers(model, cls) -> list[str]:
    return [n for n, l in model.layers.items() if type(l) is cls]


# ---------------------------------------------------------------------------------------------
# structure ops


class _ClassToken(nn.Module):
    """ViT's habit: a learned token broadcast over the batch, prepended to the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.proj, self.out = nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):  # (N, L, 6)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.proj(x)], 1)
        return self.out(torch.tanh(t)[:, 0] + torch.tanh(t).mean(1))


class _ShiftedWindows(nn.Module):
    """Swin's habits: roll, unflatten, a mask built from a shape, masked_fill with it."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.out = nn.Linear(6, 6), nn.Linear(36, 2)

    def forward(self, x):  # (N, 6, 6)
        t = torch.roll(self.proj(x), shifts=(2, -1), dims=(1, 2))
        mask = t.new_zeros(6, 6)
        mask[:, :2] = 1
        mask = mask.eq(1)
        t = torch.sigmoid(t.masked_fill(mask, -2.0))
        t = t.unflatten(2, (2, 3)).flatten(2)
        zeros = x.new_zeros(x.shape[0], 6, 6)  # a per-example constant from the batch size
        return self.out((t + zeros).flatten(1))


class _ExpandRepeat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj, self.out = nn.Linear(4, 3), nn.Linear(3 * 5 * 2, 2)

    def forward(self, x):  # (N, 4)
        t = torch.tanh(self.proj(x)).unsqueeze(-1)          # (N, 3, 1)
        t = t.expand(-1, -1, 5).repeat(1, 1, 2)              # (N, 3, 10)
        return self.out(torch.relu(t - 0.1).flatten(1))


class _Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(3, 4, 3), nn.Conv2d(4, 2, 3)

    def forward(self, x):  # (N, 3, 8)
        t = torch.relu(self.conv1(x))
        t = F.interpolate(t, scale_factor=2, mode="nearest")
        t = F.interpolate(t, size=9, mode="linear", align_corners=False)
        t = t.unsqueeze(2).expand(-1, -1, 3, -1)
        t = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)
        t = F.interpolate(t, size=(7, 11), mode="nearest-exact")
        return torch.relu(self.conv2(t)).mean((2, 3))


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(4, 4, (2, 3), stride=(1, 2), dilation=(2, 1), groups=2)
        self.out = nn.Linear(4, 2)

    def forward(self, x):  # (N, 3, 5)
        t = torch.relu(self.up1(x)).unsqueeze(2)
        t = torch.tanh(self.up2(t))
        return self.out(t.mean((2, 3)))


@pytest.mark.parametrize("net_cls, shape, layer", [
    (_ClassToken, (3, 5, 6), BatchConstant),
    (_ShiftedWindows, (3, 6, 6), Roll),
    (_ExpandRepeat, (3, 4), Repeat),
    (_Upsampling, (3, 3, 8), Upsample),
    (_Decoder, (3, 3, 5), ConvTranspose),
], ids=["class_token", "shifted_windows", "expand_repeat", "upsampling", "conv_transpose"])
def test_structure_ops_convert_sum_to_delta_and_match_autograd(net_cls, shape, layer):
    torch.manual_seed(0)
    model = check_exact(net_cls(), _randn(*shape))
    assert _layers(model, layer)


def test_expand_of_an_activation_becomes_an_expand_layer():
    torch.manual_seed(0)
    model = check_exact(_ExpandRepeat(), _randn(3, 4))
    assert _layers(model, Expand)


# ---------------------------------------------------------------------------------------------
# DeepLIFT's linear rule on the brute-force matrix (the slow reference)


def _matrix(fn, in_shape) -> np.ndarray:
    """The matrix of a linear ``fn`` on one example, by feeding it every basis vector."""
    n = int(np.prod(in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        return fn(eye).reshape(n, -1).numpy().T


def _reference_linear_then_tanh(w: np.ndarray, b: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Contributions of x to Σ tanh(Wx + b) by RevealCancel, written from the DeepLIFT paper:
    Δy⁺ = W⁺Δx⁺ + W⁻Δx⁻, Δy⁻ = W⁻Δx⁺ + W⁺Δx⁻; the tanh's Δz⁺ = ½[f(r+Δy⁺) − f(r) + f(r+Δy) − f(r+Δy⁻)]
    (likewise Δz⁻); multipliers m⁺ = Δz⁺/Δy⁺, m⁻ = Δz⁻/Δy⁻; to the input by the sign of Δx."""
    dx = x - r
    dxp, dxn = np.maximum(dx, 0), np.minimum(dx, 0)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    dyp, dyn = wp @ dxp + wn @ dxn, wn @ dxp + wp @ dxn
    yr = w @ r + b
    f = np.tanh
    dzp = 0.5 * (f(yr + dyp) - f(yr) + f(yr + dyp + dyn) - f(yr + dyn))
    dzn = 0.5 * (f(yr + dyn) - f(yr) + f(yr + dyp + dyn) - f(yr + dyp))
    mp = np.where(dyp != 0, dzp / np.where(dyp != 0, dyp, 1), 0)
    mn = np.where(dyn != 0, dzn / np.where(dyn != 0, dyn, 1), 0)
    m_in = np.where(dx > 0, wp.T @ mp + wn.T @ mn, np.where(dx < 0, wp.T @ mn + wn.T @ mp, 0))
    return m_in * dx


class _LinearThenTanh(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.op = op

    def forward(self, x):
        return torch.tanh(self.op(x)).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("op, shape", [
    (nn.ConvTranspose1d(2, 3, 3, stride=2, padding=1, output_padding=1), (2, 4)),
    (nn.ConvTranspose2d(2, 2, 2, stride=2, groups=2), (2, 2, 3)),
    (lambda x: torch.roll(x, 1, 2), (2, 5)),
    (lambda x: F.interpolate(x, size=7, mode="linear"), (2, 4)),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True), (1, 2, 3)),
    (lambda x: x.unsqueeze(2).expand(-1, -1, 3, -1).repeat(1, 2, 1, 1), (2, 3)),
], ids=["conv_transpose1d", "conv_transpose2d_groups", "roll", "linear", "bilinear", "expand_repeat"])
def test_reveal_cancel_through_structure_ops_equals_the_rule_on_their_brute_force_matrix(op, shape):
    torch.manual_seed(0)
    if isinstance(op, nn.Module):
        op = op.double()
    net = _LinearThenTanh(op if isinstance(op, nn.Module) else _Fn(op)).double().eval()
    x, r = _randn(2, *shape, seed=3), _randn(2, *shape, seed=4)
    model = deeplift.convert(net, x)
    got = deeplift.attribute(model, x, r, method="reveal_cancel", target=0)
    fn = (lambda z: op(z)) if not isinstance(op, nn.Module) else op
    bias = fn(torch.zeros(1, *shape, dtype=torch.float64)).detach().reshape(-1).numpy()
    w = _matrix(lambda z: fn(z) - fn(torch.zeros_like(z[:1])), shape)
    for i in range(2):
        want = _reference_linear_then_tanh(w, bias, x[i].reshape(-1).numpy(), r[i].reshape(-1).numpy())
        np.testing.assert_allclose(got[i].reshape(-1).numpy(), want, rtol=1e-9, atol=1e-12)


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# ---------------------------------------------------------------------------------------------
# embeddings of integer tokens


class _TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.proj, self.out = nn.Embedding(11, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, ids):
        return self.out(torch.relu(self.proj(self.emb(ids))).mean(1))


def test_token_scores_are_the_embedding_contributions_summed_over_the_embedding_axis():
    torch.manual_seed(0)
    net = _TokenModel().double().eval()
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(1))
    ref = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(2))
    ref[:, 0] = ids[:, 0]  # a token equal to its reference contributes exactly 0
    model = deeplift.convert(net, ids)
    assert model.layers[model.input_names[0]].dtype == torch.int64
    emb = _layers(model, Embedding)[0]
    for method in METHODS:
        per_token = deeplift.attribute(model, ids, ref, method=method, target="all")
        at_embedding = deeplift.attribute(model, ids, ref, method=method, target="all", score_layer=emb)
        assert per_token.dtype == torch.float64 and per_token.shape == (4, 2, 6)
        torch.testing.assert_close(per_token, at_embedding.sum(-1), rtol=1e-12, atol=1e-13)
        assert bool((per_token[:, :, 0] == 0).all())
        with torch.no_grad():
            delta = net(ids) - net(ref)
        torch.testing.assert_close(per_token.sum(-1), delta, rtol=1e-10, atol=1e-12)
    scores = deeplift.attribute(model, ids.numpy(), method="rescale", target=1)  # zeros = token 0
    assert isinstance(scores, np.ndarray) and scores.shape == (4, 6)


def test_gradient_of_token_ids_is_refused_and_points_at_the_embedding():
    net = _TokenModel().double().eval()
    ids = torch.randint(0, 11, (3, 5))
    model = deeplift.convert(net, ids)
    with pytest.raises(deeplift.DeepLiftError, match="score_layer"):
        deeplift.attribute(model, ids, method="gradient", target=0)
    emb = _layers(model, Embedding)[0]
    e = net.emb(ids).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.out(torch.relu(net.proj(e)).mean(1))[:, 0].sum(), e)
    torch.testing.assert_close(deeplift.attribute(model, ids, method="gradient", target=0, score_layer=emb), g)


# ---------------------------------------------------------------------------------------------
# LSTM / GRU


class _Recurrent(nn.Module):
    """A 2-layer bidirectional recurrent net over one-hot DNA (N, 4, L)."""

    def __init__(self, kind, layers: int = 2, bidirectional: bool = True, last: bool = False) -> None:
        super().__init__()
        self.rnn = kind(4, 5, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.last = last
        self.out = nn.Linear(5 * (2 if bidirectional else 1), 2)

    def forward(self, x):
        seq, state = self.rnn(x.transpose(1, 2))
        if self.last:
            h = state[0] if isinstance(state, tuple) else state
            return self.out(h[-1])
        return self.out(seq.mean(1))


def _one_hot_dna(n: int, length: int, seed: int) -> torch.Tensor:
    idx = torch.randint(0, 4, (n, length), generator=torch.Generator().manual_seed(seed))
    return F.one_hot(idx, 4).transpose(1, 2).double()


@pytest.mark.parametrize("kind, layers, bidirectional, last", [
    (nn.LSTM, 2, True, False), (nn.GRU, 1, True, False), (nn.LSTM, 1, False, True),
    (nn.GRU, 1, False, True),
], ids=["lstm_2_bi", "gru_1_bi", "lstm_1_last_state", "gru_1_last_state"])
def test_recurrent_layers_unroll_into_exact_gates(kind, layers, bidirectional, last):
    torch.manual_seed(0)
    x = _one_hot_dna(3, 7, seed=5)
    model = check_exact(_Recurrent(kind, layers, bidirectional, last), x, seed=6)
    assert _layers(model, Mul) and _layers(model, Sigmoid) and _layers(model, Tanh)
    # one-hot references too (a shuffled sequence), the way genomics users score
    ref = _one_hot_dna(3, 7, seed=7)
    scores = deeplift.attribute(model, x, ref, method="genomics_default", target=0)
    with torch.no_grad():
        net = model  # the converted forward equals the module's (checked above)
        delta = net(x)[:, 0] - net(ref)[:, 0]
    torch.testing.assert_close(scores.flatten(1).sum(1), delta, rtol=1e-10, atol=1e-12)


def test_recurrent_layer_with_a_given_initial_state_is_refused_clearly():
    class WithState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(4, 3, batch_first=True)

        def forward(self, x):
            h0 = torch.ones(1, x.shape[0], 3, dtype=x.dtype)
            return self.rnn(x, h0)[0][:, -1]

    with pytest.raises(deeplift.UnsupportedLayerError, match="initial state"):
        deeplift.convert(WithState().double(), _randn(3, 5, 4))


def test_recurrent_layer_without_batch_first_is_refused_clearly():
    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 3)

        def forward(self, x):
            return self.rnn(x.unsqueeze(0))[0][0]

    with pytest.raises(deeplift.UnsupportedLayerError, match="batch_first"):
        deeplift.convert(TimeFirst().double(), _randn(3, 4))


class _SplitHeads(nn.Module):
    """Attention's habit: ``qkv.reshape(B, N, 3, D).permute(2, 0, 1, 3)`` then ``unbind(0)`` (and
    ``[i]``), with a mask built from arange/ge over the batch size that broadcasts in an add."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(4, 12), nn.Linear(4, 2)

    def forward(self, x):  # (N, L, 4)
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(b, n, 3, 4).permute(2, 0, 1, 3)
        q, k, v = qkv.unbind(0)
        bias = (torch.arange(b)[:, None, None] >= 0).expand(b, n, 4).to(x.dtype)  # same per example
        h = torch.tanh(q) * torch.sigmoid(k) + v + bias + qkv[1]
        return self.out(h.mean(1))


def test_permute_moving_the_batch_axis_then_unbind_and_a_mask_built_from_the_batch_size():
    torch.manual_seed(0)
    model = check_exact(_SplitHeads(), _randn(3, 5, 4))
    assert not _layers(model, BatchConstant)  # the mask entered the add as a constant


class _TimeFirst(nn.Module):
    """PyTorch's default recurrent layout: (L, N, C) in, ``out[-1]`` or ``out.transpose(0, 1)``."""

    def __init__(self, kind, last: bool) -> None:
        super().__init__()
        self.rnn = kind(4, 5, num_layers=2, bidirectional=True)
        self.last = last
        self.out = nn.Linear(10, 2)

    def forward(self, x):  # (N, 4, L) one-hot
        seq, _ = self.rnn(x.permute(2, 0, 1))
        return self.out(seq[-1] if self.last else seq.transpose(0, 1).mean(1))


@pytest.mark.parametrize("kind, last", [(nn.LSTM, True), (nn.GRU, False)], ids=["lstm_last", "gru_mean"])
def test_time_first_recurrent_layers_fed_a_transposed_batch_convert(kind, last):
    torch.manual_seed(0)
    check_exact(_TimeFirst(kind, last), _one_hot_dna(3, 5, seed=8), seed=9)


def test_masked_fill_with_minus_infinity_before_a_softmax_sums_to_delta():
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.out = nn.Linear(4, 4), nn.Linear(4, 2)
            self.register_buffer("mask", torch.tensor([False, True, False, True]))

        def forward(self, x):
            return self.out(torch.softmax(self.proj(x).masked_fill(self.mask, float("-inf")), -1))

    torch.manual_seed(0)
    check_exact(Masked(), _randn(3, 4))


def test_an_op_without_a_rule_on_axes_folded_into_the_batch_axis_is_refused_at_conversion():
    class Windows(nn.Module):  # Swin's window partition: view(-1, window, C)
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):  # (N, 6, 4)
            w = self.proj(x).view(-1, 3, 4)
            return w.sum((1, 2)).view(x.shape[0], 2)

    with pytest.raises(deeplift.UnsupportedLayerError, match="folded into the batch axis"):
        deeplift.convert(Windows().double(), _randn(3, 6, 4))


class _WindowAttention(nn.Module):
    """Swin's window attention: windows folded into the batch axis (``view(-1, ws·ws, C)``),
    heads split with ``permute(2, 0, 3, 1, 4)`` + ``unbind(0)``, a per-window mask added after
    ``view(-1, nW, heads, N, N)``, and the windows unfolded again."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj, self.out = nn.Linear(4, 12), nn.Linear(4, 4), nn.Linear(4, 2)
        self.register_buffer("mask", torch.randn(4, 4, 4) * 0.5)  # (nW, N, N)

    def forward(self, x):  # (N, 4, 4, 4): a 4x4 grid of 4 channels, 2x2 windows
        b = x.shape[0]
        w = x.view(b, 2, 2, 2, 2, 4).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, 4, 4)
        qkv = self.qkv(w).reshape(w.shape[0], 4, 3, 2, 2).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * 0.5) @ k.transpose(-2, -1)
        attn = attn.view(-1, 4, 2, 4, 4) + self.mask.unsqueeze(1).unsqueeze(0)
        attn = torch.softmax(attn.view(-1, 2, 4, 4), -1)
        h = self.proj((attn @ v).transpose(1, 2).reshape(w.shape[0], 4, -1))
        h = h.view(-1, 2, 2, 2, 2, 4).permute(0, 1, 3, 2, 4, 5).contiguous().view(b, 4, 4, 4)
        return self.out(h.mean((1, 2)))


def test_window_attention_folding_windows_into_the_batch_axis_converts_exactly():
    torch.manual_seed(0)
    check_exact(_WindowAttention(), _randn(3, 4, 4, 4))
