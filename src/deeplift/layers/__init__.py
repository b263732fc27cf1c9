"""DeepLIFT layers: each class owns its forward, its split of Δ and its multiplier backward."""

from .activations import (ELU, GELU, SELU, Activation, Clamp, Exp, LeakyReLU, LogSoftmax, PReLU, ReLU,
                          Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .base import Constant, Input, Layer
from .linear import AdaptiveAvgPool, AvgPool, BatchNorm, Conv, Dense, Reduce, ScalarMul
from .merge import Add, Concat, Mul, Sub
from .pooling import MaxPool, MaxReduce
from .shape import (Flatten, Flip, Identity, Pad, Permute, Reshape, Select, Slice, Squeeze,
                    Unsqueeze)

__all__ = [
    "Activation", "Add", "AdaptiveAvgPool", "AvgPool", "BatchNorm", "Clamp", "Concat", "Constant", "Conv",
    "Dense", "ELU", "Exp", "Flatten", "Flip", "GELU", "Identity", "Input", "Layer", "LeakyReLU", "LogSoftmax", "MaxPool",
    "MaxReduce", "Mul", "PReLU", "Pad", "Permute", "ReLU", "Reduce", "Reshape", "ScalarMul", "SELU",
    "Select", "Sigmoid", "SiLU", "Slice", "Softmax", "Softplus", "Squeeze", "Sub", "Tanh", "Unsqueeze",
]

# The original DeepLIFT's (v0.6.13) names, for its existing users: the enums, and its layer
# modules ``core``/``convolutional``/``normalization`` holding TF-layout, original-signature
# constructors (see ``layers/original.py``; ``deeplift.blobs`` is an alias of this package).
from .original import (ConvMxtsMode, DataFormat, DenseMxtsMode, MaxPoolDeepLiftMode,  # noqa: E402
                       NonlinearMxtsMode, PaddingMode, ScoringMode)
# original layer names that do not clash with ours (ours take PyTorch layouts; Dense, Concat and
# the activations also accept the original's kernel=/axis=/nonlinear_mxts_mode= keywords)
from .original import (AvgPool1D, AvgPool2D, BatchNormalization, Conv1D, Conv2D,  # noqa: E402
                       GlobalAvgPool1D, GlobalMaxPool1D, MaxPool1D, MaxPool2D, NoOp)
from . import convolutional, core, normalization, original  # noqa: E402
