"""Layers that only move values around: flatten, reshape, permute, pad, slice, index, squeeze,
identity. They are linear and never flip a sign; multipliers go back through their transpose."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SignPreservingLinear, State


class Identity(SignPreservingLinear):
    """Identity, dropout and noise layers at inference."""

    def linear(self, x: Tensor) -> Tensor:
        return x

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        return [m]


class Reshape(SignPreservingLinear):
    """Reshape the per-example part; ``shape`` excludes the batch axis (-1 allowed)."""

    def __init__(self, shape: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.shape = tuple(int(s) for s in shape)

    def linear(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        shape, _, _ = state.pair_shape(self.inputs[0], m.shape[0])
        return [m.reshape(shape)]

    def describe(self) -> str:
        return f"Reshape{self.shape}"


class Flatten(Reshape):
    """Flatten dims ``start_dim..end_dim`` (counted on the full tensor, batch axis included)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1, name: str | None = None) -> None:
        SignPreservingLinear.__init__(self, name)
        if start_dim == 0:
            raise ValueError("Flatten cannot merge the batch axis")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def linear(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def describe(self) -> str:
        return "Flatten"


class Permute(SignPreservingLinear):
    """Permute axes; ``dims`` covers the full tensor and must keep the batch axis first."""

    def __init__(self, dims: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.dims = tuple(int(d) for d in dims)
        if self.dims[0] != 0:
            raise ValueError(f"Permute{self.dims} moves the batch axis")
        self.inverse = tuple(self.dims.index(d) for d in range(len(self.dims)))

    def linear(self, x: Tensor) -> Tensor:
        return x.permute(self.dims)

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        return [m.permute(self.inverse)]

    def describe(self) -> str:
        return f"Permute{self.dims}"


class Pad(SignPreservingLinear):
    """Constant padding with ``F.pad``'s argument order (last dim first); the padded value
    (which may be non-zero) is the same for input and reference, so it carries no difference."""

    def __init__(self, pad: Sequence[int], value: float = 0.0, name: str | None = None) -> None:
        super().__init__(name)
        self.pad = [int(p) for p in pad]
        self.value = float(value)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pad, value=self.value)

    def linear(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pad)

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        # cropping by negative padding is the transpose of zero padding (cropping pads too)
        return [F.pad(m, [-p for p in self.pad])]


class Slice(SignPreservingLinear):
    """``x[..., start:end:step, ...]`` along ``dim`` (not the batch axis)."""

    def __init__(self, dim: int, start: int | None = None, end: int | None = None, step: int = 1,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.dim, self.start, self.end, self.step = int(dim), start, end, int(step)

    def linear(self, x: Tensor) -> Tensor:
        dim = self.dim % x.ndim
        if dim == 0:
            raise ValueError(f"layer {self.name!r}: slicing the batch axis is not supported")
        index = [slice(None)] * x.ndim
        index[dim] = slice(self.start, self.end, self.step)
        return x[tuple(index)]


class Select(SignPreservingLinear):
    """``x.select(dim, index)`` or, with a list of indices, ``x.index_select(dim, indices)``."""

    def __init__(self, dim: int, index, name: str | None = None) -> None:
        super().__init__(name)
        self.dim = int(dim)
        self.index = index if isinstance(index, int) else torch.as_tensor(index, dtype=torch.long)

    def linear(self, x: Tensor) -> Tensor:
        dim = self.dim % x.ndim
        if dim == 0:
            raise ValueError(f"layer {self.name!r}: indexing the batch axis is not supported")
        if isinstance(self.index, int):
            return x.select(dim, self.index)
        return x.index_select(dim, self.index.to(x.device))

    def tensors(self):
        return {}


class Squeeze(SignPreservingLinear):
    def __init__(self, dims: Sequence[int] | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.dims = None if dims is None else tuple(int(d) for d in dims)

    def linear(self, x: Tensor) -> Tensor:
        if self.dims is None:
            dims = [d for d in range(1, x.ndim) if x.shape[d] == 1]
        else:
            dims = [d % x.ndim for d in self.dims]
        if 0 in dims:
            raise ValueError(f"layer {self.name!r}: squeezing the batch axis is not supported")
        return x.squeeze(tuple(dims)) if dims else x

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        shape, _, _ = state.pair_shape(self.inputs[0], m.shape[0])
        return [m.reshape(shape)]


class Unsqueeze(Squeeze):
    def __init__(self, dim: int, name: str | None = None) -> None:
        SignPreservingLinear.__init__(self, name)
        self.dim = int(dim)

    def linear(self, x: Tensor) -> Tensor:
        dim = self.dim if self.dim >= 0 else self.dim + x.ndim + 1
        if dim == 0:
            raise ValueError(f"layer {self.name!r}: a new leading axis would displace the batch axis")
        return x.unsqueeze(dim)


class Flip(SignPreservingLinear):
    """Reverse the order along non-batch ``dims`` (e.g. the reverse complement of one-hot DNA is a
    flip of both the channel and the length axis)."""

    def __init__(self, dims: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.dims = tuple(int(d) for d in dims)

    def _dims(self, ndim: int) -> tuple[int, ...]:
        dims = tuple(d % ndim for d in self.dims)
        if 0 in dims:
            raise ValueError(f"layer {self.name!r}: flipping the batch axis mixes examples")
        return dims

    def linear(self, x: Tensor) -> Tensor:
        return x.flip(self._dims(x.ndim))

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        return [m.flip(self._dims(m.ndim))]
