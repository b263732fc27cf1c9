"""Bundled example models and data.

``deeplift.examples.motif_model`` holds :class:`MotifCNN`, a small genomics
CNN trained on simulated DNA with embedded GATA-like and TAL1-like motifs,
together with :func:`load_example_model` / :func:`load_example_data` for the
trained weights and held-out example sequences shipped in ``deeplift/data``.
"""

from .motif_model import (
    EXAMPLE_PATHS,
    MotifCNN,
    load_example_data,
    load_example_model,
)

__all__ = ["EXAMPLE_PATHS", "MotifCNN", "load_example_data", "load_example_model"]
