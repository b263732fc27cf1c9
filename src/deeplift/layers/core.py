"""The original DeepLIFT's ``deeplift.layers.core`` (v0.6.13): its enums and its core layers with
their original signatures (TensorFlow layout). Our own layers are in the sibling modules."""

from ..legacy.layers import (ActivationNames, BatchNormalization, Blob, Concat, ConvMxtsMode,  # noqa: F401
                       DataFormat, Dense, DenseMxtsMode, Flatten, Input, MaxPoolDeepLiftMode,
                       NonlinearMxtsMode, NoOp, PaddingMode, PoolMode, PReLU, ReLU, ScoringMode,
                       Sigmoid, Softmax, Tanh)

__all__ = ["ActivationNames", "BatchNormalization", "Blob", "Concat", "ConvMxtsMode", "DataFormat", "Dense",
           "DenseMxtsMode", "Flatten", "Input", "MaxPoolDeepLiftMode", "NonlinearMxtsMode", "NoOp",
           "PaddingMode", "PoolMode", "PReLU", "ReLU", "ScoringMode", "Sigmoid", "Softmax", "Tanh"]
