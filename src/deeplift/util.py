"""The original library's ``deeplift.util``: an alias of :mod:`deeplift.legacy.util`."""
import sys
from .legacy import util as _legacy
sys.modules[__name__] = _legacy
