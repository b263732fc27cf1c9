"""The original DeepLIFT's model API (``deeplift.models``, v0.6.13) over our engine.

:class:`SequentialModel` and :class:`GraphModel` wrap a :class:`deeplift.Model` and give the
original's scoring functions::

    f = model.get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2)
    scores = f(task_idx=0, input_data_list=[X], input_references_list=[R], batch_size=10,
               progress_update=1000)          # a list of per-example float32 arrays

with the original's semantics (its spec §5): one target unit seeded with 1 (``OneAndZeros``),
contributions ``m⁺·C⁺ + m⁻·C⁻`` of each find-scores layer computed from a forward pass on the
input *and* the reference for every mode (so Gradient/GuidedBackprop/DeconvNet "contributions"
are multipliers × (x − r)), multipliers ``½(m⁺ + m⁻)`` of Input layers only.

The nonlinearity mode is fixed when the wrapper is made: each activation layer uses its own
``nonlinear_mxts_mode`` attribute if it has one (the original-signature layers of
:mod:`deeplift.legacy.layers`), else the wrapper's (``DeepLIFT_GenomicsDefault`` unless told
otherwise), resolved to a rule of ours (``DeepLIFT_GenomicsDefault``: Rescale after a
convolution, RevealCancel after a dense layer, an error anywhere else — as the original).
Numbers follow the original: float32, max pooling routes to the input's argmax, RevealCancel
pseudocounts and the other float32 details (``RuleOptions(max_routing="gradient",
original_quirks=True)``; pass ``rule_options=`` to change that).

Layer indices (``find_scores_layer_idx``, ``target_layer_idx``) count the layers of
``get_layers()``, which leaves out helper layers a converter marks ``auxiliary = True``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .. import engine
from ..engine import PassState, RuleOptions
from ..errors import InputError
from ..graph import Model
from ..layers.activations import Activation, Softmax
from ..layers.base import Input, Layer
from .layers import (MODE_TO_RULE, MultipliersNotAvailableError, NonlinearMxtsMode,
                              OriginalInputError, TargetLayerError, UnsupportedModeError,
                              check_mode)
from ..methods import _TRANSPARENT, genomics_default_rule, get_method, rule_resolver
from .batching import enum as _enum
from .batching import run_function_in_batches
from .handles import ActivationHandle, activation_handle  # noqa: F401  (public here)
from .blob_api import register

__all__ = ["SequentialModel", "GraphModel", "FuncType", "activation_handle",
           "TargetLayerError", "MultipliersNotAvailableError", "UnsupportedModeError"]

FuncType = _enum(contribs="contribs", multipliers="multipliers",
                 contribs_of_input_with_filter_refs="contribs_of_input_with_filter_refs")


# ---------------------------------------------------------------------------------------------
# nonlinearity modes


def _is_activation(layer: Layer) -> bool:
    return isinstance(layer, (Activation, Softmax))


def _preceding(model: Model, layer: Layer) -> Layer:
    source = model.layers[layer.inputs[0]]
    while isinstance(source, _TRANSPARENT) and source.inputs:
        source = model.layers[source.inputs[0]]
    return source


def resolve_nonlinear_modes(model: Model, default_mode: str | None = None,
                            overrides: dict[str, str] | None = None,
                            verbose: bool = False) -> dict[str, str]:
    """Rule name of every activation layer, from its mode (``overrides`` by layer name, else the
    layer's own ``nonlinear_mxts_mode``, else ``default_mode``, else
    ``DeepLIFT_GenomicsDefault``). Each layer's ``nonlinear_mxts_mode`` is set to the resolved
    mode, as the original did."""
    overrides = overrides or {}
    rules: dict[str, str] = {}
    for name, layer in model.layers.items():
        if not _is_activation(layer):
            continue
        mode = (overrides.get(name) or getattr(layer, "nonlinear_mxts_mode", None) or default_mode
                or NonlinearMxtsMode.DeepLIFT_GenomicsDefault)
        check_mode(mode, NonlinearMxtsMode, "nonlinear_mxts_mode")
        if mode == NonlinearMxtsMode.DeepLIFT_GenomicsDefault:
            try:
                rule = genomics_default_rule(model, layer, strict=True)
            except InputError:
                src = _preceding(model, layer)
                raise UnsupportedModeError(
                    f"Unsure how to resolve DeepLIFT_GenomicsDefault for layer {name!r}: it follows "
                    f"{src.name!r} ({type(src).__name__}), but the mode is defined only for "
                    "activations after a dense or convolution layer (optionally with batch norm "
                    "or dropout in between); choose another nonlinear_mxts_mode") from None
            mode = NonlinearMxtsMode.RevealCancel if rule == "reveal_cancel" else NonlinearMxtsMode.Rescale
            if verbose:
                src = _preceding(model, layer)
                print(f"For layer {name} the preceding linear layer is {src.name} of type "
                      f"{type(src).__name__};\nIn accordance with nonlinear_mxts_mode="
                      f"DeepLIFT_GenomicsDefault we are setting the NonlinearMxtsMode to {mode}")
        rules[name] = MODE_TO_RULE[mode]
        try:
            layer.nonlinear_mxts_mode = mode
        except AttributeError:  # pragma: no cover - a read-only attribute on a custom layer
            pass
    return rules


# ---------------------------------------------------------------------------------------------
# building models from layers


def _collect(layers: Iterable[Layer]) -> list[Layer]:
    """The given layers and every layer wired into them (``set_inputs`` with layer objects)."""
    out: dict[int, Layer] = {}
    stack = list(layers)[::-1]
    order: list[Layer] = []
    while stack:
        layer = stack.pop()
        if id(layer) in out:
            continue
        out[id(layer)] = layer
        order.append(layer)
        stack.extend(reversed(getattr(layer, "_input_layers", [])))
    # listed layers first (their order decides ties in the topological order), then helpers
    listed = {id(l) for l in layers}
    return [l for l in layers] + [l for l in order if id(l) not in listed]


def _name_layers(layers: Sequence[Layer]) -> None:
    taken = {l.name for l in layers if l.name is not None}
    k = 0
    for layer in layers:
        if layer.name is None:
            while f"{type(layer).__name__.lower()}_{k}" in taken:
                k += 1
            layer.name = f"{type(layer).__name__.lower()}_{k}"
            taken.add(layer.name)


def _visible(layers: Iterable[Layer]) -> list[Layer]:
    return [l for l in layers if not getattr(l, "auxiliary", False)]


def _keras_name_aliases(model: Model, name_to_layer: dict[str, Layer]) -> dict[str, str]:
    """Names a user may write for the layers of a converted Keras model -> our names: the Keras
    layer name (node 0; ``<name>_<k>`` for node k) for the layer standing for that Keras layer,
    and ``preact_<name>`` for its linear part (when an ``activation=`` split it in two)."""
    nodes = getattr(model, "keras_nodes", None) or {}
    groups: dict[tuple[str, int], list[str]] = {}
    for name in name_to_layer:
        if name in nodes:
            groups.setdefault(tuple(nodes[name]), []).append(name)
    found: dict[str, list[str]] = {}
    for (keras_name, k), names in groups.items():
        base = keras_name if k == 0 else f"{keras_name}_{k}"
        if len(names) == 1:
            pairs = [(base, names[0])]
        else:
            main = [n for n in names if f"preact_{n}" in names]
            if len(main) != 1 or len(names) != 2:
                continue
            pairs = [(base, main[0]), (f"preact_{base}", f"preact_{main[0]}")]
        for alias, name in pairs:
            if alias != name and alias not in name_to_layer:
                found.setdefault(alias, []).append(name)
    return {alias: names[0] for alias, names in found.items() if len(names) == 1}


def _one_target_name(target_layer_name, pre_activation_target_layer_name):
    if target_layer_name is not None and pre_activation_target_layer_name is not None:
        raise OriginalInputError("give target_layer_name or pre_activation_target_layer_name "
                                 "(the same thing), not both")
    return target_layer_name if target_layer_name is not None else pre_activation_target_layer_name


# ---------------------------------------------------------------------------------------------
# the wrappers


class _OriginalModel:
    """What SequentialModel and GraphModel share: mode resolution and the scoring functions."""

    def _setup(self, model: Model, nonlinear_mxts_mode: str | None, verbose: bool,
               layer_overrides: dict[str, str] | None, rule_options: RuleOptions | None) -> None:
        if nonlinear_mxts_mode is not None:
            check_mode(nonlinear_mxts_mode, NonlinearMxtsMode, "nonlinear_mxts_mode")
        self._model = model
        self._options = rule_options or RuleOptions(max_routing="gradient", original_quirks=True)
        self._rules = resolve_nonlinear_modes(model, nonlinear_mxts_mode, layer_overrides, verbose)
        self._rule_for = rule_resolver(model, get_method("rescale"), overrides=self._rules)
        self._aliases = _keras_name_aliases(model, self._name_to_layer)
        register(model, self)

    # -- inspection -------------------------------------------------------------------------------
    @property
    def model(self) -> Model:
        """The wrapped :class:`deeplift.Model` (usable with ``deeplift.attribute``)."""
        return self._model

    def get_input_layer_names(self) -> list[str]:
        return list(self._input_layer_names)

    def get_name_to_layer(self) -> dict[str, Layer]:
        return dict(self._name_to_layer)

    def get_name_to_blob(self) -> dict[str, Layer]:
        """Every name a layer ("blob", in the seed) answers to: our names (those of
        :meth:`get_name_to_layer`), then the Keras names as written in the user's model (a
        functional model's ``"dense"`` for our ``"dense_0"``, a Sequential model's ``"dense"``
        for our ``"1"``), which every function taking a layer name accepts too."""
        out = self.get_name_to_layer()
        out.update((alias, self._name_to_layer[name]) for alias, name in self._aliases.items())
        return out

    def _canonical(self, name: str) -> str:
        """A layer name as the user may write it (its Keras name, without the ``_0`` of the
        original's functional naming) -> our name."""
        return name if name in self._name_to_layer else self._aliases.get(name, name)

    def nonlinear_rules(self) -> dict[str, str]:
        """The rule of ours each activation layer uses (after resolving the genomics default)."""
        return dict(self._rules)

    # -- scoring functions ------------------------------------------------------------------------
    def _get_func(self, find_layers: list[Layer], single: bool, target: Layer,
                  func_type: str) -> Callable:
        model = self._model
        if _is_activation(target):
            raise TargetLayerError(
                f"You set the target layer to an activation layer ({target.name!r}, "
                f"{type(target).__name__}), which is unusual, so this is an error: did you mean to "
                "set the target layer to the layer *before* the activation layer instead? "
                "(recommended for classification: score the pre-activation logits)")
        consumers = [model.layers[c] for c in model.consumers(target.name)]
        if len(consumers) > 1:
            print(f"WARNING: the target layer {target.name} has multiple output layers "
                  f"{[c.name for c in consumers]}")
        elif len(consumers) == 1 and not _is_activation(consumers[0]):
            print(f"WARNING!!! the target layer {target.name} is followed by "
                  f"{consumers[0].name} ({type(consumers[0]).__name__}), which is not an "
                  "activation layer: are you sure this is the layer you want to explain?")
        if func_type == FuncType.multipliers:
            for layer in find_layers:
                if not isinstance(layer, Input):
                    raise MultipliersNotAvailableError(
                        f"'{type(layer).__name__}' object has no attribute 'get_mxts': multipliers "
                        f"are available for Input layers only, and {layer.name!r} is not one "
                        "(use get_target_contribs_func for hidden layers)")
        elif func_type != FuncType.contribs:
            raise NotImplementedError(f"func_type {func_type!r} is not implemented")
        find_names = [l.name for l in find_layers]
        input_names = self._model.input_names
        n_inputs = len(input_names)
        quantity = "target_contribs" if func_type == FuncType.contribs else "mxts"

        def batch(arrays: list[np.ndarray], task_idx: int):
            results = self._compute(arrays[:n_inputs], arrays[n_inputs:],
                                    [(name, quantity) for name in find_names], target.name,
                                    task_idx)
            return results[0] if single else results

        def func(task_idx, input_data_list, batch_size, progress_update,
                 input_references_list=None):
            if not isinstance(task_idx, (int, np.integer)) or isinstance(task_idx, bool):
                raise OriginalInputError(f"task_idx must be an int, got {task_idx!r}")
            data = self._inputs_in_order(input_data_list, "input_data_list")
            if input_references_list is None:
                print("No reference provided - using zeros")
                refs = [0.0] * n_inputs
            else:
                refs = self._inputs_in_order(input_references_list, "input_references_list")
            data_arrays, ref_arrays = [], []
            for name, x, r in zip(input_names, data, refs):
                x = np.asarray(x)
                try:
                    r = np.ones_like(x) * np.asarray(r)
                except ValueError:
                    raise OriginalInputError(
                        f"the reference for input {name!r} of shape {np.shape(r)} does not "
                        f"broadcast to the input's shape {x.shape}") from None
                data_arrays.append(x.astype(np.float32, copy=False))
                ref_arrays.append(r.astype(np.float32, copy=False))
            if len({len(x) for x in data_arrays}) > 1:
                raise OriginalInputError(f"the inputs have different numbers of examples: "
                                         f"{[len(x) for x in data_arrays]}")
            return run_function_in_batches(
                lambda arrays: batch(arrays, int(task_idx)), data_arrays + ref_arrays,
                batch_size=batch_size, progress_update=progress_update,
                multimodal_output=not single)

        return func

    def _compute(self, xs: Sequence[np.ndarray], rs: Sequence[np.ndarray] | None,
                 requests: Sequence[tuple[str, str]], target: str | None, task_idx: int = 0,
                 scoring_mode: str = "OneAndZeros") -> list[np.ndarray]:
        """One pass of the engine on a batch: ``xs`` (and ``rs``) in ``model.input_names`` order;
        ``requests`` are (layer name, quantity) pairs, quantity one of ``activation``,
        ``reference``, ``pos_mxts``, ``neg_mxts``, ``target_contribs`` (multipliers × split
        difference-from-reference) or ``mxts`` (½(m⁺ + m⁻)), the backward ones for unit
        ``task_idx`` (along the last axis) of layer ``target``. Returns float32 arrays."""
        model = self._model
        dtype, device = model.dtype, model.device

        def tensors(arrays):
            return [torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
                    for a in arrays]

        backward = [name for name, q in requests if q not in ("activation", "reference")]
        needed = list(dict.fromkeys([name for name, _ in requests]
                                    + ([target] if backward else [])))
        with torch.no_grad():
            if rs is None:
                x_values, r_values = model.forward_all(tensors(xs), needed), None
            else:
                x_values, r_values = engine.forward_together(model, tensors(xs), tensors(rs),
                                                             needed)
            mults = {}
            if backward:
                state = PassState(model, x_values, r_values, None, None, self._rule_for,
                                  self._options)
                out = state.x(target)
                units = out.shape[-1]
                if not -units <= task_idx < units:
                    raise InputError(f"task_idx {task_idx} is out of range: the target layer "
                                     f"{target!r} has {units} units")
                seeds = torch.zeros((1, *out.shape), dtype=out.dtype, device=out.device)
                if scoring_mode == "SoftmaxPreActivation":
                    seeds -= 1.0 / units
                seeds[0, ..., task_idx] += 1
                mults = engine.backward(model, state, target, seeds,
                                        list(dict.fromkeys(backward)))
            results = []
            for name, quantity in requests:
                if quantity == "activation":
                    v = x_values[name]
                elif quantity == "reference":
                    v = r_values[name]
                else:
                    m_pos, m_neg = mults[name]
                    if quantity == "target_contribs":
                        v = engine.contributions(state, name, (m_pos, m_neg))[0]
                    elif quantity == "pos_mxts":
                        v = m_pos[0]
                    elif quantity == "neg_mxts":
                        v = (m_pos if m_neg is None else m_neg)[0]
                    else:
                        v = (m_pos if m_neg is None else 0.5 * (m_pos + m_neg))[0]
                results.append(v.detach().cpu().numpy().astype(np.float32, copy=False))
        return results

    def _inputs_in_order(self, value, what: str) -> list:
        names = self._input_layer_names
        if isinstance(value, dict):
            if not self._accepts_dict:
                raise OriginalInputError(f"{what}: a SequentialModel takes a list with one array "
                                         "per input layer, not a dict")
            missing = [n for n in names if n not in value]
            if missing:
                raise OriginalInputError(f"{what}: no entry for input layer(s) {missing}; the "
                                         f"input layers are {names}")
            return [value[n] for n in names]
        if not isinstance(value, (list, tuple)):
            if len(names) == 1 and isinstance(value, np.ndarray):
                return [value]
            raise OriginalInputError(f"{what} must be a list with one entry per input layer "
                                     f"{names}, got {type(value).__name__}")
        if len(value) != len(names):
            raise OriginalInputError(f"{what} has {len(value)} entries; the model has "
                                     f"{len(names)} input layer(s) {names}")
        return list(value)


class SequentialModel(_OriginalModel):
    """``SequentialModel(layers)``: a chain of layers whose first is the Input.

    ``layers`` are wired with ``set_inputs`` (a layer given without inputs is wired after the one
    before it); a :class:`deeplift.Model` is accepted too. Extensions: ``nonlinear_mxts_mode``
    (the mode of activation layers that do not carry their own), ``verbose``, ``layer_overrides``
    ({layer name: NonlinearMxtsMode}) and ``rule_options``.
    """

    _accepts_dict = False

    def __init__(self, layers: "Sequence[Layer] | Model", *, nonlinear_mxts_mode: str | None = None,
                 verbose: bool = False, layer_overrides: dict[str, str] | None = None,
                 rule_options: RuleOptions | None = None) -> None:
        if isinstance(layers, Model):
            model = layers
            listed = _visible(model.layers.values())
        else:
            listed = list(layers)
            if not listed or not isinstance(listed[0], Input):
                raise OriginalInputError("the first layer of a SequentialModel must be an Input")
            _name_layers(listed)
            for prev, layer in zip(listed, listed[1:]):
                if not layer.inputs and not isinstance(layer, Input):
                    layer.set_inputs(prev)
            model = Model(_collect(listed), inputs=[listed[0].name])
            listed = _visible(listed)
        self._layers = listed
        self._input_layer_names = [model.input_names[0]]
        self._name_to_layer = {l.name: l for l in listed}
        self._setup(model, nonlinear_mxts_mode, verbose, layer_overrides, rule_options)

    def get_layers(self) -> list[Layer]:
        return list(self._layers)

    def _layer(self, idx_or_name) -> Layer:
        if isinstance(idx_or_name, str):
            idx_or_name = self._canonical(idx_or_name)
            if idx_or_name not in self._name_to_layer:
                raise OriginalInputError(f"no layer named {idx_or_name!r}; layers: "
                                         f"{list(self._name_to_layer)}")
            return self._name_to_layer[idx_or_name]
        return self._layers[idx_or_name]

    def _find_layers(self, find) -> tuple[list[Layer], bool]:
        if isinstance(find, (list, tuple)):
            return [self._layer(f) for f in find], False
        return [self._layer(find)], True

    def get_target_contribs_func(self, find_scores_layer_idx=0, target_layer_idx=-2, *,
                                 find_scores_layer_name=None, target_layer_name=None,
                                 pre_activation_target_layer_name=None) -> Callable:
        """``f(task_idx, input_data_list, batch_size, progress_update, input_references_list=None)``
        returning the contributions of the find-scores layer(s) (indices into ``get_layers()``,
        or names) to unit ``task_idx`` of the target layer (default −2: the logits before a final
        sigmoid/softmax). The graph models' keywords work too (``find_scores_layer_name=``,
        ``pre_activation_target_layer_name=``), as the seed README uses them on whatever
        ``convert_functional_model`` returns."""
        return self._func(find_scores_layer_idx, target_layer_idx, find_scores_layer_name,
                          _one_target_name(target_layer_name, pre_activation_target_layer_name),
                          FuncType.contribs)

    def get_target_multipliers_func(self, find_scores_layer_idx=0, target_layer_idx=-2, *,
                                    find_scores_layer_name=None, target_layer_name=None,
                                    pre_activation_target_layer_name=None) -> Callable:
        """Like :meth:`get_target_contribs_func`, returning the multipliers ½(m⁺ + m⁻) of Input
        find-scores layers."""
        return self._func(find_scores_layer_idx, target_layer_idx, find_scores_layer_name,
                          _one_target_name(target_layer_name, pre_activation_target_layer_name),
                          FuncType.multipliers)

    def _func(self, find_idx, target_idx, find_name, target_name, func_type) -> Callable:
        find_layers, single = self._find_layers(find_name if find_name is not None else find_idx)
        target = self._layer(target_name if target_name is not None else target_idx)
        return self._get_func(find_layers, single, target, func_type)


class GraphModel(_OriginalModel):
    """``GraphModel(name_to_layer, input_layer_names)``: any DAG of layers, addressed by name.

    Scoring functions take ``input_data_list`` (and references) as a list in
    ``input_layer_names`` order or a dict keyed by those names. A :class:`deeplift.Model` is
    accepted in place of ``name_to_layer``. Extensions as for :class:`SequentialModel`.
    """

    _accepts_dict = True

    def __init__(self, name_to_layer: "dict[str, Layer] | Model",
                 input_layer_names: Sequence[str] | None = None, *,
                 nonlinear_mxts_mode: str | None = None, verbose: bool = False,
                 layer_overrides: dict[str, str] | None = None,
                 rule_options: RuleOptions | None = None) -> None:
        if isinstance(name_to_layer, Model):
            model = name_to_layer
            name_to_layer = {n: l for n, l in model.layers.items()
                             if not getattr(l, "auxiliary", False)}
            input_layer_names = list(input_layer_names or model.input_names)
            if [name_to_layer[n].name for n in input_layer_names] != model.input_names:
                raise OriginalInputError(f"input_layer_names {input_layer_names} must be the "
                                         f"model's inputs {model.input_names} in that order")
        else:
            if input_layer_names is None:
                raise OriginalInputError("GraphModel needs input_layer_names")
            name_to_layer = dict(name_to_layer)
            layers = list(name_to_layer.values())
            _name_layers(layers)
            missing = [n for n in input_layer_names if n not in name_to_layer]
            if missing:
                raise OriginalInputError(f"input layer(s) {missing} are not in name_to_layer")
            model = Model(_collect(layers),
                          inputs=[name_to_layer[n].name for n in input_layer_names])
        self._name_to_layer = name_to_layer
        self._input_layer_names = list(input_layer_names)
        self._setup(model, nonlinear_mxts_mode, verbose, layer_overrides, rule_options)

    def get_layers(self) -> list[Layer]:
        """Every (non-helper) layer, in topological order."""
        return _visible(self._model.layers.values())

    def _layer(self, name: str) -> Layer:
        name = self._canonical(name)
        if name not in self._name_to_layer:
            raise OriginalInputError(f"no layer named {name!r}; layers: {list(self._name_to_layer)}")
        return self._name_to_layer[name]

    def get_target_contribs_func(self, find_scores_layer_name, pre_activation_target_layer_name
                                 ) -> Callable:
        """Contributions of the named find-scores layer(s) (one name or a list) to a unit of
        ``pre_activation_target_layer_name``; see :meth:`SequentialModel.get_target_contribs_func`."""
        return self._func(find_scores_layer_name, pre_activation_target_layer_name,
                          FuncType.contribs)

    def get_target_multipliers_func(self, find_scores_layer_name, pre_activation_target_layer_name
                                    ) -> Callable:
        """Multipliers ½(m⁺ + m⁻) of the named Input layer(s)."""
        return self._func(find_scores_layer_name, pre_activation_target_layer_name,
                          FuncType.multipliers)

    def _func(self, find, target, func_type) -> Callable:
        if isinstance(find, (list, tuple)):
            find_layers, single = [self._layer(f) for f in find], False
        else:
            find_layers, single = [self._layer(find)], True
        return self._get_func(find_layers, single, self._layer(target), func_type)
