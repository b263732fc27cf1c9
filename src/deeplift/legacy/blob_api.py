"""The seed README's "Under the hood" blob API, as thin handles over our engine.

The original compiled symbolic graphs: ``update_mxts()`` built the multipliers of a blob,
``set_scoring_mode(ScoringMode.OneAndZeros)`` made a blob a possible target, ``set_active()`` and
``update_task_index(i)`` picked the target at run time, and ``deeplift.backend.function`` compiled
the graph. Here every layer ("blob") carries a little state (is it a possible target, is it
active, which unit, were its multipliers asked for) and the ``get_*_vars()``/``get_*_mxts()``
methods return handles that name a layer and a quantity; the function that
``deeplift.backend.function`` returns reads that state when it is called and runs one forward and
backward pass of our engine. The recipe of the README runs as written::

    find.reset_mxts_updated()
    target.set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)
    find.update_mxts()
    f = deeplift.backend.function([inp.get_activation_vars(), inp.get_reference_vars()],
                                  find.get_target_contrib_vars())
    target.set_active(); target.update_task_index(0)
    scores = deeplift.util.run_function_in_batches(f, [X, R])
    target.set_inactive()

The original-signature layers of :mod:`deeplift.legacy.layers` have these methods through
:class:`BlobMethods`; our plain layers get them when a wrapper model registers them
(:func:`register`).
"""

from __future__ import annotations

import functools
import types
import weakref
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import DeepLiftError
from ..graph import Model
from ..layers.base import Layer
from .handles import ActivationHandle, _register, activation_handle

__all__ = ["BlobMethods", "BlobStateError", "register", "attach_blob_methods", "blob_state",
           "scoring_layers", "SCORING_MODES"]

#: the values of the original's ``ScoringMode`` (kept as strings so that this module does not
#: import :mod:`deeplift.legacy.layers`, which builds on it)
SCORING_MODES = ("OneAndZeros", "SoftmaxPreActivation")


class BlobStateError(DeepLiftError, RuntimeError):
    """A blob-API step was skipped or taken out of order (e.g. no ``update_mxts()`` before
    ``get_target_contrib_vars()``, ``set_active()`` before ``set_scoring_mode()``)."""


@dataclass
class BlobState:
    """What the original kept in a blob's symbolic variables and shared values."""

    scoring_mode: str | None = None
    active: bool = False
    task_index: int = 0
    mxts_updated: bool = False


_STATES: "weakref.WeakKeyDictionary[Layer, BlobState]" = weakref.WeakKeyDictionary()
#: layers made possible targets with ``set_scoring_mode`` (for graphs wired by hand)
_SCORING: "weakref.WeakSet[Layer]" = weakref.WeakSet()


def blob_state(layer: Layer) -> BlobState:
    state = _STATES.get(layer)
    if state is None:
        state = _STATES[layer] = BlobState()
    return state


def scoring_layers() -> list[Layer]:
    """Every live layer that ``set_scoring_mode`` was called on."""
    return list(_SCORING)


def _label(layer: Layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


class BlobMethods:
    """The original blob methods; mixed into the original-signature layers and bound onto our
    plain layers by :func:`attach_blob_methods`."""

    # -- handles ----------------------------------------------------------------------------------
    def get_activation_vars(self) -> ActivationHandle:
        """The layer's output on the input (the original's symbolic activations)."""
        return activation_handle(self, "activation")

    def get_reference_vars(self) -> ActivationHandle:
        """The layer's output on the reference; for an Input layer, the slot its reference is
        fed through (list it after the activation vars in ``deeplift.backend.function``)."""
        return activation_handle(self, "reference")

    def get_pos_mxts(self) -> ActivationHandle:
        """The multipliers of the positive part of the layer's difference-from-reference."""
        return activation_handle(_needs_mxts(self, "get_pos_mxts"), "pos_mxts")

    def get_neg_mxts(self) -> ActivationHandle:
        """The multipliers of the negative part of the layer's difference-from-reference."""
        return activation_handle(_needs_mxts(self, "get_neg_mxts"), "neg_mxts")

    def get_target_contrib_vars(self) -> ActivationHandle:
        """The contributions ``m⁺·Δ⁺ + m⁻·Δ⁻`` of the layer to the active target unit."""
        return activation_handle(_needs_mxts(self, "get_target_contrib_vars"), "target_contribs")

    def get_name(self) -> str:
        return self.name

    # -- backward-pass bookkeeping ---------------------------------------------------------------
    def reset_mxts_updated(self) -> None:
        """Forget that the multipliers were asked for (call ``update_mxts()`` again)."""
        blob_state(self).mxts_updated = False

    def update_mxts(self) -> None:
        """Ask for this layer's multipliers: ``get_pos_mxts()``, ``get_neg_mxts()`` and
        ``get_target_contrib_vars()`` work after this."""
        blob_state(self).mxts_updated = True

    def set_scoring_mode(self, scoring_mode: str) -> None:
        """Make this layer a possible target: ``OneAndZeros`` seeds the multiplier of the chosen
        unit with 1; ``SoftmaxPreActivation`` (for the logits of a softmax) with 1 − 1/n and the
        other units with −1/n, i.e. contributions mean-centred over the classes."""
        if scoring_mode not in SCORING_MODES:
            raise BlobStateError(f"Unsupported scoring_mode {scoring_mode!r} for layer "
                                 f"{_label(self)}; expected one of {list(SCORING_MODES)}")
        state = blob_state(self)
        state.scoring_mode = scoring_mode
        state.mxts_updated = True  # as the original: a target's own multipliers are set
        _SCORING.add(self)

    def set_active(self) -> None:
        """Make this layer the target of the functions that ``deeplift.backend.function``
        returned (until ``set_inactive()``)."""
        state = blob_state(self)
        if state.scoring_mode is None:
            raise BlobStateError(
                f"set_active() on layer {_label(self)}, which is not a target: call "
                "set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros) on it first")
        state.active = True

    def set_inactive(self) -> None:
        blob_state(self).active = False

    def update_task_index(self, task_index: int) -> None:
        """Which unit of this (target) layer to explain: an index along its last axis."""
        if isinstance(task_index, bool) or not isinstance(task_index, (int, np.integer)):
            raise BlobStateError(f"update_task_index on layer {_label(self)}: the task index must "
                                 f"be an int, got {task_index!r}")
        blob_state(self).task_index = int(task_index)


def _needs_mxts(layer: Layer, what: str) -> Layer:
    if not blob_state(layer).mxts_updated:
        raise BlobStateError(f"{what}() on layer {_label(layer)} before update_mxts(): call "
                             "update_mxts() on the layer first (after set_scoring_mode on the "
                             "target layer)")
    return layer


_METHOD_NAMES = [n for n, v in vars(BlobMethods).items() if isinstance(v, types.FunctionType)]


def attach_blob_methods(layer: Layer) -> None:
    """Bind the blob methods onto one of our plain layers (layers that have them are left
    alone)."""
    for name in _METHOD_NAMES:
        if not hasattr(layer, name):  # a partial (not a bound method) so the layer still pickles
            setattr(layer, name, functools.partial(vars(BlobMethods)[name], layer))


def register(model: Model, wrapper=None, layers: Iterable[Layer] | None = None) -> None:
    """Register the layers of ``model`` with their model and wrapper, and give them the blob
    methods."""
    _register(model, wrapper)
    for layer in model.layers.values() if layers is None else layers:
        attach_blob_methods(layer)
