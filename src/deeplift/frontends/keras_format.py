"""Keras model files -> a framework-neutral layer graph, without importing TensorFlow or Keras.

Reads Keras 2 ``.h5`` files (root attribute ``model_config`` + ``model_weights``, as written by
Keras 2.x, tf.keras and tf_keras), Keras 3 legacy ``.h5`` files and Keras 3 ``.keras`` archives
(``config.json`` + ``metadata.json`` + ``model.weights.h5``) with json, zipfile and h5py only, so
loading a model never needs Keras and never runs code stored in the file (a ``Lambda`` layer is
returned as an opaque layer with class ``"Lambda"``; pickled npz weight stores are refused).

Config drift is normalised here so that the layer mapper sees one dialect:

* every model is a graph. Sequential models get an ``InputLayer`` (synthesised from
  ``batch_input_shape``/``batch_shape``/``input_shape`` if the config lists none) and chained
  nodes. An ``InputLayer`` has one node with no inputs (``inbound == [[]]``).
* nested Sequential/Functional models are flattened: their layers are named
  ``"<outer>/<inner>"``, their own InputLayers disappear and every call of the nested model
  becomes a further node of each inner layer (call ``k`` of inner node ``j`` is node
  ``k * n_nodes + j``); Keras' node-index offsets for nested Functional models are undone.
* class names as Keras writes them, except: ``Model`` -> ``Functional``; classes from outside
  Keras become ``"<package or module>><Class>"`` (so a custom ``Dense`` never passes for Keras');
  Keras 3 functional ops (``keras.ops.add`` ...) become ``"keras.ops><Class>"``.
* ``InputLayer`` config holds ``batch_shape`` (list, ``None`` for free dims), never
  ``batch_input_shape``; ``dtype`` is a plain policy name; ``activation`` is a string (``None``
  -> ``"linear"``), activation objects that are not functions stay dicts; BatchNormalization /
  LayerNormalization ``axis`` is an int (a list of ints only for several axes; signs as written);
  ``kernel_size``/``strides``/``pool_size``/``dilation_rate`` of 1D/2D/3D layers are lists of that
  length (pooling ``strides=None`` -> ``pool_size``).
* weights carry canonical names (``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``,
  ``moving_variance``, ``alpha``, ``depthwise_kernel``, ``pointwise_kernel``, ``embeddings``).
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from deeplift.errors import ModelFormatError
from deeplift import file_limits
from deeplift.frontends.keras_fields import check_layer_fields

TensorRef = tuple[str, int, int]

__all__ = [
    "KerasLayer",
    "KerasModel",
    "read_keras_file",
    "read_keras_config",
    "canonical_weight_name",
]


@dataclass
class KerasLayer:
    """One Keras layer with its normalised config, weights and call nodes."""

    name: str
    class_name: str
    config: dict
    weights: dict[str, np.ndarray]
    inbound: list[list[TensorRef]]


@dataclass
class KerasModel:
    """A whole model as a flat layer graph; refs are (layer name, node index, tensor index)."""

    name: str
    layers: list[KerasLayer]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    keras_version: str | None
    source_format: str
    #: "Sequential" or "Functional": the top-level model class (layer names depend on it)
    model_class: str = "Functional"


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_MODEL_CLASSES = {"Sequential", "Functional", "Model"}
_FILE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError,
                UnicodeDecodeError, NotImplementedError)
_NO_WEIGHT_CLASSES = {
    "InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "Flatten", "Reshape", "Permute",
    "RepeatVector", "Identity", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax",
    "ThresholdedReLU", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "Dot", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Lambda",
}
_KERNEL_BIAS_CLASSES = {
    "Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
    "Conv3DTranspose", "LocallyConnected1D", "LocallyConnected2D",
}


# --------------------------------------------------------------------------- public entry points


def read_keras_file(path: str | Path) -> KerasModel:
    """Read a Keras ``.h5`` file or ``.keras`` archive; the format is sniffed from its bytes."""
    path = Path(path)
    if path.is_dir():
        return _guard(path, lambda: _read_keras_dir(path))
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file")
    kind = _sniff(path)
    if kind == "h5":
        return _guard(path, lambda: _read_h5_file(path))
    if kind == "zip":
        return _guard(path, lambda: _read_keras_archive(path))
    raise ModelFormatError(
        f"{path}: not a Keras model file (neither HDF5 .h5 nor a zip .keras archive)")


def read_keras_config(config: dict, weights: dict[str, dict[str, np.ndarray]], *,
                      source: str = "model config", keras_version: str | None = None,
                      source_format: str = "config") -> KerasModel:
    """Build a :class:`KerasModel` from a model config and per-layer weights.

    ``config`` is a serialised model (``{"class_name": ..., "config": ...}``, as in
    ``model.to_json()``, ``config.json`` or ``model_config``) or a bare ``model.get_config()``.
    ``weights`` maps layer names (flattened ``"outer/inner"`` names for nested models; a bare
    inner name is accepted when it is unambiguous) to ``{variable name: array}``; variable names
    may be raw (``"dense_1/kernel:0"``) and are canonicalised here. This is shared by the file
    readers and by callers holding a live Keras model.
    """
    model = _as_model_dict(config, source)
    try:
        graph = _build_graph(model, "", source)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise ModelFormatError(f"{source}: malformed model config ({exc!r})") from exc
    layers = [_attach_weights(layer, weights, graph.layers, source) for layer in graph.layers]
    return KerasModel(name=_model_name(model), layers=layers,
                      inputs=graph.inputs, outputs=graph.outputs, keras_version=keras_version,
                      source_format=source_format, model_class=_entry_class(model))


def canonical_weight_name(raw: str) -> str:
    """``"model/dense_1/kernel:0"`` -> ``"kernel"``: the variable's own name, without scope."""
    return re.sub(r":\d+$", "", str(raw)).rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- file sniffing


