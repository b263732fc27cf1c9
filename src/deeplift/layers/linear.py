"""Linear layers: dense, convolution, average pooling, reductions, batch norm, scalar affine ops."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SignedScale, SignPreservingLinear, SignSplitLinear, State

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def as_tensor(value, dtype=None) -> Tensor | None:
    if value is None:
        return None
    if isinstance(value, Tensor):  # tensors keep their dtype (a float64 module stays float64)
        t = value.detach().clone()
        return t.to(dtype) if dtype is not None else (t if t.is_floating_point() else t.float())
    import numpy as np  # arrays and lists become float32, like the original library's weights
    return torch.as_tensor(np.asarray(value), dtype=dtype or torch.get_default_dtype())


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(i) for i in v)
    return v * n if len(v) == 1 else v


def pad_pairs(padding, n: int) -> tuple[tuple[int, int], ...]:
    """Padding as one (before, after) pair per spatial dim from an int, n ints or n pairs."""
    if isinstance(padding, int):
        return ((padding, padding),) * n
    padding = list(padding)
    if all(isinstance(p, int) for p in padding):
        if len(padding) == 1:
            padding = padding * n
        return tuple((p, p) for p in padding)
    return tuple((int(a), int(b)) for a, b in padding)


def torch_pad_arg(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """(before, after) per spatial dim -> F.pad's last-dim-first flat list."""
    out: list[int] = []
    for before, after in reversed(pairs):
        out += [before, after]
    return out


