"""The seed's ``deeplift.conversion.keras_conversion``: an alias of :mod:`deeplift.legacy.keras_conversion`."""
import sys
from ..legacy import keras_conversion as _legacy
sys.modules[__name__] = _legacy
