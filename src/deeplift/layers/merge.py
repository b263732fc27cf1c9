"""Layers that combine several inputs: addition (residuals), subtraction, concatenation and
elementwise multiplication (gating). Inputs broadcast against each other as in PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Layer, Multipliers, SignPreservingLinear, Split, State
from .products import Mul  # noqa: F401  (the elementwise product; one rule for every product)


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

    def pass_reads(self, rule: str, reference: bool, paired: bool = False
                   ) -> tuple[str, ...] | None:
        return ()

    def split_reads(self, rule: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return (), tuple(self.inputs)

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
