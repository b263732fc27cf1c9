"""Low-precision models (float16, bfloat16) are scored through a float32 copy.

The rules divide differences by differences (Rescale's Δy/Δx, RevealCancel's Δy⁺/Δx⁺): in
bfloat16's 8-bit mantissa those quotients are mostly rounding, and summation-to-delta misses
by half of Δ. So ``attribute`` runs every rule on a float32 copy of the model (weights are
exactly representable in float32; only intermediate rounding changes) and returns float32 scores:
rounding them back to 8 or 11 mantissa bits would undo the exactness the pass bought, and the
returned delta refers to this float32 pass. The copy is made once per model and weights version.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch

from .graph import Model
from .layers.base import Input

LOW_PRECISION = (torch.float16, torch.bfloat16)

_COPIES: "weakref.WeakKeyDictionary[Model, tuple[tuple, Model]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _weights_key(model: Model) -> tuple:
    return tuple((name, key, id(t), t._version) for name, layer in model.layers.items()
                 for key, t in layer.tensors().items())


def rules_model(model: Model) -> Model:
    """The model the rules run on: ``model`` itself, or for a float16/bfloat16 model a float32
    copy (cached per model and weights version; the user's model is never changed)."""
    if model.dtype not in LOW_PRECISION:
        return model
    key = _weights_key(model)
    with _LOCK:
        hit = _COPIES.get(model)
        if hit is not None and hit[0] == key:
            return hit[1]
        wide = copy.deepcopy(model)
        for layer in wide.layers.values():  # floating tensors only: index tensors stay integers
            for k, t in layer.tensors().items():
                if t.dtype in LOW_PRECISION:
                    setattr(layer, k, t.to(torch.float32))
            if isinstance(layer, Input) and layer.dtype in LOW_PRECISION:
                layer.dtype = torch.float32
        _COPIES[model] = (key, wide)
        return wide
