"""Random PyTorch models built from random stacks of the layers deeplift supports.

Used by the property-based tests (``test_summation_to_delta.py``, ``test_gradients.py``). A model
is a stack of small blocks (each its own ``nn.Module`` with an ordinary PyTorch ``forward``):
spatial blocks on ``(N, C, *S)`` tensors with ``S`` 1-, 2- or 3-D, a transition to ``(N, F)``
(flatten / view / global mean, sum or max), flat blocks, and a final ``nn.Linear`` whose outputs
are the targets (the logits). Structure comes from a :class:`Chooser` — either Hypothesis'
``data.draw`` (so failures shrink) or a seeded ``random.Random`` — and weights from a seeded torch
generator. Everything is float64.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------
# choosers


class Chooser:
    """Where the structural choices come from."""

    def int(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def choice(self, options: Sequence):
        return options[self.int(0, len(options) - 1)]

    def bool(self) -> bool:
        return self.int(0, 1) == 1


class RandomChooser(Chooser):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisChooser(Chooser):
    def __init__(self, data) -> None:
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


# ---------------------------------------------------------------------------------------------
# activations

ACTIVATIONS = ["relu", "F.relu", "x.relu()", "leaky_relu", "prelu", "elu", "selu", "sigmoid",
               "tanh", "softplus", "silu", "gelu", "gelu_tanh", "exp"]
SMOOTH_ACTIVATIONS = ["tanh", "softplus", "sigmoid", "silu", "gelu", "exp"]


class Act(nn.Module):
    """One elementwise nonlinearity, spelled several ways."""

    def __init__(self, kind: str, channels: int, c: Chooser) -> None:
        super().__init__()
        self.kind = kind
        self.mod: nn.Module | None = None
        if kind == "relu":
            self.mod = nn.ReLU()
        elif kind == "leaky_relu":
            self.mod = nn.LeakyReLU(c.choice([0.01, 0.2, 0.5]))
        elif kind == "prelu":
            self.mod = nn.PReLU(c.choice([1, channels]))
            with torch.no_grad():  # some negative slopes too
                self.mod.weight.copy_(torch.randn(self.mod.weight.shape) * 0.5)
        elif kind == "elu":
            self.mod = nn.ELU(c.choice([1.0, 0.5]))
        elif kind == "selu":
            self.mod = nn.SELU()
        elif kind == "softplus":
            self.mod = nn.Softplus(beta=c.choice([1.0, 2.0]))
        elif kind == "silu":
            self.mod = nn.SiLU()
        elif kind == "gelu":
            self.mod = nn.GELU()
        elif kind == "gelu_tanh":
            self.mod = nn.GELU(approximate="tanh")
        elif kind in EXTRA_ACTIVATIONS:
            self.mod = EXTRA_ACTIVATIONS[kind]()

    def forward(self, x: Tensor) -> Tensor:
        if self.mod is not None:
            return self.mod(x)
        if self.kind == "F.relu":
            return F.relu(x)
        if self.kind == "x.relu()":
            return x.relu()
        if self.kind == "sigmoid":
            return torch.sigmoid(x)
        if self.kind == "tanh":
            return torch.tanh(x)
        if self.kind == "exp":
            return torch.exp(0.3 * x)  # scaled so that exp stays moderate
        raise AssertionError(self.kind)

    def extra_repr(self) -> str:
        return self.kind


# ---------------------------------------------------------------------------------------------
# spatial blocks: (N, C, *S) -> (N, C', *S')

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_ADAPTIVE_MAX = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def random_conv(c: Chooser, nd: int, cin: int, same: bool = False, cout: int | None = None) -> nn.Module:
    groups = c.choice([g for g in (1, 2, 3) if cin % g == 0])
    if cout is None:
        cout = groups * c.int(1, max(1, 4 // groups))
    elif cout % groups:
        groups = 1
    k = c.int(1, 3)
    dilation = c.int(1, 2)
    if same or c.int(0, 3) == 0:
        return _CONV[nd](cin, cout, k, padding="same", dilation=dilation, groups=groups)
    return _CONV[nd](cin, cout, k, stride=c.int(1, 2), padding=c.int(0, k // 2 + 1) if k > 1 else 0,
                     dilation=dilation, groups=groups)


def random_batch_norm(num: int, nd: int) -> nn.Module:
    bn = _BN[max(nd, 1)](num)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(num) * 0.5)
        bn.running_var.copy_(torch.rand(num) * 1.5 + 0.25)
        bn.weight.copy_(torch.randn(num))  # some negative scales
        bn.bias.copy_(torch.randn(num) * 0.3)
    return bn.eval()


class Residual(nn.Module):
    """``x + act(f(x))`` with a shape-preserving ``f``."""

    def __init__(self, f: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.f, self.act = f, act

    def forward(self, x):
        return x + self.act(self.f(x))


class InplaceResidual(nn.Module):
    """``h = f(x); h += x; h.relu_()``"""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x):
        h = self.f(x)
        h += x
        return h.relu_()


class CatBlock(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Gate(nn.Module):
    """``a(x) * sigmoid(b(x))``"""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) * torch.sigmoid(self.b(x))


class Lambda(nn.Module):
    """A functional op with a readable description; ``mods`` are the modules ``fn`` calls (they
    are registered so that ``.double()``/``.eval()`` reach them)."""

    def __init__(self, desc: str, fn: Callable[[Tensor], Tensor], *mods: nn.Module) -> None:
        super().__init__()
        self.desc, self.fn = desc, fn
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.desc


class ChannelIndex(nn.Module):
    """``x[:, idx]`` (advanced indexing) or ``x.index_select(1, idx)`` on the channel axis."""

    def __init__(self, idx: list[int], use_index_select: bool) -> None:
        super().__init__()
        self.idx_list = idx
        self.use_index_select = use_index_select
        self.register_buffer("idx", torch.tensor(idx))

    def forward(self, x):
        if self.use_index_select:
            return x.index_select(1, self.idx)
        return x[:, self.idx_list]


class SoftmaxHidden(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.softmax(x, dim=self.dim)


def spatial_block(c: Chooser, nd: int, ch: int, spatial: Sequence[int], acts: Sequence[str]) -> nn.Module:
    kind = c.choice(["conv", "conv", "bn", "maxpool", "maxpool", "avgpool", "adaptive_avg", "act",
                     "act", "residual", "concat", "gate", "scalar", "pad", "slice", "index",
                     "transpose", "unsqueeze", "dropout", "softmax", *EXTRA_SPATIAL])
    if kind in EXTRA_SPATIAL:
        return extra_spatial_block(c, kind, nd, ch, spatial)
    smallest = min(spatial)
    if kind == "conv":
        return random_conv(c, nd, ch)
    if kind == "bn":
        return random_batch_norm(ch, nd)
    if kind == "maxpool":
        k = c.int(2, 3)
        return _MAXPOOL[nd](k, stride=c.int(1, k), padding=c.int(0, k // 2), dilation=c.int(1, 2),
                            ceil_mode=c.bool())
    if kind == "avgpool":
        k = c.int(2, 3)
        return _AVGPOOL[nd](k, stride=c.int(1, k), padding=c.int(0, k // 2), ceil_mode=c.bool(),
                            count_include_pad=c.bool())
    if kind == "adaptive_avg":
        return _ADAPTIVE_AVG[nd](tuple(c.int(1, max(1, s - 1)) for s in spatial))
    if kind == "act":
        return Act(c.choice(acts), ch, c)
    if kind == "residual":
        if c.bool():
            return Residual(random_conv(c, nd, ch, same=True, cout=ch), Act(c.choice(acts), ch, c))
        return InplaceResidual(random_conv(c, nd, ch, same=True, cout=ch))
    if kind == "concat":
        return CatBlock(Act(c.choice(acts), ch, c), random_conv(c, nd, ch, same=True))
    if kind == "gate":
        cout = c.int(1, 4)
        return Gate(random_conv(c, nd, ch, same=True, cout=cout), random_conv(c, nd, ch, same=True, cout=cout))
    if kind == "scalar":
        factor = c.choice([-1.5, 0.5, 2.0])
        if c.bool():
            return Lambda(f"x * {factor}", lambda x: x * factor)
        return Lambda(f"x / {factor}", lambda x: x / factor)
    if kind == "pad":
        pads = [c.int(0, 2) for _ in range(2 * nd)]
        value = c.choice([0.0, 0.5])
        return Lambda(f"F.pad(x, {pads}, value={value})", lambda x: F.pad(x, pads, value=value))
    if kind == "slice":
        if ch > 1 and c.bool():
            return Lambda("x[:, 1:]", lambda x: x[:, 1:])
        if smallest >= 3:
            # contiguous: torch.export cannot prove a later .view() of a strided slice valid
            return Lambda("x[..., 1::2].contiguous()", lambda x: x[..., 1::2].contiguous())
        return Lambda("x[:, :, :]", lambda x: x[:, :, :])
    if kind == "index":
        idx = [c.int(0, ch - 1) for _ in range(c.int(1, 3))]
        return ChannelIndex(idx, c.bool())
    if kind == "transpose":
        if nd == 1:
            return Lambda("x.transpose(1, 2).transpose(1, 2)", lambda x: x.transpose(1, 2).transpose(1, 2))
        if nd == 2:
            return Lambda("x.transpose(2, 3).contiguous()", lambda x: x.transpose(2, 3).contiguous())
        return Lambda("x.permute(0, 1, 4, 2, 3).contiguous()", lambda x: x.permute(0, 1, 4, 2, 3).contiguous())
    if kind == "unsqueeze":
        act = Act(c.choice(acts), ch, c)
        return Lambda(f"{act.kind}(x.unsqueeze(-1)).squeeze(-1)", lambda x: act(x.unsqueeze(-1)).squeeze(-1),
                      act)
    if kind == "dropout":
        return nn.Dropout(0.3)
    if kind == "softmax":
        return SoftmaxHidden(1)
    raise AssertionError(kind)


def to_flat(c: Chooser, nd: int) -> nn.Module:
    dims = tuple(range(2, 2 + nd))
    kind = c.choice(["nn.Flatten", "view", "reshape", "torch.flatten", "mean", "sum", "amax",
                     "adaptive_max", "adaptive_avg"])
    if kind == "nn.Flatten":
        return nn.Flatten()
    if kind == "view":
        return Lambda("x.view(x.size(0), -1)", lambda x: x.view(x.size(0), -1))
    if kind == "reshape":
        return Lambda("x.reshape(x.shape[0], -1)", lambda x: x.reshape(x.shape[0], -1))
    if kind == "torch.flatten":
        return Lambda("torch.flatten(x, 1)", lambda x: torch.flatten(x, 1))
    if kind == "mean":
        return Lambda(f"x.mean(dim={dims})", lambda x: x.mean(dim=dims))
    if kind == "sum":
        return Lambda(f"x.sum({list(dims)})", lambda x: x.sum(list(dims)))
    if kind == "amax":
        return Lambda(f"x.amax(dim={dims})", lambda x: x.amax(dim=dims))
    if kind == "adaptive_max":
        return nn.Sequential(_ADAPTIVE_MAX[nd](1), nn.Flatten())
    return nn.Sequential(_ADAPTIVE_AVG[nd](1), nn.Flatten())


# ---------------------------------------------------------------------------------------------
# flat blocks: (N, F) -> (N, F')


def flat_block(c: Chooser, width: int, acts: Sequence[str]) -> nn.Module:
    kind = c.choice(["linear", "linear", "bn", "act", "act", "residual", "concat", "gate", "scalar",
                     "dropout", "softmax", "unsqueeze", "slice", "max_pool", *EXTRA_FLAT])
    if kind in EXTRA_FLAT:
        return extra_flat_block(c, kind, width)
    if kind == "linear":
        return nn.Linear(width, c.int(2, 8))
    if kind == "bn":
        return random_batch_norm(width, 1)
    if kind == "act":
        return Act(c.choice(acts), width, c)
    if kind == "residual":
        return Residual(nn.Linear(width, width), Act(c.choice(acts), width, c))
    if kind == "concat":
        return CatBlock(Act(c.choice(acts), width, c), nn.Linear(width, c.int(1, 4)))
    if kind == "gate":
        out = c.int(1, 6)
        return Gate(nn.Linear(width, out), nn.Linear(width, out))
    if kind == "scalar":
        return Lambda("x * -0.7", lambda x: x * -0.7)
    if kind == "dropout":
        return nn.Dropout(0.5)
    if kind == "softmax":
        return SoftmaxHidden(-1)
    if kind == "unsqueeze":
        return Lambda("x.unsqueeze(1).squeeze(1)", lambda x: x.unsqueeze(1).squeeze(1))
    if kind == "slice":
        return Lambda("x[:, :-1]", lambda x: x[:, :-1]) if width > 2 else nn.Identity()
    if kind == "max_pool":  # max pooling over features: (N, F) -> (N, 1, F) -> pool -> (N, F')
        k = c.int(2, 3)
        pool = nn.MaxPool1d(k, stride=c.int(1, k), ceil_mode=c.bool())
        return Lambda("maxpool1d(x.unsqueeze(1)).squeeze(1)",
                      lambda x: pool(x.unsqueeze(1)).squeeze(1), pool) if width >= k else nn.Identity()
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------
# issue 9 part A: normalisations, attention and products of activations, more elementwise ops


class Abs(nn.Module):
    def forward(self, x):
        return x.abs()


EXTRA_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid, "mish": nn.Mish, "softsign": nn.Softsign,
    "abs": Abs}
ACTIVATIONS.extend(EXTRA_ACTIVATIONS)
SMOOTH_ACTIVATIONS.append("mish")

EXTRA_SPATIAL = ["layer_norm", "group_norm", "instance_norm", "rms_norm", "attention", "attention",
                 "elementwise", "elementwise"]
EXTRA_FLAT = ["layer_norm", "elementwise", "elementwise", "elementwise", "logsumexp"]


def _random_affine(norm: nn.Module) -> nn.Module:
    """Random γ (some negative) and β, so that the affine part of a norm is exercised."""
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape) * (1.0 if p.ndim and p is getattr(norm, "weight", None) else 0.3))
    return norm


class Attention(nn.Module):
    """Self-attention over the positions of ``(N, C, *S)`` with ``heads`` heads: q, k, v from
    linear maps of the tokens, written as ``style``: ``sdpa`` (with ``mask``: None, "causal",
    "bool", "float"), ``manual`` (Hugging Face BERT style: matmul, / sqrt(d), + mask, softmax,
    dropout, matmul) or ``einsum``."""

    def __init__(self, c: Chooser, ch: int) -> None:
        super().__init__()
        self.heads = c.choice([h for h in (1, 2) if ch % h == 0])
        self.style = c.choice(["sdpa", "manual", "einsum"])
        self.mask = c.choice([None, "causal", "bool", "float"])
        self.q, self.k, self.v = (nn.Linear(ch, ch) for _ in range(3))
        self.drop = nn.Dropout(0.1)

    def _mask(self, length: int, dtype) -> Tensor | None:
        if self.mask is None:
            return None
        keep = torch.ones(length, length, dtype=torch.bool).tril()
        if self.mask in ("causal", "bool"):
            return keep
        return torch.zeros(length, length, dtype=dtype).masked_fill(~keep, float("-inf"))

    def forward(self, x):
        shape = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, L, C)
        n, length, ch = tokens.shape
        d = ch // self.heads

        def heads(t):
            return t.view(n, length, self.heads, d).permute(0, 2, 1, 3)

        q, k, v = heads(self.q(tokens)), heads(self.k(tokens)), heads(self.v(tokens))
        mask = self._mask(length, x.dtype)
        if self.style == "sdpa":
            if self.mask == "causal":
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            if self.style == "manual":
                scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
            else:
                scores = torch.einsum("bhld,bhmd->bhlm", q, k) * (1 / math.sqrt(d))
            if mask is not None:
                if mask.dtype == torch.bool:
                    mask = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, torch.finfo(x.dtype).min)
                scores = scores + mask
            weights = self.drop(torch.softmax(scores, dim=-1))
            out = (torch.matmul(weights, v) if self.style == "manual"
                   else torch.einsum("bhlm,bhmd->bhld", weights, v))
        return out.permute(0, 2, 1, 3).reshape(n, length, ch).transpose(1, 2).reshape(shape).contiguous()

    def extra_repr(self) -> str:
        return f"style={self.style}, heads={self.heads}, mask={self.mask}"


def extra_spatial_block(c: Chooser, kind: str, nd: int, ch: int, spatial: Sequence[int]) -> nn.Module:
    if kind == "layer_norm":
        if c.bool():
            return _random_affine(nn.LayerNorm(spatial[-1]))
        return _random_affine(nn.LayerNorm([ch, *spatial]))
    if kind == "group_norm":
        return _random_affine(nn.GroupNorm(c.choice([g for g in (1, 2, 3) if ch % g == 0]), ch))
    if kind == "instance_norm":
        norm = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[nd]
        return _random_affine(norm(ch, affine=c.bool()))
    if kind == "rms_norm":
        return _random_affine(nn.RMSNorm(spatial[-1], eps=c.choice([1e-5, 1e-3])))  # see test_normalization
    if kind == "attention":
        return Attention(c, ch)
    if kind == "elementwise":
        return extra_flat_block(c, kind, ch)
    raise AssertionError(kind)


_ELEMENTWISE = {
    "torch.log1p(x.abs())": lambda x: torch.log1p(x.abs()),
    "torch.log(F.softplus(x) + 0.1)": lambda x: torch.log(F.softplus(x) + 0.1),
    "torch.sqrt(F.softplus(x))": lambda x: torch.sqrt(F.softplus(x)),
    "torch.rsqrt(x * x + 1)": lambda x: torch.rsqrt(x * x + 1),
    "x / (1 + torch.exp(x))": lambda x: x / (1 + torch.exp(x)),
    "1.5 / (x.abs() + 1)": lambda x: 1.5 / (x.abs() + 1),
    "x ** 2": lambda x: x ** 2,
    "x.pow(3) * 0.3": lambda x: x.pow(3) * 0.3,
    "2 ** x": lambda x: 2 ** x,
    "torch.reciprocal(x * x + 0.5)": lambda x: torch.reciprocal(x * x + 0.5),
    "0.5 * x * (1 + torch.erf(x / math.sqrt(2)))": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    # in-place aliases (on a fresh tensor: never on the model's input)
    "F.hardswish(x * 1.5, inplace=True)": lambda x: F.hardswish(x * 1.5, inplace=True),
    "(x.abs() + 0.1).sqrt_()": lambda x: (x.abs() + 0.1).sqrt_(),
    "F.dropout(x + 0, 0.2, False, inplace=True)": lambda x: F.dropout(x + 0, 0.2, False, inplace=True),
}
_KINKED = {"torch.log1p(x.abs())", "1.5 / (x.abs() + 1)", "F.hardswish(x * 1.5, inplace=True)",
           "(x.abs() + 0.1).sqrt_()"}


def extra_flat_block(c: Chooser, kind: str, width: int) -> nn.Module:
    if kind == "layer_norm":
        return _random_affine(nn.LayerNorm(width))
    if kind == "elementwise":
        desc = c.choice(sorted(_ELEMENTWISE))
        block = Lambda(desc, _ELEMENTWISE[desc])
        block.kinked, block.not_relu = desc in _KINKED, True
        return block
    if kind == "logsumexp":
        if width % 2:
            block = Lambda("torch.logsumexp(x.unsqueeze(-1), -1)", lambda x: torch.logsumexp(x.unsqueeze(-1), -1))
        else:
            block = Lambda("torch.logsumexp(x.view(x.shape[0], 2, -1), -1)",
                           lambda x: torch.logsumexp(x.view(x.shape[0], 2, -1), -1))
        block.not_relu = True
        return block
    raise AssertionError(kind)


#: blocks with nonlinearities other than ReLU (kept out of the guided-backprop reference models)
EXTRA_BLOCK_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                     nn.InstanceNorm3d, nn.RMSNorm, Attention)


# ---------------------------------------------------------------------------------------------
# the model


class RandomNet(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def _init_weights(net: nn.Module, gen: torch.Generator) -> None:
    """Variance-preserving random weights (so activations stay O(1) through deep stacks)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 1.3 / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)


