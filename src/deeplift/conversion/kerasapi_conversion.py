"""The original library's ``deeplift.conversion.kerasapi_conversion``: an alias of :mod:`deeplift.legacy.kerasapi_conversion`."""
import sys
from ..legacy import kerasapi_conversion as _legacy
sys.modules[__name__] = _legacy
