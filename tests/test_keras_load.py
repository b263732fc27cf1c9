"""deeplift.load / deeplift.frontends.keras: Keras models -> deeplift.Model.

(a) the conformance cases: .h5 files written by tf_keras 2.15 with the ORIGINAL DeepLIFT's
scores; our forward pass must equal Keras and our scores the original's (with the original's
options: raw logits, max-pool multipliers to the input argmax, its float32 quirks), and with the
default options summation-to-delta must hold everywhere.
(b) Keras 3 round trips: small models covering every supported layer, saved as .keras and .h5
(and passed live), must compute what Keras computes and conserve.
(c) layers without a rule, naming, and the TF padding rules checked without Keras.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any keras import

import conformance  # noqa: E402
import deeplift  # noqa: E402
from deeplift.plan import default_target_layer, feeds_softmax  # noqa: E402
from deeplift.frontends.keras import keras_to_model, load_keras  # noqa: E402
from deeplift.frontends.keras_format import read_keras_config  # noqa: E402
from deeplift.errors import InputError, UnsupportedLayerError  # noqa: E402

# Keras 3 internals call np.array(variable) without the numpy-2 copy keyword; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning",
                                        "ignore:You are saving your model as an HDF5 file")

CONFORMANCE = conformance.CONFORMANCE
CASES = conformance.files("*.h5")
needs_cases = pytest.mark.conformance

DEEPLIFT_MODES = {"Rescale": "rescale", "RevealCancel": "reveal_cancel",
                  "DeepLIFT_GenomicsDefault": "genomics_default"}
ORIGINAL = dict(softmax_centering=False, max_routing="gradient", original_quirks=True)

#: The original computed in float32, and so do we, but not in the same summation order. Where a
#: rescale factor divides by a small |Δx| that float32 noise is amplified: in
#: conv2d_channels_first a tanh sees |Δx| = 6.9e-4, where the original's own result is 6.6e-6
#: (relative) away from the exact (float64) value, so two float32 implementations differ by ~1e-5
#: there. Those comparisons get 2e-5 here, and the float64 result is checked against 1e-5.
TOLERANCE = 1e-5
LOOSER = {("conv2d_channels_first", "Rescale"): 2e-5,
          ("conv2d_channels_first", "DeepLIFT_GenomicsDefault"): 2e-5}


# --------------------------------------------------------------------------- (a) conformance


class Case:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.stem
        with np.load(path.with_suffix(".npz")) as d:
            self.data = {k: d[k] for k in d.files}
        self.meta = json.loads(str(self.data["meta_json"]))
        self.n_inputs = len(self.meta["inputs"])
        self.tasks = list(self.meta["task_indices"])

    def arrays(self, prefix: str) -> list[np.ndarray]:
        return [self.data[f"{prefix}__in{i}"] for i in range(self.n_inputs)]

    def inputs(self, prefix: str = "X"):
        xs = self.arrays(prefix)
        return tuple(xs) if self.n_inputs > 1 else xs[0]


def _as_tuple(scores) -> tuple:
    return scores if isinstance(scores, tuple) else (scores,)


def _assert_scores(got, expected: list[np.ndarray], tol: float, what: str, scale=None) -> None:
    """``got``: ours, (N, T, ...) per input; ``expected``: the original's, (T, N, ...)."""
    got = _as_tuple(got)
    assert len(got) == len(expected), what
    scale = scale if scale is not None else max(float(np.abs(e).max()) for e in expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        g = np.moveaxis(np.asarray(g), 1, 0)
        assert g.shape == e.shape, f"{what} input {i}: shape {g.shape} vs {e.shape}"
        err = float(np.abs(g - e).max()) / max(scale, 1e-12)
        assert err <= tol, f"{what} input {i}: max error {err:.2e} (relative to {scale:.3g})"


@pytest.fixture(scope="module", params=CASES, ids=[p.stem for p in CASES])
def case(request) -> Case:
    return Case(request.param)


@pytest.fixture(scope="module")
def loaded(case: Case):
    return deeplift.load(case.path)


@needs_cases
def test_conformance_forward(case: Case, loaded) -> None:
    model = loaded
    assert model.keras_model_class == case.meta["model_api"].capitalize()
    for which in ("x", "ref"):
        xs = case.inputs("X" if which == "x" else "R")
        out = model(xs)
        expected = case.data[f"keras_output_{which}"]
        assert np.abs(out - expected).max() <= TOLERANCE * np.abs(expected).max()
        target = default_target_layer(model)
        tensors = [torch.from_numpy(a) for a in _as_tuple(xs)]
        pre = model.forward_all(tensors, [target])[target].numpy()
        expected = case.data[f"keras_target_{which}"]
        assert np.abs(pre - expected).max() <= TOLERANCE * np.abs(expected).max()


@needs_cases
def test_conformance_original_names(case: Case) -> None:
    model = deeplift.load(case.path, naming="original")
    visible = [n for n in model.layer_names if not model.layers[n].auxiliary]
    assert visible == [name for name, _ in case.meta["deeplift_layers"]]
    assert model.input_names == case.meta["target"]["deeplift_input_layer_names"]
    assert default_target_layer(model) == case.meta["target"]["deeplift_layer_name"]
    if "deeplift_layer_idx" in case.meta["target"]:
        idx = case.meta["target"]["deeplift_layer_idx"]
        assert visible[idx] == case.meta["target"]["deeplift_layer_name"]


@pytest.mark.conformance("mlp_sigmoid_out.h5")
def test_original_names_of_a_keras22_sequential(tmp_path: Path) -> None:
    """Keras <= 2.2 Sequential configs do not list the InputLayer: the first layer is "0"."""
    import h5py
    import shutil

    path = tmp_path / "k22.h5"
    shutil.copy(CONFORMANCE / "mlp_sigmoid_out.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        first = layers.pop(0)
        layers[0]["config"]["batch_input_shape"] = first["config"]["batch_input_shape"]
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers})
    model = deeplift.load(path, naming="original")
    assert model.layer_names == ["input", "preact_0", "0", "preact_1", "1", "preact_2", "2"]


