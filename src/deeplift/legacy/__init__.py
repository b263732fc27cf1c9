"""Everything that exists only for the original DeepLIFT library's API (v0.6 and the seed's).

It is built on the core (graph, layers, engine, methods, front ends) and nothing in the core
imports it; the original's public module paths (``deeplift.conversion``, ``deeplift.models``,
``deeplift.util``, ``deeplift.blobs``, ``deeplift.dinuc_shuffle``, ``deeplift.visualization``,
``deeplift.layers.core``/``convolutional``/``normalization`` and the original's names in
``deeplift.layers``) are re-exports of the modules here.
"""
