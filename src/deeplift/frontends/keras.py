"""Keras models -> :class:`deeplift.Model`, without TensorFlow (Keras itself only for live models).

``load_keras(path)`` reads a Keras 2 ``.h5`` or Keras 3 ``.keras`` file with
:mod:`deeplift.frontends.keras_format` (h5py/zipfile/json; code stored in a file is never run) and
maps every Keras layer call onto deeplift layers. A live ``keras.Model`` is read through its
JSON config and ``layer.weights``.

Layout: data stay in the Keras layout at the model boundary and at every layer a user can name.
Inputs are fed exactly as Keras takes them ((N, L, C), (N, H, W, C), or channels first where
the model says so), and layer outputs (``score_layer``, ``target_layer``) are Keras-shaped, so a
Flatten keeps Keras' order and Dense kernels stay valid. Our convolution and pooling layers are
channels first, so a channels-last Keras convolution ``V`` becomes three layers::

    V/to_cf   Permute to channels first     (auxiliary)
    V/cf      Conv / MaxPool / AvgPool       (auxiliary)
    V         Permute back to channels last  (the layer named after the Keras layer)

Helper layers carry ``auxiliary = True`` (every layer gets the attribute), so one non-auxiliary
layer stands for each layer of the original library's conversion, in the same order; the
original-API wrappers count layer indices over the non-auxiliary layers. A Flatten with
``data_format="channels_first"`` gets a ``V/to_cl`` Permute first, as Keras does.

Names (``naming=``):

* ``"keras"``: node ``k`` of Keras layer ``L`` is ``L`` (k = 0) or ``L_k``; a layer with a
  non-linear ``activation=`` is ``L/preact`` (the linear part) followed by ``L`` (the
  activation); inputs keep their Keras names.
* ``"original"``: the original DeepLIFT's names. Sequential: ``"input"``, then the Keras config
  index ``i`` (``"i"`` or ``"preact_i"`` + ``"i"``; tf_keras configs list the InputLayer as 0).
  Functional: ``"<layer>_<node>"`` and ``"preact_<layer>_<node>"``; inputs ``"<input>_0"``.
  ``Activation("linear")`` converts to no layer, as in the original.

``model.layer_names`` follows the Keras config order (layer by layer, node by node), which is the
order the original library built its layers in.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, ModelFormatError, UnsupportedLayerError
from ..graph import Model
from ..layers import (ELU, GELU, SELU, Add, AvgPool, BatchNorm, Concat, Conv, Dense, Exp, Flatten,
                      Identity, Input, LeakyReLU, MaxPool, MaxReduce, Mul, Pad, Permute, PReLU,
                      Reduce, ReLU, Reshape, ScalarMul, Sigmoid, SiLU, Softmax, Softplus, Sub, Tanh)
from ..layers import Clamp, Hardswish, MatMul, Mish, Normalize, Softsign, ThresholdedReLU
from ..layers.base import Layer
from .keras_format import KerasLayer, KerasModel, read_keras_config, read_keras_file
from .keras_sequence import SEQUENCE_HANDLERS

__all__ = ["load_keras", "keras_to_model", "read_live_keras_model", "NAMINGS"]

NAMINGS = ("keras", "original")

LAYOUT_NOTE = (
    "Inputs and every named layer output are in the Keras layout (channels_last unless a layer "
    "says channels_first). Channels-last convolutions and poolings run as Permute -> "
    "channels-first op -> Permute; the first two are marked auxiliary.")

#: per-example sizes substituted for free (None) input dims while inferring shapes; two runs
#: with different sizes tell which output dims depend on them
_FREE_DIM_SIZES = (48, 53)

_IDENTITY_CLASSES = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
}

_WHY_UNSUPPORTED = {
    "Lambda": "Lambda layers hold code, which deeplift never runs",
    "Masking": "masks are not propagated",
    "Maximum": "an elementwise maximum of several tensors has no rule here",
    "Minimum": "an elementwise minimum of several tensors has no rule here",
    "UpSampling1D": "upsampling has no rule here",
    "UpSampling2D": "upsampling has no rule here",
    "UpSampling3D": "upsampling has no rule here",
}
_RECURRENT = {"SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D",
              "ConvLSTM3D", "TimeDistributed", "CuDNNLSTM", "CuDNNGRU"}


# --------------------------------------------------------------------------- entry points


def load_keras(source: Any, *, naming: str = "keras") -> Model:
    """A deeplift :class:`~deeplift.Model` from a Keras file or a live ``keras.Model``.

    ``source``: a path to a Keras 2 ``.h5`` / Keras 3 ``.keras`` file (read without Keras), or a
    ``keras.Model`` object (Sequential or Functional). ``naming``: ``"keras"`` or ``"original"``
    (see the module docstring).
    """
    _check_naming(naming)
    if isinstance(source, (str, bytes, os.PathLike)):
        km = read_keras_file(os.fsdecode(source))
    elif _is_keras_model(source):
        km = read_live_keras_model(source)
    else:
        raise InputError(f"cannot load a Keras model from a {type(source).__name__}; give a path "
                         "to a .h5/.keras file or a keras.Model")
    return keras_to_model(km, naming=naming)


def keras_to_model(km: KerasModel, *, naming: str = "keras") -> Model:
    """Convert a :class:`KerasModel` (from :mod:`keras_format`) into a deeplift Model."""
    _check_naming(naming)
    return _Converter(km, naming).run()


def read_live_keras_model(model: Any) -> KerasModel:
    """Describe a live ``keras.Model`` (Keras 3 or tf.keras) like a file: its JSON config plus
    the current values of every layer's variables."""
    label = f"Keras model {getattr(model, 'name', '?')!r}"
    try:
        config = json.loads(model.to_json())
    except Exception as exc:  # noqa: BLE001 - whatever Keras raises, say which model
        raise ModelFormatError(f"{label}: cannot serialise its config ({type(exc).__name__}: "
                               f"{exc}); subclassed models cannot be converted") from exc
    weights: dict[str, dict[str, np.ndarray]] = {}
    _collect_live_weights(model, "", weights)
    keras_module = sys.modules.get("keras")
    return read_keras_config(config, weights, source=label,
                             keras_version=getattr(keras_module, "__version__", None),
                             source_format="live")


