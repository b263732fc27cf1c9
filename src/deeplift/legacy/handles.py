"""Handles on layer quantities (what ``layer.get_activation_vars()``, ``get_reference_vars()``,
``get_pos_mxts()``, ... return in the original API): a layer, the model it belongs to and which
quantity of it is meant. ``deeplift.backend.function`` turns handles into a function.

There are no symbolic graphs: a handle only names a layer and a quantity; the function runs our
engine's forward (and backward) pass when it is called."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from ..graph import Model
from ..layers.base import Layer

#: the quantities a handle can name
QUANTITIES = ("activation", "reference", "pos_mxts", "neg_mxts", "target_contribs")


@dataclass
class ActivationHandle:
    """A layer, the model it belongs to (None for layers wired by hand and not yet in a model)
    and the quantity meant (``"activation"`` unless told otherwise)."""

    layer: Layer
    name: str
    model: Model | None
    quantity: str = "activation"


_LAYER_MODELS: "weakref.WeakKeyDictionary[Layer, Model]" = weakref.WeakKeyDictionary()
#: the original-API wrapper (SequentialModel/GraphModel) each registered layer belongs to
_LAYER_WRAPPERS: "weakref.WeakKeyDictionary[Layer, Any]" = weakref.WeakKeyDictionary()


def activation_handle(obj: Any, quantity: str = "activation") -> ActivationHandle:
    """A handle on ``obj`` (a layer, or a handle returned as is)."""
    if isinstance(obj, ActivationHandle):
        return obj
    if isinstance(obj, Layer):
        return ActivationHandle(obj, obj.name, _LAYER_MODELS.get(obj), quantity)
    raise TypeError(f"expected a layer or a handle such as layer.get_activation_vars(), got "
                    f"{type(obj).__name__}")


def wrapper_of(layer: Layer) -> Any:
    """The original-API wrapper ``layer`` was last registered with, or None."""
    return _LAYER_WRAPPERS.get(layer)


def _register(model: Model, wrapper: Any = None) -> None:
    """Let handles find the model (and wrapper) of each layer of ``model``."""
    for layer in model.layers.values():
        _LAYER_MODELS[layer] = model
        if wrapper is not None:
            _LAYER_WRAPPERS[layer] = wrapper
