"""The original library's ``deeplift.visualization`` package (``viz_sequence`` logos).

New code can use :mod:`deeplift.viz` directly; this package keeps the original import paths.
"""

from deeplift.visualization import viz_sequence

__all__ = ["viz_sequence"]
