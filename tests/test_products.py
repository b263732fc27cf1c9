"""Products of two activations (gating, matmul/bmm/baddbmm, einsum) and attention.

The product rule is checked against Shapley values computed by enumerating every coalition of
input elements (float64): for a network that is quadratic in its input (linear maps, one product,
a linear read-out) the Shapley value of each input element is exactly what the midpoint rule
gives. Attention (``scaled_dot_product_attention`` with masks, Hugging Face BERT-style attention
written in plain torch, einsum attention) converts unmodified and sums to delta; the gradient
method equals autograd.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeplift
from random_models import single_thread

METHODS = ["rescale", "reveal_cancel", "genomics_default"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def shapley_by_enumeration(f, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Shapley value of every element of ``x`` (1-D, n players) for the scalar game
    ``v(S) = f(x on S, r elsewhere)``, from its definition: the weighted sum over every coalition
    S without player i of ``v(S ∪ {i}) − v(S)``, weight ``|S|!(n−|S|−1)!/n!``."""
    n = x.numel()
    masks = torch.tensor(list(itertools.product([0, 1], repeat=n)), dtype=torch.bool)  # (2^n, n)
    with torch.no_grad():
        values = f(torch.where(masks, x, r))  # every coalition in one batch
    sizes = masks.sum(1)
    weight = torch.tensor([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                           for k in range(n)], dtype=torch.float64)
    phi = torch.zeros(n, dtype=torch.float64)
    for i in range(n):  # row k + 2^(n-1-i) is coalition k with player i added (product order)
        without = torch.nonzero(~masks[:, i]).flatten()
        gain = values[without + 2 ** (n - 1 - i)] - values[without]
        phi[i] = (weight[sizes[without]] * gain).sum()
    return phi


class _Quadratic(nn.Module):
    """linear maps -> one product of two activations -> linear read-out."""

    def __init__(self, kind: str, n: int = 8) -> None:
        super().__init__()
        self.kind = kind
        self.a, self.b = nn.Linear(n, 6), nn.Linear(n, 6)
        self.out = nn.Linear({"mul": 6, "matmul": 4, "bmm": 4, "baddbmm": 4, "einsum": 9,
                              "einsum_one_sided": 3, "scores": 4}[kind], 3)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        n = x.shape[0]
        if self.kind == "mul":
            z = a * b
        elif self.kind == "matmul":
            z = torch.matmul(a.view(n, 2, 3), b.view(n, 3, 2))
        elif self.kind == "bmm":
            z = torch.bmm(a.view(n, 2, 3), b.view(n, 3, 2))
        elif self.kind == "baddbmm":
            z = torch.baddbmm(a[:, :4].view(n, 2, 2), a.view(n, 2, 3), b.view(n, 3, 2), beta=0.5, alpha=-1.5)
        elif self.kind == "einsum":
            z = torch.einsum("nij,nkj->nik", a.view(n, 3, 2), b.view(n, 3, 2))
        elif self.kind == "einsum_one_sided":  # i is summed out of the first operand only
            z = torch.einsum("nij,nj->nj", a.view(n, 2, 3), b[:, :3])
        else:  # attention scores q·kᵀ, both from x
            q, k = a.view(n, 1, 2, 3), b.view(n, 1, 2, 3)
            z = q @ k.transpose(-1, -2)
        return self.out(z.reshape(n, -1))


@pytest.mark.parametrize("kind", ["mul", "matmul", "bmm", "baddbmm", "einsum", "einsum_one_sided", "scores"])
def test_product_contributions_equal_shapley_values_by_enumeration(kind):
    torch.manual_seed(3)
    net = _Quadratic(kind).double().eval()
    x = torch.randn(2, 8, dtype=torch.float64)
    r = torch.randn(2, 8, dtype=torch.float64)
    model = deeplift.convert(net, x)
    phi = {(e, t): shapley_by_enumeration(lambda z: net(z)[:, t], x[e], r[e]) for e in range(2) for t in (0, 2)}
    for method in METHODS:
        scores = deeplift.attribute(model, x, r, method=method, target="all")
        for (e, t), expected in phi.items():
            torch.testing.assert_close(scores[e, t], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["mul", "matmul", "einsum", "scores"])
