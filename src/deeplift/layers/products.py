"""Products of two activations: elementwise gating, matmul/bmm and einsum (attention's q·kᵀ and
attention·v, LayerNorm's c·(1/σ)). One rule serves them all.

For any bilinear ``z = f(a, b)`` (linear in each operand), the two-player Shapley value of the
players "a moves from its reference" and "b moves from its reference" is

    Δz = f(Δa, b̄) + f(ā, Δb),   ā = (a + a_ref)/2,  b̄ = (b + b_ref)/2

exactly (expand both terms: the cross terms cancel). So, per (example, reference) pair, the
product is a linear layer in ``(Δa, Δb)`` with weights ``b̄`` and ``ā``; DeepLIFT's linear rule
then gives its split and its multipliers (see :class:`~deeplift.layers.base.SignSplitLinear`).
Gradient methods use ``b`` and ``a`` (the product rule).
"""

from __future__ import annotations

import string

import torch
from torch import Tensor

from .base import Layer, Multipliers, Split, State, broadcast_shape, split_by_spread


def sum_to(m: Tensor, state, name: str) -> Tensor:
    """Reduce (T, P, ...) multipliers over the axes an input was broadcast along."""
    if state.is_constant(name):  # constants receive nothing; the engine drops these
        return m
    shape, _, _ = state.pair_shape(name, m.shape[1])
    full = (m.shape[0], *shape)
    if tuple(m.shape) == full:
        return m
    # axes of size 1 (an einsum letter summed out of one operand only) are expanded first
    return torch.broadcast_to(m, broadcast_shape(m.shape, full)).sum_to_size(full)


