"""The original library's ``deeplift.dinuc_shuffle``: an alias of :mod:`deeplift.legacy.dinuc_shuffle`."""
import sys
from .legacy import dinuc_shuffle as _legacy
sys.modules[__name__] = _legacy