def test_product_gradient_equals_autograd(kind):
    torch.manual_seed(4)
    net = _Quadratic(kind).double().eval()
    x = torch.randn(3, 8, dtype=torch.float64)
    model = deeplift.convert(net, x)
    got = deeplift.attribute(model, x, method="gradient", target=1)
    xx = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xx)[:, 1].sum(), xx)
    torch.testing.assert_close(got, grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# attention


class _SDPA(nn.Module):
    def __init__(self, mask: str | None, scale: float | None = None) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.mask, self.scale = mask, scale

    def forward(self, x):  # x: (N, L, 6), two heads of 3
        n, length, _ = x.shape

        def heads(t):
            return t.view(n, length, 2, 3).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        keep = torch.ones(length, length, dtype=torch.bool).tril()
        if self.mask == "causal":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        elif self.mask == "bool":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=self.scale)
        elif self.mask == "-inf":
            mask = torch.zeros(length, length, dtype=x.dtype).masked_fill(~keep, float("-inf"))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return out.transpose(1, 2).reshape(n, -1)


class BertStyleSelfAttention(nn.Module):
    """Hugging Face's BertSelfAttention + BertSelfOutput as written in plain torch (eager)."""

    def __init__(self, hidden: int = 8, heads: int = 2, mask_value: float = -10000.0) -> None:
        super().__init__()
        self.heads, self.head_size = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.dropout = nn.Dropout(0.1)
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.mask_value = mask_value
        self.classifier = nn.Linear(hidden, 3)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.heads, self.head_size)
        x = x.view(new_x_shape)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states):
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.head_size)
        length = hidden_states.shape[1]
        keep = torch.ones(length, dtype=hidden_states.dtype)
        keep[-1] = 0  # the last position is padding
        if math.isinf(self.mask_value):
            additive = torch.zeros(length, dtype=keep.dtype).masked_fill(keep == 0, self.mask_value)
        else:  # Hugging Face's extended attention mask
            additive = (1.0 - keep) * self.mask_value
        attention_scores = attention_scores + additive[None, None, None, :]
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_probs)
        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.heads * self.head_size,)
        context_layer = context_layer.view(new_context_layer_shape)
        out = self.LayerNorm(self.dropout(self.dense(context_layer)) + hidden_states)
        return self.classifier(F.gelu(out[:, 0]))


