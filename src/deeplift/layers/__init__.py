"""DeepLIFT layers: each class owns its forward, its split of Δ and its multiplier backward."""

from .activations import (ELU, GELU, SELU, Activation, Clamp, Elementwise, Exp, LeakyReLU, LogSoftmax, PReLU, ReLU,
                          Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .base import Constant, Input, Layer
from .linear import AdaptiveAvgPool, AvgPool, BatchNorm, Conv, Dense, Reduce, ScalarMul
from .merge import Add, Concat, Mul, Sub
from .pooling import MaxPool, MaxReduce
from .shape import (Flatten, Flip, Identity, Pad, Permute, Reshape, Select, Slice, Squeeze,
                    Unsqueeze)

__all__ = [
    "Activation", "Add", "AdaptiveAvgPool", "AvgPool", "BatchNorm", "Clamp", "Concat", "Constant", "Conv",
    "Dense", "ELU", "Elementwise", "Exp", "Flatten", "Flip", "GELU", "Identity", "Input", "Layer", "LeakyReLU", "LogSoftmax", "MaxPool",
    "MaxReduce", "Mul", "PReLU", "Pad", "Permute", "ReLU", "Reduce", "Reshape", "ScalarMul", "SELU",
    "Select", "Sigmoid", "SiLU", "Slice", "Softmax", "Softplus", "Squeeze", "Sub", "Tanh", "Unsqueeze",
]

# The original DeepLIFT's (v0.6.13) names — its enums, its original-signature layers (TF layout) and
# its modules ``core``/``convolutional``/``normalization`` — are re-exported from
# ``deeplift.legacy`` on first use, so that the core never loads the compatibility layer.
_ORIGINAL_NAMES = {"ConvMxtsMode", "DataFormat", "DenseMxtsMode", "MaxPoolDeepLiftMode",
                   "NonlinearMxtsMode", "PaddingMode", "ScoringMode", "AvgPool1D", "AvgPool2D",
                   "BatchNormalization", "Conv1D", "Conv2D", "GlobalAvgPool1D", "GlobalMaxPool1D",
                   "MaxPool1D", "MaxPool2D", "NoOp"}
_ORIGINAL_MODULES = {"core", "convolutional", "convolution", "normalization"}


def __getattr__(name: str):
    import importlib
    if name in _ORIGINAL_NAMES:
        return getattr(importlib.import_module("deeplift.legacy.layers"), name)
    if name in _ORIGINAL_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
