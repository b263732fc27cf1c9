"""Simulated DNA sequences with embedded transcription-factor motifs.

This mirrors the genomics simulation used in the DeepLIFT paper
(Shrikumar et al. 2017, section 4.2): background sequences of length 200
with i.i.d. bases (A, C, G, T with probabilities 0.3, 0.2, 0.2, 0.3) into
which instances of a GATA-like and a TAL1-like motif are embedded.  Every
instance is sampled from a position weight matrix (PWM) and placed at a
random position, on the forward or reverse-complement strand, without
overlapping other embedded instances.

Sequences are split evenly into four groups (no motif, GATA only, TAL1 only,
both); a motif that is present is embedded 1-3 times, so every sequence holds
0-3 instances of each motif type.  There are three binary tasks:

* task 0 ``GATA``          -- at least one GATA-like instance embedded
* task 1 ``TAL1``          -- at least one TAL1-like instance embedded
* task 2 ``GATA_and_TAL1`` -- both motif types embedded

Labels are defined by what was embedded, not by what the background happens
to contain, so a small amount of label noise (chance motif-like words in the
background) is part of the problem, exactly as in the paper.

Conventions
-----------
* One-hot arrays use the PyTorch layout ``(N, 4, L)`` with channel order
  A, C, G, T.
* PWMs are ``(4, motif_length)`` arrays in the same channel order (columns
  sum to 1), so a PWM lines up with a window ``onehot[:, start:end]``.
* Motif instances are ``(motif_name, start, end, strand)`` with ``end``
  exclusive and ``strand`` either ``"+"`` or ``"-"``.  For a ``"-"``
  instance the window ``onehot[:, start:end]`` holds the reverse complement
  of the PWM sample.

Only numpy is needed; the module is importable from the ``examples``
directory (``sys.path.insert(0, "examples")``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "ALPHABET",
    "BACKGROUND",
    "SEQ_LEN",
    "MOTIF_NAMES",
    "TASK_NAMES",
    "PWMS",
    "SimulatedData",
    "consensus",
    "log_odds_matrix",
    "reverse_complement_onehot",
    "window_scores",
    "max_scan_scores",
    "sample_motif_instance",
    "simulate_dataset",
]

ALPHABET = "ACGT"
BACKGROUND = np.array([0.3, 0.2, 0.2, 0.3])
SEQ_LEN = 200
MOTIF_NAMES = ("GATA", "TAL1")
TASK_NAMES = ("GATA", "TAL1", "GATA_and_TAL1")


def _pwm(rows):
    """Build a (4, length) PWM from per-position rows of (A, C, G, T) weights."""
    m = np.asarray(rows, dtype=np.float64)
    m = m / m.sum(axis=1, keepdims=True)
    return np.ascontiguousarray(m.T)


# GATA-like: consensus  T G A T A A G G   ("WGATAR" core with flanks)
_GATA_ROWS = [
    # A     C     G     T
    [0.15, 0.04, 0.03, 0.78],  # W flank (mostly T, else A)
    [0.01, 0.01, 0.97, 0.01],  # G
    [0.97, 0.01, 0.01, 0.01],  # A
    [0.01, 0.01, 0.01, 0.97],  # T
    [0.97, 0.01, 0.01, 0.01],  # A
    [0.90, 0.02, 0.06, 0.02],  # A (sometimes G)
    [0.14, 0.02, 0.82, 0.02],  # R (mostly G)
    [0.06, 0.10, 0.78, 0.06],  # 3' flank (mostly G)
]

# TAL1-like: consensus  A A C A G C T G T T  (CAGCTG E-box with flanks)
_TAL1_ROWS = [
    # A     C     G     T
    [0.50, 0.20, 0.15, 0.15],  # weak 5' flank
    [0.70, 0.15, 0.05, 0.10],  # M flank (mostly A)
    [0.01, 0.97, 0.01, 0.01],  # C
    [0.97, 0.01, 0.01, 0.01],  # A
    [0.02, 0.14, 0.82, 0.02],  # G (sometimes C: CACCTG)
    [0.02, 0.90, 0.06, 0.02],  # C (sometimes G)
    [0.01, 0.01, 0.01, 0.97],  # T
    [0.01, 0.01, 0.97, 0.01],  # G
    [0.10, 0.05, 0.15, 0.70],  # K flank (mostly T)
    [0.15, 0.15, 0.20, 0.50],  # weak 3' flank
]

PWMS = {
    "GATA": _pwm(_GATA_ROWS),
    "TAL1": _pwm(_TAL1_ROWS),
}


class SimulatedData(NamedTuple):
    """Result of :func:`simulate_dataset`."""

    onehot: np.ndarray  # (N, 4, L) float32, channels A, C, G, T
    labels: np.ndarray  # (N, 3) float32
    instances: list  # per sequence: list of (motif_name, start, end, strand)


def consensus(name: str) -> str:
    """Most likely base at each position of a motif's PWM."""
    return "".join(ALPHABET[i] for i in PWMS[name].argmax(axis=0))


def log_odds_matrix(name: str, background=BACKGROUND) -> np.ndarray:
    """(4, length) matrix of log2(PWM / background)."""
    bg = np.asarray(background, dtype=np.float64)[:, None]
    return np.log2(PWMS[name] / bg)


