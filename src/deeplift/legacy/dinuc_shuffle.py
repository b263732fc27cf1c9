"""The original library's import path ``deeplift.dinuc_shuffle``.

``dinuc_shuffle`` is :func:`deeplift.genomics.dinuc_shuffle` (bit-identical results for the same
``RandomState``); the small token helpers of the original module are kept for old code.
"""

from __future__ import annotations

import numpy as np

from .. import genomics as _genomics

__all__ = [
    "dinuc_shuffle",
    "string_to_char_array",
    "char_array_to_string",
    "one_hot_to_tokens",
    "tokens_to_one_hot",
]


def dinuc_shuffle(
    seq: str | np.ndarray, num_shufs: int | None = None, rng: _genomics.RngLike = None
) -> str | list[str] | np.ndarray:
    """Dinucleotide-preserving shuffle of a str or an (L, D) one-hot array.

    One result when ``num_shufs`` is None, else a list of str / an ``(num_shufs, L, D)`` array;
    ``rng`` is a ``numpy.random.RandomState``, an int seed or None. See
    :func:`deeplift.genomics.dinuc_shuffle`.
    """
    return _genomics.dinuc_shuffle(seq, num_shufs=num_shufs, rng=rng)


def string_to_char_array(seq: str) -> np.ndarray:
    """ASCII codes of ``seq`` as an int8 vector."""
    return np.frombuffer(seq.encode("ascii"), dtype=np.int8).copy()


def char_array_to_string(arr: np.ndarray) -> str:
    """Inverse of :func:`string_to_char_array`."""
    return np.asarray(arr, dtype=np.int8).tobytes().decode("ascii")


def one_hot_to_tokens(one_hot: np.ndarray) -> np.ndarray:
    """``(L, D)`` one-hot -> ``(L,)`` channel indices, D for all-zero rows."""
    return _genomics._onehot_tokens(np.asarray(one_hot), "one_hot")


def tokens_to_one_hot(tokens: np.ndarray, one_hot_dim: int) -> np.ndarray:
    """``(L,)`` tokens -> ``(L, one_hot_dim)`` float one-hot; token ``one_hot_dim`` -> zeros."""
    return _genomics._tokens_to_onehot(np.asarray(tokens, dtype=np.intp), one_hot_dim, np.float64)
