"""Structure layers that capture-time models need beyond plain reshapes: roll, expand/repeat of an
activation, upsampling, and constants broadcast over the batch (a class token, a mask built from
the batch size). All are linear with non-negative weights, so the split is the map applied to
each part and the multipliers go back through the transpose."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Layer, Multipliers, SignPreservingLinear, Split, State


def _non_batch(dims: Sequence[int], ndim: int, name: str | None, what: str) -> tuple[int, ...]:
    out = tuple(d % ndim for d in dims)
    if 0 in out:
        raise ValueError(f"layer {name!r}: {what} along the batch axis mixes examples")
    return out


class Roll(SignPreservingLinear):
    """``torch.roll(x, shifts, dims)`` along non-batch ``dims`` (Swin's shifted windows)."""

    def __init__(self, shifts: Sequence[int], dims: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.shifts = tuple(int(s) for s in shifts)
        self.dims = tuple(int(d) for d in dims)
        if len(self.shifts) != len(self.dims):
            raise ValueError("roll needs one shift per dim (a roll of the flattened tensor mixes examples)")

    def linear(self, x: Tensor) -> Tensor:
        return torch.roll(x, self.shifts, _non_batch(self.dims, x.ndim, self.name, "rolling"))

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        return [torch.roll(m, tuple(-s for s in self.shifts), _non_batch(self.dims, m.ndim, self.name, "rolling"))]

    def describe(self) -> str:
        return f"Roll{self.shifts}"


class Expand(SignPreservingLinear):
    """``x.expand(N, *shape)``: broadcast size-1 (or new leading non-batch) axes; the transpose sums
    over them. ``shape`` excludes the batch axis; -1 keeps a size."""

    def __init__(self, shape: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.shape = tuple(int(s) for s in shape)

    def linear(self, x: Tensor) -> Tensor:
        if len(self.shape) + 1 < x.ndim:
            raise ValueError(f"layer {self.name!r}: expand to fewer axes than the input has")
        lead = len(self.shape) + 1 - x.ndim
        if lead:  # new axes go in front of the input's non-batch axes, after the batch axis
            x = x.reshape(x.shape[0], *([1] * lead), *x.shape[1:])
        return x.expand(x.shape[0], *self.shape)

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        shape, _, _ = state.pair_shape(self.inputs[0], m.shape[0])
        lead = m.ndim - len(shape)
        if lead:
            m = m.sum(tuple(range(1, 1 + lead)))
        return [m.sum_to_size(shape)]

    def describe(self) -> str:
        return f"Expand{self.shape}"


class Repeat(SignPreservingLinear):
    """``x.repeat(1, *repeats)`` (tiling along non-batch axes); the transpose sums the tiles."""

    def __init__(self, repeats: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.repeats = tuple(int(r) for r in repeats)

    def linear(self, x: Tensor) -> Tensor:
        return x.repeat(1, *self.repeats)

    def describe(self) -> str:
        return f"Repeat{self.repeats}"


class Upsample(SignPreservingLinear):
    """``F.interpolate`` to a fixed spatial ``size`` with ``mode`` "nearest", "nearest-exact",
    "linear", "bilinear" or "trilinear" — each output is a convex combination of inputs, so no weight
    is negative (bicubic's are, and it has no rule here)."""

    MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear")

    def __init__(self, size: Sequence[int], mode: str = "nearest", align_corners: bool | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        if mode not in self.MODES:
            raise ValueError(f"{mode} interpolation has negative weights or no rule; supported: {self.MODES}")
        self.size = tuple(int(s) for s in size)
        self.mode = mode
        self.align_corners = None if mode.startswith("nearest") else bool(align_corners)

    def linear(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=self.align_corners)

    def describe(self) -> str:
        return f"Upsample({self.mode}, {self.size})"


class BatchConstant(Layer):
    """A constant repeated for every example: ``value`` (without the batch axis) expanded to the
    batch size of its input, which supplies only that size (ViT's ``class_token.expand(n, -1, -1)``,
    ``x.new_zeros(n, ...)``, a mask built from ``x.shape``). Its difference from reference is zero,
    so it passes no multipliers back."""

    def __init__(self, value: Tensor, name: str | None = None) -> None:
        super().__init__(name)
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        return self.value.expand(x.shape[0], *self.value.shape)

    def split(self, state: State) -> Split:
        z = state.delta(self.name)
        return z, z

    def backward(self, state: State, m_pos: Tensor, m_neg: Tensor | None) -> list[Multipliers]:
        return []  # nothing flows to the input: only its batch size was read

    def describe(self) -> str:
        return f"BatchConstant{tuple(self.value.shape)}"