def _check_attention_model(net: nn.Module, x: torch.Tensor, r: torch.Tensor) -> None:
    model = deeplift.convert(net, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)
        delta = net(x) - net(r)
    for method in METHODS:
        scores = deeplift.attribute(model, x, r, method=method, target="all")
        err = (scores.flatten(2).sum(2) - delta).abs() / (1 + delta.abs())
        assert err.max().item() <= 1e-9, (method, err.max().item())
    got = deeplift.attribute(model, x, method="gradient", target=0)
    xx = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xx)[:, 0].sum(), xx)
    torch.testing.assert_close(got, grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mask, scale", [(None, None), ("causal", None), ("bool", 0.7), ("-inf", None)])
def test_scaled_dot_product_attention_sums_to_delta_with_masks(mask, scale):
    torch.manual_seed(5)
    net = _SDPA(mask, scale).double().eval()
    x = torch.randn(3, 4, 6, dtype=torch.float64) * 2  # large scores: a peaked softmax
    r = torch.randn(3, 4, 6, dtype=torch.float64) * 0.3
    _check_attention_model(net, x, r)


@pytest.mark.parametrize("mask_value", [pytest.param(-10000.0, marks=pytest.mark.slow),
                                        torch.finfo(torch.float64).min, float("-inf")])
def test_bert_style_self_attention_converts_unmodified_and_sums_to_delta(mask_value):
    torch.manual_seed(6)
    net = BertStyleSelfAttention(mask_value=mask_value).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    r = torch.zeros(3, 5, 8, dtype=torch.float64)  # the usual all-zero reference
    _check_attention_model(net, x, r)


def test_softmax_of_large_scores_sums_to_delta_where_the_sums_differ_by_orders_of_magnitude():
    # exp-sums of input and reference differ by ~e^40: the e·(1/Σe) Shapley split cancels huge
    # terms here; the log-domain rule keeps every factor bounded
    net = nn.Sequential(nn.Softmax(-1), nn.Linear(6, 2)).double().eval()
    x = torch.tensor([[40.0, -3, 2, 0, 1, 39]], dtype=torch.float64)
    r = torch.tensor([[0.1, -0.2, 0.3, 0.0, -0.1, 0.2]], dtype=torch.float64)
    model = deeplift.convert(net, x)
    delta = net(x) - net(r)
    for method in METHODS:
        scores = deeplift.attribute(model, x, r, method=method, target="all")
        assert (scores.sum(-1) - delta).abs().max().item() <= 1e-14
        assert scores.abs().max().item() < 10  # no huge contributions that cancel


def test_attention_with_dropout_in_training_mode_is_refused_by_name():
    class Drop(nn.Module):
        def forward(self, x):
            q = x.unsqueeze(1)
            return F.scaled_dot_product_attention(q, q, q, dropout_p=0.3).flatten(1)

    with pytest.raises(deeplift.UnsupportedLayerError, match="dropout_p=0.3"):
        deeplift.convert(Drop(), torch.randn(2, 3, 4))


def test_product_of_activations_that_mixes_examples_is_refused():
    class Gram(nn.Module):
        def forward(self, x):
            return torch.matmul(x, x.unsqueeze(-1))  # (N, 4) @ (N, 4, 1) -> (N, N, 1): mixes examples

    with pytest.raises(deeplift.UnsupportedLayerError, match="batch axis first"):
        deeplift.convert(Gram(), torch.randn(3, 4))


class _MHA(nn.Module):
    def __init__(self, cross: bool = False, mask: str | None = None, kdim: int | None = None,
                 need_weights: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.kv = nn.Linear(8, kdim or 8)
        self.cross, self.mask, self.need_weights = cross, mask, need_weights

    def forward(self, x):
        kv = self.kv(x) if self.cross else x
        length = x.shape[1]
        mask = None
        if self.mask == "bool":  # nn.MultiheadAttention: True means "do not attend"
            mask = torch.ones(length, length, dtype=torch.bool).triu(1)
        elif self.mask == "float":
            mask = torch.zeros(length, length, dtype=x.dtype).masked_fill(
                torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
        out, _ = self.attn(x, kv, kv, need_weights=self.need_weights, attn_mask=mask)
        return out.flatten(1)


@pytest.mark.parametrize("kwargs", [{}, pytest.param({"need_weights": False}, marks=pytest.mark.slow),
                                    {"cross": True, "mask": "bool"},
                                    pytest.param({"mask": "float"}, marks=pytest.mark.slow),
                                    {"cross": True, "kdim": 6}],
                         ids=["self", "no_weights", "cross_bool_mask", "float_mask", "kdim"])
def test_multihead_attention_module_converts_unmodified_and_sums_to_delta(kwargs):
    torch.manual_seed(11)
    net = _MHA(**kwargs).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    r = torch.randn(3, 5, 8, dtype=torch.float64) * 0.5
    _check_attention_model(net, x, r)
    assert "forward" not in vars(net.attn)  # the module's own forward is back


@pytest.mark.parametrize("norm_first", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_transformer_encoder_layer_converts_unmodified_and_sums_to_delta(norm_first):
    torch.manual_seed(12)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=norm_first)
    net = nn.Sequential(layer, nn.Flatten(), nn.Linear(40, 3)).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    _check_attention_model(net, x, torch.zeros_like(x))


class AttentionPool(nn.Module):
    """Enformer's attention pooling (its einops rearrange written as a view)."""

    def __init__(self, dim: int, pool_size: int = 2) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.to_attn_logits = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        b, d, n = x.shape
        x = x.view(b, d, n // self.pool_size, self.pool_size)
        attn = self.to_attn_logits(x).softmax(dim=-1)
        return (x * attn).sum(dim=-1)


def test_enformer_attention_pooling_converts_unmodified_and_sums_to_delta():
    torch.manual_seed(15)
    net = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), AttentionPool(6), nn.GELU(), nn.Flatten(),
                        nn.Linear(30, 2)).double().eval()
    x = torch.randn(3, 4, 10, dtype=torch.float64)
    _check_attention_model(net, x, torch.randn(3, 4, 10, dtype=torch.float64))


class _ConstantOperand(nn.Module):
    """matmul of an activation with a 3-D parameter on either side (broadcast over the batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3, 4))
        self.out = nn.Linear(2 * 5 * 4 + 2, 2)

    def forward(self, x):
        left = (x.view(-1, 1, 5, 3) @ self.w).flatten(1)
        right = (self.w.transpose(1, 2) @ x.view(-1, 1, 3, 5)).sum((2, 3))
        return self.out(torch.cat([left, right], 1))


def test_matmul_with_a_constant_operand_of_any_rank_sums_to_delta():
    torch.manual_seed(16)
    net = _ConstantOperand().double().eval()
    _check_attention_model(net, torch.randn(3, 15, dtype=torch.float64), torch.randn(3, 15, dtype=torch.float64))
