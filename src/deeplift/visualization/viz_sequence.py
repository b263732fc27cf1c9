"""The original library's ``deeplift.visualization.viz_sequence``: an alias of :mod:`deeplift.legacy.viz_sequence`."""
import sys
from ..legacy import viz_sequence as _legacy
sys.modules[__name__] = _legacy
