"""Score one chunk of regions: references per region, every model, optional reverse complement.

This is the only code that runs on Ray workers; a :class:`ScoreJob` holds everything it needs
(converted models included) and pickles, so a worker receives it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .fasta import reverse_complement
from .regions import Region, region_seed

GENOME_METHODS = ("rescale", "reveal_cancel", "genomics_default")
GENOME_REFERENCES = ("zeros", "background", "shuffle", "dinuc-shuffle")


@dataclass
class ScoreJob:
    """What every chunk is scored with (the same for every chunk, worker and shard)."""

    models: list                    # deeplift.Model objects, averaged (an ensemble)
    layouts: list[str]              # per model: "channels_first" (N, 4, W) or "channels_last"
    targets: list[int]              # unit indices of the target layer, scored in one pass
    target_layer: str | None = None
    method: str = "rescale"
    references: str = "zeros"
    n_references: int = 10
    seed: int = 0
    revcomp: bool = False
    batch_size: int = 256
    background: Sequence[float] = field(default=(0.3, 0.2, 0.2, 0.3))

    def __post_init__(self) -> None:
        if self.method not in GENOME_METHODS:
            raise InputError(f"genome-scale scoring writes hypothetical contributions, which need a "
                             f"DeepLIFT method ({', '.join(GENOME_METHODS)}), not {self.method!r}")
        if self.references not in GENOME_REFERENCES:
            raise InputError(f"genome-scale references must be one of {', '.join(GENOME_REFERENCES)}, "
                             f"not {self.references!r}")


@dataclass
class ChunkResult:
    """Hypothetical contributions (C, T, 4, W) and each region's largest |summation-to-delta error|."""

    start: int                      # index of the chunk's first region
    hypothetical: np.ndarray        # (C, T, 4, W), float
    max_abs_delta: np.ndarray       # (C,)


def make_references(job: ScoreJob, onehot: np.ndarray, regions: Sequence[Region]) -> np.ndarray | None:
    """References of a chunk, (C, R, 4, W) or broadcastable (1, 4, 1); None means zeros.

    Shuffles are seeded per region (:func:`region_seed`), never per chunk.
    """
    from ..genomics import dinuc_shuffle_batch, shuffle_batch
    if job.references == "zeros":
        return None
    if job.references == "background":
        return np.asarray(job.background, dtype=np.float64).reshape(1, 4, 1)
    shuffler = dinuc_shuffle_batch if job.references == "dinuc-shuffle" else shuffle_batch
    refs = np.empty((len(regions), job.n_references) + onehot.shape[1:], dtype=onehot.dtype)
    for i, r in enumerate(regions):  # one seed per region: results do not depend on batching
        refs[i] = shuffler(onehot[i:i + 1], job.n_references,
                           seed=region_seed(r.chrom, r.start, r.end, job.seed),
                           layout="channels_first")[0]
    return refs


def score_chunk(job: ScoreJob, start: int, onehot: np.ndarray, regions: Sequence[Region]) -> ChunkResult:
    """Hypothetical contributions of one chunk, averaged over the models (and both strands)."""
    refs = make_references(job, onehot, regions)
    strands = [(onehot, refs, False)]
    if job.revcomp:
        rc_refs = None if refs is None else reverse_complement(refs)
        strands.append((reverse_complement(onehot), rc_refs, True))
    total: np.ndarray | None = None
    worst = np.zeros(len(regions))
    for model, layout in zip(job.models, job.layouts):
        for x, r, flipped in strands:
            hyp, delta = _attribute(job, model, layout, x, r)
            if flipped:
                hyp = reverse_complement(hyp)
            total = hyp if total is None else total + hyp
            worst = np.maximum(worst, delta)
    assert total is not None
    return ChunkResult(start, total / (len(job.models) * len(strands)), worst)


def _attribute(job: ScoreJob, model: Any, layout: str, x: np.ndarray, refs: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    import torch

    import deeplift
    dtype = np.float64 if model.dtype == torch.float64 else np.float32  # one-hot: exact either way
    x = x.astype(dtype)
    if refs is not None:
        refs = refs.astype(dtype)
    if layout == "channels_last":
        x = x.transpose(0, 2, 1)
        if refs is not None:
            refs = refs.swapaxes(-1, -2)
    hyp, delta = deeplift.attribute(
        model, x, references=refs, method=job.method, target=list(job.targets),
        target_layer=job.target_layer, batch_size=job.batch_size, hypothetical=True,
        return_delta=True)
    hyp = np.asarray(hyp)
    if layout == "channels_last":
        hyp = hyp.swapaxes(-1, -2)
    delta = np.abs(np.asarray(delta, dtype=np.float64)).reshape(len(x), -1).max(axis=1)
    return hyp, delta
