"""``deeplift.blobs``: the oldest DeepLIFT releases' name for :mod:`deeplift.layers` (an alias:
``deeplift.blobs is deeplift.layers``, so ``deeplift.blobs.NonlinearMxtsMode`` works)."""

import sys

from deeplift import layers as _layers

sys.modules[__name__] = _layers
