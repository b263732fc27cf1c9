"""Tests for deeplift.frontends.keras_format: reading Keras files without Keras.

(a) the conformance .h5 files written by tf_keras 2.15; (b) Keras 3 round trips (.keras and
legacy .h5) of small models built here, checked against the live Keras objects; (c) bad files;
(d) Keras 2 config dialects that Keras 3 cannot write (Keras 2.2 Sequential, nested-model node
offsets), made by editing a conformance file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any keras import

from deeplift.frontends.keras_format import (  # noqa: E402
    KerasModel,
    canonical_weight_name,
    read_keras_config,
    read_keras_file,
)
from deeplift.errors import ModelFormatError  # noqa: E402

import conformance  # noqa: E402

# Keras 3 internals call np.array(variable) without the numpy-2 copy keyword; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CONFORMANCE = conformance.CONFORMANCE
CASES = conformance.files("*.h5")


def _by_name(model: KerasModel) -> dict:
    return {layer.name: layer for layer in model.layers}


# --------------------------------------------------------------------------- (a) conformance


def _meta(h5_path: Path) -> dict:
    with np.load(h5_path.with_suffix(".npz")) as data:
        return json.loads(str(data["meta_json"]))


def _check_weight_shapes(layer, config: dict) -> None:
    w = layer.weights
    if layer.class_name == "Dense":
        assert w["kernel"].ndim == 2 and w["kernel"].shape[1] == config["units"]
        assert w["bias"].shape == (config["units"],)
    elif layer.class_name in ("Conv1D", "Conv2D"):
        assert list(w["kernel"].shape[:-2]) == config["kernel_size"]
        assert w["kernel"].shape[-1] == config["filters"]
        assert w["bias"].shape == (config["filters"],)
    elif layer.class_name == "BatchNormalization":
        assert set(w) == {"gamma", "beta", "moving_mean", "moving_variance"}
        assert len({a.shape for a in w.values()}) == 1 and w["gamma"].ndim == 1
    else:
        assert w == {}


@pytest.mark.conformance
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_conformance_file_reads(path: Path) -> None:
    meta = _meta(path)
    model = read_keras_file(path)
    assert model.source_format == "h5" and model.keras_version == "2.15.1"
    real = [l for l in model.layers if l.class_name != "InputLayer"]
    assert [(l.name, l.class_name) for l in real] == [
        (m["name"], m["class_name"]) for m in meta["keras_layers"] if m["class_name"] != "InputLayer"]
    for layer, m in zip(real, [m for m in meta["keras_layers"] if m["class_name"] != "InputLayer"]):
        if m["activation"] is not None:
            assert layer.config["activation"] == m["activation"]
    layers = _by_name(model)
    assert [r[0] for r in model.inputs] == [i["keras_layer"] for i in meta["inputs"]]
    for spec in meta["inputs"]:
        assert layers[spec["keras_layer"]].config["batch_shape"] == spec["shape"]
        assert layers[spec["keras_layer"]].inbound == [[]]
    assert model.outputs == [(meta["target_keras_layer"], 0, 0)]
    with h5py.File(path, "r") as f:
        for layer in real:
            _check_weight_shapes(layer, layer.config)
            group = f["model_weights"][layer.name]
            for wname in group.attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                np.testing.assert_array_equal(layer.weights[canonical_weight_name(wname)],
                                              group[wname][()])
            if layer.class_name == "BatchNormalization":
                assert isinstance(layer.config["axis"], int)


@pytest.mark.conformance
def test_conformance_sequential_is_chained_and_functional_wired() -> None:
    seq = read_keras_file(CONFORMANCE / "mlp_relu_linear.h5")
    names = [l.name for l in seq.layers]
    assert names == ["inp", "d1", "drop", "d2", "out"]
    for prev, layer in zip(seq.layers, seq.layers[1:]):
        assert layer.inbound == [[(prev.name, 0, 0)]]
    fun = read_keras_file(CONFORMANCE / "functional_two_input_concat.h5")
    layers = _by_name(fun)
    assert fun.inputs == [("in_a", 0, 0), ("in_b", 0, 0)]
    assert layers["cat"].inbound == [[("da", 0, 0), ("db", 0, 0)]]
    assert layers["cat"].config["axis"] == 1


# --------------------------------------------------------------------------- (d) Keras 2 dialects


def _rewrite_config(src: Path, dst: Path, edit) -> Path:
    """Copy an .h5 and replace its model_config by edit(config)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(edit(config))
    return dst