def _sniff(path: Path) -> str | None:
    """Tell HDF5 from zip by magic bytes so a misnamed file still reads (or fails clearly)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read file ({exc})") from exc
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if head[:4] in _ZIP_MAGICS:
        return "zip"
    try:
        return "h5" if h5py.is_hdf5(str(path)) else None  # HDF5 behind a user block
    except OSError:
        return None


def _guard(path: Path, read: Any) -> KerasModel:
    """Turn low-level I/O and decoding failures into ModelFormatError naming the file."""
    try:
        return read()
    except ModelFormatError:
        raise
    except _FILE_ERRORS as exc:
        raise ModelFormatError(f"{path}: corrupt or truncated file ({exc})") from exc
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:  # how h5py signals damaged objects
        raise ModelFormatError(f"{path}: corrupt or unreadable model file ({exc!r})") from exc


def _decode(value: Any) -> str | None:
    """HDF5 string attributes come back as str, bytes or numpy scalars depending on writer."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _load_json(text: str | bytes, source: str, what: str) -> Any:
    return file_limits.load_json(text, source, what)


# --------------------------------------------------------------------------- Keras 2 / legacy .h5


def _read_h5_file(path: Path) -> KerasModel:
    """Keras 2 style file: JSON architecture in ``model_config``, weights per layer group."""
    source = str(path)
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelFormatError(
                f"{source}: HDF5 file has no 'model_config' attribute, so the model architecture "
                "is missing (a weights-only file from save_weights?); save the whole model with "
                "model.save(...)")
        config = _as_model_dict(_load_json(_decode(raw), source, "'model_config'"), source)
        version = _decode(f.attrs.get("keras_version"))
        root = f["model_weights"] if "model_weights" in f else f
        if version is None:
            version = _decode(root.attrs.get("keras_version"))
        weights = _h5_weights(config, root, source)
    return read_keras_config(config, weights, source=source, keras_version=version,
                             source_format="h5")