def _shape_after(block: nn.Module, x: Tensor) -> tuple[int, ...] | None:
    try:
        with torch.no_grad():
            y = block.eval()(x)
    except (RuntimeError, ValueError):
        return None
    if y.numel() == 0 or y.shape[0] != x.shape[0] or not torch.isfinite(y).all():
        return None
    return tuple(y.shape)


_MAX_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                nn.AdaptiveMaxPool3d)


def _allowed(block: nn.Module, smooth: bool, relu_only: bool) -> bool:
    text = repr(block)
    if smooth:  # no kinks: no max, no ReLU-family
        return not getattr(block, "kinked", False) and not (any(isinstance(m, _MAX_MODULES) for m in block.modules())
                    or "amax" in text or "maxpool" in text or isinstance(block, InplaceResidual))
    if relu_only:  # every nonlinearity is an nn.ReLU module (guided backprop's hook reference)
        return not (isinstance(block, (Gate, SoftmaxHidden, InplaceResidual, *EXTRA_BLOCK_TYPES))
                    or getattr(block, "not_relu", False))
    return True


def build_model(c: Chooser, seed: int, smooth: bool = False, relu_only: bool = False
                ) -> tuple[RandomNet, tuple[int, ...], list[str]]:
    """(float64 model in eval mode, input shape without batch, description of the blocks).

    ``smooth``: only smooth activations and no max (integrated-gradients convergence);
    ``relu_only``: every nonlinearity is an ``nn.ReLU`` module (guided backprop).
    """
    acts = SMOOTH_ACTIVATIONS if smooth else ["relu"] if relu_only else ACTIVATIONS
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        nd = c.int(0, 3)
        if nd == 0:
            shape: tuple[int, ...] = (c.int(2, 8),)
        else:
            size = {1: (5, 12), 2: (4, 7), 3: (3, 5)}[nd]
            shape = (c.int(1, 3), *[c.int(*size) for _ in range(nd)])
        blocks: list[nn.Module] = []
        desc: list[str] = []
        probe = torch.zeros((2, *shape))

        def try_add(block: nn.Module) -> bool:
            nonlocal probe
            out = _shape_after(block, probe)
            if out is None or not _allowed(block, smooth, relu_only):
                return False
            if len(out) > 2 and (out[1] > 8 or math.prod(out[1:]) > 600):
                return False
            blocks.append(block)
            desc.append(repr(block).replace("\n", " "))
            probe = torch.zeros(out)
            return True

        if nd:
            for _ in range(c.int(1, 5)):
                try_add(spatial_block(c, nd, probe.shape[1], probe.shape[2:], acts))
            while not try_add(to_flat(c, probe.ndim - 2)):
                pass
        for _ in range(c.int(0, 3)):
            try_add(flat_block(c, probe.shape[1], acts))
        blocks.append(nn.Linear(probe.shape[1], c.int(2, 4)))
        desc.append(repr(blocks[-1]))
        net = RandomNet(blocks)
        _init_weights(net, torch.Generator().manual_seed(seed))
    return net.double().eval(), shape, desc


def random_inputs(shape: Sequence[int], n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(x, reference): independent standard normals, float64, a different reference per example."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((n, *shape), generator=gen, dtype=torch.float64)
    r = torch.randn((n, *shape), generator=gen, dtype=torch.float64) * 0.8 + 0.1
    return x, r


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: these tests use tiny tensors, where intra-op threads only add
    spin-wait overhead (tens of ms per op on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