@pytest.mark.conformance
def test_keras22_sequential_without_input_layer(tmp_path: Path) -> None:
    def edit(config):
        layers = config["config"]["layers"]
        first = layers.pop(0)
        layers[0]["config"]["batch_input_shape"] = first["config"]["batch_input_shape"]
        return {"class_name": "Sequential", "config": layers}  # Keras <= 2.2.2: a bare list
    path = _rewrite_config(CONFORMANCE / "mlp_sigmoid_out.h5", tmp_path / "k22.h5", edit)
    model = read_keras_file(path)
    first = model.layers[0]
    assert (first.name, first.class_name) == ("d1_input", "InputLayer")
    assert first.config["batch_shape"] == [None, 6]
    assert "batch_input_shape" not in model.layers[1].config
    assert model.layers[1].inbound == [[("d1_input", 0, 0)]]
    assert model.inputs == [("d1_input", 0, 0)] and model.outputs == [("out", 0, 0)]


@pytest.mark.conformance
def test_keras2_nested_functional_node_offset(tmp_path: Path) -> None:
    """Keras 2 numbers a nested Functional model's calls from 1 (node 0 is its own graph)."""
    src = CONFORMANCE / "functional_two_input_concat.h5"
    config = json.loads(h5py.File(src, "r").attrs["model_config"])
    inner_layers = config["config"]["layers"]
    outer = {
        "class_name": "Model",
        "config": {
            "name": "outer",
            "layers": [
                {"class_name": "InputLayer", "name": "x",
                 "config": {"batch_input_shape": [None, 6], "name": "x"}, "inbound_nodes": []},
                {"class_name": "InputLayer", "name": "y",
                 "config": {"batch_input_shape": [None, 4], "name": "y"}, "inbound_nodes": []},
                {"class_name": "Functional", "name": "two_input", "config": config["config"],
                 "inbound_nodes": [[["x", 0, 0, {}], ["y", 0, 0, {}]],
                                   [["x", 0, 0, {}], ["y", 0, 0, {}]]]},
                {"class_name": "Add", "name": "sum", "config": {"name": "sum"},
                 "inbound_nodes": [[["two_input", 1, 0, {}], ["two_input", 2, 0, {}]]]},
            ],
            "input_layers": [["x", 0, 0], ["y", 0, 0]],
            "output_layers": [["sum", 0, 0], ["two_input", 2, 0]],
        },
    }
    weights = {}
    with h5py.File(src, "r") as f:
        for layer in inner_layers:
            group = f["model_weights"][layer["name"]]
            weights["two_input/" + layer["name"]] = {
                str(n): group[n][()] for n in group.attrs["weight_names"]}
    model = read_keras_config(outer, weights)
    layers = _by_name(model)
    assert "two_input/in_a" not in layers  # inner inputs are spliced away
    assert layers["two_input/da"].inbound == [[("x", 0, 0)], [("x", 0, 0)]]
    assert layers["two_input/cat"].inbound == [
        [("two_input/da", 0, 0), ("two_input/db", 0, 0)],
        [("two_input/da", 1, 0), ("two_input/db", 1, 0)]]
    assert layers["sum"].inbound == [[("two_input/out", 0, 0), ("two_input/out", 1, 0)]]
    assert model.outputs == [("sum", 0, 0), ("two_input/out", 1, 0)]
    assert layers["two_input/out"].weights["kernel"].shape == (4, 2)


def test_lambda_layer_is_opaque() -> None:
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "i"}},
        {"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAAAAAAAA", None, None],
                                            "function_type": "lambda"}},
    ]}}
    model = read_keras_config(config, {})
    assert [(l.name, l.class_name) for l in model.layers] == [("i", "InputLayer"), ("lam", "Lambda")]
    assert model.layers[1].weights == {}


