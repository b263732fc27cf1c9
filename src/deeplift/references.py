"""Reference makers: callables that ``deeplift.attribute(references=...)`` calls on the inputs.

The choice of reference decides what a DeepLIFT score means: "which features of ``x`` matter
compared with ``r``". Each maker returns references of a form ``attribute`` accepts —
``(N, R, ...)`` for R references per example (their scores are averaged, DeepSHAP style) or a
broadcastable array — for one-input models. Sequence makers work on one-hot DNA in either layout
((N, 4, L), PyTorch's, or (N, L, 4), Keras'); the layout is read off the shape.

    deeplift.attribute(model, x, references=deeplift.references.dinuc_shuffle(n=20, seed=0))
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import genomics
from .errors import InputError

ReferenceMaker = Callable[..., Any]


def _single_input(inputs: Any, what: str) -> Any:
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 1:
            raise InputError(f"the {what} reference maker works on one input; the model has "
                             f"{len(inputs)} — pass a reference per input instead")
        return inputs[0]
    return inputs


def sequence_layout(x: Any) -> str:
    """"channels_first" for (N, 4, L) one-hot batches, "channels_last" for (N, L, 4)."""
    shape = tuple(x.shape)
    if len(shape) != 3:
        raise InputError(f"expected one-hot sequences (N, 4, L) or (N, L, 4), got shape {shape}")
    if shape[1] == 4:
        return "channels_first"
    if shape[2] == 4:
        return "channels_last"
    raise InputError(f"cannot find the 4 one-hot channels in shape {shape}")


def zeros() -> ReferenceMaker:
    """All-zero references (the default when ``references=None``)."""
    def make(inputs: Any) -> Any:
        x = _single_input(inputs, "zeros")
        return x[:1] * 0
    return make


def constant(value: Any) -> ReferenceMaker:
    """One reference shared by all examples, broadcast to the example shape (e.g. a per-channel
    background such as ``[[0.3], [0.2], [0.2], [0.3]]`` for (N, 4, L) DNA)."""
    def make(inputs: Any) -> Any:
        return value
    return make


def background(frequencies: Sequence[float] = (0.3, 0.2, 0.2, 0.3)) -> ReferenceMaker:
    """The expected one-hot vector of i.i.d. bases with these A, C, G, T frequencies at every
    position (the reference of the DeepLIFT paper's genomics simulations)."""
    freqs = np.asarray(frequencies, dtype=np.float64)
    if freqs.shape != (4,) or (freqs < 0).any():
        raise InputError(f"background frequencies must be 4 non-negative numbers, got {frequencies}")

    def make(inputs: Any) -> Any:
        x = _single_input(inputs, "background")
        if sequence_layout(x) == "channels_first":
            return freqs.reshape(4, 1)
        return freqs.reshape(1, 4)
    return make


def dinuc_shuffle(n: int = 20, seed: int = 0) -> ReferenceMaker:
    """``n`` dinucleotide-preserving shuffles of every sequence (first and last bases kept).

    Seeded: the same ``seed`` gives the same references (``attribute(seed=...)`` overrides it).
    """
    return _shuffler(genomics.dinuc_shuffle_batch, "dinuc_shuffle", n, seed)


def shuffle(n: int = 20, seed: int = 0) -> ReferenceMaker:
    """``n`` shuffles of the positions of every sequence (base composition kept)."""
    return _shuffler(genomics.shuffle_batch, "shuffle", n, seed)


def _numpy_less_dtype(x: Any) -> Any:
    """The dtype of a torch tensor whose floats NumPy cannot hold (bfloat16, float8), else None."""
    dtype = getattr(x, "dtype", None)
    name = str(dtype)
    if not name.startswith("torch.") or not getattr(dtype, "is_floating_point", False):
        return None
    return None if name in ("torch.float16", "torch.float32", "torch.float64") else dtype


def _shuffler(batch_fn: Callable[..., Any], what: str, n: int, default_seed: int) -> ReferenceMaker:
    def make(inputs: Any, seed: int | None = None) -> Any:
        x = _single_input(inputs, what)
        dtype = _numpy_less_dtype(x)
        if dtype is not None:  # e.g. torch.bfloat16: shuffle in float32 (0/1 stay exact), cast back
            x = x.float()
        out = batch_fn(x, n, seed=default_seed if seed is None else seed, layout=sequence_layout(x))
        return out if dtype is None else out.to(dtype)
    make.__name__ = f"{what}(n={n}, seed={default_seed})"
    return make