def _h5_weights(model: dict, root: h5py.Group, source: str) -> dict[str, dict[str, np.ndarray]]:
    """Weights of each top-level layer group; a nested model's group is split by owner layer."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for entry in _raw_layer_entries(model):
        name = _entry_name(entry)
        if name not in root:
            continue
        stored = _h5_group_weights(root[name], source, name)
        if _entry_class(entry) not in _MODEL_CLASSES:
            out[name] = stored
            continue
        owners = {bare: flat for flat, bare in _descendants(entry, name + "/")}
        for raw_name, array in stored.items():
            parts = re.sub(r":\d+$", "", raw_name).split("/")
            owner = owners.get(parts[-2]) if len(parts) >= 2 else None
            if owner is not None:
                out.setdefault(owner, {})[raw_name] = array
    return out


def _h5_group_weights(group: h5py.Group, source: str, layer: str) -> dict[str, np.ndarray]:
    """Datasets listed by ``weight_names`` (all datasets below the group if it has none)."""
    names = _h5_str_list(group, "weight_names")
    if names is None:
        names = []
        group.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    stored = {}
    for wname in names:
        if wname not in group:
            raise ModelFormatError(
                f"{source}: weights of layer '{layer}' are missing: dataset '{wname}' listed in "
                "weight_names is not in the file")
        stored[wname] = _read_dataset(group[wname], source, f"weight '{wname}' of layer '{layer}'")
    return stored


def _read_dataset(dataset: Any, source: str, what: str) -> np.ndarray:
    """A dataset's array, after checking its declared size against the bytes the file holds."""
    if not isinstance(dataset, h5py.Dataset):
        raise ModelFormatError(f"{source}: {what} is not an array (an HDF5 {type(dataset).__name__})")
    file_limits.check_array_size(dataset.shape, dataset.dtype.itemsize,
                                 dataset.id.get_storage_size(), source, what)
    return np.asarray(dataset)


def _h5_str_list(group: h5py.Group, attr: str) -> list[str] | None:
    """A string-list attribute; Keras splits big ones into ``attr0``, ``attr1``... (64 KB limit)."""
    if attr in group.attrs:
        return [_decode(n) for n in np.atleast_1d(group.attrs[attr])]
    if f"{attr}0" not in group.attrs:
        return None
    names: list[str] = []
    chunk = 0
    while f"{attr}{chunk}" in group.attrs:
        names += [_decode(n) for n in np.atleast_1d(group.attrs[f"{attr}{chunk}"])]
        chunk += 1
    return names


def _descendants(entry: dict, prefix: str) -> Iterator[tuple[str, str]]:
    """(flattened name, bare name) of every non-model layer inside a nested model entry."""
    for inner in _raw_layer_entries(entry):
        name = _entry_name(inner)
        if _entry_class(inner) in _MODEL_CLASSES:
            yield from _descendants(inner, prefix + name + "/")
        else:
            yield prefix + name, name


# --------------------------------------------------------------------------- Keras 3 .keras


def _read_keras_archive(path: Path) -> KerasModel:
    """Keras 3 zip: ``config.json``, ``metadata.json`` and the ``model.weights.h5`` store."""
    with zipfile.ZipFile(path) as zf:
        file_limits.check_zip(zf, str(path))
        names = set(zf.namelist())

        def member(name: str) -> bytes | None:
            limit = file_limits.MAX_JSON_BYTES if name.endswith(".json") else file_limits.MAX_MEMBER_BYTES
            return file_limits.read_member(zf, name, str(path), limit) if name in names else None
        return _read_keras_parts(str(path), member)


def _read_keras_dir(path: Path) -> KerasModel:
    """The same layout unzipped into a directory (Keras writes that for directory targets)."""
    def member(name: str) -> bytes | None:
        file = path / name
        if not file.is_file():
            return None
        limit = file_limits.MAX_JSON_BYTES if name.endswith(".json") else file_limits.MAX_MEMBER_BYTES
        if file.stat().st_size > limit:
            raise ModelFormatError(f"{path}: {name} is {file.stat().st_size} bytes, more than the "
                                   f"limit of {limit}")
        return file.read_bytes()
    return _read_keras_parts(str(path), member)


def _read_keras_parts(source: str, member: Callable[[str], bytes | None]) -> KerasModel:
    """Parse the members of a ``.keras`` layout; ``member`` returns None for absent ones."""
    raw_config = member("config.json")
    if raw_config is None:
        raise ModelFormatError(
            f"{source}: no config.json, so this is not a Keras 3 .keras model (the "
            "architecture is missing)")
    config = _as_model_dict(_load_json(raw_config, source, "config.json"), source)
    raw_meta = member("metadata.json")
    meta = _load_json(raw_meta, source, "metadata.json") if raw_meta is not None else {}
    raw_weights = member("model.weights.h5")
    if raw_weights is None:
        extra = (" (an npz weights store, which needs pickle, is not supported)"
                 if member("model.weights.npz") is not None else "")
        raise ModelFormatError(f"{source}: no model.weights.h5{extra}")
    with h5py.File(io.BytesIO(raw_weights), "r") as store:
        weights = _keras3_weights(config, store, source)
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    return read_keras_config(config, weights, source=source, keras_version=version,
                             source_format="keras")


