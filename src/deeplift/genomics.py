"""Genomics helpers: one-hot DNA, FASTA reading, shuffled references and hypothetical scores.

Layouts. The library's default is PyTorch's ``channels_first``: one sequence is ``(4, L)`` and a
batch ``(N, 4, L)``. ``channels_last`` is Keras' and the original DeepLIFT's: ``(L, 4)`` and
``(N, L, 4)``. Channel order is the alphabet's (A, C, G, T by default); an all-zero position is an
unknown base ('N').

Shuffles. :func:`dinuc_shuffle` reproduces the original library's dinucleotide shuffle exactly
(same algorithm, same ``numpy.random.RandomState`` draw order), so a seed used with the original
gives the same references here. The batched forms (:func:`dinuc_shuffle_batch`,
:func:`shuffle_batch`) give the same results as calling the single-sequence function once per
(example, shuffle) with one shared ``RandomState(seed)``, example-major, which is what the
original's ``get_shuffle_seq_ref_function`` does.
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from typing import Any, Callable, Iterable, Union

import numpy as np

from deeplift.errors import InputError

__all__ = [
    "one_hot_encode",
    "one_hot_decode",
    "read_fasta",
    "dinuc_shuffle",
    "dinuc_shuffle_batch",
    "shuffle",
    "shuffle_batch",
    "hypothetical_contributions",
]

RngLike = Union[np.random.RandomState, np.random.Generator, int, np.integer, None]

_LAYOUTS = ("channels_first", "channels_last")

# Above this many shuffles in one walk the lock-step numpy walk beats the plain Python one.
_VECTOR_WALK_MIN_BATCH = 32


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _check_layout(layout: str) -> str:
    if layout not in _LAYOUTS:
        raise InputError(f"layout must be 'channels_first' or 'channels_last', got {layout!r}")
    return layout


def _check_alphabet(alphabet: str) -> str:
    if not isinstance(alphabet, str) or len(alphabet) == 0:
        raise InputError(f"alphabet must be a non-empty string such as 'ACGT', got {alphabet!r}")
    if any(ord(ch) >= 128 for ch in alphabet):
        raise InputError(f"alphabet must be ASCII, got {alphabet!r}")
    folded = alphabet.upper()
    if len(set(folded)) != len(folded):
        raise InputError(
            f"alphabet {alphabet!r} repeats a letter (matching is case-insensitive)"
        )
    return alphabet


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any, name: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Return ``x`` as a numpy array and a function that converts a result back to x's kind."""
    if _is_torch(x):
        import torch

        device = x.device
        arr = x.detach().cpu().numpy()
        return arr, lambda out: torch.from_numpy(np.ascontiguousarray(out)).to(device)
    if isinstance(x, np.ndarray):
        return x, lambda out: out
    if isinstance(x, (str, bytes)):
        raise InputError(f"{name} must be an array, got a {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - depends on the odd object given
        raise InputError(f"{name} cannot be converted to an array: {exc}") from exc
    if arr.dtype == object:
        raise InputError(f"{name} must be a numeric array, got ragged or object data")
    return arr, lambda out: out


def _as_rng(rng: RngLike) -> np.random.RandomState | np.random.Generator:
    """None -> fresh unseeded RandomState (as the original); int -> RandomState(int)."""
    if rng is None:
        return np.random.RandomState()
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.RandomState(int(rng))
    raise InputError(
        "rng/seed must be None, an int seed or a numpy.random.RandomState "
        f"(numpy.random.Generator also accepted), got {type(rng).__name__}"
    )


def _check_count(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{name} must be a positive int, got {n!r}")
    return int(n)


def _onehot_tokens(arr: np.ndarray, name: str = "one-hot array") -> np.ndarray:
    """Tokens of a channels-last one-hot array ``(..., L, D)``: channel index, D for all-zero rows.

    Raises InputError unless every entry is 0 or 1 and every row has at most one 1.
    """
    if arr.dtype == bool:
        nz = arr
    else:
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
        nz = arr != 0
        bad = nz & (arr != 1)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"{name} is not one-hot: entry {where} is {arr[where]!r} (only 0 and 1 allowed)"
            )
    counts = nz.sum(axis=-1)
    if (counts > 1).any():
        where = tuple(int(i) for i in np.argwhere(counts > 1)[0])
        raise InputError(
            f"{name} is not one-hot: position {where} has {int(counts[where])} channels set"
        )
    depth = arr.shape[-1]
    return np.where(counts == 0, depth, nz.argmax(axis=-1)).astype(np.intp)


def _tokens_to_onehot(tokens: np.ndarray, depth: int, dtype: Any) -> np.ndarray:
    """Inverse of :func:`_onehot_tokens`: token ``depth`` becomes an all-zero row."""
    table = np.zeros((depth + 1, depth), dtype=dtype)
    table[np.arange(depth), np.arange(depth)] = 1
    return table[tokens]


def _str_codes(seq: str) -> np.ndarray:
    """Unicode code points of ``seq`` as a uint32 vector (one entry per character)."""
    return np.frombuffer(seq.encode("utf-32-le"), dtype="<u4")


def _codes_to_str(codes: np.ndarray) -> str:
    return np.ascontiguousarray(codes, dtype="<u4").tobytes().decode("utf-32-le")


# --------------------------------------------------------------------------------------------
# one-hot encoding
# --------------------------------------------------------------------------------------------


def one_hot_encode(
    seqs: str | Iterable[str],
    alphabet: str = "ACGT",
    layout: str = "channels_first",
    dtype: Any = np.float32,
    *,
    allow_unknown: bool = True,
) -> np.ndarray:
    """One-hot encode one sequence or a batch of equal-length sequences.

    Shapes: a single ``str`` gives ``(K, L)`` (``channels_first``) or ``(L, K)``
    (``channels_last``); a list of N strings gives ``(N, K, L)`` or ``(N, L, K)``, K =
    ``len(alphabet)``. Matching is case-insensitive. Letters outside the alphabet (N, '-', IUPAC
    codes, ...) become all-zero positions, or raise :class:`InputError` when
    ``allow_unknown=False``.
    """
    _check_layout(layout)
    alphabet = _check_alphabet(alphabet)
    single = isinstance(seqs, str)
    if single:
        seq_list = [seqs]
    else:
        if isinstance(seqs, (bytes, bytearray)):
            raise InputError("seqs must be a str or a list of str, got bytes (decode them first)")
        if isinstance(seqs, np.ndarray):
            if seqs.dtype.kind != "U" or seqs.ndim != 1:
                raise InputError(
                    f"seqs given as an array must be a 1-D array of str, got {seqs.dtype} {seqs.shape}"
                )
            seq_list = seqs.tolist()
        else:
            try:
                seq_list = list(seqs)
            except TypeError:
                raise InputError(
                    f"seqs must be a str or a list of str, got {type(seqs).__name__}"
                ) from None
        for i, s in enumerate(seq_list):
            if not isinstance(s, str):
                raise InputError(f"seqs[{i}] is a {type(s).__name__}, expected str")
        if not seq_list:
            raise InputError("seqs is empty: nothing to encode")
    length = len(seq_list[0])
    for i, s in enumerate(seq_list):
        if len(s) != length:
            raise InputError(
                f"sequences must all have the same length to be stacked: seqs[0] has {length}, "
                f"seqs[{i}] has {len(s)} (pad or trim them, or encode them one at a time)"
            )
    n, k = len(seq_list), len(alphabet)

    lut = np.full(128, -1, dtype=np.intp)
    for i, ch in enumerate(alphabet):
        lut[ord(ch.upper())] = i
        lut[ord(ch.lower())] = i
    codes = _str_codes("".join(seq_list))
    idx = np.full(codes.shape, -1, dtype=np.intp)
    ascii_mask = codes < 128
    idx[ascii_mask] = lut[codes[ascii_mask]]
    if not allow_unknown and (idx < 0).any():
        flat = int(np.argmax(idx < 0))
        s_i, pos = divmod(flat, length) if length else (0, 0)
        raise InputError(
            f"seqs[{s_i}] has {seq_list[s_i][pos]!r} at position {pos}, which is not in the "
            f"alphabet {alphabet!r} (pass allow_unknown=True to encode it as all zeros)"
        )
    idx[idx < 0] = k  # the all-zero row of the table
    out = _tokens_to_onehot(idx, k, dtype).reshape(n, length, k)
    if layout == "channels_first":
        out = np.ascontiguousarray(out.transpose(0, 2, 1))
    return out[0] if single else out


def one_hot_decode(
    arr: Any, alphabet: str = "ACGT", layout: str = "channels_first", unknown: str = "N"
) -> str | list[str]:
    """Turn a one-hot array back into letters; an all-zero position becomes ``unknown``.

    Shapes as :func:`one_hot_encode`: ``(K, L)``/``(L, K)`` gives a ``str``, ``(N, K, L)``/
    ``(N, L, K)`` a list of ``str``. Raises :class:`InputError` for anything that is not one-hot.
    """
    _check_layout(layout)
    alphabet = _check_alphabet(alphabet)
    if not isinstance(unknown, str) or len(unknown) != 1:
        raise InputError(f"unknown must be a single character, got {unknown!r}")
    a, _ = _to_numpy(arr, "arr")
    if a.ndim not in (2, 3):
        raise InputError(
            f"arr must be 2-D (one sequence) or 3-D (a batch), got shape {tuple(a.shape)}"
        )
    if layout == "channels_first":
        a = np.swapaxes(a, -1, -2)
    k = len(alphabet)
    if a.shape[-1] != k:
        axis = "second-to-last" if layout == "channels_first" else "last"
        raise InputError(
            f"arr has {a.shape[-1]} channels on its {axis} axis ({layout}) but the alphabet "
            f"{alphabet!r} has {k}; check the layout argument"
        )
    tokens = _onehot_tokens(a, "arr")
    letters = _str_codes(alphabet + unknown)
    decoded = letters[tokens]
    if decoded.ndim == 1:
        return _codes_to_str(decoded)
    return [_codes_to_str(row) for row in decoded]


# --------------------------------------------------------------------------------------------
# FASTA
# --------------------------------------------------------------------------------------------


def read_fasta(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read a (multi-line) FASTA file; ``.gz`` files are decompressed.

    Returns ``(names, seqs)``: the header text after '>' (stripped) and the sequence with line
    breaks and blanks removed, case kept. Blank lines and ';' comment lines are skipped. Records of
    different lengths are returned as they are. Raises :class:`InputError` for a file with no
    records, sequence text before the first header, or a header with no sequence.
    """
    path = os.fspath(path)
    opener = gzip.open if str(path).endswith(".gz") else open
    names: list[str] = []
    seqs: list[str] = []
    current: list[str] | None = None
    header_line = 0

    def finish() -> None:
        if current is None:
            return
        seq = "".join(current)
        if not seq:
            raise InputError(
                f"{path}: record {names[-1]!r} (line {header_line}) has no sequence"
            )
        seqs.append(seq)

    try:
        with opener(path, "rt") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line or line.startswith(";"):
                    continue
                if line.startswith(">"):
                    finish()
                    names.append(line[1:].strip())
                    current = []
                    header_line = lineno
                elif current is None:
                    raise InputError(
                        f"{path}: line {lineno} holds sequence text before the first '>' header; "
                        "not a FASTA file?"
                    )
                else:
                    current.append("".join(line.split()))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text FASTA file ({exc})") from exc
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InputError(f"{path}: cannot be read as FASTA ({exc})") from exc
    finish()
    if not names:
        raise InputError(f"{path}: no FASTA records found (empty file?)")
    return names, seqs


# --------------------------------------------------------------------------------------------
# dinucleotide shuffle
# --------------------------------------------------------------------------------------------
#
# Each position i < L-1 is an edge tokens[i] -> tokens[i+1] of a multigraph on the letters. The
# original groups, per letter t (letters in sorted order), the successor positions i+1 of all its
# edges in increasing order; a shuffle permutes every group except its last entry with
# rng.permutation(len-1), then walks from tokens[0], always leaving a letter by the next unused
# edge of its group. Keeping each letter's last exit fixed makes the walk an Eulerian path, so
# every dinucleotide is kept exactly. Within one call with num_shufs > 1 the groups are permuted
# cumulatively (each shuffle permutes the order left by the previous one).
#
# Here the groups live in one array ``succ`` (length L-1, sorted by source letter) with
# ``starts[t]`` the offset of letter t's group.


def _edge_groups(tokens: np.ndarray, n_tok: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Successor positions grouped by source token, group offsets and group sizes."""
    src = tokens[:-1]
    succ = np.argsort(src, kind="stable").astype(np.intp) + 1
    counts = np.bincount(src, minlength=n_tok)
    starts = np.zeros(n_tok, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    return succ, starts, counts


def _permute_groups(
    succ: np.ndarray, starts: np.ndarray, counts: np.ndarray, rng: Any
) -> np.ndarray:
    """One shuffle step: permute each group but its last entry (original draw order)."""
    out = succ.copy()
    for t in range(len(counts)):
        c = int(counts[t])
        # permutation(c-1) for c <= 2 draws nothing from a RandomState: skip it.
        if c >= 3:
            s = int(starts[t])
            out[s : s + c - 1] = succ[s + rng.permutation(c - 1)]
    return out


def _walk(tokens: np.ndarray, succ: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Walk the shuffled edge groups; tokens ``(B, L)``, succ ``(B, L-1)``, starts ``(B, T)``."""
    n_batch, length = tokens.shape
    out = np.empty_like(tokens)
    if length == 0:
        return out
    out[:, 0] = tokens[:, 0]
    if n_batch >= _VECTOR_WALK_MIN_BATCH:
        rows = np.arange(n_batch)
        nxt = starts.copy()  # absolute index of each token's next unused edge
        cur = tokens[:, 0].copy()
        for j in range(1, length):
            slot = nxt[rows, cur]
            nxt[rows, cur] = slot + 1
            cur = tokens[rows, succ[rows, slot]]
            out[:, j] = cur
        return out
    for b in range(n_batch):
        tok = tokens[b].tolist()
        nxt_l = starts[b].tolist()
        succ_l = succ[b].tolist()
        res = [tok[0]] * length
        t = tok[0]
        for j in range(1, length):
            slot = nxt_l[t]
            nxt_l[t] = slot + 1
            t = tok[succ_l[slot]]
            res[j] = t
        out[b] = res
    return out


def _dinuc_tokens(tokens: np.ndarray, n_tok: int, num: int, rng: Any) -> np.ndarray:
    """``num`` cumulative shuffles of one token vector (one original call); returns (num, L)."""
    length = tokens.shape[0]
    if length < 2:
        return np.tile(tokens, (num, 1))
    succ, starts, counts = _edge_groups(tokens, n_tok)
    all_succ = np.empty((num, length - 1), dtype=np.intp)
    for k in range(num):
        succ = _permute_groups(succ, starts, counts, rng)
        all_succ[k] = succ
    return _walk(np.tile(tokens, (num, 1)), all_succ, np.tile(starts, (num, 1)))


def dinuc_shuffle(
    seq: str | np.ndarray, num_shufs: int | None = None, rng: RngLike = None
) -> str | list[str] | np.ndarray:
    """Shuffle a sequence keeping its dinucleotide counts, exactly like the original DeepLIFT.

    ``seq`` is a ``str`` (any letters, case kept) or a channels-last one-hot array ``(L, D)``
    whose all-zero rows ('N') are shuffled as a (D+1)-th letter. ``rng`` is a
    ``numpy.random.RandomState``, an int seed, or None (unseeded). Returns one shuffle (``str`` or
    ``(L, D)`` array of the input dtype) when ``num_shufs`` is None, else a list of ``num_shufs``
    strings or an ``(num_shufs, L, D)`` array. The first letter and the last two letters are
    always kept.
    """
    num = 1 if num_shufs is None else _check_count(num_shufs, "num_shufs")
    rng = _as_rng(rng)
    if isinstance(seq, str):
        codes = _str_codes(seq)
        letters, tokens = np.unique(codes, return_inverse=True)
        shuffled = _dinuc_tokens(tokens.astype(np.intp).ravel(), len(letters), num, rng)
        results = [_codes_to_str(letters[row]) for row in shuffled]
        return results[0] if num_shufs is None else results
    if not (isinstance(seq, np.ndarray) or _is_torch(seq)):
        raise InputError(
            "dinuc_shuffle expects a str or a one-hot (L, D) array, got "
            f"{type(seq).__name__} (shuffle a batch with dinuc_shuffle_batch)"
        )
    arr, back = _to_numpy(seq, "seq")
    if arr.ndim != 2:
        raise InputError(
            f"dinuc_shuffle expects a one-hot array of shape (L, D), got shape {tuple(arr.shape)} "
            "(use dinuc_shuffle_batch for (N, 4, L) or (N, L, 4) batches)"
        )
    try:
        tokens = _onehot_tokens(arr, "seq")
    except InputError as exc:
        hint = ""
        if arr.shape[0] <= 5 < arr.shape[1]:
            hint = f"; it looks channels-first {tuple(arr.shape)}: pass seq.T (L, D)"
        raise InputError(f"{exc}{hint}") from None
    depth = arr.shape[1]
    shuffled = _dinuc_tokens(tokens, depth + 1, num, rng)
    out = _tokens_to_onehot(shuffled, depth, arr.dtype)
    return back(out[0] if num_shufs is None else out)


def _batch_channels_last(onehot: Any, layout: str, name: str):
    _check_layout(layout)
    arr, back = _to_numpy(onehot, name)
    if arr.ndim != 3:
        want = "(N, 4, L)" if layout == "channels_first" else "(N, L, 4)"
        raise InputError(
            f"{name} must be a 3-D batch {want} ({layout}), got shape {tuple(arr.shape)}"
        )
    x = arr if layout == "channels_last" else arr.transpose(0, 2, 1)
    return arr, x, back


def dinuc_shuffle_batch(
    onehot: Any, n: int, seed: RngLike, layout: str = "channels_first"
) -> Any:
    """``n`` dinucleotide shuffles of every sequence of a one-hot batch, reproducibly.

    ``onehot`` is ``(N, D, L)`` (``channels_first``) or ``(N, L, D)`` (``channels_last``); the
    result is ``(N, n, D, L)`` resp. ``(N, n, L, D)`` with the input dtype (numpy in, numpy out;
    torch in, torch out). Result ``[i, k]`` equals the k-th of
    ``dinuc_shuffle(x_i, rng=rng)`` called n times per example, examples in order, with one
    ``rng = RandomState(seed)`` — the references the original ``get_shuffle_seq_ref_function``
    generates. The walk over all N*n shuffles runs in lock-step (vectorised).
    """
    n = _check_count(n, "n")
    rng = _as_rng(seed)
    arr, x, back = _batch_channels_last(onehot, layout, "onehot")
    n_ex, length, depth = x.shape
    tokens = _onehot_tokens(x, "onehot")
    if n_ex == 0 or length < 2:
        shuffled = np.repeat(tokens, n, axis=0)
    else:
        n_tok = depth + 1
        all_succ = np.empty((n_ex * n, length - 1), dtype=np.intp)
        all_starts = np.empty((n_ex * n, n_tok), dtype=np.intp)
        for i in range(n_ex):
            succ, starts, counts = _edge_groups(tokens[i], n_tok)
            for k in range(n):
                # every shuffle is its own call of the original: permute the unshuffled groups
                all_succ[i * n + k] = _permute_groups(succ, starts, counts, rng)
                all_starts[i * n + k] = starts
        shuffled = _walk(np.repeat(tokens, n, axis=0), all_succ, all_starts)
    out = _tokens_to_onehot(shuffled, depth, arr.dtype).reshape(n_ex, n, length, depth)
    if layout == "channels_first":
        out = np.ascontiguousarray(out.transpose(0, 1, 3, 2))
    return back(out)


# --------------------------------------------------------------------------------------------
# mononucleotide shuffle
# --------------------------------------------------------------------------------------------


def shuffle(
    seq_or_onehot: str | np.ndarray, num_shufs: int | None = None, rng: RngLike = None
) -> str | list[str] | np.ndarray:
    """Random permutation of positions (keeps base composition, not dinucleotides).

    ``seq_or_onehot`` is a ``str`` or an ``(L, D)`` array (channels-last, as for
    :func:`dinuc_shuffle`). Each shuffle is an independent ``rng.permutation(L)`` of the input.
    Returns one result for ``num_shufs=None``, else a list of strings / an ``(num_shufs, L, D)``
    array.
    """
    num = 1 if num_shufs is None else _check_count(num_shufs, "num_shufs")
    rng = _as_rng(rng)
    if isinstance(seq_or_onehot, str):
        codes = _str_codes(seq_or_onehot)
        results = [_codes_to_str(codes[rng.permutation(len(codes))]) for _ in range(num)]
        return results[0] if num_shufs is None else results
    if not (isinstance(seq_or_onehot, np.ndarray) or _is_torch(seq_or_onehot)):
        raise InputError(
            f"shuffle expects a str or an (L, D) array, got {type(seq_or_onehot).__name__}"
        )
    arr, back = _to_numpy(seq_or_onehot, "seq_or_onehot")
    if arr.ndim != 2:
        raise InputError(
            f"shuffle expects an (L, D) array, got shape {tuple(arr.shape)} "
            "(use shuffle_batch for batches)"
        )
    perms = np.stack([rng.permutation(arr.shape[0]) for _ in range(num)])
    out = arr[perms]
    return back(out[0] if num_shufs is None else out)


def shuffle_batch(onehot: Any, n: int, seed: RngLike, layout: str = "channels_first") -> Any:
    """``n`` position shuffles of every sequence of a batch: ``(N, D, L)`` -> ``(N, n, D, L)``.

    (``channels_last``: ``(N, L, D)`` -> ``(N, n, L, D)``.) Same draw order as calling
    :func:`shuffle` n times per example with one ``RandomState(seed)``. Any numeric values are
    allowed (positions are permuted whole).
    """
    n = _check_count(n, "n")
    rng = _as_rng(seed)
    arr, x, back = _batch_channels_last(onehot, layout, "onehot")
    n_ex, length, _ = x.shape
    perms = np.empty((n_ex, n, length), dtype=np.intp)
    for i in range(n_ex):
        for k in range(n):
            perms[i, k] = rng.permutation(length)
    out = x[np.arange(n_ex)[:, None, None], perms]  # (N, n, L, D)
    if layout == "channels_first":
        out = out.transpose(0, 1, 3, 2)
    return back(np.ascontiguousarray(out))


# --------------------------------------------------------------------------------------------
# hypothetical contributions
# --------------------------------------------------------------------------------------------


def hypothetical_contributions(
    multipliers: Any,
    references: Any,
    layout: str = "channels_first",
    channel_axis: int | None = None,
) -> Any:
    """Scores every letter would get at every position: ``H = m - sum_c ref_c * m_c``.

    Why: multipliers ``m`` are computed once for the real input; the contribution a one-hot
    input with letter i at position l would get is ``sum_c (onehot_i - ref)_c m_c``, which is
    the formula above. At the observed base it equals the position's total contribution.

    ``multipliers`` has the channel axis at -2 (``channels_first``, e.g. ``(N, 4, L)`` or
    ``(N, T, 4, L)``) or -1 (``channels_last``), or wherever ``channel_axis`` says.
    ``references`` broadcasts against it with numpy rules (e.g. ``(N, 4, L)``, a single
    ``(4, L)``; for an extra target axis pass ``refs[:, None]``); a 1-D reference of the channel
    length (a background such as ``[0.3, 0.2, 0.2, 0.3]``) is put on the channel axis. numpy and
    torch inputs both work; the result is of the multipliers' kind (numpy follows its dtype
    promotion, torch keeps the multipliers' dtype and device).
    """
    _check_layout(layout)
    if _is_torch(multipliers):
        import torch

        m = multipliers
        ref = references
        if not _is_torch(ref):
            ref = torch.as_tensor(np.array(ref), dtype=m.dtype, device=m.device)  # copy: may be read-only
        else:
            ref = ref.to(dtype=m.dtype, device=m.device)
        m_shape, r_shape = tuple(m.shape), tuple(ref.shape)
    else:
        m, _ = _to_numpy(multipliers, "multipliers")
        if _is_torch(references):
            ref = references.detach().cpu().numpy()
        else:
            ref = np.asarray(references)
        if m.dtype.kind not in "biuf" or ref.dtype.kind not in "biuf":
            raise InputError(
                f"multipliers and references must be numeric, got {m.dtype} and {ref.dtype}"
            )
        m_shape, r_shape = m.shape, ref.shape
    ndim = len(m_shape)
    if ndim < 1:
        raise InputError("multipliers must have a channel axis, got a scalar")
    axis = (-2 if layout == "channels_first" else -1) if channel_axis is None else channel_axis
    if not -ndim <= axis < ndim:
        raise InputError(
            f"channel axis {axis} is out of range for multipliers of shape {m_shape}"
            + ("" if channel_axis is not None else f" (layout {layout!r})")
        )
    axis %= ndim
    n_channels = m_shape[axis]
    if len(r_shape) == 1 and ndim > 1 and r_shape[0] == n_channels:
        new_shape = [1] * ndim
        new_shape[axis] = n_channels
        ref = ref.reshape(new_shape)
        r_shape = tuple(new_shape)
    try:
        full = np.broadcast_shapes(tuple(m_shape), tuple(r_shape))
    except ValueError:
        full = None
    if full != tuple(m_shape):
        raise InputError(
            f"references of shape {tuple(r_shape)} do not broadcast to multipliers of shape "
            f"{tuple(m_shape)} (channel axis {axis}); for multipliers with an extra target/"
            "reference axis insert it into the references, e.g. refs[:, None]"
        )
    if _is_torch(m):
        return m - (ref * m).sum(dim=axis, keepdim=True)
    return m - (ref * m).sum(axis=axis, keepdims=True)


def one_hot_axis(x: Any) -> int:
    """The channel axis of a one-hot sequence batch (array or tensor): 1 for (N, 4, L), the last
    axis for (N, L, 4)."""
    if x.ndim >= 3 and x.shape[1] == 4:
        return 1
    if x.shape[-1] == 4:
        return x.ndim - 1
    raise InputError(f"cannot find the 4 one-hot channels in an input of shape {tuple(x.shape)}; "
                     "expected (N, 4, L) or (N, L, 4)")
