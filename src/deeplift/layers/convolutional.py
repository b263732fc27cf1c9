"""The original DeepLIFT's ``deeplift.layers.convolutional`` (v0.6.13): convolutions and pooling
with their original signatures (TF kernels, ``'SAME'``/``'VALID'`` padding, channels last)."""

from ..legacy.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, ConvMxtsMode,  # noqa: F401
                       DataFormat, GlobalAvgPool1D, GlobalMaxPool1D, MaxPool1D, MaxPool2D,
                       MaxPoolDeepLiftMode, PaddingMode, PoolMode)

__all__ = ["AvgPool1D", "AvgPool2D", "Conv1D", "Conv2D", "ConvMxtsMode", "DataFormat",
           "GlobalAvgPool1D", "GlobalMaxPool1D", "MaxPool1D", "MaxPool2D", "MaxPoolDeepLiftMode",
           "PaddingMode", "PoolMode"]
