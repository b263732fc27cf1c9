"""The original DeepLIFT's ``deeplift.util`` (v0.6.13): the helpers its users call.

* :func:`get_integrated_gradients_function` — integrated gradients (midpoint rule) from a
  gradient function, normally the multipliers function of a model converted with
  ``NonlinearMxtsMode.Gradient``.
* :func:`get_hypothetical_contribs_func_onehot` — hypothetical contributions of every base of
  one-hot ``(N, L, 4)`` input from a multipliers function (what TF-MoDISco reads).
* :func:`get_shuffle_seq_ref_function` — scores averaged over several shuffled references per
  sequence (same references, in the same order, as the original for the same seed).
* :func:`compile_func`, :func:`run_function_in_batches`,
  :func:`mean_normalise_weights_for_sequence_convolution`, :func:`connect_list_of_layers`,
  :func:`enum` and ``NEAR_ZERO_THRESHOLD``.

Scoring functions have the original's signature
``f(task_idx, input_data_list, batch_size, progress_update, input_references_list=None)`` and
return a list of per-example arrays (see :mod:`deeplift.models`). New code can use
``deeplift.attribute`` instead (``method="integrated_gradients"``, ``hypothetical=True``,
``references=deeplift.references.dinuc_shuffle(...)``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..genomics import hypothetical_contributions
from . import backend
from .batching import enum, run_function_in_batches  # noqa: F401  (public here)

#: |Δx| below which a nonlinearity uses its gradient at the reference (the original's ``T``)
NEAR_ZERO_THRESHOLD = 10 ** (-7)

__all__ = [
    "NEAR_ZERO_THRESHOLD",
    "enum",
    "compile_func",
    "run_function_in_batches",
    "get_integrated_gradients_function",
    "get_hypothetical_contribs_func_onehot",
    "get_shuffle_seq_ref_function",
    "mean_normalise_weights_for_sequence_convolution",
    "connect_list_of_layers",
]


def compile_func(inputs, outputs) -> Callable:
    """``deeplift.backend.function(inputs, outputs)`` (as in the original): a function
    ``f(list_of_arrays)`` of the input layers' arrays (then their references) computing the
    outputs' values (one array, or a list for a list of outputs)."""
    return backend.function(inputs, outputs)


# ---------------------------------------------------------------------------------------------
# integrated gradients, hypothetical contributions, shuffled references


def _broadcast_reference(data, reference) -> np.ndarray:
    """The original's ``np.ones_like(data) * reference``."""
    data = np.asarray(data)
    return np.ones_like(data) * (0.0 if reference is None else np.asarray(reference))


def get_integrated_gradients_function(gradient_computation_function: Callable,
                                      num_intervals: int) -> Callable:
    """Integrated gradients from a gradient function (midpoint Riemann sum).

    Returns ``f(task_idx, input_data_list, input_references_list, batch_size,
    progress_update=None)`` for single-input models: for each example ``x`` with reference
    ``r`` (broadcast as ``np.ones_like(x) * r``) the gradient is evaluated at
    ``r + (i + 0.5)·(x − r)/num_intervals`` for ``i = 0..num_intervals−1`` (never at the end
    points), averaged and multiplied by ``x − r``. ``gradient_computation_function`` is called
    once with all points, like a ``get_target_multipliers_func`` of a model converted with
    ``NonlinearMxtsMode.Gradient``. Returns an array shaped like the input.
    """
    if not isinstance(num_intervals, (int, np.integer)) or num_intervals < 1:
        raise ValueError(f"num_intervals must be a positive integer, got {num_intervals!r}")

    def compute_integrated_gradients(task_idx, input_data_list, input_references_list,
                                     batch_size, progress_update=None):
        if input_references_list is None:
            input_references_list = [0.0] * len(input_data_list)
        if len(input_data_list) != 1 or len(input_references_list) != 1:
            raise ValueError("integrated gradients are implemented for single-input models: pass "
                             "one array in input_data_list and one reference")
        data = np.asarray(input_data_list[0])
        refs = _broadcast_reference(data, input_references_list[0])
        vectors = data - refs
        steps = vectors / float(num_intervals)
        frac = np.arange(num_intervals) + 0.5
        # example-major, step-minor, as the original: (N, num_intervals, ...) -> (N·num_intervals, ...)
        shape = (num_intervals,) + (1,) * (data.ndim - 1)
        points = refs[:, None] + steps[:, None] * frac.reshape(shape).astype(steps.dtype)
        point_refs = np.broadcast_to(refs[:, None], points.shape)
        flat = (len(data) * num_intervals,) + data.shape[1:]
        grads = np.array(gradient_computation_function(
            task_idx=task_idx, input_data_list=[points.reshape(flat)],
            input_references_list=[point_refs.reshape(flat)], batch_size=batch_size,
            progress_update=progress_update))
        grads = grads.reshape((len(data), num_intervals) + data.shape[1:])
        return grads.mean(axis=1) * vectors

    return compute_integrated_gradients


def get_hypothetical_contribs_func_onehot(multipliers_function: Callable) -> Callable:
    """Hypothetical contributions of every letter of one-hot ``(N, L, C)`` input.

    Returns ``f(task_idx, input_data_list, input_references_list, batch_size,
    progress_update)``. The multipliers ``m`` are computed once on the real input and reference;
    the score letter ``i`` would get at position ``l`` is
    ``H[n, l, i] = Σ_c (δ_ic − ref[n, l, c])·m[n, l, c]``; at the observed base it equals the
    sum of the position's contributions. Returns a float64 array ``(N, L, C)``.
    """

    def compute(task_idx, input_data_list, input_references_list, batch_size,
                progress_update=None):
        data = np.asarray(input_data_list[0])
        if data.ndim != 3:
            raise ValueError(f"hypothetical contributions need one-hot input of shape (N, L, C), "
                             f"got shape {data.shape}")
        if input_references_list is None:
            input_references_list = [0.0] * len(input_data_list)
        mults = np.array(multipliers_function(
            task_idx=task_idx, input_data_list=input_data_list,
            input_references_list=input_references_list, batch_size=batch_size,
            progress_update=progress_update))
        refs = _broadcast_reference(data, input_references_list[0])
        hyp = hypothetical_contributions(mults.astype(np.float64), refs, layout="channels_last")
        return hyp

    return compute


