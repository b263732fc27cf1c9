"""Everything that exists only for the original DeepLIFT library's API (v0.6 and the seed's).

It is built on the core (graph, layers, engine, methods, front ends) and nothing in the core
imports it; the original's public module paths (``deeplift.conversion`` with
``kerasapi_conversion`` and the seed's ``keras_conversion``, ``deeplift.models``,
``deeplift.util``, ``deeplift.backend``, ``deeplift.blobs``, ``deeplift.dinuc_shuffle``,
``deeplift.visualization``, ``deeplift.layers.core``/``convolutional``/``normalization`` (and the
seed's ``deeplift.blobs.core``/``convolution``) and the original's names in ``deeplift.layers``)
are re-exports of the modules here. The seed's "Under the hood" blob API is
:mod:`.blob_api` (layer state and handles) and :mod:`.backend` (``function``).
"""
