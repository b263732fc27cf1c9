"""The original DeepLIFT's Keras conversion API (``deeplift.conversion.kerasapi_conversion``).

::

    from deeplift.conversion import kerasapi_conversion as kc
    from deeplift.layers import NonlinearMxtsMode
    m = kc.convert_model_from_saved_files("model.h5",
                                          nonlinear_mxts_mode=NonlinearMxtsMode.DeepLIFT_GenomicsDefault)
    f = m.get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2)

The model is read by :mod:`deeplift.frontends.keras` (Keras 2 ``.h5`` — including the files today's
tf.keras/tf_keras write, which the original refused — Keras 3 ``.keras``, or a live Keras model)
with the original's layer names, and wrapped in :class:`deeplift.models.SequentialModel` (Keras
Sequential) or :class:`deeplift.models.GraphModel` (functional). ``nonlinear_mxts_mode`` is
fixed here, for every activation layer, with per-layer ``layer_overrides``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepLiftError, InputError, ModelFormatError
from .layers import (ConvMxtsMode, DenseMxtsMode, MaxPoolDeepLiftMode,
                               NonlinearMxtsMode, check_mode)
from .models import GraphModel, SequentialModel, _is_activation
from .batching import enum as _enum

__all__ = ["convert_model_from_saved_files", "convert_sequential_model", "convert_functional_model",
           "ActivationTypes", "CustomConversionError"]

ActivationTypes = _enum(relu="relu", prelu="prelu", sigmoid="sigmoid", tanh="tanh",
                        softmax="softmax", linear="linear")


class CustomConversionError(DeepLiftError, NotImplementedError):
    """``custom_conversion_funcs`` cannot be honoured by this converter."""


def convert_model_from_saved_files(h5_file, json_file=None, yaml_file=None,
                                   nonlinear_mxts_mode=NonlinearMxtsMode.DeepLIFT_GenomicsDefault,
                                   verbose=True, dense_mxts_mode=DenseMxtsMode.Linear,
                                   conv_mxts_mode=ConvMxtsMode.Linear,
                                   maxpool_deeplift_mode=MaxPoolDeepLiftMode.gradient,
                                   layer_overrides={}, custom_conversion_funcs={}):
    """Convert a saved Keras model: the architecture from ``json_file`` or ``yaml_file`` if given
    (else from the ``.h5`` file itself; ``h5_file`` may also be a Keras 3 ``.keras`` archive),
    the weights from ``h5_file``. Returns a SequentialModel or a GraphModel."""
    if json_file is not None and yaml_file is not None:
        raise InputError("give the architecture in json_file or yaml_file, not both")
    km = _read_saved_files(h5_file, json_file, yaml_file)
    return _wrap(km, None, nonlinear_mxts_mode, verbose, dense_mxts_mode, conv_mxts_mode,
                 maxpool_deeplift_mode, layer_overrides, custom_conversion_funcs)


def convert_sequential_model(model, nonlinear_mxts_mode=NonlinearMxtsMode.DeepLIFT_GenomicsDefault,
                             verbose=True, dense_mxts_mode=DenseMxtsMode.Linear,
                             conv_mxts_mode=ConvMxtsMode.Linear,
                             maxpool_deeplift_mode=MaxPoolDeepLiftMode.gradient,
                             layer_overrides={}, custom_conversion_funcs={}):
    """Convert a Keras Sequential model -> :class:`SequentialModel`. ``model``: a live Keras
    model, a model file path, or a model config (as the original took: ``{"class_name",
    "config"}`` or the layer list, each layer config holding its ``"weights"`` list)."""
    km = _read_any(model)
    return _wrap(km, "Sequential", nonlinear_mxts_mode, verbose, dense_mxts_mode, conv_mxts_mode,
                 maxpool_deeplift_mode, layer_overrides, custom_conversion_funcs)


def convert_functional_model(model, nonlinear_mxts_mode=NonlinearMxtsMode.DeepLIFT_GenomicsDefault,
                             verbose=True, dense_mxts_mode=DenseMxtsMode.Linear,
                             conv_mxts_mode=ConvMxtsMode.Linear,
                             maxpool_deeplift_mode=MaxPoolDeepLiftMode.gradient,
                             layer_overrides={}, custom_conversion_funcs={}):
    """Convert a Keras functional model -> :class:`GraphModel` (inputs named ``<name>_0``,
    layers ``<keras name>_<node>`` and ``preact_<keras name>_<node>``)."""
    km = _read_any(model)
    return _wrap(km, "Functional", nonlinear_mxts_mode, verbose, dense_mxts_mode, conv_mxts_mode,
                 maxpool_deeplift_mode, layer_overrides, custom_conversion_funcs)


# ---------------------------------------------------------------------------------------------
# reading


def _read_saved_files(h5_file, json_file, yaml_file):
    from ..frontends import keras_format as kf

    if json_file is None and yaml_file is None:
        return kf.read_keras_file(h5_file)
    arch_path = json_file if json_file is not None else yaml_file
    text = Path(arch_path).read_text()
    if json_file is not None:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{json_file}: not valid JSON ({exc})") from exc
    else:
        try:
            import yaml
        except ImportError:
            raise ModelFormatError("reading yaml_file needs PyYAML (pip install pyyaml); or save "
                                   "the architecture as JSON (model.to_json())") from None
        config = yaml.safe_load(text)
    return _config_with_h5_weights(config, h5_file, str(arch_path))


def _config_with_h5_weights(config: Any, h5_file, source: str):
    """A KerasModel from an architecture and the weights stored in an ``.h5`` file (written by
    ``model.save`` or ``model.save_weights``)."""
    import h5py

    from ..frontends import keras_format as kf

    config = _normalise_config(config, source)
    model = kf._as_model_dict(config, source)
    try:
        with h5py.File(h5_file, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            version = kf._decode(f.attrs.get("keras_version")) or kf._decode(root.attrs.get("keras_version"))
            weights = kf._h5_weights(model, root, str(h5_file))
    except OSError as exc:
        raise ModelFormatError(f"{h5_file}: cannot read the weights file ({exc})") from exc
    return kf.read_keras_config(model, weights, source=source, keras_version=version,
                                source_format="h5")


def _normalise_config(config: Any, source: str) -> dict:
    """Keras <= 2.2.2 wrote a Sequential config as a bare layer list."""
    if isinstance(config, list):
        return {"class_name": "Sequential", "config": {"name": "sequential", "layers": config}}
    if not isinstance(config, dict):
        raise ModelFormatError(f"{source}: the model architecture is not a JSON object")
    return config


def _read_any(model: Any):
    from ..frontends import keras_format as kf
    from ..frontends.keras import _is_keras_model, read_live_keras_model

    if isinstance(model, (str, Path)):
        return kf.read_keras_file(model)
    if _is_keras_model(model):
        return read_live_keras_model(model)
    if isinstance(model, (dict, list)):
        config = _normalise_config(model, "model config")
        weights = _embedded_weights(config)
        return kf.read_keras_config(config, weights, source="model config")
    raise InputError(f"cannot convert a {type(model).__name__}: give a Keras model, a model file "
                     "path, or a model config")


def _embedded_weights(config: dict) -> dict[str, dict[str, np.ndarray]]:
    """Weights stored in each layer config's ``"weights"`` list (the original's internal form),
    named in Keras' order (kernel, bias; gamma, beta, moving mean, moving variance; alpha)."""
    from ..frontends import keras_format as kf

    inner = config.get("config", {})
    entries = inner if isinstance(inner, list) else inner.get("layers", [])
    out: dict[str, dict[str, np.ndarray]] = {}
    for entry in entries:
        cfg = entry.get("config", {})
        arrays = cfg.get("weights")
        if not arrays:
            continue
        names = kf._expected_weights(str(entry.get("class_name")), cfg) or []
        if len(names) < len(arrays):
            names = names + [f"weight_{i}" for i in range(len(names), len(arrays))]
        out[str(cfg.get("name", entry.get("name")))] = {
            n: np.asarray(a) for n, a in zip(names, arrays)}
    return out