def _keras3_weights(model: dict, store: h5py.Group, source: str) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    _keras3_collect(model, store, "", out, source)
    return out


def _keras3_collect(model: dict, group: h5py.Group, prefix: str,
                    out: dict[str, dict[str, np.ndarray]], source: str) -> None:
    """Walk a model's ``layers/<snake_case class>[_k]`` groups the way Keras 3 wrote them.

    Keras names the groups after the Python class with a per-class counter over ``model.layers``
    (Sequential omits its InputLayer; functional ops are not layers); newer versions also store
    the layer name as the ``name`` attribute of ``vars``, which is preferred when present.
    """
    container = group.get("layers")
    if container is None:
        container = group.get("_layer_checkpoint_dependencies")  # tf.keras 2.13-2.15 .keras
    if container is None:
        return
    by_name = {}
    for child in container.values():
        vars_group = child.get("vars") if isinstance(child, h5py.Group) else None
        if vars_group is not None and "name" in vars_group.attrs:
            by_name.setdefault(_decode(vars_group.attrs["name"]), child)
    sequential = _entry_class(model) == "Sequential"
    used: dict[str, int] = {}
    for entry in _raw_layer_entries(model):
        raw_class = str(entry.get("class_name"))
        if (sequential and raw_class == "InputLayer") or _is_op(entry):
            continue
        snake = _unique(_snake_case(raw_class), used)
        name = _entry_name(entry)
        child = by_name.get(name, container.get(snake))
        if child is None:
            continue
        if _entry_class(entry) in _MODEL_CLASSES:
            _keras3_collect(entry, child, prefix + name + "/", out, source)
            continue
        arrays = []
        for group_path in _RECURRENT_VAR_GROUPS.get(_entry_class(entry), ("vars",)):
            vars_group = child.get(group_path)
            arrays += [] if vars_group is None else [
                _read_var(vars_group[str(i)], source, prefix + name) for i in range(len(vars_group))]
        names = _keras3_var_names(entry, len(arrays), source, prefix + name)
        out[prefix + name] = dict(zip(names, arrays))
        if _entry_class(entry) == "MultiHeadAttention":  # its projections are sub-layers
            out[prefix + name].update(_sublayer_vars(child, _MHA_SUBLAYERS, source, prefix + name))


#: MultiHeadAttention's sub-layers, in the order its variables are created
_MHA_SUBLAYERS = ("query_dense", "key_dense", "value_dense", "output_dense")


def _sublayer_vars(group: h5py.Group, sublayers: tuple[str, ...], source: str, layer: str
                   ) -> dict[str, np.ndarray]:
    """``{"query_dense/kernel": ..., "query_dense/bias": ...}`` from a layer's sub-layer groups."""
    out = {}
    for sub in sublayers:
        vars_group = group.get(f"{sub}/vars")
        if vars_group is None:
            continue
        for i, key in zip(range(len(vars_group)), ("kernel", "bias")):
            out[f"{sub}/{key}"] = _read_var(vars_group[str(i)], source, layer)
    return out


#: recurrent layers keep their variables in their cell (Bidirectional: forward layer first)
_RECURRENT_VAR_GROUPS = {
    **{cls: ("cell/vars",) for cls in ("LSTM", "GRU")},
    "Bidirectional": ("forward_layer/cell/vars", "backward_layer/cell/vars"),
}


