"""Keras' ``ReLU(max_value, threshold, negative_slope)`` as one elementwise nonlinearity.

``f(x) = min(x·[x > threshold], max_value)`` for ``x ≥ 0`` parts, minus
``negative_slope·relu(threshold − x)``, exactly Keras' ``ops.relu`` formula (MobileNet's
``ReLU(6.0)`` is the common case). Like every elementwise function it takes Rescale or
RevealCancel; its derivative is autograd's of the same formula, so ``gradient`` matches Keras.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import Activation


class KerasReLU(Activation):
    def __init__(self, max_value: float | None = None, threshold: float = 0.0,
                 negative_slope: float = 0.0, name: str | None = None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.max_value = None if max_value is None else float(max_value)
        self.threshold = float(threshold)
        self.negative_slope = float(negative_slope)

    def f(self, x: Tensor) -> Tensor:
        y = x * (x > self.threshold) if self.threshold != 0 else torch.relu(x)
        if self.max_value is not None:
            y = torch.clamp(y, 0.0, self.max_value)
        if self.negative_slope != 0:
            y = y - self.negative_slope * torch.relu(self.threshold - x)
        return y

    def describe(self) -> str:
        return f"KerasReLU(max={self.max_value}, threshold={self.threshold}, slope={self.negative_slope})"