def test_config_normalisation() -> None:
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 2, "use_bias": False,
                                           "dtype": policy, "batch_input_shape": [None, 3],
                                           "activation": None}},
        {"class_name": "BatchNormalization", "config": {"name": "bn", "axis": [1, 2],
                                                        "center": False, "scale": False}},
        {"class_name": "MaxPooling1D", "config": {"name": "mp", "pool_size": 2, "strides": None}},
        {"class_name": "Dense", "config": {"name": "f", "units": 1, "activation": {
            "module": "builtins", "class_name": "function", "config": "pkg>act",
            "registered_name": "function"}}},
        {"module": None, "class_name": "Dense", "registered_name": "pkg>Dense",
         "config": {"name": "custom"}},
    ]}}
    weights = {"d": {"d/kernel:0": np.ones((3, 2))}, "f": {"kernel": np.ones((2, 1)),
                                                           "bias": np.zeros(1)},
               "bn": {"moving_mean": np.zeros(2), "moving_variance": np.ones(2)}}
    model = read_keras_config(config, weights)
    layers = _by_name(model)
    assert layers["d_input"].config["batch_shape"] == [None, 3]
    assert layers["d"].config["dtype"] == "mixed_float16"
    assert layers["d"].config["activation"] == "linear"
    assert set(layers["d"].weights) == {"kernel"}
    assert layers["bn"].config["axis"] == [1, 2]
    assert layers["mp"].config["pool_size"] == [2] and layers["mp"].config["strides"] == [2]
    assert layers["f"].config["activation"] == "pkg>act"
    assert layers["custom"].class_name == "pkg>Dense"


# --------------------------------------------------------------------------- (c) bad files


def _handmade_keras(path: Path, *, config: bool = True, drop_bias: bool = False,
                    bf16_bias: bool = False) -> Path:
    """A minimal Keras-3-layout archive written without Keras: InputLayer -> Dense(2)."""
    cfg = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer",
         "config": {"batch_shape": [None, 3], "name": "input_layer"}},
        {"module": "keras.layers", "class_name": "Dense",
         "config": {"name": "d", "units": 2, "use_bias": True, "activation": "relu"}},
    ]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h:
        v = h.create_group("layers/dense/vars")
        v["0"] = np.arange(6, dtype="float32").reshape(3, 2)
        if bf16_bias:  # Keras 3 stores bfloat16 as opaque 16-bit words marked by an attribute
            v["1"] = np.array([0x3FC0, 0xC010], dtype=np.uint16).view("V2")
            v["1"].attrs["dtype"] = "bfloat16"
        elif not drop_bias:
            v["1"] = np.ones(2, dtype="float32")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.9.0"}))
        if config:
            zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("model.weights.h5", buf.getvalue())
    return path


def test_handmade_keras_archive_reads_by_group_naming(tmp_path: Path) -> None:
    model = read_keras_file(_handmade_keras(tmp_path / "m.keras"))
    assert model.source_format == "keras" and model.keras_version == "3.9.0"
    dense = model.layers[1]
    np.testing.assert_array_equal(dense.weights["kernel"], np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(dense.weights["bias"], np.ones(2))


def test_handmade_keras_bfloat16(tmp_path: Path) -> None:
    model = read_keras_file(_handmade_keras(tmp_path / "bf16.keras", bf16_bias=True))
    np.testing.assert_array_equal(model.layers[1].weights["bias"], [1.5, -2.25])


@pytest.mark.conformance
def test_h5_chunked_weight_names(tmp_path: Path) -> None:
    """Keras splits attributes over 64 KB into weight_names0, weight_names1, ..."""
    path = tmp_path / "chunked.h5"
    shutil.copy(CONFORMANCE / "mlp_batchnorm.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/bn1"]
        names = list(group.attrs["weight_names"])
        del group.attrs["weight_names"]
        group.attrs["weight_names0"], group.attrs["weight_names1"] = names[:2], names[2:]
    bn1 = _by_name(read_keras_file(path))["bn1"]
    assert set(bn1.weights) == {"gamma", "beta", "moving_mean", "moving_variance"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="no such file"):
        read_keras_file(tmp_path / "nope.h5")


def test_not_hdf5_or_zip(tmp_path: Path) -> None:
    bad = tmp_path / "model.h5"
    bad.write_text("this is not a model\n")
    with pytest.raises(ModelFormatError, match=r"model\.h5.*neither HDF5"):
        read_keras_file(bad)


@pytest.mark.conformance
def test_truncated_h5(tmp_path: Path) -> None:
    data = (CONFORMANCE / "mlp_batchnorm.h5").read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"trunc\.h5.*(corrupt|truncated)"):
        read_keras_file(bad)


def test_corrupt_h5(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ModelFormatError, match=r"garbage\.h5.*corrupt"):
        read_keras_file(bad)


def test_truncated_keras(tmp_path: Path) -> None:
    data = _handmade_keras(tmp_path / "full.keras").read_bytes()
    bad = tmp_path / "trunc.keras"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"trunc\.keras.*(corrupt|truncated)"):
        read_keras_file(bad)


