"""The original library's ``deeplift.models``: an alias of :mod:`deeplift.legacy.models`."""
import sys
from .legacy import models as _legacy
sys.modules[__name__] = _legacy
