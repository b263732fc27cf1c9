"""The original DeepLIFT's ``deeplift.conversion`` package: ``kerasapi_conversion`` converts Keras
models (files or live objects) into its ``SequentialModel``/``GraphModel`` wrappers, on top of
:mod:`deeplift.frontends.keras`."""

from . import kerasapi_conversion

__all__ = ["kerasapi_conversion"]
