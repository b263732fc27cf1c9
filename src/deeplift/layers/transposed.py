"""Transposed convolution (``nn.ConvTranspose1d/2d/3d``): a linear map with signed weights, so it
takes DeepLIFT's linear rule like a convolution; its transpose is the ordinary convolution."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from .base import SignSplitLinear
from .linear import _tuple, as_tensor

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class ConvTranspose(SignSplitLinear):
    """``weight``: (C_in, C_out/groups, *kernel) as in ``torch.nn.ConvTransposeNd``."""

    def __init__(self, weight, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1,
                 dilation=1, name: str | None = None) -> None:
        super().__init__(name)
        self.weight = as_tensor(weight)
        self.bias = as_tensor(bias)
        self.nd = self.weight.ndim - 2
        if self.nd not in _CONV:
            raise ValueError(f"ConvTranspose weight must be 3-, 4- or 5-D, got {tuple(self.weight.shape)}")
        self.stride = _tuple(stride, self.nd)
        self.padding = _tuple(padding, self.nd)
        self.output_padding = _tuple(output_padding, self.nd)
        self.dilation = _tuple(dilation, self.nd)
        self.groups = int(groups)

    def apply(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return _CONV_TRANSPOSE[self.nd](x, weight, bias, self.stride, self.padding, self.output_padding,
                                        self.groups, self.dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.apply(x, self.weight, self.bias)

    def apply_transpose(self, m: Tensor, weight: Tensor, input_shape) -> Tensor:
        # the adjoint of a transposed convolution is the convolution with the same weight; the
        # output_padding rows are never read by it, and it returns exactly the input's size
        g = _CONV[self.nd](m, weight, None, self.stride, self.padding, self.dilation, self.groups)
        return g

    def fan_in(self) -> int:
        return int(self.weight.shape[0] // self.groups * math.prod(self.weight.shape[2:]))

    def describe(self) -> str:
        return f"ConvTranspose{self.nd}d({self.weight.shape[0]}->{self.weight.shape[1] * self.groups})"