def test_weights_only_h5(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"d1"]
        g = f.create_group("d1")
        g.attrs["weight_names"] = [b"d1/kernel:0"]
        g["d1/kernel:0"] = np.zeros((2, 2))
    with pytest.raises(ModelFormatError, match=r"weights\.h5.*architecture is missing"):
        read_keras_file(path)


def test_archive_without_config(tmp_path: Path) -> None:
    path = _handmade_keras(tmp_path / "noconf.keras", config=False)
    with pytest.raises(ModelFormatError, match=r"noconf\.keras.*config\.json"):
        read_keras_file(path)


@pytest.mark.conformance
def test_h5_layer_weights_missing(tmp_path: Path) -> None:
    path = tmp_path / "missing.h5"
    shutil.copy(CONFORMANCE / "mlp_batchnorm.h5", path)
    with h5py.File(path, "r+") as f:
        del f["model_weights/bn2"]
    with pytest.raises(ModelFormatError, match=r"missing\.h5.*'bn2'.*missing: gamma"):
        read_keras_file(path)


def test_keras_layer_weights_missing(tmp_path: Path) -> None:
    path = _handmade_keras(tmp_path / "nobias.keras", drop_bias=True)
    with pytest.raises(ModelFormatError, match=r"nobias\.keras.*'d' \(Dense\)"):
        read_keras_file(path)


# --------------------------------------------------------------------------- (b) Keras 3 round trips


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _randomise(model, seed: int) -> None:
    """Non-default values everywhere, so a mis-assigned variable cannot compare equal."""
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in ws])


def _leaf_layers(model, prefix: str = ""):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaf_layers(layer, prefix + layer.name + "/")
        else:
            layer._flat_name = prefix + layer.name
            yield layer


def _expected(model) -> list[tuple[str, str, dict]]:
    out = []
    for layer in _leaf_layers(model):
        if type(layer).__name__ == "InputLayer" and "/" in layer._flat_name:
            continue
        weights = {}
        for var in layer.weights:
            name = canonical_weight_name(var.name)
            if name == "kernel" and type(layer).__name__.startswith("DepthwiseConv"):
                name = "depthwise_kernel"
            weights[name] = np.asarray(var.numpy())
        out.append((layer._flat_name, type(layer).__name__, weights))
    return out


def _check_against_keras(read: KerasModel, model) -> None:
    expected = [e for e in _expected(model) if e[1] != "InputLayer"]
    got = [l for l in read.layers if l.class_name != "InputLayer"]
    assert [(l.name, l.class_name) for l in got] == [(n, c) for n, c, _ in expected]
    for layer, (_, _, weights) in zip(got, expected):
        assert set(layer.weights) == set(weights), layer.name
        for key, value in weights.items():
            np.testing.assert_array_equal(layer.weights[key], value, err_msg=f"{layer.name}.{key}")


def _save_both(model, tmp_path: Path, stem: str) -> tuple[KerasModel, KerasModel]:
    model.save(tmp_path / f"{stem}.keras")
    model.save(tmp_path / f"{stem}.h5")
    a = read_keras_file(tmp_path / f"{stem}.keras")
    b = read_keras_file(tmp_path / f"{stem}.h5")
    assert (a.source_format, b.source_format) == ("keras", "h5")
    assert a.keras_version == b.keras_version and a.keras_version.startswith("3.")
    for x, y in zip(a.layers, b.layers):  # both formats must describe the same model
        assert (x.name, x.class_name, x.inbound) == (y.name, y.class_name, y.inbound)
        assert set(x.weights) == set(y.weights)
        for key in x.weights:
            np.testing.assert_array_equal(x.weights[key], y.weights[key])
    assert len(a.layers) == len(b.layers)
    assert (a.inputs, a.outputs) == (b.inputs, b.outputs)
    return a, b


def _assert_chain(read: KerasModel) -> None:
    assert read.layers[0].class_name == "InputLayer" and read.layers[0].inbound == [[]]
    for prev, layer in zip(read.layers, read.layers[1:]):
        assert layer.inbound == [[(prev.name, 0, 0)]]
    assert read.inputs == [(read.layers[0].name, 0, 0)]
    assert read.outputs == [(read.layers[-1].name, 0, 0)]