@needs_cases
@pytest.mark.parametrize("mode", list(DEEPLIFT_MODES))
def test_conformance_contributions(case: Case, loaded, mode: str) -> None:
    expected = case.arrays(f"contribs__{mode}")
    scores = deeplift.attribute(loaded, case.inputs("X"), references=case.inputs("R"),
                                method=DEEPLIFT_MODES[mode], target=case.tasks, **ORIGINAL)
    tol = LOOSER.get((case.name, mode), TOLERANCE)
    _assert_scores(scores, expected, tol, f"{case.name} {mode}")
    if tol > TOLERANCE:  # the exact value is within the usual tolerance of the original's
        model64 = deeplift.load(case.path).to(torch.float64)
        scores = deeplift.attribute(model64, case.inputs("X"), references=case.inputs("R"),
                                    method=DEEPLIFT_MODES[mode], target=case.tasks, **ORIGINAL)
        _assert_scores(scores, expected, TOLERANCE, f"{case.name} {mode} float64")


@needs_cases
@pytest.mark.parametrize("mode,method", [("Gradient", "gradient"),
                                         ("GuidedBackprop", "guided_backprop")])
def test_conformance_gradient_multipliers(case: Case, loaded, mode: str, method: str) -> None:
    scores = deeplift.attribute(loaded, case.inputs("X"), method=method, target=case.tasks,
                                **ORIGINAL)
    _assert_scores(scores, case.arrays(f"multipliers__{mode}"), TOLERANCE, f"{case.name} {mode}")


def _has(path: Path, key: str) -> bool:
    with np.load(path.with_suffix(".npz")) as d:
        return key in d.files


ONE_HOT_CASES = [p for p in CASES if _has(p, "hyp_contribs__Rescale__in0")]
#: the original's integrated gradients take a single input, so multi-input cases record none
IG_CASES = [p for p in CASES if _has(p, "ig__in0")]