def reverse_complement_onehot(x: np.ndarray) -> np.ndarray:
    """Reverse complement along the last axis of a (..., 4, L) one-hot array.

    With channel order A, C, G, T the complement is a flip of the channel axis.
    """
    return x[..., ::-1, ::-1]


def window_scores(onehot: np.ndarray, name: str) -> np.ndarray:
    """PWM log-odds score of every window, forward and reverse strand.

    ``onehot`` is (N, 4, L); returns (N, 2, L - w + 1) where index 0 on the
    second axis is the forward strand and 1 the reverse strand.
    """
    x = np.asarray(onehot, dtype=np.float64)
    lo = log_odds_matrix(name)
    w = lo.shape[1]
    n_win = x.shape[-1] - w + 1
    lo_rc = lo[::-1, ::-1]
    out = np.zeros((x.shape[0], 2, n_win))
    for j in range(w):
        seg = x[:, :, j : j + n_win]
        out[:, 0] += np.einsum("c,ncl->nl", lo[:, j], seg)
        out[:, 1] += np.einsum("c,ncl->nl", lo_rc[:, j], seg)
    return out


def max_scan_scores(onehot: np.ndarray, name: str) -> np.ndarray:
    """Best PWM log-odds score over all windows and both strands, per sequence."""
    return window_scores(onehot, name).max(axis=(1, 2))


def sample_motif_instance(name: str, rng: np.random.Generator) -> np.ndarray:
    """Sample one instance (base indices 0..3, forward strand) from a PWM."""
    pwm = PWMS[name]
    cdf = np.cumsum(pwm, axis=0)  # (4, w)
    u = rng.random(pwm.shape[1])
    idx = (u[None, :] > cdf).sum(axis=0)
    return np.minimum(idx, 3)


def _place(occupied: np.ndarray, width: int, rng: np.random.Generator, max_tries: int = 200):
    """Random start for a window of ``width`` not overlapping ``occupied``."""
    seq_len = occupied.shape[0]
    for _ in range(max_tries):
        start = int(rng.integers(0, seq_len - width + 1))
        if not occupied[start : start + width].any():
            return start
    # fall back to an exhaustive search of free positions
    free = [
        s for s in range(seq_len - width + 1) if not occupied[s : s + width].any()
    ]
    if not free:
        return None
    return int(free[rng.integers(0, len(free))])


def simulate_dataset(
    n: int,
    seed: int | None = None,
    *,
    rng: np.random.Generator | None = None,
    seq_len: int = SEQ_LEN,
    max_instances: int = 3,
    p_reverse: float = 0.5,
) -> SimulatedData:
    """Simulate ``n`` sequences with embedded GATA-like / TAL1-like motifs.

    Parameters
    ----------
    n : number of sequences.
    seed : seed for a fresh ``numpy.random.default_rng`` (ignored if ``rng``
        is given).
    rng : an existing ``numpy.random.Generator`` to draw from.
    seq_len : sequence length (default 200).
    max_instances : a present motif is embedded 1..max_instances times.
    p_reverse : probability that an instance is placed on the reverse strand.

    Returns
    -------
    SimulatedData(onehot, labels, instances) with ``onehot`` (n, 4, seq_len)
    float32 (channels A, C, G, T), ``labels`` (n, 3) float32 for the tasks
    in :data:`TASK_NAMES`, and ``instances[i]`` a list of
    ``(motif_name, start, end, strand)`` tuples (``end`` exclusive) sorted by
    start.
    """
    if rng is None:
        rng = np.random.default_rng(seed)
    n = int(n)
    # exact balance over the four groups: none, GATA only, TAL1 only, both
    groups = rng.permutation(np.arange(n) % 4)
    has_gata = (groups == 1) | (groups == 3)
    has_tal1 = (groups == 2) | (groups == 3)

    bases = rng.choice(4, size=(n, seq_len), p=BACKGROUND).astype(np.int8)
    instances: list = []
    for i in range(n):
        occupied = np.zeros(seq_len, dtype=bool)
        todo = []
        if has_gata[i]:
            todo += ["GATA"] * int(rng.integers(1, max_instances + 1))
        if has_tal1[i]:
            todo += ["TAL1"] * int(rng.integers(1, max_instances + 1))
        rng.shuffle(todo)
        placed = []
        for name in todo:
            inst = sample_motif_instance(name, rng)
            width = inst.shape[0]
            start = _place(occupied, width, rng)
            if start is None:  # cannot happen with the default sizes
                continue
            strand = "-" if rng.random() < p_reverse else "+"
            if strand == "-":
                inst = 3 - inst[::-1]  # reverse complement (A<->T, C<->G)
            bases[i, start : start + width] = inst
            occupied[start : start + width] = True
            placed.append((name, start, start + width, strand))
        placed.sort(key=lambda t: t[1])
        instances.append(placed)

    onehot = np.eye(4, dtype=np.float32)[bases]  # (n, L, 4)
    onehot = np.ascontiguousarray(onehot.transpose(0, 2, 1))
    labels = np.stack(
        [has_gata, has_tal1, has_gata & has_tal1], axis=1
    ).astype(np.float32)
    return SimulatedData(onehot, labels, instances)


if __name__ == "__main__":  # quick look at a few sequences
    data = simulate_dataset(8, seed=0)
    for i in range(8):
        seq = "".join(ALPHABET[j] for j in data.onehot[i].argmax(axis=0))
        print(data.labels[i], data.instances[i])
        print(seq)
    for name in MOTIF_NAMES:
        print(name, consensus(name))
