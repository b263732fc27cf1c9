"""Issue 9 part B, Keras side: LSTM, GRU and Bidirectional (any direction, sequences or last
state), Embedding of integer tokens and UpSampling1D/2D load from live Keras 3 models and from
.keras files, run forward like Keras and sum to delta in float64."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any keras import

import deeplift  # noqa: E402
from deeplift.layers import Mul, Sigmoid  # noqa: E402
from deeplift.layers.embedding import Embedding  # noqa: E402
from deeplift.layers.structure import Upsample  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning",
                                        "ignore:You are saving your model as an HDF5 file")
METHODS = ["rescale", "reveal_cancel", "genomics_default"]


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    return keras


def _check(km, x, r, tmp_path, name: str, h5: bool = False) -> deeplift.Model:
    """Live model and .keras file (and a legacy .h5) alike: forward equals Keras (float32), then
    in float64 every DeepLIFT method sums to delta for every output."""
    want = np.asarray(km.predict(x, verbose=0))
    assert np.abs(want).max() > 1e-3  # a model whose output is ~0 would prove nothing
    sources = [km]
    for suffix in (".keras", ".h5") if h5 else (".keras",):
        path = tmp_path / f"{name}{suffix}"
        km.save(path)
        sources.append(str(path))
    for source in sources:
        model = deeplift.load(source)
        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5)
        model.to(torch.float64)
        x64 = x.astype(np.float64) if x.dtype.kind == "f" else x
        r64 = r.astype(np.float64) if r.dtype.kind == "f" else r
        delta = model(x64) - model(r64)
        for method in METHODS:
            scores = deeplift.attribute(model, x64, r64, method=method, target="all")
            total = scores.reshape(*scores.shape[:2], -1).sum(-1)
            assert np.abs(total - delta).max() <= 1e-9 * (1 + np.abs(delta).max()), method
    return model


def test_keras_lstm_gru_and_bidirectional_unroll_into_exact_gates(keras, tmp_path):
    rng = np.random.default_rng(0)
    x, r = rng.random((3, 6, 4), dtype=np.float32), rng.random((3, 6, 4), dtype=np.float32)
    inp = keras.Input((6, 4))
    h = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))(inp)
    h = keras.layers.GRU(3, return_sequences=True, go_backwards=True)(h)
    h = keras.layers.LSTM(3, go_backwards=True)(h)
    h2 = keras.layers.Bidirectional(keras.layers.GRU(2), merge_mode="sum")(inp)
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([h, h2]))
    model = _check(keras.Model(inp, out), x, r, tmp_path, "rnn", h5=True)
    assert any(isinstance(l, Mul) for l in model.layers.values())
    assert any(isinstance(l, Sigmoid) for l in model.layers.values())


def test_keras_embedding_upsampling_and_convolutions_over_tokens(keras, tmp_path):
    rng = np.random.default_rng(1)
    ids, ref = rng.integers(0, 9, (3, 6)), rng.integers(0, 9, (3, 6))
    inp = keras.Input((6,), dtype="int32")
    e = keras.layers.Embedding(9, 4)(inp)
    e = keras.layers.UpSampling1D(2)(e)
    e = keras.layers.Reshape((3, 4, 4))(e)
    e = keras.layers.UpSampling2D((2, 1), interpolation="bilinear")(e)
    e = keras.layers.UpSampling2D(2)(e)
    e = keras.layers.Cropping2D(((1, 0), (0, 1)))(e)
    e = keras.layers.SeparableConv2D(3, 3, activation="relu")(e)
    e = keras.layers.DepthwiseConv2D(2, activation="tanh")(e)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(e))
    model = _check(keras.Model(inp, out), ids, ref, tmp_path, "tokens")
    assert model.layers[model.input_names[0]].dtype == torch.int64
    assert any(isinstance(l, Embedding) for l in model.layers.values())
    assert sum(isinstance(l, Upsample) for l in model.layers.values()) == 3
    scores = deeplift.attribute(model, ids, ref, method="rescale", target=0)
    assert scores.shape == ids.shape and scores.dtype == np.float64


def test_keras_recurrent_variants_without_a_rule_are_refused_clearly(keras):
    inp = keras.Input((5, 3))
    out = keras.layers.GRU(2, reset_after=False)(inp)
    with pytest.raises(deeplift.UnsupportedLayerError, match="reset_after"):
        deeplift.load(keras.Model(inp, out))


def test_keras_relu_with_max_value_threshold_and_slope_sums_to_delta_and_matches_keras(keras, tmp_path):
    rng = np.random.default_rng(2)
    x, r = rng.normal(size=(3, 5)).astype(np.float32) * 3, rng.normal(size=(3, 5)).astype(np.float32) * 3
    inp = keras.Input((5,))
    h = keras.layers.Dense(6)(inp)
    a = keras.layers.ReLU(max_value=1.5)(h)
    b = keras.layers.ReLU(max_value=2.0, threshold=0.5, negative_slope=0.2)(h)
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    km = keras.Model(inp, out)
    model = _check(km, x, r, tmp_path, "relu")
    xt = torch.tensor(x, requires_grad=True)
    (g,) = torch.autograd.grad(km(xt)[:, 0].sum(), xt)
    np.testing.assert_allclose(deeplift.attribute(model, x.astype(np.float64), method="gradient", target=0),
                               g.numpy(), rtol=1e-5, atol=1e-6)
