"""Layers that combine several inputs: addition (residuals), subtraction, concatenation and
elementwise multiplication (gating). Inputs broadcast against each other as in PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Layer, Multipliers, SignPreservingLinear, Split, State, split_by_spread


def _sum_to(m: Tensor, state, name: str) -> Tensor:
    """Reduce (T, P, ...) multipliers over the axes an input was broadcast along."""
    if state.is_constant(name):  # constants receive nothing; the engine drops these
        return m
    shape, _, _ = state.pair_shape(name, m.shape[1])
    return m.sum_to_size((m.shape[0], *shape)) if tuple(m.shape[1:]) != tuple(shape) else m


class Add(SignPreservingLinear):
    """Sum of any number of inputs (a residual connection, a bias-like constant)."""

    n_inputs = None

    def linear(self, *xs: Tensor) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        return [(_sum_to(m_pos, state, i), None if m_neg is None else _sum_to(m_neg, state, i))
                for i in self.inputs]


class Sub(Layer):
    """``a − b``: the negative part of ``b``'s difference becomes a positive part of the output."""

    n_inputs = 2

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a - b

    def split(self, state: State) -> Split:
        (ap, an), (bp, bn) = state.split(self.inputs[0]), state.split(self.inputs[1])
        return ap - bn, an - bp

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        a, b = self.inputs
        if m_neg is None:
            return [(_sum_to(m_pos, state, a), None), (_sum_to(-m_pos, state, b), None)]
        return [(_sum_to(m_pos, state, a), _sum_to(m_neg, state, a)),
                (_sum_to(-m_neg, state, b), _sum_to(-m_pos, state, b))]


class Concat(SignPreservingLinear):
    """Concatenation along ``dim`` (counted on the full tensor, batch axis included)."""

    n_inputs = None

    def __init__(self, dim: int = 1, name: str | None = None, *, axis: int | None = None) -> None:
        super().__init__(name)
        self.dim = int(dim if axis is None else axis)  # ``axis``: the original library's name

    def linear(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.dim)

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        ndim = m.ndim
        dim = self.dim % ndim
        sizes = [state.pair_shape(i, 1)[0][dim] for i in self.inputs]
        return list(m.split(sizes, dim))


class Mul(Layer):
    """Elementwise product ``z = a·b`` (gating, attention weights, a learned scale).

    DeepLIFT uses the Shapley split of the two-player interaction: the multiplier of ``a`` is
    ``(b + b_ref)/2`` and of ``b`` is ``(a + a_ref)/2``, which gives ``Δz`` exactly. Each input
    is then treated like the input of a linear layer with that per-element weight (its sign
    decides the positive/negative routing). Gradient methods use ``b`` and ``a``.
    """

    n_inputs = 2

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def _weights(self, state) -> tuple[Tensor, Tensor]:
        def compute():
            a, b = self.inputs
            if not state.difference_based:
                return state.x(b), state.x(a)
            return 0.5 * (state.x(b) + state.r(b)), 0.5 * (state.x(a) + state.r(a))
        return state.cached(self, "weights", compute)

    def split(self, state: State) -> Split:
        # each input is the input of a linear layer with per-element weight w (see SignSplitLinear)
        pairs = [(w, state.delta(name)) for name, w in zip(self.inputs, self._weights(state))]
        total = sum(w * d for w, d in pairs)
        spread = sum(w.abs() * d.abs() for w, d in pairs)
        return split_by_spread(total, spread, len(pairs))

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        out = []
        for name, w in zip(self.inputs, self._weights(state)):
            if m_neg is None:
                m = w * m_pos
            else:
                m = w * (0.5 * (m_pos + m_neg)) + torch.sign(state.delta(name)) * w.abs() * (0.5 * (m_pos - m_neg))
            out.append((_sum_to(m, state, name), None))
        return out