@pytest.mark.conformance
@pytest.mark.parametrize("path", IG_CASES, ids=[p.stem for p in IG_CASES])
def test_conformance_integrated_gradients(path: Path) -> None:
    case = Case(path)
    scores = deeplift.attribute(deeplift.load(path), case.inputs("X"), references=case.inputs("R"),
                                method="integrated_gradients", steps=50, target=case.tasks,
                                **ORIGINAL)
    _assert_scores(scores, [case.data["ig__in0"]], TOLERANCE, f"{case.name} IG")


@pytest.mark.conformance
@pytest.mark.parametrize("path", ONE_HOT_CASES, ids=[p.stem for p in ONE_HOT_CASES])
@pytest.mark.parametrize("mode", ["Rescale", "DeepLIFT_GenomicsDefault"])
def test_conformance_hypothetical(path: Path, mode: str) -> None:
    case = Case(path)
    scores = deeplift.attribute(deeplift.load(path), case.inputs("X"), references=case.inputs("R"),
                                method=DEEPLIFT_MODES[mode], target=case.tasks, hypothetical=True,
                                **ORIGINAL)
    assert np.asarray(scores).shape[2:] == case.data["X__in0"].shape[1:]  # (N, T, L, 4)
    key = f"hyp_contribs__{mode}__in0"
    _assert_scores(scores, [case.data[key]], TOLERANCE, f"{case.name} hypothetical {mode}")


@pytest.mark.conformance("conv1d_valid.h5")
def test_conformance_several_shuffled_references() -> None:
    """Scores averaged over 3 dinucleotide-shuffled references per sequence (refs regenerated)."""
    case = Case(CONFORMANCE / "conv1d_valid.h5")
    refs = case.data["shufref_refs__in0"]  # (N, 3, L, 4)
    scores = deeplift.attribute(deeplift.load(case.path), case.inputs("X"), references=refs,
                                method="genomics_default", target=case.tasks, **ORIGINAL)
    expected = case.data["shufref_contribs__DeepLIFT_GenomicsDefault__in0"]
    _assert_scores(scores, [expected], TOLERANCE, "conv1d_valid shuffled references")


@needs_cases
@pytest.mark.parametrize("method", list(DEEPLIFT_MODES.values()))
def test_conformance_summation_to_delta_with_defaults(case: Case, loaded, method: str) -> None:
    """Default options (conserving max routing, softmax centring): contributions add up to the
    change of the Keras target, also in conv2d_pool, where the original's do not."""
    scores = deeplift.attribute(loaded, case.inputs("X"), references=case.inputs("R"),
                                method=method, target=case.tasks)
    total = sum(np.asarray(s).reshape(*np.asarray(s).shape[:2], -1).sum(-1)
                for s in _as_tuple(scores))  # (N, T)
    delta = case.data["keras_target_x"].astype(np.float64) - case.data["keras_target_ref"]
    if feeds_softmax(loaded, default_target_layer(loaded)):
        delta = delta - delta.mean(1, keepdims=True)
    expected = delta[:, case.tasks]
    err = np.abs(total - expected).max()
    assert err <= 2e-5 * (1 + np.abs(expected).max()), f"{case.name} {method}: {err:.2e}"


