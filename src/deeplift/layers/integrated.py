"""The opt-in fallback for an op without a rule (``unknown_ops="integrated"``).

The node alone gets path-integrated multipliers: the Jacobian of the op averaged over ``steps``
midpoints of the straight path from the reference to the input (Integrated Gradients for that
one op), computed with autograd. Unlike a DeepLIFT rule this is not exact: the node leaks
``Δy − J̄·Δx`` (the Riemann error of the path integral), which the per-node conservation table
(``attribute(..., return_node_deltas=True)``) shows. Gradient methods get the op's gradient at
the input, as autograd would. The op must act on each example separately (batch axis first).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .base import (Layer, Multipliers, Split, State, flat_targets, negative, positive,
                   unflat_targets)


class PathIntegrated(Layer):
    """``y = fn(*inputs)`` for an op without a rule, with path-integrated multipliers."""

    n_inputs = None

    def __init__(self, fn: Callable[..., Tensor], steps: int = 32, op: str = "op",
                 name: str | None = None) -> None:
        super().__init__(name)
        self.fn, self.steps, self.op = fn, int(steps), op

    def forward(self, *xs: Tensor) -> Tensor:
        return self.fn(*xs)

    def split(self, state: State) -> Split:
        d = state.delta(self.name)  # the op's actual difference, split by sign
        return positive(d), negative(d)

    def _mean_vjp(self, state, m: Tensor) -> list[Tensor]:
        """``J̄ᵀ m`` per input, for ``m`` of shape (T, P, *out)."""
        t = m.shape[0]
        xs = [state.x(n) for n in self.inputs]
        if state.difference_based:
            rs = [state.r(n) for n in self.inputs]
            alphas = [(k + 0.5) / self.steps for k in range(self.steps)]
        else:  # gradient methods: the gradient at the input
            rs, alphas = xs, [1.0]
        seeds = flat_targets(m)
        totals: list[Tensor | None] = [None] * len(xs)
        for alpha in alphas:
            with torch.enable_grad():
                points = [(r + alpha * (x - r)).repeat(t, *([1] * (x.ndim - 1))).requires_grad_(True)
                          for x, r in zip(xs, rs)]
                grads = torch.autograd.grad(self.fn(*points), points, grad_outputs=seeds, allow_unused=True)
            for i, (g, p) in enumerate(zip(grads, points)):
                g = torch.zeros_like(p) if g is None else g
                totals[i] = g if totals[i] is None else totals[i] + g
        return [unflat_targets(g / len(alphas), t) for g in totals]

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        m = m_pos
        if m_neg is not None:  # each output element's multiplier of the part its Δy falls in
            m = torch.where(state.delta(self.name) > 0, m_pos, m_neg)
        return [(g, None) for g in self._mean_vjp(state, m)]

    def describe(self) -> str:
        return f"PathIntegrated({self.op})"
