"""The seed's ``deeplift.backend`` (``function``): an alias of :mod:`deeplift.legacy.backend`."""
import sys
from .legacy import backend as _legacy
sys.modules[__name__] = _legacy
