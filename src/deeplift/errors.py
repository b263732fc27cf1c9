"""Exceptions raised by deeplift. Every message names the layer, op or argument at fault."""


class DeepLiftError(Exception):
    """Base class of every error deeplift raises on purpose."""


class InputError(DeepLiftError, ValueError):
    """Inputs, references or arguments given to a scoring call are malformed."""


class UnsupportedLayerError(DeepLiftError):
    """A model contains an op or layer that has no DeepLIFT rule."""


class ModelFormatError(DeepLiftError):
    """A model file cannot be read (missing, corrupt or of an unknown layout)."""


class SummationToDeltaWarning(UserWarning):
    """Contributions do not add up to target(x) − target(reference) beyond float rounding."""