# ------------------------------------------------------------------------- (b) Keras 3 round trips


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _randomise(model, seed: int) -> None:
    """Non-default values everywhere: weights N(0, sqrt(2/fan_in)), biases and BN shifts non-zero,
    BN gammas of both signs, PReLU slopes in (0.05, 0.4)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "layers"):
            _randomise(layer, seed + 1)
            continue
        new = []
        for var in layer.weights:
            shape, name = tuple(var.shape), var.name
            if name == "gamma":
                w = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
            elif name == "moving_variance":
                w = rng.uniform(0.5, 2.0, shape)
            elif name in ("beta", "moving_mean", "bias"):
                w = rng.normal(0.0, 0.3, shape)
            elif name == "alpha":
                w = rng.uniform(0.05, 0.4, shape)
            else:
                w = rng.normal(0.0, np.sqrt(2.0 / max(int(np.prod(shape[:-1])), 1)), shape)
            new.append(w.astype("float32"))
        if new:
            layer.set_weights(new)


def _seq_1d(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((21, 4)),
        L.ZeroPadding1D((1, 2)),
        L.Conv1D(6, 4, strides=2, padding="same", activation="relu"),  # uneven TF 'same'
        L.BatchNormalization(),
        L.MaxPooling1D(2, strides=1, padding="same"),
        L.Conv1D(5, 3, dilation_rate=2, padding="causal", activation="elu"),
        L.Cropping1D((1, 1)),
        L.AveragePooling1D(3, strides=2),
        L.Dropout(0.5),
        L.Flatten(),
        L.Dense(8, activation="selu"),
        L.Dense(3, activation="softmax"),
    ], name="seq_1d")


def _seq_2d(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((9, 9, 3)),
        L.Conv2D(4, 2, strides=2, padding="same", activation="gelu"),  # even kernel, stride 2
        L.Conv2D(4, 3, groups=2, padding="same", activation="swish"),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu"),
        L.SeparableConv2D(6, 2, activation="softplus"),
        L.SpatialDropout2D(0.3),
        # Keras' torch backend pads uneven 'same' average pooling by replicating edges (TF does
        # not count the padding, and neither do we): only even padding is compared with it here
        L.AveragePooling2D(3, strides=1, padding="same"),
        L.MaxPooling2D(3, strides=2, padding="same"),
        L.GlobalAveragePooling2D(),
        L.Dense(2, activation="sigmoid"),
    ], name="seq_2d")


def _channels_first_2d(keras):
    L = keras.layers
    x = keras.Input((3, 8, 8), name="image")
    h = L.Conv2D(4, 3, padding="same", data_format="channels_first", activation="leaky_relu")(x)
    h = L.ZeroPadding2D(((1, 0), (0, 1)), data_format="channels_first")(h)
    h = L.MaxPooling2D(2, data_format="channels_first")(h)
    h = L.Cropping2D(((0, 1), (1, 0)), data_format="channels_first")(h)
    h = L.BatchNormalization(axis=1, center=False)(h)
    h = L.PReLU(shared_axes=[2, 3])(h)
    h = L.Conv2D(5, 2, strides=2, padding="same", data_format="channels_first")(h)
    flat = L.Flatten(data_format="channels_first")(h)
    pooled = L.Flatten()(L.GlobalMaxPooling2D(data_format="channels_first", keepdims=True)(h))
    out = L.Dense(3)(L.Concatenate()([flat, pooled]))
    return keras.Model(x, out, name="channels_first_2d")


def _conv_3d(keras):
    L = keras.layers
    x = keras.Input((5, 6, 6, 2))
    h = L.ZeroPadding3D(1)(x)
    h = L.Conv3D(3, 2, strides=2, padding="same", activation="relu")(h)
    h = L.SpatialDropout3D(0.2)(h)
    h = L.MaxPooling3D(2, strides=1)(h)
    h = L.Cropping3D(((0, 1), (1, 0), (0, 0)))(h)
    a = L.Flatten()(L.GlobalAveragePooling3D(keepdims=True)(L.AveragePooling3D(2, strides=1)(h)))
    b = L.GlobalMaxPooling3D()(h)
    out = L.Dense(2)(L.Concatenate()([a, b]))
    return keras.Model(x, out, name="conv_3d")


def _functional(keras):
    """Two inputs, two outputs, a shared layer called twice, a nested Sequential, merges."""
    L = keras.layers
    a = keras.Input((10,), name="in_a")
    b = keras.Input((6, 3), name="in_b")
    shared = L.Dense(5, activation="tanh", name="shared")
    ha = shared(a)
    bb = L.SpatialDropout1D(0.2)(L.GaussianNoise(0.1)(b))
    c = L.Conv1D(4, 2, strides=2, padding="same", data_format="channels_first",
                 use_bias=False)(L.Permute((2, 1))(bb))
    g1 = L.GlobalMaxPooling1D(data_format="channels_first")(L.ReLU(negative_slope=0.1)(c))
    s = L.SeparableConv1D(4, 3, padding="same", activation="silu")(bb)
    s = L.LeakyReLU(negative_slope=0.2)(L.BatchNormalization(scale=False)(s))
    g2 = L.GlobalAveragePooling1D()(s)
    dw = L.ReLU()(L.DepthwiseConv1D(2)(bb))
    g3 = L.Flatten()(L.GlobalAveragePooling1D(keepdims=True)(dw))
    per_position = L.Flatten()(L.Dense(2, name="per_position")(bb))  # Dense on (N, 6, 3)
    hb = shared(L.Dense(10, name="proj_b")(L.Flatten()(bb)))
    added = L.Add()([ha, hb])
    sub = L.Subtract()([ha, hb])
    mul = L.Multiply()([added, sub, ha])
    avg = L.Average()([added, sub, mul])
    e = L.Activation("exponential")(L.ELU(alpha=0.5)(avg))
    sm = L.Flatten()(L.Softmax(axis=-1)(L.Permute((2, 1))(L.Reshape((5, 1))(e))))
    pr = L.Activation("linear")(L.PReLU()(L.Dense(6)(a)))
    noisy = L.GaussianDropout(0.1)(L.AlphaDropout(0.1)(L.ActivityRegularization()(hb)))
    cat = L.Concatenate()([sm, g1, g2, g3, pr, noisy, per_position])
    inner = keras.Sequential([keras.Input((cat.shape[-1],)),
                              L.Dense(8, activation="relu", name="h"),
                              L.Dense(6, name="z")], name="inner")
    z = inner(cat)
    out1 = L.Dense(2, activation="sigmoid", name="out1")(z)
    out2 = L.Dense(3, name="out2")(L.Concatenate(axis=-1)([z, g1]))
    return keras.Model([a, b], [out1, out2], name="functional")


BUILDERS = {"seq_1d": _seq_1d, "seq_2d": _seq_2d, "channels_first_2d": _channels_first_2d,
            "conv_3d": _conv_3d, "functional": _functional}



def _norms_and_relus(keras):
    """LayerNormalization over one and several axes, GroupNormalization, ReLU with
    max_value/threshold/slope, and the Keras 3 activations relu6, hard_silu, mish, softsign."""
    L = keras.layers
    x = keras.Input((5, 6), name="tokens")
    h = L.LayerNormalization(name="ln")(L.Dense(6)(x))
    h = L.ReLU(max_value=6.0)(L.Dense(6, activation="mish")(h))
    h = L.LayerNormalization(axis=[1, 2], epsilon=1e-5, name="ln2")(h)
    h = L.ReLU(max_value=1.5, threshold=0.2, negative_slope=0.1)(L.Dense(6, activation="softsign")(h))
    h = L.Dense(6, activation="hard_silu")(L.LayerNormalization(center=False, name="ln3")(h))
    h = L.GroupNormalization(groups=3, epsilon=1e-4, name="gn")(h)
    h = L.Activation("relu6")(L.Flatten()(h))
    return keras.Model(x, L.Dense(3)(h), name="norms_and_relus")


BUILDERS["norms_and_relus"] = _norms_and_relus


def _transformer_block(keras):
    """A Keras transformer encoder block: self-attention and cross-attention (MultiHeadAttention),
    residuals, LayerNormalization, a GELU feed-forward layer."""
    L = keras.layers
    x = keras.Input((5, 6), name="tokens")
    h = L.Dense(8)(x)
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4, name="self_attention")(h, h)
    h = L.LayerNormalization(name="ln1")(L.Add()([h, a]))
    memory = L.Dense(8, activation="tanh")(x)
    c = L.MultiHeadAttention(num_heads=1, key_dim=4, use_bias=False, name="cross")(h, memory, memory)
    h = L.LayerNormalization(name="ln2")(L.Add()([h, c]))
    f = L.Dense(8)(L.Dense(16, activation="gelu")(h))
    h = L.LayerNormalization(name="ln3")(L.Add()([h, f]))
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling1D()(h)), name="transformer_block")


BUILDERS["transformer_block"] = _transformer_block


def _example_inputs(model, seed: int, n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, (n, *inp.shape[1:])).astype("float32") for inp in model.inputs]


def _keras_outputs(model, xs) -> list[np.ndarray]:
    out = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _check_forward(dl_model, xs, expected) -> None:
    got = dl_model(tuple(xs) if len(xs) > 1 else xs[0])
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert np.abs(g - e).max() <= 1e-5 * max(1.0, np.abs(e).max()), np.abs(g - e).max()


def _check_conservation(dl_model, xs, refs) -> None:
    model = dl_model.to(torch.float64)
    xs64 = [x.astype(np.float64) for x in xs]
    rs64 = [r.astype(np.float64) for r in refs]
    pack = (lambda v: tuple(v)) if len(xs) > 1 else (lambda v: v[0])
    target = default_target_layer(model)
    with torch.no_grad():
        fx = model.forward_all([torch.from_numpy(x) for x in xs64], [target])[target]
        fr = model.forward_all([torch.from_numpy(r) for r in rs64], [target])[target]
    scale = 1 + float((fx - fr).abs().max())
    for method in ("rescale", "reveal_cancel"):
        _, err = deeplift.attribute(model, pack(xs64), references=pack(rs64), method=method,
                                    target="all", return_delta=True)
        assert np.abs(err).max() <= 1e-9 * scale, (method, np.abs(err).max())


@pytest.fixture(scope="module")
def built(keras):
    models = {}
    for i, (name, build) in enumerate(BUILDERS.items()):
        model = build(keras)
        _randomise(model, 10 + i)
        models[name] = model
    return models


@pytest.mark.parametrize("name", list(BUILDERS))
def test_keras3_round_trip(built, name: str, tmp_path: Path) -> None:
    model = built[name]
    xs = _example_inputs(model, 1)
    refs = _example_inputs(model, 2)
    expected = _keras_outputs(model, xs)
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"{name}{suffix}"
        model.save(path)
        dl_model = deeplift.load(path)
        assert dl_model.keras_model_class == type(model).__name__
        assert len(dl_model.input_names) == len(model.inputs)
        _check_forward(dl_model, xs, expected)
    _check_conservation(dl_model, xs, refs)


def test_live_keras_model(built) -> None:
    for name in ("functional", "seq_2d"):
        model = built[name]
        xs = _example_inputs(model, 3)
        _check_forward(deeplift.load(model), xs, _keras_outputs(model, xs))


def test_round_trip_names_and_layout(built, tmp_path: Path) -> None:
    model = built["functional"]
    path = tmp_path / "f.keras"
    model.save(path)
    dl = deeplift.load(path)
    names = set(dl.layer_names)
    assert {"in_a", "in_b", "shared", "shared_1", "shared/preact", "shared_1/preact",
            "inner/h/preact", "inner/h", "inner/z", "out1/preact", "out1", "out2"} <= names
    assert dl.output_names == ["out1", "out2"] and dl.input_names == ["in_a", "in_b"]
    # the shared layer's two call nodes hold the same weights, as separate layers
    assert dl.layers["shared/preact"] is not dl.layers["shared_1/preact"]
    assert torch.equal(dl.layers["shared/preact"].weight, dl.layers["shared_1/preact"].weight)
    # a channels-last conv: Permute (auxiliary) -> Conv (auxiliary) -> Permute named after it
    seq = built["seq_1d"]
    seq.save(tmp_path / "s.keras")
    dl = deeplift.load(tmp_path / "s.keras")
    conv = [n for n in dl.layer_names if n.startswith("conv1d/")]
    assert conv == ["conv1d/preact/to_cf", "conv1d/preact/cf", "conv1d/preact"]
    assert [dl.layers[n].auxiliary for n in conv] == [True, True, False]
    x = _example_inputs(seq, 4)[0]
    scores = deeplift.attribute(dl, x, score_layer="conv1d", target=0)
    assert scores.shape == (3, 12, 6)  # Keras layout (N, L, C)
    original = deeplift.load(tmp_path / "s.keras", naming="original")
    visible = [n for n in original.layer_names if not original.layers[n].auxiliary]
    assert visible == ["input", "1", "preact_2", "2", "3", "4", "preact_5", "5", "6", "7", "8",
                       "9", "preact_10", "10", "preact_11", "11"]
    assert original.layer_names.index("preact_11") == len(original.layer_names) - 2


def test_nested_functional_called_twice(keras, tmp_path: Path) -> None:
    L = keras.layers
    i = keras.Input((4,))
    sub = keras.Model(i, L.Dense(2, name="ib")(L.Dense(3, activation="relu", name="ia")(i)),
                      name="sub")
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], L.Add(name="sum")([sub(a), sub(b)]))
    _randomise(model, 6)
    xs = _example_inputs(model, 7)
    expected = _keras_outputs(model, xs)
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"nested{suffix}")
        dl = deeplift.load(tmp_path / f"nested{suffix}")
        _check_forward(dl, xs, expected)
    assert dl.layer_names == ["a", "b", "sub/ia/preact", "sub/ia", "sub/ia_1/preact", "sub/ia_1",
                              "sub/ib", "sub/ib_1", "sum"]
    _check_conservation(dl, xs, _example_inputs(model, 8))


def test_free_sequence_length(keras, tmp_path: Path) -> None:
    """An input of free length (None) converts when no layer needs the length (strided 'same'
    padding would: see the next test)."""
    L = keras.layers
    model = keras.Sequential([keras.Input((None, 4)), L.Conv1D(3, 4, padding="same",
                                                              activation="relu"),
                              L.MaxPooling1D(2, strides=1, padding="same"), L.GlobalMaxPooling1D(),
                              L.Dense(1)])
    _randomise(model, 5)
    model.save(tmp_path / "free.keras")
    dl = deeplift.load(tmp_path / "free.keras")
    assert dl.layers[dl.input_names[0]].shape == (None, 4)
    for length in (9, 30):
        x = np.random.default_rng(length).normal(size=(2, length, 4)).astype("float32")
        _check_forward(dl, [x], _keras_outputs(model, [x]))


def test_lambda_and_custom_layers_are_refused(keras, tmp_path: Path) -> None:
    L = keras.layers
    lam = keras.Sequential([keras.Input((3,)), L.Lambda(lambda t: 2 * t, name="lambda_1"),
                            L.Dense(2)])
    lam.save(tmp_path / "lam.keras")
    for source in (tmp_path / "lam.keras", lam):
        with pytest.raises(UnsupportedLayerError,
                           match=r"layer 'lambda_1' \(Lambda\) has no DeepLIFT rule; Lambda"):
            deeplift.load(source)

    class Doubler(L.Layer):
        def call(self, t):
            return 2 * t

    keras.saving.register_keras_serializable(package="dltest")(Doubler)
    custom = keras.Sequential([keras.Input((3,)), Doubler(name="doubler"), L.Dense(2)])
    custom.save(tmp_path / "custom.keras")
    for source in (tmp_path / "custom.keras", custom):
        with pytest.raises(UnsupportedLayerError, match=r"layer 'doubler' \(.*Doubler\).*custom"):
            deeplift.load(source)


# --------------------------------------------------------------------------- (c) without Keras


def _sequential(layers: list[dict], input_shape: list, weights=None):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, *input_shape],
                                                "sparse": False}},
        *layers]}}
    return read_keras_config(config, weights or {})


def test_tf_same_pooling_on_uneven_padding() -> None:
    """TF 'same' pooling: pad_total = (ceil(L/s)-1)*s + k - L, less before than after; the
    average ignores padded positions and the max never picks them."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 5, 1) * np.array([1, -1], np.float32)
    for cls, windows, reduce in [("AveragePooling1D", [[0, 1], [2, 3], [4]], np.mean),
                                 ("MaxPooling1D", [[0, 1], [2, 3], [4]], np.max)]:
        km = _sequential([{"class_name": cls, "config": {
            "name": "p", "pool_size": 2, "strides": 2, "padding": "same"}}], [5, 2])
        got = keras_to_model(km)(x)
        expected = np.stack([reduce(x[0, w], axis=0) for w in windows])[None]
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_tf_same_conv_with_even_kernel() -> None:
    """Conv1D(k=4, stride 2, 'same') on length 7: 4 outputs, pad (1, 2)."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(4, 2, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    km = _sequential([{"class_name": "Conv1D", "config": {
        "name": "c", "filters": 3, "kernel_size": 4, "strides": 2, "padding": "same",
        "activation": "linear"}}], [7, 2], {"c": {"kernel": kernel, "bias": bias}})
    x = rng.normal(size=(2, 7, 2)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 2), (0, 0)))
    expected = np.stack([np.einsum("nkc,kco->no", padded[:, 2 * i:2 * i + 4], kernel) + bias
                         for i in range(4)], axis=1)
    np.testing.assert_allclose(keras_to_model(km)(x), expected, rtol=1e-5, atol=1e-5)


def test_strided_same_padding_needs_a_fixed_length() -> None:
    km = _sequential([{"class_name": "Conv1D", "config": {
        "name": "c", "filters": 1, "kernel_size": 2, "strides": 2, "padding": "same"}}],
        [None, 1], {"c": {"kernel": np.ones((2, 1, 1), np.float32), "bias": np.zeros(1)}})
    with pytest.raises(UnsupportedLayerError, match=r"'c' \(Conv1D\).*input length"):
        keras_to_model(km)


def test_original_naming_skips_linear_activation_and_keras_naming_keeps_it() -> None:
    w = {"d": {"kernel": np.ones((3, 2), np.float32), "bias": np.zeros(2, np.float32)}}
    layers = [{"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "relu"}},
              {"class_name": "Activation", "config": {"name": "lin", "activation": "linear"}},
              {"class_name": "Dense", "config": {"name": "d2", "units": 1, "use_bias": False}}]
    w["d2"] = {"kernel": np.ones((2, 1), np.float32)}
    km = _sequential(layers, [3], w)
    assert keras_to_model(km, naming="original").layer_names == ["input", "preact_1", "1", "3"]
    keras_named = keras_to_model(km)
    assert keras_named.layer_names == ["x", "d/preact", "d", "lin", "d2"]
    assert keras_named.layers["d2"].bias is None
    np.testing.assert_allclose(keras_named(np.array([[1.0, -2.0, 4.0]], np.float32)), [[6.0]])


@pytest.mark.parametrize("layer,match", [
    ({"class_name": "LayerNormalization", "config": {"name": "r", "rms_scaling": True}},
     r"'r' \(LayerNormalization\).*rms_scaling"),
    ({"class_name": "Activation", "config": {"name": "a", "activation": "hard_sigmoid"}},
     r"'a' \(Activation\): activation 'hard_sigmoid'"),
    ({"class_name": "SimpleRNN", "config": {"name": "rnn"}}, r"'rnn' \(SimpleRNN\) has no DeepLIFT rule"),
    ({"class_name": "Masking", "config": {"name": "m"}}, r"'m' \(Masking\)"),
])
def test_unsupported_layers_name_the_layer(layer: dict, match: str) -> None:
    weights = {"emb": {"embeddings": np.zeros((4, 3), np.float32)},
               "r": {"gamma": np.ones(3, np.float32), "beta": np.zeros(3, np.float32)}}
    with pytest.raises(UnsupportedLayerError, match=match):
        keras_to_model(_sequential([layer], [3], weights))


def test_every_unsupported_layer_is_reported_in_one_error() -> None:
    layers = [{"class_name": "Lambda", "config": {"name": "lam"}},
              {"class_name": "ConvLSTM2D", "config": {"name": "rnn1"}},
              {"class_name": "ConvLSTM2D", "config": {"name": "rnn2"}}]
    with pytest.raises(UnsupportedLayerError) as info:
        keras_to_model(_sequential(layers, [3], {}))
    rows = {row["op"]: row for row in info.value.ops}
    assert rows["ConvLSTM2D"]["count"] == 2 and rows["Lambda"]["count"] == 1
    assert "'rnn1' (ConvLSTM2D)" in str(info.value) and "'lam' (Lambda)" in str(info.value)


def test_bad_source_and_naming() -> None:
    with pytest.raises(InputError, match="naming"):
        load_keras("model.h5", naming="tf")
    with pytest.raises(InputError, match="cannot load a Keras model from a int"):
        load_keras(3)