def _check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise InputError(f"naming must be one of {NAMINGS}, got {naming!r}")


def _is_keras_model(obj: Any) -> bool:
    return any(c.__name__ in ("Functional", "Sequential", "Model") and
               c.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")
               for c in type(obj).__mro__) and hasattr(obj, "to_json")


def _is_container(layer: Any) -> bool:
    return any(c.__name__ in ("Functional", "Sequential") for c in type(layer).__mro__)


def _collect_live_weights(model: Any, prefix: str, out: dict[str, dict[str, np.ndarray]]) -> None:
    for layer in model.layers:
        if _is_container(layer):
            _collect_live_weights(layer, prefix + layer.name + "/", out)
            continue
        arrays = {}
        for var in layer.weights:
            raw = getattr(var, "path", None) or var.name
            arrays[str(raw)] = _variable_to_numpy(var)
        out[prefix + layer.name] = arrays


def _variable_to_numpy(var: Any) -> np.ndarray:
    value = var.numpy() if hasattr(var, "numpy") else var
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.array(value)


# --------------------------------------------------------------------------- the converter


class _Converter:
    """One conversion: walks the Keras call nodes in dependency order and emits deeplift layers."""

    def __init__(self, km: KerasModel, naming: str) -> None:
        self.km = km
        self.naming = naming
        self.sequential = getattr(km, "model_class", "Functional") == "Sequential"
        self.by_name = {layer.name: layer for layer in km.layers}
        self.keras_names = set(self.by_name)
        self.np_dtype = _common_dtype(km)
        self.dtype = torch.from_numpy(np.zeros(0, self.np_dtype)).dtype
        self.tensors: dict[tuple[str, int, int], str] = {}
        self.dummies: dict[str, list[Tensor]] = {}
        self.emitted: dict[tuple[str, int], list[Layer]] = {}
        self.origin: dict[str, tuple[str, int]] = {}
        self.taken: set[str] = set()
        self.seq_names = _sequential_names(km) if (self.sequential and naming == "original") else {}
        self.n_variants = 1
        # state of the node being converted
        self._node: tuple[str, int] = ("", 0)

    # -- driver -----------------------------------------------------------------------------------
    def run(self) -> Model:
        problems = []
        for layer in self.km.layers:  # fail before any work on a layer we cannot convert
            try:
                self._check_supported(layer)
            except UnsupportedLayerError as exc:  # every one of them in one report
                problems.append((layer, exc))
        if problems:
            raise _unsupported_report(problems)
        if any(None in self._input_shape(self.by_name[r[0]])
               for r in self.km.inputs if r[0] in self.by_name):
            self.n_variants = len(_FREE_DIM_SIZES)
        order, deps = self._node_order()
        # example values are kept only while a later node still reads them (long genomics
        # inputs would otherwise hold every layer's activations at once)
        readers: dict[tuple[str, int], int] = {}
        for node_deps in deps.values():
            for d in node_deps:
                readers[d] = readers.get(d, 0) + 1
        for name, node, _ in self.km.outputs:
            readers[(name, node)] = readers.get((name, node), 0) + 1
        live: dict[str, int] = {}
        for layer, k in order:
            self._node = (layer.name, k)
            self.emitted[self._node] = []
            inputs = [self._tensor(ref, layer) for ref in layer.inbound[k]]
            with torch.no_grad():
                out = self._convert(layer, k, inputs)
            self.tensors[(layer.name, k, 0)] = out
            live[out] = live.get(out, 0) + readers.get(self._node, 0)
            for d in deps[self._node]:
                live[self.tensors[(*d, 0)]] -= 1
            for name in [l.name for l in self.emitted[self._node]] + inputs:
                if live.get(name, 0) <= 0:
                    self.dummies.pop(name, None)
        ordered = [l for layer in self.km.layers for k in range(len(layer.inbound))
                   for l in self.emitted.get((layer.name, k), [])]
        inputs = [self._tensor(ref, None) for ref in self.km.inputs]
        outputs = [self._tensor(ref, None) for ref in self.km.outputs]
        model = Model(ordered, inputs=inputs, outputs=outputs, name=self.km.name)
        model.keras_model_class = "Sequential" if self.sequential else "Functional"
        model.keras_layout_note = LAYOUT_NOTE
        model.keras_nodes = dict(self.origin)
        model.keras_naming = self.naming
        return model

    def _node_order(self) -> tuple[list[tuple[KerasLayer, int]], dict]:
        """Every call node, each after the nodes it reads, otherwise in config order; and the
        (layer, node) pairs each node reads."""
        nodes = [(layer, k) for layer in self.km.layers for k in range(len(layer.inbound))]
        position = {(layer.name, k): i for i, (layer, k) in enumerate(nodes)}
        waiting = {}
        all_deps: dict[tuple[str, int], set[tuple[str, int]]] = {}
        consumers: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for layer, k in nodes:
            deps = set()
            for name, node, _ in layer.inbound[k]:
                if (name, node) not in position:
                    raise ModelFormatError(
                        f"layer {layer.name!r} reads node {node} of layer {name!r}, which the "
                        "model does not have")
                deps.add((name, node))
            waiting[(layer.name, k)] = len(deps)
            all_deps[(layer.name, k)] = deps
            for d in deps:
                consumers.setdefault(d, []).append((layer.name, k))
        ready = [position[key] for key, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            layer, k = nodes[heapq.heappop(ready)]
            order.append((layer, k))
            for c in consumers.get((layer.name, k), []):
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, position[c])
        if len(order) != len(nodes):
            raise ModelFormatError(f"model {self.km.name!r}: the layer graph has a cycle")
        return order, all_deps

    def _tensor(self, ref: tuple[str, int, int], reader: KerasLayer | None) -> str:
        name, node, tensor = ref
        key = (name, node, tensor)
        if key not in self.tensors:
            if (name, node, 0) in self.tensors and tensor:
                raise UnsupportedLayerError(
                    f"layer {name!r} ({self.by_name[name].class_name}) has one output, but "
                    f"{'layer ' + repr(reader.name) if reader else 'the model'} reads its output "
                    f"{tensor}")
            raise ModelFormatError(f"model {self.km.name!r}: no tensor {list(ref)}")
        return self.tensors[key]

    # -- names ------------------------------------------------------------------------------------
    def _node_name(self, layer: KerasLayer, k: int) -> str:
        if self.naming == "original":
            if self.sequential:
                base = self.seq_names[layer.name]
                return base if k == 0 else f"{base}_{k}"
            return f"{layer.name}_{k}"
        if k == 0:
            return layer.name
        name = f"{layer.name}_{k}"
        return name if name not in self.keras_names else f"{layer.name}@{k}"

    def _preact_name(self, name: str) -> str:
        return f"preact_{name}" if self.naming == "original" else f"{name}/preact"

    def _unique(self, name: str) -> str:
        if name not in self.taken:
            return name
        i = 2
        while f"{name}~{i}" in self.taken:
            i += 1
        return f"{name}~{i}"

    # -- emitting layers --------------------------------------------------------------------------
    def _emit(self, layer: Layer, name: str, inputs: Sequence[str], auxiliary: bool = False) -> str:
        name = self._unique(name)
        layer.name = name
        layer.set_inputs(list(inputs))
        layer.auxiliary = auxiliary
        self.taken.add(name)
        self.origin[name] = self._node
        self.emitted[self._node].append(layer)
        if isinstance(layer, Input):
            self.dummies[name] = self._input_dummies(layer.shape)
            return name
        outs = []
        for v in range(self.n_variants):
            try:
                outs.append(layer.forward(*[self.dummies[i][v] for i in inputs]))
            except (RuntimeError, ValueError, IndexError) as exc:
                keras_name, _ = self._node
                shapes = [tuple(self.shape(i)) for i in inputs]
                raise ModelFormatError(
                    f"layer {keras_name!r} ({self.by_name[keras_name].class_name}) cannot be "
                    f"applied to input(s) of shape {shapes} (batch axis left out): {exc}") from exc
        self.dummies[name] = outs
        return name

    def _input_dummies(self, shape: tuple) -> list[Tensor]:
        return [torch.zeros((1, *[size if s is None else s for s in shape]), dtype=self.dtype)
                for size in _FREE_DIM_SIZES[: self.n_variants]]

    def shape(self, name: str) -> tuple:
        """Per-example shape of a layer's output; None for dims that follow a free input dim."""
        variants = self.dummies[name]
        first = tuple(variants[0].shape[1:])
        return tuple(s if all(tuple(v.shape[1:])[d] == s for v in variants) else None
                     for d, s in enumerate(first))

    def _t(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.array(array, dtype=self.np_dtype, copy=True))

    def _chain(self, visible: str, inputs: Sequence[str], core: Sequence[tuple[Layer, str]],
               nd: int, channels_last: bool) -> str:
        """Channels-first ``core`` layers (each with a name suffix) in the Keras layout."""
        if not channels_last:
            out = list(inputs)
            for i, (layer, suffix) in enumerate(core):
                last = i == len(core) - 1
                out = [self._emit(layer, visible if last else f"{visible}/{suffix}", out,
                                  auxiliary=not last)]
            return out[0]
        to_cf = (0, nd + 1, *range(1, nd + 1))
        to_cl = (0, *range(2, nd + 2), 1)
        x = self._emit(Permute(to_cf), f"{visible}/to_cf", inputs, auxiliary=True)
        for layer, suffix in core:
            x = self._emit(layer, f"{visible}/{suffix}", [x], auxiliary=True)
        return self._emit(Permute(to_cl), visible, [x])

    def _with_activation(self, layer: KerasLayer, name: str, inputs: Sequence[str],
                         linear: Callable[[str, Sequence[str]], str]) -> str:
        act = self._activation(layer.config.get("activation", "linear"), layer)
        if act is None:
            return linear(name, inputs)
        pre = linear(self._preact_name(name), inputs)
        return self._emit(act, name, [pre])

    # -- support check ----------------------------------------------------------------------------
    def _check_supported(self, layer: KerasLayer) -> None:
        cls = layer.class_name
        if cls in _HANDLERS:
            if "activation" in layer.config:
                self._activation(layer.config["activation"], layer)
            return
        if cls.startswith("keras.ops>"):
            why = (f"Keras 3 functional op keras.ops.{cls.split('>', 1)[1]} has no DeepLIFT rule; "
                   "use the equivalent layer (keras.layers.Add, Multiply, Concatenate, ...)")
            raise UnsupportedLayerError(f"layer {layer.name!r} ({cls}): {why}")
        if ">" in cls:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({cls}) is a custom layer class; its code is not part of "
                "the model file and deeplift never runs it, so it has no DeepLIFT rule")
        if cls in _WHY_UNSUPPORTED:
            why = _WHY_UNSUPPORTED[cls]
        elif cls in _RECURRENT:
            why = "recurrent layers are not supported"
        else:
            why = "deeplift does not support this layer class"
        raise UnsupportedLayerError(f"layer {layer.name!r} ({cls}) has no DeepLIFT rule; {why}")

    def _activation(self, act: Any, layer: KerasLayer) -> Layer | None:
        if isinstance(act, dict):
            cfg = act.get("config") if isinstance(act.get("config"), dict) else {}
            name = str(act.get("class_name", "")).lower()
            if name == "gelu" or cfg.get("name") == "gelu":
                return GELU("tanh" if cfg.get("approximate") else "none")
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.class_name}): activation {act!r} is not a built-in "
                "Keras activation and has no DeepLIFT rule")
        key = "linear" if act is None else str(act)
        if key == "linear":
            return None
        factory = _ACTIVATIONS.get(key)
        if factory is None:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.class_name}): activation {key!r} has no DeepLIFT "
                f"rule (supported: {', '.join(sorted(_ACTIVATIONS))}, linear)")
        return factory()

    # -- per-class conversion ---------------------------------------------------------------------
    def _convert(self, layer: KerasLayer, k: int, inputs: list[str]) -> str:
        name = self._node_name(layer, k)
        return _HANDLERS[layer.class_name](self, layer, name, inputs)

    def _one_input(self, layer: KerasLayer, inputs: list[str]) -> str:
        if len(inputs) != 1:
            raise ModelFormatError(f"layer {layer.name!r} ({layer.class_name}) takes one input, "
                                   f"got {len(inputs)}")
        return inputs[0]

    def _input_shape(self, layer: KerasLayer) -> tuple:
        shape = layer.config.get("batch_shape")
        if shape is None:
            raise ModelFormatError(f"input layer {layer.name!r} has no shape in the model config")
        return tuple(None if s is None else int(s) for s in list(shape)[1:])

    def input_layer(self, layer, name, inputs):
        if self.naming == "original":
            name = "input" if self.sequential else f"{layer.name}_0"
        dtype = self.dtype  # token ids (an Embedding's input) stay integer
        if str(layer.config.get("dtype", "")).startswith(("int", "uint")):
            dtype = torch.int64
        return self._emit(Input(self._input_shape(layer), dtype=dtype), name, [])

    def dense(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        w = layer.weights
        bias = self._t(w["bias"]) if layer.config.get("use_bias", True) and "bias" in w else None
        weight = self._t(np.asarray(w["kernel"]).T)
        return self._with_activation(layer, name, [x],
                                     lambda n, i: self._emit(Dense(weight, bias), n, i))

    def _spatial(self, layer: KerasLayer, x: str, nd: int) -> tuple[bool, list[int | None]]:
        shape = self.shape(x)
        if len(shape) != nd + 1:
            raise ModelFormatError(
                f"layer {layer.name!r} ({layer.class_name}) expects a rank-{nd + 2} input, got "
                f"shape {('N', *shape)}")
        channels_last = layer.config.get("data_format", "channels_last") != "channels_first"
        return channels_last, list(shape[:nd] if channels_last else shape[1:])

    def _padding(self, layer: KerasLayer, spatial: list, kernel: list, strides: list,
                 dilation: list) -> list[tuple[int, int]]:
        mode = str(layer.config.get("padding", "valid")).lower()
        if mode == "valid":
            return [(0, 0)] * len(kernel)
        if mode == "causal":
            return [((k - 1) * d, 0) for k, d in zip(kernel, dilation)]
        if mode != "same":
            raise UnsupportedLayerError(f"layer {layer.name!r} ({layer.class_name}): padding "
                                        f"{mode!r} is not supported")
        pairs = []
        for size, k, s, d in zip(spatial, kernel, strides, dilation):
            span = (k - 1) * d + 1
            if s == 1:
                total = span - 1
            elif size is None:
                raise UnsupportedLayerError(
                    f"layer {layer.name!r} ({layer.class_name}): 'same' padding with stride {s} "
                    "depends on the input length, which the model leaves free; save the model "
                    "with a fixed input shape")
            else:
                total = max((math.ceil(size / s) - 1) * s + span - size, 0)
            pairs.append((total // 2, total - total // 2))
        return pairs

    def _conv_geometry(self, layer: KerasLayer, x: str, nd: int):
        cfg = layer.config
        channels_last, spatial = self._spatial(layer, x, nd)
        kernel = [int(v) for v in cfg["kernel_size"]]
        strides = [int(v) for v in cfg.get("strides") or [1] * nd]
        dilation = [int(v) for v in cfg.get("dilation_rate") or [1] * nd]
        pads = self._padding(layer, spatial, kernel, strides, dilation)
        return channels_last, strides, dilation, pads

    def conv(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        nd = int(layer.class_name[-2])
        channels_last, strides, dilation, pads = self._conv_geometry(layer, x, nd)
        w = layer.weights
        kernel = np.asarray(w["kernel"]).transpose(nd + 1, nd, *range(nd))
        bias = self._t(w["bias"]) if layer.config.get("use_bias", True) and "bias" in w else None
        groups = int(layer.config.get("groups", 1) or 1)

        def linear(n, i):
            conv = Conv(self._t(kernel), bias, stride=strides, padding=pads, dilation=dilation,
                        groups=groups)
            return self._chain(n, i, [(conv, "cf")], nd, channels_last)
        return self._with_activation(layer, name, [x], linear)

    def _depthwise_weight(self, kernel: np.ndarray, nd: int) -> np.ndarray:
        """(*k, C_in, multiplier) -> (C_in·multiplier, 1, *k), output channel c·multiplier + m."""
        kernel = np.asarray(kernel)
        c_in, mult = kernel.shape[nd], kernel.shape[nd + 1]
        return kernel.transpose(nd, nd + 1, *range(nd)).reshape(c_in * mult, 1, *kernel.shape[:nd])

    def depthwise_conv(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        nd = int(layer.class_name[-2])
        channels_last, strides, dilation, pads = self._conv_geometry(layer, x, nd)
        w = layer.weights
        weight = self._depthwise_weight(w["depthwise_kernel"], nd)
        bias = self._t(w["bias"]) if layer.config.get("use_bias", True) and "bias" in w else None

        def linear(n, i):
            conv = Conv(self._t(weight), bias, stride=strides, padding=pads, dilation=dilation,
                        groups=np.asarray(w["depthwise_kernel"]).shape[nd])
            return self._chain(n, i, [(conv, "cf")], nd, channels_last)
        return self._with_activation(layer, name, [x], linear)

    def separable_conv(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        nd = int(layer.class_name[-2])
        channels_last, strides, dilation, pads = self._conv_geometry(layer, x, nd)
        w = layer.weights
        depthwise = self._depthwise_weight(w["depthwise_kernel"], nd)
        pointwise = np.asarray(w["pointwise_kernel"]).transpose(nd + 1, nd, *range(nd))
        bias = self._t(w["bias"]) if layer.config.get("use_bias", True) and "bias" in w else None

        def linear(n, i):
            dw = Conv(self._t(depthwise), None, stride=strides, padding=pads, dilation=dilation,
                      groups=np.asarray(w["depthwise_kernel"]).shape[nd])
            pw = Conv(self._t(pointwise), bias)
            return self._chain(n, i, [(dw, "depthwise"), (pw, "cf")], nd, channels_last)
        return self._with_activation(layer, name, [x], linear)

    def pooling(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        cls = layer.class_name
        nd = int(cls[-2])
        channels_last, spatial = self._spatial(layer, x, nd)
        size = [int(v) for v in layer.config["pool_size"]]
        strides = [int(v) for v in layer.config.get("strides") or size]
        pads = self._padding(layer, spatial, size, strides, [1] * nd)
        if cls.startswith("Max"):
            pool: Layer = MaxPool(nd, size, strides, pads)
        else:  # TF averages over the real (unpadded) elements of a window
            pool = AvgPool(nd, size, strides, pads, count_include_pad=False)
        return self._chain(name, [x], [(pool, "cf")], nd, channels_last)

    def global_pooling(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        rank = len(self.shape(x)) + 1
        if rank < 3:
            raise ModelFormatError(f"layer {layer.name!r} ({layer.class_name}) needs a rank >= 3 "
                                   f"input, got rank {rank}")
        channels_last = layer.config.get("data_format", "channels_last") != "channels_first"
        dims = list(range(1, rank - 1)) if channels_last else list(range(2, rank))
        keep = bool(layer.config.get("keepdims", False))
        if layer.class_name.startswith("GlobalMax"):
            return self._emit(MaxReduce(dims, keepdim=keep), name, [x])
        return self._emit(Reduce(dims, keepdim=keep, mean=True), name, [x])

    def batch_norm(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        cfg, w = layer.config, layer.weights
        axis = cfg.get("axis", -1)
        if isinstance(axis, list):
            raise UnsupportedLayerError(f"layer {layer.name!r} (BatchNormalization) normalises "
                                        f"over several axes {axis}; only one axis is supported")
        gamma = self._t(w["gamma"]) if cfg.get("scale", True) and "gamma" in w else None
        beta = self._t(w["beta"]) if cfg.get("center", True) and "beta" in w else None
        bn = BatchNorm(self._t(w["moving_mean"]), self._t(w["moving_variance"]), gamma, beta,
                       eps=float(cfg.get("epsilon", 1e-3)), axis=int(axis))
        return self._emit(bn, name, [x])

    def layer_norm(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        cfg, w = layer.config, layer.weights
        if cfg.get("rms_scaling"):
            raise UnsupportedLayerError(f"layer {layer.name!r} (LayerNormalization) uses rms_scaling, "
                                        "which has no DeepLIFT rule here")
        rank = len(self.shape(x)) + 1
        axes = cfg.get("axis", -1)
        axes = sorted({(int(a) % rank) - rank for a in (axes if isinstance(axes, list) else [axes])})
        if any(a == -rank for a in axes):
            raise UnsupportedLayerError(f"layer {layer.name!r} (LayerNormalization) normalises over "
                                        "the batch axis")
        # gamma/beta have the sizes of the normalised axes: broadcast them over the others
        shape = [1 if d - (rank - 1) not in axes else s for d, s in enumerate(self.shape(x))]

        def param(key: str, flag: str):
            if not cfg.get(flag, True) or key not in w:
                return None
            return self._t(np.asarray(w[key]).reshape(shape))
        norm = Normalize(axes, float(cfg.get("epsilon", 1e-3)), param("gamma", "scale"),
                         param("beta", "center"))
        return self._emit(norm, name, [x])

    def group_norm(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        cfg, w = layer.config, layer.weights
        rank = len(self.shape(x)) + 1
        axis = int(cfg.get("axis", -1)) % rank
        if axis not in (1, rank - 1) or rank < 3:
            raise UnsupportedLayerError(f"layer {layer.name!r} (GroupNormalization) over axis {axis} of a "
                                        f"rank-{rank} input; only the channel axis (first or last) is supported")
        nd = rank - 2
        shape = (-1, *([1] * nd))  # γ, β per channel of the channels-first view

        def param(key: str, flag: str):
            if not cfg.get(flag, True) or key not in w:
                return None
            return self._t(np.asarray(w[key]).reshape(shape))
        norm = Normalize((-1,), float(cfg.get("epsilon", 1e-3)), param("gamma", "scale"), param("beta", "center"),
                         groups=int(cfg.get("groups", 32)))
        return self._chain(name, [x], [(norm, "cf")], nd, channels_last=axis == rank - 1)

    def multi_head_attention(self, layer, name, inputs):
        """Keras ``MultiHeadAttention(query, value[, key])`` on (N, T, E) inputs: projections,
        heads, ``softmax(q·kᵀ/sqrt(key_dim))·v`` (products by the Shapley rule), output projection."""
        cfg = layer.config
        if len(inputs) not in (2, 3):
            raise UnsupportedLayerError(f"layer {layer.name!r} (MultiHeadAttention) with {len(inputs)} "
                                        "inputs (an attention mask?) is not supported")
        if cfg.get("use_gate") or cfg.get("sliding_window") or cfg.get("output_shape"):
            raise UnsupportedLayerError(f"layer {layer.name!r} (MultiHeadAttention): use_gate, "
                                        "sliding_window and output_shape are not supported")
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) == 3 else value
        if len(self.shape(query)) != 2 or cfg.get("attention_axes") not in (None, [1], (1,)):
            raise UnsupportedLayerError(f"layer {layer.name!r} (MultiHeadAttention) is supported on "
                                        "(batch, length, features) inputs attending over the length")
        w = _mha_weights(layer)
        heads, key_dim = int(cfg["num_heads"]), int(cfg["key_dim"])

        def project(x: str, sub: str) -> str:
            kernel = np.asarray(w[f"{sub}/kernel"])  # (E, heads, dim)
            bias = w.get(f"{sub}/bias")
            dense = Dense(self._t(kernel.reshape(kernel.shape[0], -1).T),
                          None if bias is None else self._t(np.asarray(bias).reshape(-1)))
            h = self._emit(dense, f"{name}/{sub}", [x], auxiliary=True)
            h = self._emit(Reshape([-1, heads, kernel.shape[-1]]), f"{name}/{sub}/heads", [h], auxiliary=True)
            return self._emit(Permute((0, 2, 1, 3)), f"{name}/{sub}/first", [h], auxiliary=True)

        q, k, v = project(query, "query_dense"), project(key, "key_dense"), project(value, "value_dense")
        kt = self._emit(Permute((0, 1, 3, 2)), f"{name}/key_t", [k], auxiliary=True)
        scores = self._emit(MatMul(), f"{name}/scores", [q, kt], auxiliary=True)
        scale = torch.tensor(1.0 / np.sqrt(key_dim), dtype=self.dtype)
        scores = self._emit(ScalarMul(scale), f"{name}/scaled", [scores], auxiliary=True)
        probs = self._emit(Softmax(-1), f"{name}/weights", [scores], auxiliary=True)
        out = self._emit(MatMul(), f"{name}/context", [probs, v], auxiliary=True)
        out = self._emit(Permute((0, 2, 1, 3)), f"{name}/context_t", [out], auxiliary=True)
        kernel = np.asarray(w["output_dense/kernel"])  # (heads, value_dim, E_out)
        out = self._emit(Reshape([-1, kernel.shape[0] * kernel.shape[1]]), f"{name}/merged", [out],
                         auxiliary=True)
        bias = w.get("output_dense/bias")
        dense = Dense(self._t(kernel.reshape(-1, kernel.shape[-1]).T),
                      None if bias is None else self._t(np.asarray(bias)))
        return self._emit(dense, name, [out])

    def activation(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        act = self._activation(layer.config.get("activation", "linear"), layer)
        if act is None:
            if self.naming == "original":  # the original converts Activation("linear") to nothing
                return x
            return self._emit(Identity(), name, [x])
        return self._emit(act, name, [x])

    def relu(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        cfg = layer.config
        max_value, threshold = cfg.get("max_value"), float(cfg.get("threshold", 0.0) or 0.0)
        slope = float(cfg.get("negative_slope", 0.0) or 0.0)
        if max_value is not None or threshold != 0.0:
            return self._emit(keras_relu(max_value, threshold, slope), name, [x])
        return self._emit(LeakyReLU(slope) if slope else ReLU(), name, [x])

    def leaky_relu(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        cfg = layer.config
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return self._emit(LeakyReLU(float(slope)), name, [x])

    def prelu(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        alpha = self._t(layer.weights["alpha"])  # shaped like the example, 1 on shared axes
        return self._emit(PReLU(alpha, axis=None), name, [x])

    def elu(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        return self._emit(ELU(float(layer.config.get("alpha", 1.0))), name, [x])

    def softmax(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        axis = layer.config.get("axis", -1)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise UnsupportedLayerError(f"layer {layer.name!r} (Softmax) over several axes "
                                            f"{axis} is not supported")
            axis = axis[0]
        return self._emit(Softmax(int(axis)), name, [x])

    def identity(self, layer, name, inputs):
        return self._emit(Identity(), name, [self._one_input(layer, inputs)])

    def flatten(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        rank = len(self.shape(x)) + 1
        if layer.config.get("data_format") == "channels_first" and rank > 2:
            x = self._emit(Permute((0, *range(2, rank), 1)), f"{name}/to_cl", [x], auxiliary=True)
        return self._emit(Flatten(), name, [x])

    def reshape(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        return self._emit(Reshape([int(s) for s in layer.config["target_shape"]]), name, [x])

    def permute(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        return self._emit(Permute((0, *[int(d) for d in layer.config["dims"]])), name, [x])

    def _pad_arg(self, layer: KerasLayer, x: str, key: str, sign: int) -> list[int]:
        nd = int(layer.class_name[-2])
        channels_last, _ = self._spatial(layer, x, nd)
        pairs = _pad_pairs(layer.config.get(key, 1), nd)
        rank = nd + 2
        first = 1 if channels_last else 2
        per_dim = {first + i: p for i, p in enumerate(pairs)}
        arg: list[int] = []
        for d in range(rank - 1, first - 1, -1):
            before, after = per_dim.get(d, (0, 0))
            arg += [sign * before, sign * after]
        return arg

    def zero_padding(self, layer, name, inputs):
        x = self._one_input(layer, inputs)
        return self._emit(Pad(self._pad_arg(layer, x, "padding", 1)), name, [x])

    def cropping(self, layer, name, inputs):
        x = self._one_input(layer, inputs)  # negative padding crops; its transpose zero-pads
        return self._emit(Pad(self._pad_arg(layer, x, "cropping", -1)), name, [x])

    def add(self, layer, name, inputs):
        return self._emit(Add(), name, inputs)

    def subtract(self, layer, name, inputs):
        if len(inputs) != 2:
            raise ModelFormatError(f"layer {layer.name!r} (Subtract) takes 2 inputs, got "
                                   f"{len(inputs)}")
        return self._emit(Sub(), name, inputs)

    def multiply(self, layer, name, inputs):
        if len(inputs) == 1:
            return self._emit(Identity(), name, inputs)
        x = inputs[0]
        for i, other in enumerate(inputs[1:], start=1):
            last = i == len(inputs) - 1
            x = self._emit(Mul(), name if last else f"{name}/mul_{i}", [x, other],
                           auxiliary=not last)
        return x

    def average(self, layer, name, inputs):
        total = self._emit(Add(), f"{name}/sum", inputs, auxiliary=True)
        factor = torch.tensor(1.0 / len(inputs), dtype=self.dtype)
        return self._emit(ScalarMul(factor), name, [total])

    def concatenate(self, layer, name, inputs):
        return self._emit(Concat(int(layer.config.get("axis", -1))), name, inputs)


def _pad_pairs(value: Any, nd: int) -> list[tuple[int, int]]:
    """Keras padding/cropping specs: an int, one int per dim, one pair per dim, or (1D) a pair."""
    if isinstance(value, int):
        return [(value, value)] * nd
    value = list(value)
    if nd == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [(int(value[0]), int(value[1]))]
    if nd == 1 and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = list(value[0])
        return [(int(value[0]), int(value[1]))]
    if len(value) == nd and all(isinstance(v, int) for v in value):
        return [(int(v), int(v)) for v in value]
    return [(int(a), int(b)) for a, b in value]


def _common_dtype(km: KerasModel) -> np.dtype:
    """One floating dtype for every weight: the stored one (float32 unless the model is wider)."""
    floats = [a.dtype for layer in km.layers for a in layer.weights.values()
              if np.asarray(a).dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.dtype(np.float32)
    return dtype if dtype.itemsize >= 4 else np.dtype(np.float32)


def _sequential_names(km: KerasModel) -> dict[str, str]:
    """The original library's Sequential names: the config index of each layer as a string,
    ``"<parent>-<index>"`` inside nested containers; the InputLayer is ``"input"``."""
    names: dict[str, str] = {}
    first = km.layers[0]
    # a config that lists its InputLayer (tf_keras, Keras 3) numbers the first real layer 1;
    # Keras <= 2.2 configs (whose InputLayer keras_format synthesises) number it 0
    offset = 1 if "sparse" in first.config or "ragged" in first.config else 0
    names[first.name] = "input"
    index_of: dict[str, str] = {}
    next_index: dict[str, int] = {}
    for layer in km.layers[1:]:
        parts = layer.name.split("/")
        path = []
        for depth in range(len(parts)):
            key = "/".join(parts[: depth + 1])
            parent = "/".join(parts[:depth])
            if key not in index_of:
                start = offset
                index_of[key] = str(next_index.setdefault(parent, start))
                next_index[parent] += 1
            path.append(index_of[key])
        names[layer.name] = "-".join(path)
    return names


_ACTIVATIONS: dict[str, Callable[[], Layer]] = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": lambda: Softmax(-1),
    "elu": lambda: ELU(1.0),
    "selu": SELU,
    "softplus": Softplus,
    "gelu": lambda: GELU("none"),
    "swish": SiLU,
    "silu": SiLU,
    "leaky_relu": lambda: LeakyReLU(0.2),
    "exponential": Exp,
    # Keras 3 names (hard_sigmoid is left out: Keras 2 and 3 define it differently)
    "relu6": lambda: Clamp(0.0, 6.0),
    "hard_silu": Hardswish,
    "hard_swish": Hardswish,
    "mish": Mish,
    "softsign": Softsign,
}


def _unsupported_report(problems: list) -> UnsupportedLayerError:
    """The single error, or one listing every layer without a rule by class (count, first
    layer, why); ``.ops`` holds the rows, as for PyTorch models."""
    if len(problems) == 1:
        layer, exc = problems[0]
        exc.ops = [{"op": layer.class_name, "count": 1, "first": f"layer {layer.name!r}", "reason": str(exc)}]
        return exc
    rows: dict[str, dict] = {}
    for layer, exc in problems:
        if layer.class_name in rows:
            rows[layer.class_name]["count"] += 1
        else:
            rows[layer.class_name] = {"op": layer.class_name, "count": 1, "first": f"layer {layer.name!r}",
                                      "reason": str(exc)}
    width = max(len(c) for c in rows)
    lines = [f"{len(problems)} layers of the model ({len(rows)} classes) have no DeepLIFT rule:",
             f"  {'class':{width}s}  count  first layer, why"]
    for row in rows.values():
        lines.append(f"  {row['op']:{width}s}  {row['count']:5d}  {row['reason']}")
    error = UnsupportedLayerError("\n".join(lines))
    error.ops = list(rows.values())
    return error


def _mha_weights(layer: KerasLayer) -> dict[str, Any]:
    """MultiHeadAttention's variables by sub-layer: ``.keras`` files name them so already; ``.h5``
    files list them as kernel, bias, kernel_1, bias_1, ... (query, key, value, output)."""
    w = layer.weights
    if "query_dense/kernel" in w:
        return w
    use_bias = layer.config.get("use_bias", True)
    per = 2 if use_bias else 1
    keys = sorted(w, key=lambda k: (int(k.rsplit("_", 1)[1]) if k[-1].isdigit() else 0, k != "kernel"))
    subs = ("query_dense", "key_dense", "value_dense", "output_dense")
    if len(keys) != per * len(subs):
        raise ModelFormatError(f"layer {layer.name!r} (MultiHeadAttention) stores {len(keys)} variables; "
                               f"expected {per * len(subs)}")
    out = {}
    for i, sub in enumerate(subs):
        out[f"{sub}/kernel"] = w[keys[per * i]]
        if use_bias:
            out[f"{sub}/bias"] = w[keys[per * i + 1]]
    return out


def keras_relu(max_value: float | None, threshold: float, negative_slope: float) -> Layer:
    """Keras' ``ReLU(max_value, threshold, negative_slope)``: ``max_value`` from there on, ``x``
    from ``threshold`` on, ``negative_slope·(x − threshold)`` below it."""
    if threshold == 0.0 and negative_slope == 0.0:
        return Clamp(0.0, None if max_value is None else float(max_value), inclusive=False)
    return ThresholdedReLU(None if max_value is None else float(max_value), threshold, negative_slope)

_HANDLERS: dict[str, Callable[..., str]] = {
    "InputLayer": _Converter.input_layer,
    "Dense": _Converter.dense,
    **{f"Conv{n}D": _Converter.conv for n in (1, 2, 3)},
    **{f"DepthwiseConv{n}D": _Converter.depthwise_conv for n in (1, 2)},
    **{f"SeparableConv{n}D": _Converter.separable_conv for n in (1, 2)},
    **{f"{kind}Pooling{n}D": _Converter.pooling for kind in ("Max", "Average") for n in (1, 2, 3)},
    **{f"Global{kind}Pooling{n}D": _Converter.global_pooling
       for kind in ("Max", "Average") for n in (1, 2, 3)},
    "BatchNormalization": _Converter.batch_norm,
    "LayerNormalization": _Converter.layer_norm,
    "GroupNormalization": _Converter.group_norm,
    "MultiHeadAttention": _Converter.multi_head_attention,
    "Activation": _Converter.activation,
    "ReLU": _Converter.relu,
    "LeakyReLU": _Converter.leaky_relu,
    "PReLU": _Converter.prelu,
    "ELU": _Converter.elu,
    "Softmax": _Converter.softmax,
    **{cls: _Converter.identity for cls in _IDENTITY_CLASSES},
    "Flatten": _Converter.flatten,
    "Reshape": _Converter.reshape,
    "Permute": _Converter.permute,
    **{f"ZeroPadding{n}D": _Converter.zero_padding for n in (1, 2, 3)},
    **{f"Cropping{n}D": _Converter.cropping for n in (1, 2, 3)},
    "Add": _Converter.add,
    "Subtract": _Converter.subtract,
    "Multiply": _Converter.multiply,
    "Average": _Converter.average,
    "Concatenate": _Converter.concatenate,
}
# issue 9 part B: LSTM/GRU/Bidirectional, Embedding, UpSampling (keras_sequence.py)
_HANDLERS.update(SEQUENCE_HANDLERS)