def test_keras3_sequential_conv1d_dense(keras, tmp_path: Path) -> None:
    L = keras.layers
    model = keras.Sequential([
        keras.Input((12, 4)),
        L.Conv1D(3, 3, padding="same", activation="relu", name="c_same"),
        L.BatchNormalization(center=False, name="bn_nocenter"),
        L.Conv1D(2, 2, padding="valid", use_bias=False, name="c_valid"),
        L.MaxPooling1D(2, name="mp"),
        L.AveragePooling1D(2, padding="same", name="ap"),
        L.Flatten(name="flat"),
        L.Dropout(0.2, name="drop"),
        L.Dense(4, name="d"),
        L.PReLU(name="prelu"),
        L.Dense(3, activation="sigmoid", name="out"),
    ], name="seq1")
    _randomise(model, 1)
    for read in _save_both(model, tmp_path, "seq1"):
        _check_against_keras(read, model)
        _assert_chain(read)
        layers = _by_name(read)
        assert layers[read.inputs[0][0]].config["batch_shape"] == [None, 12, 4]
        assert layers["c_same"].config["padding"] == "same"
        assert layers["c_same"].config["kernel_size"] == [3]
        assert layers["c_same"].config["activation"] == "relu"
        assert layers["c_same"].config["dtype"] == "float32"
        assert set(layers["bn_nocenter"].weights) == {"gamma", "moving_mean", "moving_variance"}
        assert "bias" not in layers["c_valid"].weights
        assert layers["out"].config["activation"] == "sigmoid"


def test_keras3_sequential_conv2d_layouts(keras, tmp_path: Path) -> None:
    L = keras.layers
    model = keras.Sequential([
        keras.Input((3, 8, 8)),
        L.Conv2D(4, 3, padding="same", data_format="channels_first", name="cf"),
        L.BatchNormalization(axis=1, scale=False, name="bn_cf"),
        L.Activation("tanh", name="act"),
        L.MaxPooling2D(2, data_format="channels_first", name="mp_cf"),
        L.Permute((2, 3, 1), name="to_last"),
        L.Conv2D(2, (2, 3), padding="valid", data_format="channels_last", name="cl"),
        L.BatchNormalization(name="bn_cl"),
        L.GlobalMaxPooling2D(name="gmp"),
        L.Reshape((2, 1), name="rs"),
        L.GlobalAveragePooling1D(name="gap"),
        L.Dense(2, activation="softmax", name="out"),
    ], name="seq2")
    _randomise(model, 2)
    for read in _save_both(model, tmp_path, "seq2"):
        _check_against_keras(read, model)
        _assert_chain(read)
        layers = _by_name(read)
        assert layers["cf"].config["data_format"] == "channels_first"
        assert layers["cf"].config["kernel_size"] == [3, 3]
        assert layers["cl"].config["kernel_size"] == [2, 3]
        assert layers["bn_cf"].config["axis"] == 1 and layers["bn_cl"].config["axis"] == -1
        assert set(layers["bn_cf"].weights) == {"beta", "moving_mean", "moving_variance"}
        assert layers["mp_cf"].config["pool_size"] == [2, 2]
        assert layers["to_last"].config["dims"] == [2, 3, 1]
        assert layers["rs"].config["target_shape"] == [2, 1]


def test_keras3_functional_two_in_two_out_shared_nested(keras, tmp_path: Path) -> None:
    L = keras.layers
    a = keras.Input((6,), name="in_a")
    b = keras.Input((6,), name="in_b")
    shared = L.Dense(5, activation="tanh", name="shared")
    ha, hb = shared(a), shared(b)
    added = L.Add(name="add")([ha, hb])
    cat = L.Concatenate(name="cat")([ha, hb])
    inner = keras.Sequential([L.Dense(5, name="i1"), L.Activation("relu", name="i2")], name="inner")
    n = inner(added)
    o1 = L.Dense(2, name="o1")(cat)
    o2 = L.Multiply(name="mul")([n, hb])
    model = keras.Model([a, b], [o1, o2], name="two_by_two")
    _randomise(model, 3)
    for read in _save_both(model, tmp_path, "func"):
        _check_against_keras(read, model)
        layers = _by_name(read)
        assert read.inputs == [("in_a", 0, 0), ("in_b", 0, 0)]
        assert read.outputs == [("o1", 0, 0), ("mul", 0, 0)]
        assert layers["in_a"].inbound == [[]]
        assert layers["shared"].inbound == [[("in_a", 0, 0)], [("in_b", 0, 0)]]
        assert layers["add"].inbound == [[("shared", 0, 0), ("shared", 1, 0)]]
        assert layers["cat"].inbound == [[("shared", 0, 0), ("shared", 1, 0)]]
        assert layers["inner/i1"].inbound == [[("add", 0, 0)]]
        assert layers["inner/i2"].inbound == [[("inner/i1", 0, 0)]]
        assert layers["mul"].inbound == [[("inner/i2", 0, 0), ("shared", 1, 0)]]
        assert [l.name for l in read.layers if l.class_name == "InputLayer"] == ["in_a", "in_b"]


