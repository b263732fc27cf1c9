"""``deeplift.attribute``: the one entry point for every method (DESIGN.md §2)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .engine import PairRunner, RuleOptions, TargetSpec
from .errors import InputError, SummationToDeltaWarning
from .genomics import one_hot_axis
from .graph import Model
from .layers.activations import LogSoftmax, Sigmoid, Softmax
from .layers.base import Input
from .methods import get_method, rule_resolver

# ---------------------------------------------------------------------------------------------
# inputs


def _to_tensor(value: Any, what: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach()
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise InputError(f"{what} cannot be turned into an array: {exc}") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(f"{what} must be numeric, got an array of dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise InputError(f"{what} is complex; deeplift works on real numbers")
    return t.to(device=device, dtype=dtype)


def _check_finite(t: Tensor, what: str) -> None:
    if t.is_floating_point() and bool(torch.isfinite(t.sum())):
        return  # fast path: a finite sum means no NaN/Inf (an overflowing sum checks in full)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = bad.reshape(bad.shape[0], -1).any(1).nonzero().flatten().tolist() if t.ndim else []
        kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        where = f" (examples {rows[:5]}{'...' if len(rows) > 5 else ''})" if rows else ""
        raise InputError(f"{what} contains {kind} values{where}; scores would be meaningless")


def _split_by_input(model: Model, value: Any, what: str) -> list[Any]:
    """One entry per input layer from a single array, a tuple/list or a dict keyed by name."""
    names = model.input_names
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise InputError(f"{what}: unknown input layer(s) {sorted(unknown)}; the model's inputs "
                             f"are {names}")
        missing = [n for n in names if n not in value]
        if missing:
            raise InputError(f"{what}: no value for input layer(s) {missing}")
        return [value[n] for n in names]
    if isinstance(value, (tuple, list)) and len(names) > 1:
        if len(value) != len(names):
            raise InputError(f"{what}: the model has {len(names)} inputs {names}, got {len(value)}")
        return list(value)
    if isinstance(value, (tuple, list)) and len(value) == 1 and (
            isinstance(value, tuple) or isinstance(value[0], (np.ndarray, Tensor))):
        return [value[0]]  # (x,) or [x] for a one-input model, as the original API passed it
    if (isinstance(value, (tuple, list)) and len(names) == 1 and value
            and all(isinstance(v, (np.ndarray, Tensor)) for v in value)):
        raise InputError(f"{what}: the model has 1 input {names}, got {len(value)} arrays; pass a "
                         "single (N, ...) array")
    if len(names) != 1:
        raise InputError(f"{what}: the model has {len(names)} inputs {names}; pass a tuple, list or "
                         "dict with one array each")
    return [value]


def _is_numpy_like(value: Any) -> bool:
    first = value
    if isinstance(value, dict):
        first = next(iter(value.values()))
    elif isinstance(value, (tuple, list)) and value and isinstance(value[0], (np.ndarray, Tensor)):
        first = value[0]
    return not isinstance(first, Tensor)


def prepare_inputs(model: Model, inputs: Any) -> tuple[list[Tensor], bool, torch.device | None]:
    """Inputs as model-dtype tensors in ``input_names`` order, with shape and NaN checks."""
    parts = _split_by_input(model, inputs, "inputs")
    to_numpy = _is_numpy_like(inputs)
    user_device = None if to_numpy else next(p.device for p in parts if isinstance(p, Tensor))
    tensors = []
    for name, part in zip(model.input_names, parts):
        t = _to_tensor(part, f"input {name!r}", model.dtype, model.device)
        layer = model.layers[name]
        assert isinstance(layer, Input)
        expected = layer.shape
        if t.ndim == 0:
            raise InputError(f"input {name!r} is a scalar; expected a batch (N, ...)")
        if expected is not None:
            got = tuple(t.shape[1:])
            if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
                shown = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
                raise InputError(f"input {name!r} has shape {tuple(t.shape)}; the model expects "
                                 f"{shown} (batch axis first)")
        _check_finite(t, f"input {name!r}")
        tensors.append(t)
    n = {t.shape[0] for t in tensors}
    if len(n) > 1:
        raise InputError(f"inputs have different numbers of examples: {[t.shape[0] for t in tensors]}")
    return tensors, to_numpy, user_device


def prepare_forward_inputs(model: Model, inputs: tuple) -> tuple[list[Tensor], bool]:
    value = inputs[0] if len(inputs) == 1 else tuple(inputs)
    tensors, to_numpy, _ = prepare_inputs(model, value)
    return tensors, to_numpy


def prepare_references(model: Model, references: Any, xs: list[Tensor], seed: int | None
                       ) -> tuple[list[Tensor], int, bool]:
    """References as ``(N or 1, R, ...)`` tensors per input; also R and whether R was explicit."""
    if references is None:
        return [torch.zeros((1, 1, *x.shape[1:]), dtype=x.dtype, device=x.device) for x in xs], 1, False
    if callable(references):
        references = _call_reference_maker(model, references, xs, seed)
    parts = _split_by_input(model, references, "references")
    out, r_counts, explicit = [], set(), False
    for name, part, x in zip(model.input_names, parts, xs):
        r = _to_tensor(part, f"reference for input {name!r}", x.dtype, x.device)
        _check_finite(r, f"reference for input {name!r}")
        shape, n = tuple(x.shape[1:]), x.shape[0]
        if r.ndim < x.ndim:  # broadcastable per-example shape, e.g. a per-channel background (4, 1)
            try:
                r = torch.broadcast_to(r, shape)
            except RuntimeError:
                raise InputError(f"reference for input {name!r} of shape {tuple(r.shape)} does not "
                                 f"broadcast to the example shape {shape}") from None
            r = r.reshape(1, 1, *shape)
        elif r.ndim == x.ndim:
            r = _broadcast_examples(r, name, n, shape, 1).unsqueeze(1)
        elif r.ndim == x.ndim + 1:
            r = _broadcast_examples(r, name, n, shape, 2)
            explicit = True
        else:
            raise InputError(f"reference for input {name!r} has shape {tuple(r.shape)}; expected "
                             f"{shape}, (N, ...) like the inputs {tuple(x.shape)}, or (N, R, ...)")
        r_counts.add(r.shape[1])
        out.append(r)
    if 0 in r_counts:
        raise InputError("references have an empty reference axis (N, 0, ...): give at least one "
                         "reference per example")
    if len(r_counts - {1}) > 1:
        raise InputError(f"inputs have different numbers of references: {sorted(r_counts)}")
    n_refs = max(r_counts)
    out = [r if r.shape[1] == n_refs else r.expand(r.shape[0], n_refs, *r.shape[2:]) for r in out]
    return out, n_refs, explicit


def _broadcast_examples(r: Tensor, name: str, n: int, shape: tuple, lead: int) -> Tensor:
    """Check/broadcast the leading (N[, R]) axes and the example shape of a reference."""
    if r.shape[0] not in (1, n):
        raise InputError(f"reference for input {name!r} has {r.shape[0]} rows but there are {n} "
                         f"examples; give one reference per example, or one (1, ...) for all")
    try:
        return torch.broadcast_to(r, (*r.shape[:lead], *shape))
    except RuntimeError:
        raise InputError(f"reference for input {name!r} has shape {tuple(r.shape)}, which does not "
                         f"match the example shape {shape}") from None


def _call_reference_maker(model: Model, maker: Callable, xs: list[Tensor], seed: int | None):
    args = xs[0] if len(xs) == 1 else tuple(xs)
    try:
        return maker(args, seed=seed) if _accepts_seed(maker) else maker(args)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"the references callable {getattr(maker, '__name__', maker)!r} failed: "
                         f"{type(exc).__name__}: {exc}") from exc


def _accepts_seed(fn: Callable) -> bool:
    import inspect
    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# targets


def default_target_layer(model: Model) -> str:
    """The logits: the input of a final sigmoid/softmax, else the (first) output layer."""
    out = model.output_names[0]
    layer = model.layers[out]
    if isinstance(layer, (Sigmoid, Softmax, LogSoftmax)):
        return layer.inputs[0]
    return out


def feeds_softmax(model: Model, name: str) -> bool:
    return any(isinstance(model.layers[c], (Softmax, LogSoftmax)) for c in model.consumers(name))


def resolve_target(model: Model, target: Any, target_layer: Any, shapes: dict[str, tuple],
                   softmax_centering: bool) -> TargetSpec:
    layer = default_target_layer(model) if target_layer is None else model.resolve(target_layer, "target layer")
    n_features = math.prod(shapes[layer][1:])
    if isinstance(target, (Tensor, np.ndarray)) and target.ndim == 0:
        target = int(target.item())
    single = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    if isinstance(target, str):
        if target != "all":
            raise InputError(f"target must be an int, a list of ints or 'all', got {target!r}")
        indices = list(range(n_features))
    elif single:
        indices = [int(target)]
    else:
        try:
            indices = [int(t) for t in target]
        except TypeError:
            raise InputError(f"target must be an int, a list of ints or 'all', got {target!r}") from None
        if not indices:
            raise InputError("target is an empty list")
    for t in indices:
        if not -n_features <= t < n_features:
            raise InputError(f"target {t} is out of range: layer {layer!r} has {n_features} output "
                             f"unit(s) per example (shape {tuple(shapes[layer][1:])})")
    indices = [t % n_features for t in indices]
    centre = softmax_centering and feeds_softmax(model, layer) and len(shapes[layer]) == 2
    return TargetSpec(layer, indices, single, centre, n_features)


# ---------------------------------------------------------------------------------------------
# models


def as_model(model: Any, inputs: Any = None) -> Model:
    if isinstance(model, Model):
        return model
    from .frontends.keras import _is_keras_model
    if _is_keras_model(model):  # a live Keras model (with the torch backend it is an nn.Module too)
        from .frontends.keras import load_keras
        return load_keras(model)
    if isinstance(model, torch.nn.Module):
        from .frontends.torch import convert_cached
        if inputs is None:
            raise InputError("an nn.Module needs example inputs to be converted")
        return convert_cached(model, inputs)
    raise InputError(f"model must be a deeplift.Model or a torch.nn.Module, got {type(model).__name__}")


def layer_shapes(model: Model, xs: list[Tensor], needed) -> dict[str, tuple]:
    """Output shapes of every needed layer, from a one-example forward pass."""
    with torch.no_grad():
        values = model.forward_all([x[:1] for x in xs], needed)
    return {n: tuple(v.shape) for n, v in values.items()}


# ---------------------------------------------------------------------------------------------
# the entry point


def attribute(model: Any, inputs: Any, references: Any = None, method: str = "rescale",
              target: "int | Sequence[int] | str" = 0, target_layer: "str | int | None" = None,
              score_layer: "str | int | Sequence[str | int] | None" = None, batch_size: int = 256,
              progress: bool = False, steps: int = 50, hypothetical: bool = False,
              softmax_centering: bool = True, return_delta: bool = False, seed: int | None = None,
              max_routing: str = "conserving", original_quirks: bool = False):
    """Importance scores of ``inputs`` for ``target`` output(s) of ``model``.

    model: a :class:`deeplift.Model` or a ``torch.nn.Module`` (converted once and cached).
    inputs: (N, ...) array or tensor, or a tuple/list/dict of them for several input layers.
    references: None (zeros); one per example (N, ...); broadcastable ((...), (1, ...), e.g. a
        per-channel background); several per example (N, R, ...) or shared by all (1, R, ...),
        averaged; or a callable ``f(inputs[, seed=])`` returning any of those.
    method: "rescale", "reveal_cancel", "genomics_default", "gradient", "gradient_x_input",
        "guided_backprop", "integrated_gradients" (also "deconvnet", "guided_backprop_rescale",
        "pass_through").
    target: unit index in the target layer (flattened per example); a list or "all" adds a
        target axis: scores (N, T, ...). All targets share one backward pass.
    target_layer: name or index; default the logits (input of a final sigmoid/softmax).
    score_layer: where scores are computed; default the input layer(s). A name/index gives one
        array, a list gives a list.
    batch_size: (example, reference) pairs per batch (for integrated gradients: interpolation
        points per batch).
    hypothetical: for one-hot inputs, hypothetical contributions of every base (TF-MoDISco).
    softmax_centering: mean-centre contributions to softmax logits over the classes.
    return_delta: also return the summation-to-delta error, (N[, R][, T]).
    max_routing: "conserving" (default; exact for any reference) or "gradient" (the original's).
    original_quirks: reproduce the original library's float32 details (for its numbers only).

    Returns scores shaped like the inputs (NumPy in, NumPy out; torch in, torch out), one per
    input layer (a tuple when the model has several), and the delta when asked for.
    """
    m = get_method(method)
    model = as_model(model, inputs)
    if max_routing not in ("conserving", "gradient"):
        raise InputError(f"max_routing must be 'conserving' or 'gradient', got {max_routing!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if m.output == "integrated_gradients" and (not isinstance(steps, (int, np.integer)) or steps < 1):
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    xs, to_numpy, user_device = prepare_inputs(model, inputs)
    score_names, score_single = _resolve_score_layers(model, score_layer)
    tgt_layer = default_target_layer(model) if target_layer is None else model.resolve(target_layer, "target layer")
    shapes = layer_shapes(model, xs, [tgt_layer, *score_names])
    spec = resolve_target(model, target, tgt_layer, shapes, softmax_centering)
    _check_scores_reach_target(model, score_names, spec.layer)
    options = RuleOptions(max_routing=max_routing, original_quirks=original_quirks)
    rule_for = rule_resolver(model, m)

    uses_refs = m.uses_reference or m.output == "integrated_gradients"
    if uses_refs:
        refs, n_refs, explicit_r = prepare_references(model, references, xs, seed)
    else:
        refs, n_refs, explicit_r = None, 1, False
    if return_delta and not (m.uses_reference or m.output == "integrated_gradients"):
        raise InputError(f"return_delta needs a reference-based method (summation-to-delta does not "
                         f"hold for {m.name!r}); use rescale, reveal_cancel, genomics_default or "
                         "integrated_gradients")
    if m.output == "integrated_gradients" and any(s not in model.input_names for s in score_names):
        raise InputError("integrated gradients are computed at the input layer(s) only")
    if hypothetical:
        if not m.uses_reference:
            raise InputError(f"hypothetical=True needs a reference-based method, not {m.name!r}")
        if score_layer is not None:
            raise InputError("hypothetical contributions are defined at the input layer(s) only")
        for name, x in zip(model.input_names, xs):
            _check_one_hot(x, name)

    runner = PairRunner(model, m, spec, score_names, shapes, rule_for, options, hypothetical,
                     return_delta)
    scores, deltas = runner.run(xs, refs, n_refs, batch_size, steps, progress)
    _warn_if_not_conserved(runner, xs[0].dtype, max_routing)

    outputs = [s if not spec.single else s[:, 0] for s in scores]
    if return_delta:
        d = deltas  # (N, R, T)
        if spec.single:
            d = d[..., 0]
        if not explicit_r:
            d = d[:, 0]
    outputs = [_to_user(o, to_numpy, user_device) for o in outputs]
    result: Any = outputs[0] if score_single or len(outputs) == 1 else (
        list(outputs) if score_layer is not None else tuple(outputs))
    if return_delta:
        return result, _to_user(d, to_numpy, user_device)
    return result


def _warn_if_not_conserved(runner: "PairRunner", dtype: torch.dtype, max_routing: str) -> None:
    if runner.worst_delta is None:
        return
    rel, n, r, t = runner.worst_delta
    tolerance = torch.finfo(dtype).eps ** 0.5
    if rel <= tolerance:
        return
    hint = ("max_routing='gradient' (the original library's max pooling) does not conserve it with "
            "a non-constant reference; the default 'conserving' does" if max_routing == "gradient"
            else "please report this with the model")
    warnings.warn(SummationToDeltaWarning(
        f"contributions do not sum to the target's difference from the reference: error "
        f"{rel:.3g}·(1 + |Δ|) for example {n}, reference {r}, target {t} (float rounding would "
        f"stay below {tolerance:.1g}); {hint}"), stacklevel=3)


def _to_user(t: Tensor, to_numpy: bool, device: torch.device | None):
    if to_numpy:  # NumPy has no bfloat16/float8: such scores come back as float32
        t = t.float() if t.is_floating_point() and t.element_size() < 2 or t.dtype == torch.bfloat16 else t
        return t.detach().cpu().numpy()
    return t.detach().to(device) if device is not None else t.detach()


def _resolve_score_layers(model: Model, score_layer) -> tuple[list[str], bool]:
    if score_layer is None:
        return list(model.input_names), False
    if isinstance(score_layer, (str, int, np.integer)) and not isinstance(score_layer, bool):
        return [model.resolve(int(score_layer) if isinstance(score_layer, np.integer) else score_layer,
                              "score layer")], True
    return [model.resolve(s, "score layer") for s in score_layer], False


def _check_scores_reach_target(model: Model, score_names: list[str], target: str) -> None:
    upstream = model.ancestors([target])
    for s in score_names:
        if s not in upstream:
            raise InputError(f"score layer {s!r} does not feed the target layer {target!r}, so its "
                             "scores would all be zero")


def _check_one_hot(x: Tensor, name: str) -> None:
    if not bool(((x == 0) | (x == 1)).all()):
        raise InputError(f"hypothetical=True needs one-hot inputs, but input {name!r} has values "
                         "other than 0 and 1")
    axis = one_hot_axis(x)
    if bool((x.sum(axis) > 1).any()):
        raise InputError(f"hypothetical=True needs one-hot inputs, but input {name!r} has more than "
                         f"one 1 per position along axis {axis}")


