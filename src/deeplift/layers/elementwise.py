"""More elementwise nonlinearities: logs, powers, roots, reciprocal, abs, and the hard/smooth
activations of mobile and transformer models.

Each is an :class:`~deeplift.layers.activations.Activation` with ``f`` and ``derivative``, so every
nonlinearity rule (Rescale, RevealCancel, gradient, guided backprop, ...) applies to it unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .activations import Activation
from .base import PerPairLinearMap


class _Domain(Activation):
    """A function defined on part of the line only (log, sqrt, 1/x ...). RevealCancel evaluates
    ``f(r + Δx⁺)`` and ``f(r + Δx⁻)``, points off the path from ``r`` to ``x`` that may leave the
    domain; where they do, that element takes the Rescale split instead (still exact)."""

    def reveal_cancel_parts(self, state):
        def compute():
            pos, neg, sp, sn = super(_Domain, self).reveal_cancel_parts(state)
            bad = ~(torch.isfinite(pos) & torch.isfinite(neg) & torch.isfinite(sp) & torch.isfinite(sn))
            if bool(bad.any()):
                s = self.rescale_factor(state)
                p, n = state.split(self.inputs[0])
                pos, neg = torch.where(bad, s * p, pos), torch.where(bad, s * n, neg)
                sp, sn = torch.where(bad, s, sp), torch.where(bad, s, sn)
            return pos, neg, sp, sn
        return state.cached(self, "reveal_cancel_in_domain", compute)


class Log(_Domain):
    def f(self, x: Tensor) -> Tensor:
        return torch.log(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / x


class Log1p(_Domain):
    def f(self, x: Tensor) -> Tensor:
        return torch.log1p(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + x)


class Sqrt(_Domain):
    def f(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 0.5 / torch.sqrt(x)


class Rsqrt(_Domain):
    def f(self, x: Tensor) -> Tensor:
        return torch.rsqrt(x)

    def derivative(self, x: Tensor) -> Tensor:
        return -0.5 * torch.rsqrt(x) / x


class Reciprocal(_Domain):
    """``1/x`` (also how a division by an activation is expressed: ``a/b = a·(1/b)``)."""

    def f(self, x: Tensor) -> Tensor:
        return torch.reciprocal(x)

    def derivative(self, x: Tensor) -> Tensor:
        return -1 / (x * x)


class Pow(_Domain):
    """``x ** exponent`` for a constant exponent."""

    def __init__(self, exponent: float, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.exponent = float(exponent)

    def f(self, x: Tensor) -> Tensor:
        return torch.pow(x, self.exponent)

    def derivative(self, x: Tensor) -> Tensor:
        if self.exponent == 0:
            return torch.zeros_like(x)
        return self.exponent * torch.pow(x, self.exponent - 1)

    def describe(self) -> str:
        return f"Pow({self.exponent:g})"


class ScalarPow(Activation):
    """``base ** x`` for a constant positive base: ``exp(x·ln base)``."""

    def __init__(self, base: float, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.base = float(base)

    def f(self, x: Tensor) -> Tensor:
        return torch.pow(self.base, x)

    def derivative(self, x: Tensor) -> Tensor:
        return math.log(self.base) * torch.pow(self.base, x)


class Abs(Activation):
    def f(self, x: Tensor) -> Tensor:
        return torch.abs(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.sign(x)


class Hardswish(Activation):
    """``x·relu6(x + 3)/6``."""

    def f(self, x: Tensor) -> Tensor:
        return F.hardswish(x)

    def derivative(self, x: Tensor) -> Tensor:  # torch's: x/3 + 0.5 inside (−3, 3), 1 from 3 on
        return torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, x / 3 + 0.5, torch.ones_like(x)))


class Hardsigmoid(Activation):
    """``relu6(x + 3)/6``."""

    def f(self, x: Tensor) -> Tensor:
        return F.hardsigmoid(x)


class Mish(Activation):
    """``x·tanh(softplus(x))``."""

    def f(self, x: Tensor) -> Tensor:
        return F.mish(x)


class Softsign(Activation):
    """``x/(1 + |x|)`` (Keras' ``softsign``; PyTorch's ``nn.Softsign`` is captured as its parts)."""

    def f(self, x: Tensor) -> Tensor:
        return F.softsign(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + x.abs()) ** 2


class LogSumExp(PerPairLinearMap):
    """``log Σ exp(x)`` over ``dims`` (batch axis excluded).

    Per pair, with one shift ``c`` for input and reference: ``e = exp(x − c)`` (Rescale factor
    ``s_e``), ``S = Σe`` (linear), ``y = c + log S`` (Rescale factor ``s_log`` of the log): the
    per-pair linear map ``Δy = s_log·Σ s_e·Δx``, which both parts of the split go through and whose
    transpose carries the multipliers. For gradient methods the same map is the Jacobian.
    """

    def __init__(self, dims, keepdim: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.dims = tuple(int(d) for d in ([dims] if isinstance(dims, int) else dims))
        self.keepdim = bool(keepdim)

    def _dims(self, ndim: int) -> tuple[int, ...]:
        """The reduced axes as negative indices (they broadcast with a leading target axis)."""
        return tuple(sorted(d - ndim if d >= 0 else d for d in self.dims))

    def forward(self, x: Tensor) -> Tensor:
        return torch.logsumexp(x, self._dims(x.ndim), self.keepdim)

    def _factors(self, state):
        def compute():
            x = state.x(self.inputs[0])
            d = self._dims(x.ndim)
            if not state.difference_based:
                e = torch.exp(x - x.amax(d, keepdim=True))
                return d, e, 1 / e.sum(d, keepdim=True)
            r = state.r(self.inputs[0])
            c = torch.maximum(x.amax(d, keepdim=True), r.amax(d, keepdim=True))
            ex, er = torch.exp(x - c), torch.exp(r - c)
            dx = x - r
            near = ~(dx.abs() >= state.options.near_zero)  # also -inf − -inf: a masked entry
            s_e = torch.where(near, er, (ex - er) / torch.where(near, torch.ones_like(dx), dx))
            sx, sr = ex.sum(d, keepdim=True), er.sum(d, keepdim=True)
            ds = sx - sr
            near_s = ds.abs() < state.options.near_zero * sr
            s_log = torch.where(near_s, 1 / sr,
                                (torch.log(sx) - torch.log(sr)) / torch.where(near_s, torch.ones_like(ds), ds))
            return d, s_e, s_log
        return state.cached(self, "factors", compute)

    def _apply(self, state, v: Tensor) -> Tensor:
        d, s_e, s_log = self._factors(state)
        out = s_log * (s_e * v).sum(d, keepdim=True)
        return out if self.keepdim else out.squeeze(d)

    def _apply_transpose(self, state, m: Tensor) -> Tensor:
        d, s_e, s_log = self._factors(state)
        if not self.keepdim:
            full = m.ndim + len(d)
            for k in sorted(d):  # ascending positions of the full-rank tensor
                m = m.unsqueeze(full + k)
        return s_e * (s_log * m)



class Erf(Activation):
    """The error function (GELU written out by hand: ``0.5·x·(1 + erf(x/√2))``)."""

    def f(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (2 / math.sqrt(math.pi)) * torch.exp(-x * x)


class ThresholdedReLU(Activation):
    """Keras' ``ReLU(max_value, threshold, negative_slope)``: ``max_value`` for ``x ≥ max_value``,
    ``x`` for ``threshold ≤ x < max_value``, ``negative_slope·(x − threshold)`` below."""

    def __init__(self, max_value: float | None = None, threshold: float = 0.0, negative_slope: float = 0.0,
                 name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.max_value = None if max_value is None else float(max_value)
        self.threshold, self.negative_slope = float(threshold), float(negative_slope)

    def f(self, x: Tensor) -> Tensor:
        y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else torch.where(x >= self.max_value, torch.full_like(x, self.max_value), y)

    def derivative(self, x: Tensor) -> Tensor:
        g = torch.where(x >= self.threshold, torch.ones_like(x), torch.full_like(x, self.negative_slope))
        return g if self.max_value is None else torch.where(x >= self.max_value, torch.zeros_like(x), g)