def test_keras3_nested_functional_called_twice(keras, tmp_path: Path) -> None:
    """Keras 3 writes call args 0-based but output_layers 1-based for nested Functional."""
    L = keras.layers
    x = keras.Input((4,), name="x")
    y = keras.Input((4,), name="y")
    ii = keras.Input((4,), name="ii")
    h = L.Dense(3, activation="relu", name="idense")(ii)
    sub = keras.Model(ii, L.Dense(3, name="iout")(h), name="sub")
    seq = keras.Sequential([keras.Input((3,)), L.Dense(2, name="sd")], name="seq")
    sa, sb = sub(x), sub(y)
    model = keras.Model([x, y], [L.Subtract(name="diff")([sa, sb]), sb, seq(sa), seq(sb)],
                        name="outer")
    _randomise(model, 4)
    for read in _save_both(model, tmp_path, "nested"):
        _check_against_keras(read, model)
        layers = _by_name(read)
        assert set(layers) == {"x", "y", "sub/idense", "sub/iout", "diff", "seq/sd"}
        assert layers["sub/idense"].inbound == [[("x", 0, 0)], [("y", 0, 0)]]
        assert layers["sub/iout"].inbound == [[("sub/idense", 0, 0)], [("sub/idense", 1, 0)]]
        assert layers["diff"].inbound == [[("sub/iout", 0, 0), ("sub/iout", 1, 0)]]
        assert layers["seq/sd"].inbound == [[("sub/iout", 0, 0)], [("sub/iout", 1, 0)]]
        assert read.outputs == [("diff", 0, 0), ("sub/iout", 1, 0), ("seq/sd", 0, 0),
                                ("seq/sd", 1, 0)]
    # An output naming only the first of two calls is ambiguous by index alone ([sub, 1, 0]).
    first_only = keras.Model([x, y], [sa, L.Add(name="plus")([sa, sb])], name="first_only")
    for read in _save_both(first_only, tmp_path, "first_only"):
        assert read.outputs == [("sub/iout", 0, 0), ("plus", 0, 0)]


def test_keras3_sequential_inside_sequential(keras, tmp_path: Path) -> None:
    L = keras.layers
    inner = keras.Sequential([L.Dense(4, name="a"), L.Dense(3, name="b")], name="inner")
    model = keras.Sequential([keras.Input((5,)), inner, L.Dense(1, name="out")], name="outer")
    _randomise(model, 5)
    for read in _save_both(model, tmp_path, "seqseq"):
        _check_against_keras(read, model)
        _assert_chain(read)
        assert [l.name for l in read.layers][1:] == ["inner/a", "inner/b", "out"]


def test_keras3_store_without_name_attributes(keras, tmp_path: Path) -> None:
    """Older Keras 3 files lack the ``name`` attribute; the class-counter naming must suffice."""
    L = keras.layers
    a = keras.Input((3,), name="a")
    d1 = L.Dense(4, name="zz_first")(a)
    d2 = L.Dense(2, name="aa_second")(d1)
    bn = L.BatchNormalization(name="bn")(d2)
    model = keras.Model(a, bn, name="m")
    _randomise(model, 6)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buf, "r+") as h:
        h.visititems(lambda n, o: o.attrs.__delitem__("name") if "name" in o.attrs else None)
    members["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "stripped.keras", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    _check_against_keras(read_keras_file(tmp_path / "stripped.keras"), model)


def test_keras3_activation_and_dtype_dicts(keras, tmp_path: Path) -> None:
    L = keras.layers
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, activation=keras.activations.gelu,
                                                         name="g")], name="acts")
    model.save(tmp_path / "acts.keras")
    with zipfile.ZipFile(tmp_path / "acts.keras") as zf:
        raw = json.loads(zf.read("config.json"))
    assert isinstance(raw["config"]["layers"][1]["config"]["dtype"], dict)  # the drift we absorb
    read = read_keras_file(tmp_path / "acts.keras")
    assert read.layers[1].config["activation"] == "gelu"
    assert read.layers[1].config["dtype"] == "float32"
