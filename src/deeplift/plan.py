"""One validated plan of a scoring run, which ``attribute`` executes and the CLI describes.

``make_plan`` checks and converts everything a run needs — the model, the inputs and references
as tensors, the target units, the score layers, the batches — with at most one forward pass (a
single example, for the layer shapes; cached per model and input shape). ``execute`` runs it
through the engine and returns what ``attribute`` returns. The CLI makes the same plan, prints
what it holds (targets, references, number of batches) and executes it, so nothing is worked
out twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from . import arrays, fusion
from .engine import PairRunner, RuleOptions, TargetSpec
from .conservation import warn_if_not_conserved
from .errors import InputError
from .graph import Model
from .layers.activations import Activation, LogSoftmax, Sigmoid, Softmax
from .layers.base import Constant
from .methods import Method, get_method, rule_resolver
from .precision import rules_model

# ---------------------------------------------------------------------------------------------
# targets


class SeveralTargets:
    """Several target units for every example, spelled so that it cannot be read as one target
    per example: ``SeveralTargets([0, 2])`` (scores get a target axis, ``(N, T, ...)``)."""

    def __init__(self, indices: Sequence[Any]) -> None:
        self.indices = list(indices)

    def __repr__(self) -> str:
        return f"SeveralTargets({self.indices})"


class PerExampleTargets:
    """One target unit per example (Captum's convention), e.g. each example's label:
    ``PerExampleTargets(labels)`` with ``labels`` of length N (ints, or tuples indexing a
    multi-dimensional target layer). Scores are shaped like the inputs."""

    def __init__(self, targets: Any) -> None:
        self.targets = targets

    def __repr__(self) -> str:
        return f"PerExampleTargets({self.targets!r})"


_TARGET_FORMS = ("an int (one unit), a list of ints or 'all' (several units: a target axis), or a "
                 "1-D array/tensor of N ints (one unit per example, Captum's convention)")


def default_target_layer(model: Model) -> str:
    """The logits: the input of a final sigmoid/softmax, else the (first) output layer."""
    out = model.output_names[0]
    layer = model.layers[out]
    if isinstance(layer, (Sigmoid, Softmax, LogSoftmax)):
        return layer.inputs[0]
    return out


def feeds_softmax(model: Model, name: str) -> bool:
    return any(isinstance(model.layers[c], (Softmax, LogSoftmax)) for c in model.consumers(name))


def _flat_index(t: Any, unit_shape: tuple, layer: str) -> int:
    """A unit index (int, or a tuple for a multi-dimensional layer) as a flat index."""
    n_units = math.prod(unit_shape)
    if isinstance(t, tuple):
        if len(t) != len(unit_shape):
            raise InputError(f"target {t} has {len(t)} indices but layer {layer!r} has "
                             f"{len(unit_shape)} axes per example (shape {unit_shape})")
        for i, s in zip(t, unit_shape):
            if not -s <= int(i) < s:
                raise InputError(f"target {t} is out of range for layer {layer!r} of shape {unit_shape}")
        return int(np.ravel_multi_index(tuple(int(i) % s for i, s in zip(t, unit_shape)), unit_shape))
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise InputError(f"target entries must be ints, got {t!r}; {_TARGET_FORMS}")
    if not -n_units <= t < n_units:
        raise InputError(f"target {t} is out of range: layer {layer!r} has {n_units} output "
                         f"unit(s) per example (shape {unit_shape})")
    return int(t) % n_units


def _per_example(values: Any, n_examples: int, unit_shape: tuple, layer: str) -> list[int]:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise InputError(f"per-example targets must be a 1-D array of ints, got shape "
                             f"{values.shape} and dtype {values.dtype}")
        values = values.tolist()
    values = list(values)
    if len(values) != n_examples:
        raise InputError(f"per-example targets: got {len(values)} for {n_examples} examples; give "
                         "exactly one target per example")
    return [_flat_index(tuple(v) if isinstance(v, list) else v, unit_shape, layer) for v in values]


def resolve_target(model: Model, target: Any, layer: str, shapes: dict[str, tuple],
                   softmax_centering: bool, n_examples: int) -> TargetSpec:
    """The target units to score, from every spelling ``attribute`` accepts.

    An int (or a tuple indexing a multi-dimensional layer) scores one unit, with no target axis;
    a list of ints, ``SeveralTargets`` or ``"all"`` scores several, with a target axis after the
    batch axis; a 1-D array/tensor of N ints, a list of N tuples or ``PerExampleTargets`` scores
    one unit per example. A list of N ints is ambiguous (Captum reads it per example, this
    library as several targets) and is refused with the two unambiguous spellings.
    """
    unit_shape = tuple(shapes[layer][1:])
    n_features = math.prod(unit_shape)
    centre = softmax_centering and feeds_softmax(model, layer) and len(shapes[layer]) == 2
    if isinstance(target, (Tensor, np.ndarray)) and target.ndim == 0:
        target = target.item()
    if isinstance(target, PerExampleTargets) or isinstance(target, (Tensor, np.ndarray)):
        values = target.targets if isinstance(target, PerExampleTargets) else target
        per = _per_example(values, n_examples, unit_shape, layer)
        return TargetSpec(layer, [0], True, centre, n_features, per_example=per)
    if isinstance(target, str):
        if target != "all":
            raise InputError(f"target must be {_TARGET_FORMS}; got {target!r}")
        return TargetSpec(layer, list(range(n_features)), False, centre, n_features)
    if isinstance(target, (int, np.integer, tuple)) and not isinstance(target, bool):
        return TargetSpec(layer, [_flat_index(target, unit_shape, layer)], True, centre, n_features)
    if isinstance(target, SeveralTargets):
        items = target.indices
    else:
        try:
            items = list(target)
        except TypeError:
            raise InputError(f"target must be {_TARGET_FORMS}; got {target!r}") from None
        if items and all(isinstance(t, tuple) for t in items):
            per = _per_example(items, n_examples, unit_shape, layer)
            return TargetSpec(layer, [0], True, centre, n_features, per_example=per)
        if len(items) == n_examples and n_examples > 1:
            raise InputError(
                f"target is a list of {len(items)} ints and there are {n_examples} examples, which "
                "is ambiguous: for one target per example (Captum's convention) pass a 1-D array or "
                "tensor (np.asarray(labels)) or deeplift.PerExampleTargets(labels); for these "
                f"units as several targets of every example pass deeplift.SeveralTargets({items})")
    if not items:
        raise InputError("target is an empty list")
    indices = [_flat_index(t, unit_shape, layer) for t in items]
    return TargetSpec(layer, indices, False, centre, n_features)


# ---------------------------------------------------------------------------------------------
# models, layers


def as_model(model: Any, inputs: Any = None, unknown_ops: str = "error") -> Model:
    """A deeplift Model from a Model, a live Keras model or an nn.Module (converted and cached;
    ``unknown_ops`` as in ``deeplift.convert``)."""
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
        return convert_cached(model, inputs, unknown_ops)
    raise InputError(f"model must be a deeplift.Model or a torch.nn.Module, got {type(model).__name__}")


def resolve_score_layers(model: Model, score_layer: Any) -> tuple[list[str], bool]:
    """The layers scores are computed at, and whether one layer (not a list) was asked for."""
    if score_layer is None:
        return list(model.input_names), False
    single = isinstance(score_layer, (str, int, np.integer)) and not isinstance(score_layer, bool)
    if single:
        names = [model.resolve(int(score_layer) if isinstance(score_layer, np.integer) else score_layer,
                               "score layer")]
    else:
        names = [model.resolve(s, "score layer") for s in score_layer]
    for name in names:
        if isinstance(model.layers[name], Constant):
            raise InputError(f"score layer {name!r} is a constant of the model (it does not depend "
                             "on the inputs): it has no scores")
    return names, single


def _check_scores_reach_target(model: Model, score_names: list[str], target: str) -> None:
    upstream = model.ancestors([target])
    for s in score_names:
        if s not in upstream:
            raise InputError(f"score layer {s!r} does not feed the target layer {target!r}, so its "
                             "scores would all be zero")


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class Plan:
    """Everything one scoring run needs, checked. ``xs``/``refs`` are per input layer, in
    ``model.input_names`` order; ``refs`` are ``(N or 1, R, ...)`` (None for gradient methods)."""

    model: Model
    method: Method
    xs: list[Tensor]
    refs: list[Tensor] | None
    n_refs: int
    explicit_refs: bool
    target: TargetSpec
    score_names: list[str]
    score_single: bool
    score_listed: bool
    shapes: dict[str, tuple]
    options: RuleOptions
    batch_size: int
    steps: int
    hypothetical: bool
    return_delta: bool
    progress: bool
    return_node_deltas: bool
    to_numpy: bool
    user_device: torch.device | None
    n_attributed: int

    @property
    def n_examples(self) -> int:
        return int(self.xs[0].shape[0])

    @property
    def n_pairs(self) -> int:
        """(example, reference) pairs scored."""
        return self.n_examples * self.n_refs

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_pairs / self.method.pairs_per_batch(self.batch_size, self.steps,
                                                                    self.n_refs))


def make_plan(model: Any, inputs: Any, references: Any = None, method: Any = "rescale",
              target: Any = 0, target_layer: Any = None, score_layer: Any = None,
              batch_size: int = 256, progress: bool = False, steps: int = 50,
              hypothetical: bool = False, softmax_centering: bool = True,
              return_delta: bool = False, seed: int | None = None, max_routing: str = "conserving",
              original_quirks: bool = False, additional_forward_args: Any = None,
              return_node_deltas: bool = False, unknown_ops: str = "error",
              fuse: "bool | str" = "auto") -> Plan:
    """Check and convert the arguments of :func:`deeplift.attribute` (which documents them)."""
    m = get_method(method)
    extra = _as_tuple(additional_forward_args)
    all_inputs = inputs if not extra else (*_as_tuple(inputs), *extra)
    if unknown_ops not in ("error", "integrated"):
        raise InputError(f"unknown_ops must be 'error' or 'integrated', got {unknown_ops!r}")
    model = rules_model(as_model(model, all_inputs, unknown_ops))  # float16/bfloat16: a float32 copy
    if max_routing not in ("conserving", "gradient"):
        raise InputError(f"max_routing must be 'conserving' or 'gradient', got {max_routing!r}")
    if fuse not in (True, False, "auto"):
        raise InputError(f"fuse must be True, False or 'auto', got {fuse!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if m.integrated and (not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1):
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if extra and isinstance(inputs, dict):
        raise InputError("additional_forward_args needs inputs as an array or a tuple, not a dict")
    xs, to_numpy, user_device = arrays.prepare_inputs(model, all_inputs)
    n_attributed = len(xs) - len(extra)
    if n_attributed < 1:
        raise InputError("additional_forward_args leaves no input to attribute")
    score_names, score_single = resolve_score_layers(model, score_layer)
    if extra and score_layer is None:
        score_names = score_names[:n_attributed]
    tgt_layer = default_target_layer(model) if target_layer is None else model.resolve(target_layer, "target layer")
    shapes = model.layer_shapes(xs, [tgt_layer, *score_names])
    spec = resolve_target(model, target, tgt_layer, shapes, softmax_centering, len(xs[0]))
    _check_scores_reach_target(model, score_names, spec.layer)

    if m.takes_references:
        refs, n_refs, explicit_r = arrays.prepare_references(model, _with_extra_references(
            references, n_attributed, extra, len(xs)), xs, seed)
        if extra:  # the extra inputs are their own references: no difference, no contributions
            refs[n_attributed:] = [x.unsqueeze(1).expand(-1, n_refs, *x.shape[1:]) for x in xs[n_attributed:]]
    else:
        refs, n_refs, explicit_r = None, 1, False
    if return_delta and not m.takes_references:
        raise InputError(f"return_delta needs a reference-based method (summation-to-delta does not "
                         f"hold for {m.name!r}); use rescale, reveal_cancel, genomics_default or "
                         "integrated_gradients")
    if return_node_deltas and not m.sums_to_delta:
        raise InputError(f"return_node_deltas needs a DeepLIFT method (rescale, reveal_cancel, "
                         f"genomics_default): {m.name!r} does not conserve the difference")
    if m.integrated and any(s not in model.input_names for s in score_names):
        raise InputError("integrated gradients are computed at the input layer(s) only")
    if hypothetical:
        if not m.uses_reference:
            raise InputError(f"hypothetical=True needs a reference-based method, not {m.name!r}")
        if score_layer is not None:
            raise InputError("hypothetical contributions are defined at the input layer(s) only")
        for name, x in zip(model.input_names[:n_attributed], xs):
            arrays.check_one_hot(x, name)
    return Plan(model, m, xs, refs, n_refs, explicit_r, spec, score_names, score_single,
                score_layer is not None, shapes,
                RuleOptions(max_routing=max_routing, original_quirks=original_quirks, fuse=fuse),
                int(batch_size), int(steps), bool(hypothetical), bool(return_delta), bool(progress),
                bool(return_node_deltas), to_numpy, user_device, n_attributed)


def _rule_work(plan: Plan) -> int:
    """Element-operations of the nonlinearity rules a plan runs: pairs × the per-example size of
    every nonlinearity's output (0 for gradient methods, whose rules are single fused ops)."""
    if not plan.method.sums_to_delta:
        return 0
    names = [n for n, layer in plan.model.layers.items() if isinstance(layer, Activation)]
    if not names:
        return 0
    shapes = plan.model.layer_shapes(plan.xs, names)
    per_example = sum(math.prod(shapes[n][1:]) for n in names if n in shapes)
    return plan.n_pairs * per_example


def _as_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _with_extra_references(references: Any, n_attributed: int, extra: tuple, n_inputs: int) -> Any:
    """References for every input layer when the last ones are additional forward args (their
    references are replaced by the inputs themselves afterwards; zeros stand in here)."""
    if not extra or callable(references):
        if extra and callable(references):
            raise InputError("a references callable cannot be combined with additional_forward_args; "
                             "pass the references as arrays")
        return references
    if references is None:
        return None
    several = isinstance(references, (tuple, list)) and len(references) == n_attributed and all(
        isinstance(r, (np.ndarray, Tensor)) for r in references)
    parts = list(references) if several else [references]
    if len(parts) != n_attributed:
        raise InputError(f"references: {len(parts)} given for {n_attributed} attributed inputs")
    return tuple(parts) + tuple(np.zeros(1, dtype=np.float32) for _ in extra)


# ---------------------------------------------------------------------------------------------
# running it


def execute(plan: Plan):
    """Run a plan; returns what :func:`deeplift.attribute` returns."""
    rule_for = rule_resolver(plan.model, plan.method)
    options = replace(plan.options, fuse=fusion.resolve(plan.options.fuse, _rule_work(plan)))
    runner = PairRunner(plan.model, plan.method, plan.target, plan.score_names, plan.shapes,
                        rule_for, options, plan.hypothetical, plan.return_delta)
    if plan.return_node_deltas:
        runner.node_errors = {}
    scores, deltas = runner.run(plan.xs, plan.refs, plan.n_refs, plan.batch_size, plan.steps,
                                plan.progress)
    _warn_if_not_conserved(runner, plan.model.dtype, plan.options.max_routing)
    single = plan.target.single
    outputs = [s if not single else s[:, 0] for s in scores]
    outputs = [arrays.to_user(o, plan.to_numpy, plan.user_device) for o in outputs]
    if plan.score_single or len(outputs) == 1:
        result: Any = outputs[0]
    else:
        result = list(outputs) if plan.score_listed else tuple(outputs)
    extra: list[Any] = []
    if plan.return_delta:
        d = deltas  # (N, R, T)
        if single:
            d = d[..., 0]
        if not plan.explicit_refs:
            d = d[:, 0]
        extra.append(arrays.to_user(d, plan.to_numpy, plan.user_device))
    if plan.return_node_deltas:
        extra.append(NodeDeltas((n, runner.node_errors[n]) for n in plan.model.layer_names
                                if n in runner.node_errors))
    return (result, *extra) if extra else result


class NodeDeltas(dict):
    """Per layer, the largest error of that layer's own conservation over the examples,
    references and targets of a run: |Σ contributions at its output − Σ at its inputs|, relative
    to 1 + |Σ at its output|. Float rounding everywhere means every rule is exact; a larger
    value names the layer that leaks. ``str()`` gives a table, worst first."""

    def worst(self) -> tuple[str, float] | None:
        return max(self.items(), key=lambda kv: kv[1]) if self else None

    def __str__(self) -> str:
        width = max([5] + [len(n) for n in self])
        rows = [f"{'layer':{width}s}  largest |Σ in − Σ out| / (1 + |Σ out|)"]
        rows += [f"{n:{width}s}  {v:.2g}" for n, v in sorted(self.items(), key=lambda kv: -kv[1])]
        return "\n".join(rows)


def _warn_if_not_conserved(runner: PairRunner, dtype: torch.dtype, max_routing: str) -> None:
    warn_if_not_conserved(runner.worst_delta, max_routing, stacklevel=5)