def get_shuffle_seq_ref_function(score_computation_function: Callable, shuffle_func: Callable,
                                 one_hot_func: Callable | None = None) -> Callable:
    """Scores averaged over ``num_refs_per_seq`` shuffled references per sequence.

    Returns ``f(task_idx, input_data_sequences, num_refs_per_seq, batch_size, seed=1,
    progress_update=None, pregen_refs=None)``. One ``numpy.random.RandomState(seed)`` per call
    feeds ``shuffle_func(seq, rng=rng)`` for sequence 0's references, then sequence 1's, ... (so
    ``dinuc_shuffle`` gives the original's references exactly). ``pregen_refs`` (one per
    (sequence, reference) pair, sequence-major; an ``(N, num_refs_per_seq, ...)`` array also
    works) replaces the shuffling. With ``one_hot_func`` the sequences (e.g. strings) and their
    shuffles are encoded by it; otherwise they are one-hot arrays already.
    ``score_computation_function`` (a contribs or hypothetical-contribs function) runs once per
    task on every pair; the scores are averaged over each sequence's references. ``task_idx``
    may be an int (one array returned) or a list (a list of arrays).
    """

    def compute(task_idx, input_data_sequences, num_refs_per_seq, batch_size, seed=1,
                progress_update=None, pregen_refs=None):
        seqs = []
        refs = []
        if pregen_refs is None:
            rng = np.random.RandomState(seed)
            made = 0
            for seq in input_data_sequences:
                if isinstance(seq, np.ndarray):
                    seq = seq.squeeze()
                for _ in range(num_refs_per_seq):
                    seqs.append(seq)
                    refs.append(shuffle_func(seq, rng=rng))
                    made += 1
                    if progress_update is not None and made % progress_update == 0:
                        print("Generated", made, "references")
        else:
            for seq in input_data_sequences:
                seqs.extend([seq] * num_refs_per_seq)
            if isinstance(pregen_refs, np.ndarray) and one_hot_func is None:
                per_seq = np.asarray(input_data_sequences).shape[1:]
                pregen_refs = pregen_refs.reshape((-1,) + tuple(per_seq))
            refs = list(pregen_refs)
            if len(refs) != len(seqs):
                raise ValueError(f"pregen_refs holds {len(refs)} references; expected "
                                 f"{len(seqs)} (num_refs_per_seq for each of the "
                                 f"{len(input_data_sequences)} sequences, sequence-major)")
        if one_hot_func is not None:
            x = np.asarray(one_hot_func(seqs))
            r = np.asarray(one_hot_func(refs))
        else:
            per_seq = np.asarray(input_data_sequences).shape[1:]
            x = np.reshape(np.asarray(seqs), (len(seqs),) + tuple(per_seq))
            r = np.reshape(np.asarray(refs), (len(refs),) + tuple(per_seq))
        n = len(input_data_sequences)
        tasks = [task_idx] if isinstance(task_idx, (int, np.integer)) else list(task_idx)
        results = []
        for t in tasks:
            scores = np.array(score_computation_function(
                task_idx=t, input_data_list=[x], input_references_list=[r],
                batch_size=batch_size, progress_update=progress_update))
            scores = scores.reshape((n, num_refs_per_seq) + scores.shape[1:])
            results.append(np.mean(scores, axis=1))
        return results[0] if isinstance(task_idx, (int, np.integer)) else results

    return compute


# ---------------------------------------------------------------------------------------------
# weights and layers


def mean_normalise_weights_for_sequence_convolution(weights, bias, axis_of_normalisation: int,
                                                    dim_ordering: str):
    """Mean-centre convolution weights over the one-hot axis without changing the outputs on
    one-hot input: ``W' = W − mean(W, axis)``, ``b' = b + Σ mean``.

    The sum runs over the first two axes of the mean for ``dim_ordering='tf'`` (kernel
    ``(kh, kw, C_in, C_out)``) and over axes 1 and 2 for ``'th'`` (``(C_out, C_in, kh, kw)``),
    as in the original, which designed this for 4-D kernels (for a 3-D Conv1D kernel the sum
    also runs over the output channels, as the original's did). Returns ``(W', b')``.
    """
    weights = np.asarray(weights)
    bias = np.asarray(bias)
    print("Normalising weights along axis", axis_of_normalisation)
    mean = np.mean(weights, axis=axis_of_normalisation)
    new_weights = weights - np.expand_dims(mean, axis_of_normalisation)
    if dim_ordering == "tf":
        shift = np.sum(np.sum(mean, axis=0), axis=0)
    elif dim_ordering == "th":
        shift = np.sum(np.sum(mean, axis=1), axis=1)
    else:
        raise RuntimeError(f"Unsupported dim ordering {dim_ordering!r}: expected 'tf' or 'th'")
    print("Shifting the bias by the summed means; largest shift", np.max(np.abs(shift)))
    return new_weights, bias + shift


def connect_list_of_layers(deeplift_layers: Sequence) -> Sequence:
    """Wire each layer after the one before it (``layers[i].set_inputs(layers[i-1])``)."""
    for prev, layer in zip(deeplift_layers[:-1], deeplift_layers[1:]):
        layer.set_inputs(prev)
    return deeplift_layers
