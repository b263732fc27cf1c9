"""The seed's ``deeplift.blobs.convolution``: the same module as :mod:`deeplift.layers.convolutional`."""
import sys
from deeplift.layers import convolutional as _convolutional
sys.modules[__name__] = _convolutional