# ---------------------------------------------------------------------------------------------
# wrapping


def _wrap(km, expected_class, nonlinear_mxts_mode, verbose, dense_mxts_mode, conv_mxts_mode,
          maxpool_deeplift_mode, layer_overrides, custom_conversion_funcs):
    from ..frontends.keras import keras_to_model

    check_mode(nonlinear_mxts_mode, NonlinearMxtsMode, "nonlinear_mxts_mode")
    check_mode(dense_mxts_mode, DenseMxtsMode, "dense_mxts_mode")
    check_mode(conv_mxts_mode, ConvMxtsMode, "conv_mxts_mode")
    check_mode(maxpool_deeplift_mode, MaxPoolDeepLiftMode, "maxpool_deeplift_mode")
    if custom_conversion_funcs:
        raise CustomConversionError(
            f"custom_conversion_funcs ({sorted(custom_conversion_funcs)}) cannot be used: this "
            "converter maps Keras layers itself. Convert the model with deeplift.load / "
            "deeplift.frontends.keras, or build the layers by hand and wrap them in "
            "deeplift.models.GraphModel")
    model = keras_to_model(km, naming="original")
    cls = getattr(model, "keras_model_class", "Functional")
    if expected_class is not None and cls != expected_class:
        if verbose:
            print(f"Note: the model is a Keras {cls} model; converting it as one")
    overrides = _layer_overrides(model, layer_overrides)
    kwargs = dict(nonlinear_mxts_mode=nonlinear_mxts_mode, verbose=verbose,
                  layer_overrides=overrides)
    if cls == "Sequential":
        return SequentialModel(model, **kwargs)
    return GraphModel(model, list(model.input_names), **kwargs)


def _layer_overrides(model, layer_overrides: dict) -> dict[str, str]:
    """``{keras index or layer/node name: {"nonlinear_mxts_mode": mode, ...} or mode}`` ->
    ``{activation layer name: mode}``. A Sequential model's key ``i`` (its Keras config index)
    names deeplift layer ``"i"``; a functional model's Keras layer name covers all its nodes
    (``"<name>_<node>"``)."""
    out: dict[str, str] = {}
    names = model.layer_names
    for key, value in (layer_overrides or {}).items():
        if isinstance(value, dict):
            unknown = set(value) - {"nonlinear_mxts_mode", "dense_mxts_mode", "conv_mxts_mode"}
            if unknown:
                raise InputError(f"layer_overrides[{key!r}]: unknown setting(s) {sorted(unknown)}")
            if "dense_mxts_mode" in value:
                check_mode(value["dense_mxts_mode"], DenseMxtsMode, "dense_mxts_mode")
            if "conv_mxts_mode" in value:
                check_mode(value["conv_mxts_mode"], ConvMxtsMode, "conv_mxts_mode")
            mode = value.get("nonlinear_mxts_mode")
        else:
            mode = value
        pattern = re.compile(re.escape(str(key)) + r"(_\d+)?")
        matched = [n for n in names if pattern.fullmatch(n)]
        if not matched:
            raise InputError(f"layer_overrides: no layer matches {key!r}; the layers are {names}")
        if mode is None:
            continue
        check_mode(mode, NonlinearMxtsMode, "nonlinear_mxts_mode")
        for n in matched:
            if _is_activation(model.layers[n]):
                out[n] = mode
    return out
