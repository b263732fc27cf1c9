"""Handles on layer outputs (what ``layer.get_activation_vars()`` returns in the original API):
a layer and the model it belongs to, which ``compile_func`` turns into a forward function."""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

from ..graph import Model
from ..layers.base import Layer


@dataclass
class ActivationHandle:
    """What ``layer.get_activation_vars()`` returns: a layer and the model it belongs to."""

    layer: Layer
    name: str
    model: Model | None


_LAYER_MODELS: "weakref.WeakKeyDictionary[Layer, Model]" = weakref.WeakKeyDictionary()


def activation_handle(obj: Any) -> ActivationHandle:
    if isinstance(obj, ActivationHandle):
        return obj
    if isinstance(obj, Layer):
        return ActivationHandle(obj, obj.name, _LAYER_MODELS.get(obj))
    raise TypeError(f"expected a layer or layer.get_activation_vars(), got {type(obj).__name__}")


def _register(model: Model) -> None:
    """Let ``compile_func`` find the model of a layer, and give our plain layers the original's
    ``get_activation_vars()``/``get_name()`` accessors."""
    for layer in model.layers.values():
        _LAYER_MODELS[layer] = model
        if not hasattr(layer, "get_activation_vars"):
            layer.get_activation_vars = functools.partial(activation_handle, layer)
        if not hasattr(layer, "get_name"):
            layer.get_name = functools.partial(getattr, layer, "name")