class Dense(SignSplitLinear):
    """``y = x Wᵀ + b`` on the last axis; ``weight`` is (out, in) as in ``torch.nn.Linear``.

    ``kernel=`` (in, out), the original library's and Keras' layout, may be given instead.
    """

    def __init__(self, weight=None, bias=None, name: str | None = None, *, kernel=None,
                 dense_mxts_mode: str = "Linear") -> None:
        super().__init__(name)
        if (weight is None) == (kernel is None):
            raise ValueError("Dense needs exactly one of weight (out, in) or kernel (in, out)")
        if dense_mxts_mode != "Linear":
            raise ValueError(f"dense_mxts_mode {dense_mxts_mode!r}: only 'Linear' exists")
        self.weight = as_tensor(weight) if weight is not None else as_tensor(kernel).t().contiguous()
        self.bias = as_tensor(bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def apply(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)

    def apply_transpose(self, m: Tensor, weight: Tensor, input_shape) -> Tensor:
        return m @ weight

    def describe(self) -> str:
        return f"Dense({self.weight.shape[1]}->{self.weight.shape[0]})"


class Conv(SignSplitLinear):
    """N-d convolution (cross-correlation), channels first, like ``torch.nn.ConvNd``.

    ``weight``: (C_out, C_in/groups, *kernel). ``padding``: an int, one int per dim, or one
    (before, after) pair per dim — uneven pairs express TensorFlow's "same" padding.
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.weight = as_tensor(weight)
        self.bias = as_tensor(bias)
        self.nd = self.weight.ndim - 2
        if self.nd not in _CONV:
            raise ValueError(f"Conv weight must be 3-, 4- or 5-D, got shape {tuple(self.weight.shape)}")
        self.stride = _tuple(stride, self.nd)
        self.dilation = _tuple(dilation, self.nd)
        self.groups = int(groups)
        pairs = pad_pairs(padding, self.nd)
        self.symmetric = all(a == b for a, b in pairs)
        self.padding = tuple(a for a, _ in pairs) if self.symmetric else (0,) * self.nd
        self.pre_pad = None if self.symmetric else torch_pad_arg(pairs)

    def apply(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        return _CONV[self.nd](x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.apply(x, self.weight, self.bias)

    def apply_transpose(self, m: Tensor, weight: Tensor, input_shape) -> Tensor:
        shape = list(input_shape)
        if self.pre_pad is not None:
            for i in range(self.nd):
                shape[-1 - i] += self.pre_pad[2 * i] + self.pre_pad[2 * i + 1]
        # the transposed convolution is the input-gradient of the convolution (and, on CPU, several
        # times faster than autograd's convolution_backward); output_padding restores the sizes
        # a strided convolution rounded away
        out_padding = []
        for i in range(self.nd):
            size = ((m.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                    + self.dilation[i] * (weight.shape[2 + i] - 1) + 1)
            out_padding.append(shape[2 + i] - size)
        g = _CONV_TRANSPOSE[self.nd](m, weight, None, self.stride, self.padding, out_padding,
                                     self.groups, self.dilation)
        if self.pre_pad is not None:
            index = [slice(None)] * 2
            for i in reversed(range(self.nd)):
                before, after = self.pre_pad[2 * i], self.pre_pad[2 * i + 1]
                index.append(slice(before, g.shape[2 + self.nd - 1 - i] - after))
            g = g[tuple(index)]
        return g

    def describe(self) -> str:
        return f"Conv{self.nd}d({self.weight.shape[1] * self.groups}->{self.weight.shape[0]})"


class AvgPool(SignPreservingLinear):
    """N-d average pooling, channels first. ``padding`` may be uneven (before, after) pairs;
    ``count_include_pad=False`` averages over the real (unpadded) elements only, as TF does."""

    def __init__(self, nd: int, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.nd = nd
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride = _tuple(stride if stride is not None else kernel_size, nd)
        pairs = pad_pairs(padding, nd)
        self.pairs = pairs
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override
        self.native = all(a == b and a <= k // 2 for (a, b), k in zip(pairs, self.kernel_size))

    def linear(self, x: Tensor) -> Tensor:
        pool = _AVG_POOL[self.nd]
        if self.native:
            kwargs = dict(ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)
            if self.nd > 1:
                kwargs["divisor_override"] = self.divisor_override
            return pool(x, self.kernel_size, self.stride, tuple(a for a, _ in self.pairs), **kwargs)
        pad = torch_pad_arg(self.pairs)
        summed = pool(F.pad(x, pad), self.kernel_size, self.stride, 0, ceil_mode=self.ceil_mode)
        if self.count_include_pad:
            return summed
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        frac = pool(F.pad(ones, pad), self.kernel_size, self.stride, 0, ceil_mode=self.ceil_mode)
        return summed / frac

    def describe(self) -> str:
        return f"AvgPool{self.nd}d({self.kernel_size})"


class AdaptiveAvgPool(SignPreservingLinear):
    """``torch.nn.AdaptiveAvgPoolNd``."""

    _FN = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}

    def __init__(self, nd: int, output_size, name: str | None = None) -> None:
        super().__init__(name)
        self.nd = nd
        self.output_size = output_size

    def linear(self, x: Tensor) -> Tensor:
        return self._FN[self.nd](x, self.output_size)


class Reduce(SignPreservingLinear):
    """Sum or mean over non-batch ``dims`` (a global average pool is a mean over the spatial dims)."""

    def __init__(self, dims: Sequence[int], keepdim: bool = False, mean: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.dims = tuple(int(d) for d in dims)
        if 0 in self.dims:
            raise ValueError("reductions over the batch axis have no per-example meaning")
        self.keepdim = keepdim
        self.mean = mean

    def linear(self, x: Tensor) -> Tensor:
        dims = self._dims(x.ndim)
        return x.mean(dims, keepdim=self.keepdim) if self.mean else x.sum(dims, keepdim=self.keepdim)

    def _dims(self, ndim: int) -> tuple[int, ...]:
        dims = tuple(sorted(d % ndim for d in self.dims))
        if 0 in dims:
            raise ValueError(f"layer {self.name!r}: reductions over the batch axis are not supported")
        return dims

    def transpose(self, state: State, m: Tensor) -> list[Tensor]:
        shape, _, _ = state.pair_shape(self.inputs[0], m.shape[0])
        dims = self._dims(len(shape))
        if self.mean:  # divided before it is broadcast: one small division, not a full one
            m = m / math.prod(shape[d] for d in dims)
        if not self.keepdim:
            for d in dims:
                m = m.unsqueeze(d)
        return [m.expand(shape)]

    def describe(self) -> str:
        return f"{'Mean' if self.mean else 'Sum'}{self.dims}"


class BatchNorm(SignedScale):
    """Batch normalisation at inference: ``y = (x − mean)/sqrt(var + eps)·gamma + beta`` along
    ``axis`` (1 for PyTorch's channels-first tensors; a negative axis counts from the end)."""

    def __init__(self, mean, var, weight=None, bias=None, eps: float = 1e-5, axis: int = 1,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.running_mean = as_tensor(mean)
        self.running_var = as_tensor(var)
        self.weight = as_tensor(weight) if weight is not None else torch.ones_like(self.running_mean)
        self.bias = as_tensor(bias) if bias is not None else torch.zeros_like(self.running_mean)
        self.eps = float(eps)
        self.axis = int(axis)

    def _shaped(self, t: Tensor, ndim: int) -> Tensor:
        axis = self.axis % ndim
        return t.reshape((-1,) + (1,) * (ndim - axis - 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.axis % x.ndim == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return ((x - self._shaped(self.running_mean, x.ndim)) * self.scale(x.ndim)
                + self._shaped(self.bias, x.ndim))

    def scale(self, ndim: int) -> Tensor:
        return self._shaped(self.weight / torch.sqrt(self.running_var + self.eps), ndim)


class ScalarMul(SignedScale):
    """``y = c·x`` for a constant ``c`` (a scalar or a tensor broadcast against x)."""

    def __init__(self, factor, name: str | None = None) -> None:
        super().__init__(name)
        self.factor = as_tensor(factor)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def scale(self, ndim: int) -> Tensor:
        return self.factor

    def describe(self) -> str:
        return f"ScalarMul({self.factor.item() if self.factor.numel() == 1 else 'tensor'})"
