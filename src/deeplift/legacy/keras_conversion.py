"""The seed README's ``deeplift.conversion.keras_conversion``::

    from deeplift.conversion import keras_conversion as kc
    deeplift_model = kc.convert_sequential_model(
        keras_model, nonlinear_mxts_mode=deeplift.blobs.NonlinearMxtsMode.DeepLIFT_GenomicsDefault)
    deeplift_model = kc.convert_graph_model(keras_model, nonlinear_mxts_mode=...)
    deeplift_model = kc.convert_functional_model(keras_model, nonlinear_mxts_mode=...)

``keras_model`` is a live Keras 3 model (or a model file path, or a config). Keras 1's ``Graph``
container is gone; ``convert_graph_model`` takes what replaced it, a functional model, and is
``convert_functional_model``. The converters are those of
:mod:`deeplift.legacy.kerasapi_conversion`; the models they return also answer the seed's
``get_name_to_blob()`` and take the Keras layer names as written in the user's model.
"""

from __future__ import annotations

from .kerasapi_conversion import (ActivationTypes, CustomConversionError,  # noqa: F401
                                  convert_functional_model, convert_model_from_saved_files,
                                  convert_sequential_model)

__all__ = ["convert_sequential_model", "convert_graph_model", "convert_functional_model",
           "convert_model_from_saved_files", "ActivationTypes", "CustomConversionError"]


def convert_graph_model(model, **kwargs):
    """Keras 1's ``Graph`` model is gone: convert its replacement, a functional model (or a file
    path or config), exactly as :func:`convert_functional_model` does (same keywords)."""
    return convert_functional_model(model, **kwargs)