class Product(Layer):
    """A bilinear ``z = f(a, b)`` of two activations, by the Shapley (midpoint) rule.

    Subclasses give ``product(a, b)`` and its two transposes: ``transpose_a(m, b)`` is
    ``∂⟨m, f(a, b)⟩/∂a`` and ``transpose_b(m, a)`` likewise, for ``m`` with a leading target axis
    ``(T, P, *z)`` and per-pair operands ``(P, ...)`` (results may still carry broadcast axes; they
    are summed away). ``n_terms`` bounds how many products one output sums (for the rounding
    tolerance of the split).
    """

    n_inputs = 2

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.product(a, b)

    def product(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def transpose_a(self, m: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def transpose_b(self, m: Tensor, a: Tensor) -> Tensor:
        raise NotImplementedError

    def n_terms(self, a: Tensor, b: Tensor) -> int:
        return 1

    # -- the rule -----------------------------------------------------------------------------------
    def _weights(self, state) -> tuple[Tensor, Tensor]:
        """``(b̄, ā)``: the weight of ``Δa`` and of ``Δb`` (``(b, a)`` for gradient methods)."""
        def compute():
            a, b = self.inputs
            if not state.difference_based:
                return state.x(b), state.x(a)
            return 0.5 * (state.x(b) + state.r(b)), 0.5 * (state.x(a) + state.r(a))
        return state.cached(self, "weights", compute)

    def split(self, state: State) -> Split:
        wa, wb = self._weights(state)
        da, db = state.delta(self.inputs[0]), state.delta(self.inputs[1])
        total = self.product(da, wa) + self.product(wb, db)
        spread = self.product(da.abs(), wa.abs()) + self.product(wb.abs(), db.abs())
        return split_by_spread(total, spread, 2 * self.n_terms(da, db))

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        wa, wb = self._weights(state)
        a, b = self.inputs
        if m_neg is None:
            return [(sum_to(self.transpose_a(m_pos, wa), state, a), None),
                    (sum_to(self.transpose_b(m_pos, wb), state, b), None)]
        # as for a linear layer: Wᵀ·½(m⁺+m⁻) + sign(Δx)·|W|ᵀ·½(m⁺−m⁻)
        mean, half_diff = 0.5 * (m_pos + m_neg), 0.5 * (m_pos - m_neg)
        ma = (sum_to(self.transpose_a(mean, wa), state, a)
              + torch.sign(state.delta(a)) * sum_to(self.transpose_a(half_diff, wa.abs()), state, a))
        mb = (sum_to(self.transpose_b(mean, wb), state, b)
              + torch.sign(state.delta(b)) * sum_to(self.transpose_b(half_diff, wb.abs()), state, b))
        return [(ma, None), (mb, None)]


class Mul(Product):
    """Elementwise product ``z = a·b`` (gating, attention weights, a learned scale); inputs
    broadcast against each other as in PyTorch."""

    def product(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def transpose_a(self, m: Tensor, b: Tensor) -> Tensor:
        return m * b

    def transpose_b(self, m: Tensor, a: Tensor) -> Tensor:
        return m * a


class MatMul(Product):
    """``a @ b`` over the last two axes (``torch.matmul``/``bmm``), both operands at least 3-D
    with the batch axis first; the other leading axes broadcast."""

    def product(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(a, b)

    def transpose_a(self, m: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(m, b.transpose(-1, -2))

    def transpose_b(self, m: Tensor, a: Tensor) -> Tensor:
        return torch.matmul(a.transpose(-1, -2), m)

    def n_terms(self, a: Tensor, b: Tensor) -> int:
        return int(a.shape[-1])


class Einsum(Product):
    """``torch.einsum(equation, a, b)`` with explicit subscripts (no ``...``), the batch axis
    first in both operands and in the output under the same letter. A letter of one operand that
    is in neither the other nor the output (summed out of one operand only) is allowed."""

    def __init__(self, equation: str, name: str | None = None) -> None:
        super().__init__(name)
        lhs, out = equation.replace(" ", "").split("->")
        self.a_subs, self.b_subs = lhs.split(",")
        self.out_subs = out
        if "." in equation:
            raise ValueError(f"einsum {equation!r}: write the subscripts out instead of '...'")
        if not (self.a_subs[:1] == self.b_subs[:1] == self.out_subs[:1]):
            raise ValueError(f"einsum {equation!r}: both operands and the output must have the batch "
                             "axis first, under the same letter")
        for subs in (self.a_subs, self.b_subs, self.out_subs):
            if len(set(subs)) != len(subs):
                raise ValueError(f"einsum {equation!r}: a repeated letter in one operand (a diagonal) "
                                 "has no DeepLIFT rule")
        used = set(self.a_subs + self.b_subs)
        self.t = next(ch for ch in string.ascii_letters if ch not in used)  # the target axis

    @property
    def equation(self) -> str:
        return f"{self.a_subs},{self.b_subs}->{self.out_subs}"

    def product(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.einsum(self.equation, a, b)

    def _transpose(self, m: Tensor, other: Tensor, other_subs: str, subs: str) -> Tensor:
        t = self.t
        known = set(self.out_subs + other_subs)
        kept = "".join(ch for ch in subs if ch in known)
        g = torch.einsum(f"{t}{self.out_subs},{other_subs}->{t}{kept}", m, other)
        for i, ch in enumerate(subs):  # summed out of this operand only: constant along it (size 1)
            if ch not in known:
                g = g.unsqueeze(1 + i)
        return g

    def transpose_a(self, m: Tensor, b: Tensor) -> Tensor:
        return self._transpose(m, b, self.b_subs, self.a_subs)

    def transpose_b(self, m: Tensor, a: Tensor) -> Tensor:
        return self._transpose(m, a, self.a_subs, self.b_subs)

    def n_terms(self, a: Tensor, b: Tensor) -> int:
        sizes = {**dict(zip(self.a_subs, a.shape)), **dict(zip(self.b_subs, b.shape))}
        out = 1
        for ch, s in sizes.items():
            if ch not in self.out_subs:
                out *= int(s)
        return out

    def describe(self) -> str:
        return f"Einsum({self.equation})"
