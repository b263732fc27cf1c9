"""The seed's ``deeplift.backend.function``: a callable over handles, run by our engine.

::

    f = deeplift.backend.function([inp.get_activation_vars()..., inp.get_reference_vars()...],
                                  outputs)   # one handle or a list of handles
    f([X..., R...])        # or f(X..., R...), as a Theano function; one array or a list

The inputs are the activation handles of the model's input layers, optionally followed by their
reference handles (needed for anything but forward values). An output handle names a layer and
a quantity: ``get_activation_vars()``, ``get_reference_vars()``, ``get_pos_mxts()``,
``get_neg_mxts()`` or ``get_target_contrib_vars()``. Multipliers and contributions are for the
target that is active when the function is called (``target.set_active()`` and
``target.update_task_index(i)``, after ``target.set_scoring_mode(ScoringMode.OneAndZeros)``),
computed by the same pass as the model's ``get_target_contribs_func`` (see
:mod:`deeplift.legacy.blob_api`). Layers of a converted model use that model's nonlinearity
modes; layers wired by hand are put in a :class:`~deeplift.legacy.models.GraphModel` (each
activation with its own ``nonlinear_mxts_mode``, else ``DeepLIFT_GenomicsDefault``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import engine
from ..graph import Model
from ..layers.base import Input, Layer
from .blob_api import BlobStateError, blob_state, scoring_layers
from .handles import ActivationHandle, activation_handle, wrapper_of
from .layers import OriginalInputError
from .models import GraphModel, _OriginalModel

__all__ = ["function"]

_FORWARD = ("activation", "reference")


def function(inputs: Any, outputs: Any) -> Callable:
    """A function of the input arrays (and reference arrays) computing ``outputs``: one handle
    (-> one array) or a list of handles (-> a list of arrays), for the batch given."""
    if not isinstance(inputs, (list, tuple)):
        print("Wrapping the inputs in a list...")
        inputs = [inputs]
    single = not isinstance(outputs, (list, tuple))
    in_vars = [activation_handle(i) for i in inputs]
    out_vars = [activation_handle(o) for o in ([outputs] if single else outputs)]
    if not out_vars:
        raise OriginalInputError("deeplift.backend.function: no outputs given")
    act_names, ref_names = _input_slots(in_vars)
    backward = any(v.quantity not in _FORWARD for v in out_vars)
    if (backward or any(v.quantity == "reference" for v in out_vars)) and not ref_names:
        what = "multipliers and contributions" if backward else "reference values"
        raise OriginalInputError(
            f"deeplift.backend.function: {what} need the inputs' references: pass "
            "[input_layer.get_activation_vars()..., input_layer.get_reference_vars()...] as the "
            "inputs")
    runner = _runner(in_vars, out_vars, act_names, backward)
    model = runner.model if isinstance(runner, _OriginalModel) else runner
    requests = [(v.layer.name, v.quantity) for v in out_vars]
    x_slots = [act_names.index(n) for n in model.input_names]
    r_slots = [len(act_names) + ref_names.index(n) for n in model.input_names] if ref_names else []

    def call(*args):
        one_list = len(args) == 1 and isinstance(args[0], (list, tuple))
        arrays = list(args[0]) if one_list else list(args)
        if len(arrays) != len(in_vars):
            raise OriginalInputError(f"this function takes {len(in_vars)} arrays (the inputs "
                                     f"{act_names}{' and their references' if ref_names else ''}"
                                     f"), got {len(arrays)}")
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        if len({len(a) for a in arrays}) > 1:
            raise OriginalInputError(f"the arrays have different numbers of examples: "
                                     f"{[len(a) for a in arrays]}")
        xs = [arrays[i] for i in x_slots]
        rs = [arrays[i] for i in r_slots] if r_slots else None
        if isinstance(runner, _OriginalModel):
            target, task, mode = _active_target(model) if backward else (None, 0, "OneAndZeros")
            results = runner._compute(xs, rs, requests, target, task, mode)
        else:
            results = _forward(runner, xs, rs, requests)
        return results[0] if single else results

    return call


def _input_slots(in_vars: Sequence[ActivationHandle]) -> tuple[list[str], list[str]]:
    """The input layer names fed by the activation slots and by the reference slots (which
    follow them)."""
    act, ref = [], []
    for k, v in enumerate(in_vars):
        if not isinstance(v.layer, Input):
            raise OriginalInputError(
                f"deeplift.backend.function: input {k} is layer {v.name!r} "
                f"({type(v.layer).__name__}); the inputs must be input layers' "
                "get_activation_vars() (then their get_reference_vars())")
        if v.quantity == "activation":
            if ref:
                raise OriginalInputError("deeplift.backend.function: list every input layer's "
                                         "get_activation_vars() first, then the "
                                         "get_reference_vars()")
            act.append(v.name)
        elif v.quantity == "reference":
            ref.append(v.name)
        else:
            raise OriginalInputError(f"deeplift.backend.function: input {k} is a {v.quantity} "
                                     "handle; inputs are activation and reference vars")
    for names, what in ((act, "activation"), (ref, "reference")):
        if len(set(names)) != len(names):
            raise OriginalInputError(f"deeplift.backend.function: an input layer's {what} vars "
                                     f"are listed twice: {names}")
    if ref and set(ref) != set(act):
        raise OriginalInputError(f"deeplift.backend.function: the reference vars {ref} must be "
                                 f"those of the same input layers as the activation vars {act}")
    return act, ref


def _runner(in_vars, out_vars, act_names, backward: bool) -> "_OriginalModel | Model":
    """The converted model the handles belong to, or a model of the layers wired by hand."""
    layers = [v.layer for v in list(in_vars) + list(out_vars)]
    wrappers = {id(w): w for w in map(wrapper_of, layers) if w is not None}
    if len(wrappers) == 1:
        wrapper = next(iter(wrappers.values()))
        if not getattr(wrapper, "_built_by_backend", False):
            model = wrapper.model
            strays = [l.name for l in layers if model.layers.get(l.name) is not l]
            if strays:
                raise OriginalInputError(f"deeplift.backend.function: layer(s) {strays} are not "
                                         "in the model of the other layers")
            _check_inputs(model, act_names)
            return wrapper
    elif len(wrappers) > 1 and not all(getattr(w, "_built_by_backend", False)
                                       for w in wrappers.values()):
        raise OriginalInputError("deeplift.backend.function: the layers belong to different "
                                 "models")
    # layers wired by hand (set_inputs with layer objects)
    ends = [v.layer for v in out_vars]
    if backward:
        targets = [t for t in scoring_layers() if _reaches(t, ends)]
        if not targets:
            raise BlobStateError(
                "deeplift.backend.function: no target layer downstream of the output layers: "
                "call set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros) on the target "
                "layer before compiling the function")
        collected = _ancestors(ends + targets)
        wrapper = GraphModel({l.name: l for l in collected}, act_names)
        wrapper._built_by_backend = True
        return wrapper
    model = Model.from_output_layers(ends, inputs=act_names)
    _check_inputs(model, act_names)
    return model


def _check_inputs(model: Model, act_names: list[str]) -> None:
    if set(act_names) != set(model.input_names):
        missing = [n for n in model.input_names if n not in act_names]
        raise OriginalInputError(f"deeplift.backend.function: the inputs {act_names} are not the "
                                 f"model's input layers {model.input_names} (missing {missing})")


def _ancestors(layers: list[Layer]) -> list[Layer]:
    seen: dict[int, Layer] = {}
    stack = list(layers)
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen[id(layer)] = layer
        if layer.inputs and len(getattr(layer, "_input_layers", [])) != len(layer.inputs):
            raise OriginalInputError(f"layer {layer.name!r} was wired by name: wire hand-built "
                                     "layers with set_inputs(layer objects)")
        stack.extend(getattr(layer, "_input_layers", []))
    return list(seen.values())


def _reaches(target: Layer, layers: list[Layer]) -> bool:
    """Whether ``target`` depends on any of ``layers`` (following the wiring)."""
    try:
        above = _ancestors([target])
    except OriginalInputError:  # a layer of some other graph, wired by name
        return False
    wanted = {id(l) for l in layers}
    return any(id(l) in wanted for l in above)


def _active_target(model: Model) -> tuple[str, int, str]:
    active = [l for l in model.layers.values() if blob_state(l).active]
    if not active:
        raise BlobStateError(
            "no target layer of this function's model is active: call set_active() (and "
            "update_task_index(i)) on the target layer, after "
            "set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)")
    if len(active) > 1:
        raise BlobStateError(f"several target layers are active {[l.name for l in active]}: "
                             "call set_inactive() on the ones you are done with")
    state = blob_state(active[0])
    return active[0].name, state.task_index, state.scoring_mode


def _forward(model: Model, xs, rs, requests) -> list[np.ndarray]:
    """Forward values (and values on the reference) of a model that has no wrapper."""
    dtype = model.dtype

    def tensors(arrays):
        return [torch.from_numpy(np.ascontiguousarray(a)).to(dtype) for a in arrays]

    needed = [name for name, _ in requests]
    with torch.no_grad():
        if rs is None:
            x_values, r_values = model.forward_all(tensors(xs), needed), None
        else:
            x_values, r_values = engine.forward_together(model, tensors(xs), tensors(rs), needed)
    return [(x_values if q == "activation" else r_values)[n].detach().cpu().numpy()
            for n, q in requests]
