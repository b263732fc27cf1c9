"""Embedding lookup of integer tokens (``nn.Embedding``, Keras ``Embedding``).

A token index has no meaningful difference or gradient of its own, so DeepLIFT scores the
embedding output and sums over the embedding axis: the contribution of token ``t`` is
``Σ_d (m⁺_d·Δe⁺_d + m⁻_d·Δe⁻_d)`` with ``Δe = E[x_t] − E[r_t]``. The layer hands its integer input
the multiplier ``that sum / Δx_t`` (0 where the token equals its reference, where Δe = 0 too), so
the engine's ``m·Δx`` at the input is exactly that per-token contribution and summation to delta
holds unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .base import Layer, Multipliers, Split, State, negative, positive
from .linear import as_tensor


class Embedding(Layer):
    """``weight``: (vocabulary, dim); the output is ``weight[x]`` with shape (*x.shape, dim)."""

    def __init__(self, weight, name: str | None = None) -> None:
        super().__init__(name)
        self.weight = as_tensor(weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_floating_point():  # an engine-made float copy of the tokens (e.g. a mean reference)
            rounded = x.round()
            if not bool((rounded == x).all()):
                raise InputError(f"layer {self.name!r}: embedding inputs must be integer token ids")
            x = rounded
        return F.embedding(x.long(), self.weight)

    def split(self, state: State) -> Split:
        d = state.delta(self.name)
        return positive(d), negative(d)

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        if not state.difference_based:
            raise InputError(f"layer {self.name!r}: integer token inputs have no gradient; score the "
                             f"embedding output instead (score_layer={self.name!r})")
        if m_neg is None:
            per_token = (m_pos * state.delta(self.name)).sum(-1)
        else:
            p, n = state.split(self.name)
            per_token = (m_pos * p + m_neg * n).sum(-1)
        dx = state.delta(self.inputs[0]).to(per_token.dtype)
        safe = torch.where(dx == 0, torch.ones_like(dx), dx)
        return [(torch.where(dx == 0, torch.zeros_like(per_token), per_token / safe), None)]

    def describe(self) -> str:
        return f"Embedding({self.weight.shape[0]}x{self.weight.shape[1]})"