def _read_var(dataset: h5py.Dataset, source: str, layer: str) -> np.ndarray:
    """Read one variable; Keras 3 marks bfloat16 (stored as raw 16-bit words) by an attribute."""
    array = _read_dataset(dataset, source, f"variable {dataset.name.rsplit('/', 1)[-1]} of layer '{layer}'")
    if _decode(dataset.attrs.get("dtype")) == "bfloat16" and array.dtype.itemsize == 2:
        array = (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return array


def _keras3_var_names(entry: dict, count: int, source: str, layer: str) -> list[str]:
    """Keras 3 stores variables as ``vars/0..n`` in creation order: name them by class."""
    cls = _entry_class(entry)
    expected = _expected_weights(cls, entry.get("config", {}))
    if expected is None:
        return [f"var_{i}" for i in range(count)]
    if count != len(expected):
        raise ModelFormatError(
            f"{source}: layer '{layer}' ({cls}) stores {count} variables but its config implies "
            f"{len(expected)} ({', '.join(expected) or 'none'}); quantized, LoRA or customised "
            "variants are not supported")
    return expected


def _snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: ``PReLU`` -> ``p_re_lu``, ``Conv1D`` -> ``conv1d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


# --------------------------------------------------------------------------- expected variables


def _expected_weights(cls: str, config: dict) -> list[str] | None:
    """Canonical variables a layer must have, in Keras 3 storage order; None if unknown class."""
    bias = ["bias"] if config.get("use_bias", True) else []
    if cls in _KERNEL_BIAS_CLASSES:
        return ["kernel", *bias]
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return ["depthwise_kernel", *bias]
    if cls in ("SeparableConv1D", "SeparableConv2D"):
        return ["depthwise_kernel", "pointwise_kernel", *bias]
    if cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization"):
        names = (["gamma"] if config.get("scale", True) else [])
        names += (["beta"] if config.get("center", True) else [])
        if cls == "BatchNormalization":
            names += ["moving_mean", "moving_variance"]
        return names
    if cls == "PReLU":
        return ["alpha"]
    if cls == "Embedding":
        return ["embeddings"]
    if cls in ("LSTM", "GRU"):
        return ["kernel", "recurrent_kernel", *bias]
    if cls == "Bidirectional":  # the two directions' variables; repeated names get _1
        inner = config.get("layer", {}).get("config", {}) if isinstance(config.get("layer"), dict) else {}
        one = ["kernel", "recurrent_kernel", *(["bias"] if inner.get("use_bias", True) else [])]
        return one + [f"{n}_1" for n in one]
    if cls in _NO_WEIGHT_CLASSES:
        return []
    return None


def _attach_weights(layer: KerasLayer, weights: dict[str, dict[str, np.ndarray]],
                    all_layers: list[KerasLayer], source: str) -> KerasLayer:
    """Canonicalise the layer's variables and insist on the ones its config requires."""
    stored = weights.get(layer.name)
    bare = layer.name.rsplit("/", 1)[-1]
    if stored is None and bare != layer.name and bare in weights:
        if sum(l.name.rsplit("/", 1)[-1] == bare for l in all_layers) == 1:
            stored = weights[bare]
    canonical: dict[str, np.ndarray] = {}
    for raw, array in (stored or {}).items():
        key = canonical_weight_name(raw)
        if key == "kernel" and layer.class_name in ("DepthwiseConv1D", "DepthwiseConv2D"):
            key = "depthwise_kernel"  # Keras 3 renamed the variable
        base, i = key, 1
        while key in canonical:
            key, i = f"{base}_{i}", i + 1
        canonical[key] = np.asarray(array)
    expected = _expected_weights(layer.class_name, layer.config) or []
    missing = [w for w in expected if w not in canonical]
    if missing:
        raise ModelFormatError(
            f"{source}: weights of layer '{layer.name}' ({layer.class_name}) are missing: "
            f"{', '.join(missing)}")
    return replace(layer, weights=canonical)


# --------------------------------------------------------------------------- config structure


def _as_model_dict(config: Any, source: str) -> dict:
    """Accept ``{"class_name", "config"}`` or a bare ``get_config()``; check it is a model."""
    if not isinstance(config, dict):
        raise ModelFormatError(f"{source}: model config is not a JSON object")
    if "class_name" not in config and "layers" in config:
        cls = "Functional" if "input_layers" in config else "Sequential"
        config = {"class_name": cls, "config": config}
    cls = _entry_class(config)
    if cls not in _MODEL_CLASSES:
        raise ModelFormatError(
            f"{source}: top-level class '{config.get('class_name')}' is not a Sequential or "
            "Functional model (subclassed models cannot be read without running their code)")
    inner = config.get("config")
    if not isinstance(inner, (dict, list)):
        raise ModelFormatError(f"{source}: model config has no 'config' section")
    return config


def _raw_layer_entries(model: dict) -> list[dict]:
    """Layer dicts of a model config; Keras <= 2.2.2 Sequential configs are a bare list."""
    inner = model.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", [])
    return [e for e in layers if isinstance(e, dict)]


def _model_name(model: dict) -> str:
    inner = model.get("config")
    return str(inner.get("name") or "model") if isinstance(inner, dict) else "model"


def _entry_name(entry: dict) -> str:
    return str(entry.get("name") or entry.get("config", {}).get("name"))


def _is_op(entry: dict) -> bool:
    module = entry.get("module")
    return isinstance(module, str) and (".ops." in module + "." and module.startswith("keras"))


def _entry_class(entry: dict) -> str:
    """Class name with ``Model`` -> ``Functional`` and non-Keras classes marked by origin."""
    cls = str(entry.get("class_name"))
    module, registered = entry.get("module"), entry.get("registered_name")
    if _is_op(entry):
        return f"keras.ops>{cls}"
    if isinstance(registered, str) and ">" in registered:
        return registered
    if isinstance(module, str) and module.split(".")[0] not in ("keras", "tf_keras", "tensorflow"):
        return f"{module}>{cls}"
    return "Functional" if cls == "Model" else cls


@dataclass
class _Entry:
    """One layer of one (possibly nested) model before flattening."""

    name: str
    class_name: str
    config: dict
    inbound: list[list[TensorRef]]
    raw: dict


@dataclass
class _Graph:
    layers: list[KerasLayer]
    inputs: list[TensorRef]
    outputs: list[TensorRef]


def _model_entries(model: dict, source: str) -> tuple[list[_Entry], list[TensorRef], list[TensorRef], bool]:
    """Entries, input refs, output refs and whether node refs are Keras 3 style."""
    if _entry_class(model) == "Sequential":
        entries, inputs, outputs = _sequential_entries(model, source)
        return entries, inputs, outputs, False
    entries = []
    keras3 = False
    for raw in _raw_layer_entries(model):
        nodes = raw.get("inbound_nodes") or []
        keras3 = keras3 or any(isinstance(n, dict) for n in nodes)
        entries.append(_Entry(_entry_name(raw), _entry_class(raw), raw.get("config", {}),
                              [_parse_node(n) for n in nodes], raw))
    cfg = model["config"]
    return entries, _parse_refs(cfg.get("input_layers", [])), _parse_refs(
        cfg.get("output_layers", [])), keras3


def _sequential_entries(model: dict, source: str) -> tuple[list[_Entry], list[TensorRef], list[TensorRef]]:
    """Give a Sequential model an explicit InputLayer and a chain of single-input nodes."""
    raws = _raw_layer_entries(model)
    if not raws:
        raise ModelFormatError(f"{source}: Sequential model '{_model_name(model)}' has no layers")
    if _entry_class(raws[0]) == "InputLayer":
        first, rest = raws[0], raws[1:]
    else:
        first, rest = _synthetic_input(model, raws[0]), raws
    entries = [_Entry(_entry_name(first), "InputLayer", first.get("config", {}), [], first)]
    for raw in rest:
        prev = entries[-1].name
        entries.append(_Entry(_entry_name(raw), _entry_class(raw), raw.get("config", {}),
                              [[(prev, 0, 0)]], raw))
    return entries, [(entries[0].name, 0, 0)], [(entries[-1].name, 0, 0)]


def _synthetic_input(model: dict, first: dict) -> dict:
    """The InputLayer Keras <= 2.2 left implicit, shaped from the first layer or the build."""
    cfg = first.get("config", {})
    shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
    if shape is None and cfg.get("input_shape") is not None:
        shape = [None, *cfg["input_shape"]]
    inner = model.get("config") if isinstance(model.get("config"), dict) else {}
    if shape is None:
        shape = inner.get("build_input_shape") or (first.get("build_config") or {}).get("input_shape")
    name = f"{_entry_name(first)}_input"
    return {"class_name": "InputLayer",
            "config": {"name": name, "batch_shape": shape, "dtype": cfg.get("dtype", "float32")}}


def _parse_node(node: Any) -> list[TensorRef]:
    """One call node: Keras 3 ``{"args", "kwargs"}`` or Keras 2 ``[[name, node, tensor, kw]...]``."""
    if isinstance(node, dict):
        return list(_keras3_refs(node.get("args", []))) + list(_keras3_refs(node.get("kwargs", {})))
    if isinstance(node, list) and node and isinstance(node[0], str):
        node = [node]  # a single entry written without the enclosing list
    return [(str(e[0]), int(e[1]), int(e[2])) for e in node]


def _keras3_refs(obj: Any) -> Iterator[TensorRef]:
    """Every ``__keras_tensor__`` history in a serialised call, in argument order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            name, node, tensor = obj["config"]["keras_history"]
            yield str(name), int(node), int(tensor)
            return
        for value in obj.values():
            yield from _keras3_refs(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _keras3_refs(value)


def _parse_refs(obj: Any) -> list[TensorRef]:
    """``input_layers``/``output_layers``: a triple, a list of triples or a dict of them."""
    if isinstance(obj, dict):
        return [ref for value in obj.values() for ref in _parse_refs(value)]
    if isinstance(obj, list) and len(obj) >= 3 and isinstance(obj[0], str):
        return [(obj[0], int(obj[1]), int(obj[2]))]
    if isinstance(obj, list):
        return [ref for value in obj for ref in _parse_refs(value)]
    return []


# --------------------------------------------------------------------------- flattening


def _build_graph(model: dict, prefix: str, source: str) -> _Graph:
    """Flatten one model level; nested models are built recursively and spliced in."""
    entries, inputs, outputs, keras3 = _model_entries(model, source)
    by_name: dict[str, _Entry] = {}
    for entry in entries:
        if entry.name in by_name:
            raise ModelFormatError(f"{source}: two layers are named '{entry.name}'")
        by_name[entry.name] = entry
    subs = {e.name: _build_graph(e.raw, prefix + e.name + "/", source)
            for e in entries if e.class_name in _MODEL_CLASSES}
    offsets = _nested_offsets(entries, outputs + inputs, subs, keras3)
    node_counts = {n: {l.name: len(l.inbound) for l in g.layers} for n, g in subs.items()}

    def resolve(ref: TensorRef, kind: str) -> TensorRef:
        name, node, tensor = ref
        if name not in by_name:
            raise ModelFormatError(f"{source}: a node refers to unknown layer '{name}'")
        if name not in subs:
            return prefix + name, node, tensor
        call = node - offsets[(name, kind)]
        entry, sub = by_name[name], subs[name]
        if not 0 <= call < len(entry.inbound) or tensor >= len(sub.outputs):
            raise ModelFormatError(f"{source}: node reference {list(ref)} is out of range")
        return inner_ref(name, call, sub.outputs[tensor])

    def inner_ref(name: str, call: int, ref: TensorRef) -> TensorRef:
        sub = subs[name]
        sub_inputs = [r[0] for r in sub.inputs]
        if ref[0] in sub_inputs:
            outer = by_name[name].inbound[call][sub_inputs.index(ref[0])]
            return resolve(outer, "inbound")
        return ref[0], call * node_counts[name][ref[0]] + ref[1], ref[2]

    layers: list[KerasLayer] = []
    for entry in entries:
        if entry.name in subs:
            layers.extend(_splice(subs[entry.name], len(entry.inbound),
                                  lambda k, r, n=entry.name: inner_ref(n, k, r)))
            continue
        nodes = [[resolve(r, "inbound") for r in node] for node in entry.inbound]
        if entry.class_name == "InputLayer":
            nodes = [[]]
        config = _normalise_config(entry.class_name, entry.config)
        check_layer_fields(entry.class_name, config, source, prefix + entry.name)
        layers.append(KerasLayer(prefix + entry.name, entry.class_name, config, {}, nodes))
    return _Graph(layers, [resolve(r, "io") for r in inputs], [resolve(r, "io") for r in outputs])


def _splice(sub: _Graph, n_calls: int, map_ref: Any) -> list[KerasLayer]:
    """Inner layers of a nested model, with one copy of their nodes per call of the model."""
    input_names = {r[0] for r in sub.inputs}
    spliced = []
    for layer in sub.layers:
        if layer.name in input_names:
            continue
        nodes = [[map_ref(k, r) for r in node] for k in range(n_calls) for node in layer.inbound]
        spliced.append(replace(layer, inbound=nodes))
    return spliced


def _nested_offsets(entries: list[_Entry], io_refs: list[TensorRef], subs: dict[str, _Graph],
                    keras3: bool) -> dict[tuple[str, str], int]:
    """Node-index offset (0 or 1) of refs to each nested model, for inbound and io refs.

    Keras counts a nested Functional model's own construction node as node 0 in places: Keras 2
    (all refs) and Keras 3 ``input_layers``/``output_layers`` start its calls at 1, Keras 3 call
    arguments at 0. The indices actually used decide when they can; the rule above otherwise.
    """
    offsets = {}
    for name in subs:
        entry = next(e for e in entries if e.name == name)
        is_functional = entry.class_name != "Sequential"
        if keras3:
            inbound_default, io_default = 0, int(is_functional)
        else:  # tf.keras skips a Sequential's first node iff its config lists an InputLayer
            raws = _raw_layer_entries(entry.raw)
            skips = is_functional or (bool(raws) and _entry_class(raws[0]) == "InputLayer")
            inbound_default = io_default = int(skips)
        used_inbound = [r[1] for e in entries for node in e.inbound for r in node if r[0] == name]
        used_io = [r[1] for r in io_refs if r[0] == name]
        offsets[(name, "inbound")] = _pick_offset(used_inbound, len(entry.inbound), inbound_default)
        offsets[(name, "io")] = _pick_offset(used_io, len(entry.inbound), io_default)
    return offsets


def _pick_offset(used: list[int], n_calls: int, default: int) -> int:
    if any(i >= n_calls for i in used):
        return 1
    if any(i == 0 for i in used):
        return 0
    return default


# --------------------------------------------------------------------------- config normalisation


def _normalise_config(cls: str, config: dict) -> dict:
    """One spelling for the keys that drifted between Keras 2.2, tf.keras 2.x and Keras 3."""
    cfg = copy.deepcopy(config) if isinstance(config, dict) else {}
    if "dtype" in cfg:
        cfg["dtype"] = _dtype_name(cfg["dtype"])
    if "activation" in cfg:
        cfg["activation"] = _activation_name(cfg["activation"])
    if cls == "InputLayer":
        shape = cfg.pop("batch_input_shape", None) or cfg.get("batch_shape")
        if shape is None and cfg.get("shape") is not None:
            shape = [None, *cfg["shape"]]
        cfg["batch_shape"] = None if shape is None else list(shape)
    else:
        cfg.pop("batch_input_shape", None)
    if cls in ("BatchNormalization", "LayerNormalization") and "axis" in cfg:
        axis = cfg["axis"]
        if isinstance(axis, list):
            axis = int(axis[0]) if len(axis) == 1 else [int(a) for a in axis]
        cfg["axis"] = axis
    _normalise_spatial(cls, cfg)
    if cfg.get("data_format", "") is None:
        cfg["data_format"] = "channels_last"
    return cfg


def _normalise_spatial(cls: str, cfg: dict) -> None:
    """Ints -> per-dimension lists for 1D/2D/3D layers, and pooling strides None -> pool_size."""
    match = re.search(r"([123])D$", cls)
    if not match or cls.startswith("Global"):
        return
    rank = int(match.group(1))
    if "Pooling" in cls and cfg.get("strides") is None and "pool_size" in cfg:
        cfg["strides"] = cfg["pool_size"]
    for key in ("kernel_size", "strides", "pool_size", "dilation_rate"):
        value = cfg.get(key)
        if isinstance(value, int):
            cfg[key] = [value] * rank
        elif isinstance(value, (list, tuple)):
            cfg[key] = list(value)


def _dtype_name(dtype: Any) -> Any:
    """Keras 3 / mixed-precision policies are dicts; keep only the policy name."""
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        if isinstance(inner, dict) and "name" in inner:
            return str(inner["name"])
    return dtype


def _activation_name(activation: Any) -> Any:
    """Activation as a function name; non-Keras functions keep a ``module>`` marker."""
    if activation is None:
        return "linear"
    if isinstance(activation, dict) and activation.get("class_name") == "function":
        name = activation.get("config")
        module = activation.get("module")
        if isinstance(name, str):
            foreign = isinstance(module, str) and not module.startswith("keras")
            if foreign and ">" not in name and module != "builtins":
                return f"{module}>{name}"
            return name
    return activation
