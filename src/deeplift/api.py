"""``deeplift.attribute``: the one entry point for every method (README "Quickstart (Python)").

The arguments are checked and converted into a :class:`~deeplift.plan.Plan` (``plan.py``),
which the engine runs; this module only names the arguments.
"""

from __future__ import annotations

from typing import Any, Sequence

from .errors import InputError
from .plan import execute, make_plan


def attribute(model: Any, inputs: Any, references: Any = None, method: str = "rescale",
              target: "int | Sequence[int] | str | Any" = 0, target_layer: "str | int | None" = None,
              score_layer: "str | int | Sequence[str | int] | None" = None, batch_size: int = 256,
              progress: bool = False, steps: int = 50, hypothetical: bool = False,
              softmax_centering: bool = True, return_delta: bool = False, seed: int | None = None,
              max_routing: str = "conserving", original_quirks: bool = False,
              additional_forward_args: Any = None, baselines: Any = None,
              return_node_deltas: bool = False, unknown_ops: str = "error",
              fuse: "bool | str" = "auto"):
    """Importance scores of ``inputs`` for ``target`` output(s) of ``model``.

    model: a :class:`deeplift.Model` or a ``torch.nn.Module`` (converted once and cached).
    inputs: (N, ...) array or tensor, or a tuple/list/dict of them for several input layers.
    references: None (zeros); one per example (N, ...); broadcastable ((...), (1, ...), e.g. a
        per-channel background); several per example (N, R, ...) or shared by all (1, R, ...),
        averaged; or a callable ``f(inputs[, seed=])`` returning any of those.
    method: "rescale", "reveal_cancel", "genomics_default", "gradient", "gradient_x_input",
        "guided_backprop", "integrated_gradients" (also "deconvnet", "guided_backprop_rescale",
        "pass_through").
    target: unit index in the target layer (flattened per example, or a tuple of indices); a
        list of ints, ``deeplift.SeveralTargets([...])`` or "all" adds a target axis: scores
        (N, T, ...), all targets sharing one backward pass; a 1-D array/tensor of N ints (or
        ``deeplift.PerExampleTargets(labels)``) scores one unit per example (Captum's
        convention). A list of exactly N ints is ambiguous and raises an error saying so.
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
    additional_forward_args: extra inputs of the model that are passed to forward but not
        attributed (an array or a tuple; e.g. a mask): the model's last input layers. Their
        reference is their own value, so they receive no contributions and get no scores.
    baselines: Captum's name for ``references`` (give one or the other).
    return_node_deltas: also return a per-layer table (``plan.NodeDeltas``, a dict) of the
        largest conservation error of each layer's own rule, to see which node leaks.
    unknown_ops: "error" (default) or "integrated": when an nn.Module is converted here, an op
        without a rule gets path-integrated multipliers instead of an error (not exact: its
        leftover delta shows in the node table).
    fuse: run the rules' elementwise math as compiled kernels (``torch.compile``): "auto"
        (default) for large passes only — the first one compiles for a few seconds, once per
        process; True always; False never. Falls back to eager PyTorch where compiling fails
        (``deeplift.fusion.status()`` says why); the numbers agree to float rounding.

    Returns scores shaped like the inputs (NumPy in, NumPy out; torch in, torch out), one per
    input layer (a tuple when the model has several), then the delta and the node table when asked for, in that order.
    """
    if baselines is not None:
        if references is not None:
            raise InputError("give references= or baselines= (Captum's name for it), not both")
        references = baselines
    plan = make_plan(model, inputs, references, method, target, target_layer, score_layer,
                     batch_size, progress, steps, hypothetical, softmax_centering, return_delta,
                     seed, max_routing, original_quirks, additional_forward_args, return_node_deltas,
                     unknown_ops, fuse)
    return execute(plan)
