"""The original DeepLIFT's ``deeplift.layers.normalization`` (v0.6.13)."""

from ..legacy.layers import BatchNormalization  # noqa: F401

__all__ = ["BatchNormalization"]
