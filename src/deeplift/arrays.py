"""User arrays <-> tensors: inputs, references and results (NumPy in, NumPy out; torch in, torch
out on the user's device).

The graph (``Model.__call__``), the API (``plan.py``) and the CLI all turn user values into
tensors here, so every entry point gives the same checks and the same messages.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import InputError
from .genomics import one_hot_axis
from .layers.base import Layer


class Model(Protocol):
    """What this module needs of a :class:`deeplift.graph.Model` (the graph calls in here, so this
    module does not import it)."""

    input_names: Sequence[str]
    layers: dict[str, Layer]

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...


def to_tensor(value: Any, what: str, dtype: torch.dtype, device: torch.device) -> Tensor:
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


def check_finite(t: Tensor, what: str) -> None:
    if t.is_floating_point() and bool(torch.isfinite(t.sum())):
        return  # fast path: a finite sum means no NaN/Inf (an overflowing sum checks in full)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = bad.reshape(bad.shape[0], -1).any(1).nonzero().flatten().tolist() if t.ndim else []
        kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        where = f" (examples {rows[:5]}{'...' if len(rows) > 5 else ''})" if rows else ""
        raise InputError(f"{what} contains {kind} values{where}; scores would be meaningless")


def split_by_input(model: Model, value: Any, what: str) -> list[Any]:
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


def is_numpy_like(value: Any) -> bool:
    first = value
    if isinstance(value, dict):
        first = next(iter(value.values()))
    elif isinstance(value, (tuple, list)) and value and isinstance(value[0], (np.ndarray, Tensor)):
        first = value[0]
    return not isinstance(first, Tensor)


def prepare_inputs(model: Model, inputs: Any) -> tuple[list[Tensor], bool, torch.device | None]:
    """Inputs as model-dtype tensors in ``input_names`` order, with shape and NaN checks."""
    parts = split_by_input(model, inputs, "inputs")
    to_numpy = is_numpy_like(inputs)
    user_device = None if to_numpy else next(p.device for p in parts if isinstance(p, Tensor))
    tensors = []
    for name, part in zip(model.input_names, parts):
        # issue 9: token ids (an Input captured with an integer dtype) stay integer
        dtype = getattr(model.layers[name], "dtype", None)
        token_ids = dtype is not None and not dtype.is_floating_point
        t = to_tensor(part, f"input {name!r}", dtype if token_ids else model.dtype, model.device)
        expected = getattr(model.layers[name], "shape", None)
        if t.ndim == 0:
            raise InputError(f"input {name!r} is a scalar; expected a batch (N, ...)")
        if expected is not None:
            got = tuple(t.shape[1:])
            if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
                shown = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
                raise InputError(f"input {name!r} has shape {tuple(t.shape)}; the model expects "
                                 f"{shown} (batch axis first)")
        check_finite(t, f"input {name!r}")
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
        references = call_reference_maker(model, references, xs, seed)
    parts = split_by_input(model, references, "references")
    out, r_counts, explicit = [], set(), False
    for name, part, x in zip(model.input_names, parts, xs):
        r = to_tensor(part, f"reference for input {name!r}", x.dtype, x.device)
        check_finite(r, f"reference for input {name!r}")
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


def call_reference_maker(model: Model, maker: Callable, xs: list[Tensor], seed: int | None):
    args = xs[0] if len(xs) == 1 else tuple(xs)
    try:
        return maker(args, seed=seed) if _accepts_seed(maker) else maker(args)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"the references callable {getattr(maker, '__name__', maker)!r} failed: "
                         f"{type(exc).__name__}: {exc}") from exc


def _accepts_seed(fn: Callable) -> bool:
    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def to_user(t: Tensor, to_numpy: bool, device: torch.device | None):
    if to_numpy:  # NumPy has no bfloat16/float8: such scores come back as float32
        if t.dtype == torch.bfloat16 or t.is_floating_point() and t.element_size() < 2:
            t = t.float()
        return t.detach().cpu().numpy()
    return t.detach().to(device) if device is not None else t.detach()


def check_one_hot(x: Any, name: str, needed_by: str = "hypothetical=True") -> None:
    """Refuse anything but one-hot sequence (0/1, at most one 1 per position): ``needed_by``
    names what needs it in the message."""
    if not isinstance(x, Tensor):  # (a tensor stays on its device, whatever torch's default)
        x = torch.as_tensor(x)
    if not bool(((x == 0) | (x == 1)).all()):
        raise InputError(f"{needed_by} needs one-hot inputs, but input {name!r} has values "
                         "other than 0 and 1")
    axis = one_hot_axis(x)
    if bool((x.sum(axis) > 1).any()):
        raise InputError(f"{needed_by} needs one-hot inputs, but input {name!r} has more than "
                         f"one 1 per position along axis {axis}")
