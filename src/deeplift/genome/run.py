"""One genome-scale run: plan the chunks, skip the finished ones, score, assemble, export.

Chunks are a fixed grid over the regions in BED order (``chunk_size`` regions each), the same
for every run of a command: a shard takes a contiguous block of whole chunks, a resumed run the
chunks not yet recorded, a Ray worker whichever chunk comes next — and since each chunk is scored
identically wherever it runs, all give the same file.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import InputError
from .fasta import Genome
from .regions import Region, iter_regions
from .scoring import ChunkResult, ScoreJob, score_chunk
from .store import OutputExistsError, PartsRecord, read_state, write_file

DEFAULT_CHUNK_SIZE = 256


@dataclass
class GenomeRun:
    """Everything a run needs besides the models (in ``job``)."""

    job: ScoreJob
    genome: str
    regions: str
    width: int
    out: Path
    task_names: list[str]
    fingerprint: dict                       # options that change the numbers (resume check)
    metadata: dict = field(default_factory=dict)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    shard: tuple[int, int] | None = None    # (index from 0, count)
    float16: bool = False
    workers: int | None = None
    ray_address: str | None = None
    use_gpu: bool = False
    progress: bool = True


@dataclass
class RunSummary:
    n_regions: int                          # regions in this file (this shard)
    n_scored: int                           # scored by this invocation (the rest were recorded)
    seconds: float
    max_abs_delta: float
    unknown_positions: int = 0              # window positions that were N or off-chromosome
    already_complete: bool = False


def shard_chunks(n_regions: int, chunk_size: int, shard: tuple[int, int] | None) -> list[int]:
    """Starts of the chunks this run (or shard) covers; shards are contiguous, balanced blocks."""
    starts = list(range(0, n_regions, chunk_size))
    if shard is None:
        return starts
    i, n = shard
    k = len(starts)
    return starts[i * k // n:(i + 1) * k // n]


def run_genome(run: GenomeRun, say: Callable[[str], None] = print) -> RunSummary:
    """Score (or finish scoring) ``run.regions`` into ``run.out``; see :mod:`deeplift.genome`."""
    if run.chunk_size < 1:
        raise InputError(f"chunk size must be at least 1, got {run.chunk_size}")
    genome = Genome(run.genome)
    n_total = _check_regions(run, genome)
    starts = shard_chunks(n_total, run.chunk_size, run.shard)
    if not starts:
        n_chunks = len(range(0, n_total, run.chunk_size))
        raise InputError(f"--shard {run.shard[0]}/{run.shard[1]} gets no regions: the run has only "
                         f"{n_chunks} chunk(s) of {run.chunk_size} regions; use at most {n_chunks} "
                         "shards or a smaller --chunk-size")
    lo = starts[0] if starts else 0
    hi = min(n_total, starts[-1] + run.chunk_size) if starts else 0
    shard_attrs = _shard_attrs(run, n_total, lo)
    state = read_state(run.out)
    if state is not None:
        if state["fingerprint"] == run.fingerprint and state["shard"] == run.shard and state["complete"]:
            return RunSummary(hi - lo, 0, 0.0, *_stored_summary(run.out), already_complete=True)
        raise OutputExistsError(f"{run.out} exists and was made with other options; choose another "
                                "--out or delete it (nothing was overwritten)")
    record = PartsRecord(run.out, dict(run.fingerprint, shard=list(run.shard) if run.shard else None))
    for stale in run.out.parent.glob(f".{run.out.name}.*.h5"):  # an assembly killed half-way
        stale.unlink(missing_ok=True)
    done = record.done() & set(starts)
    todo = [s for s in starts if s not in done]
    n_done = sum(min(s + run.chunk_size, n_total) - s for s in done)
    if done:
        say(f"resuming: {len(done)} of {len(starts)} chunks ({n_done} regions) already scored in {record.dir}")
    dtype = np.float16 if run.float16 else np.float32
    t0 = time.perf_counter()
    bar = _progress(run, hi - lo, n_done)
    try:
        for result, onehot in _results(run, genome, todo):
            record.write(result.start, onehot, result.hypothetical.astype(dtype),
                         result.max_abs_delta)
            bar.update(len(result.max_abs_delta))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    attrs = {"fingerprint": run.fingerprint, "metadata": run.metadata, **shard_attrs}
    worst, unknown = write_file(run.out, hi - lo, run.width, run.task_names, dtype, attrs,
                                _recorded_chunks(run, record, starts, lo, hi))
    record.remove()
    genome.close()
    return RunSummary(hi - lo, hi - lo - n_done, seconds, worst, unknown)


def _check_regions(run: GenomeRun, genome: Genome) -> int:
    """Parse every BED line and check its chromosome before any scoring (so a typo on the last
    line does not end a long run); returns the number of regions."""
    n = 0
    for region in iter_regions(run.regions, run.width):
        if region.chrom not in genome.sizes:
            raise InputError(f"{run.regions}: region {region.index + 1} ({region.name}) is on "
                             f"{region.chrom!r}, which genome {run.genome} does not have; check that "
                             "the BED and the FASTA use one assembly and naming (chr1 vs 1)")
        n += 1
    if n == 0:
        raise InputError(f"{run.regions} holds no regions")
    return n


def _shard_attrs(run: GenomeRun, n_total: int, lo: int) -> dict:
    if run.shard is None:
        return {}
    return {"shard_index": run.shard[0], "shard_count": run.shard[1], "region_offset": lo,
            "n_regions_total": n_total}


def _stored_summary(out: Path) -> tuple[float, int]:
    import json

    import h5py
    with h5py.File(out, "r") as f:
        meta = json.loads(f.attrs["metadata_json"])
    return float(meta["max_abs_delta"]), int(meta["unknown_positions"])


def _progress(run: GenomeRun, total: int, initial: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="region", smoothing=0.1,
                disable=not run.progress, desc="scoring", dynamic_ncols=True)


def _chunk_inputs(run: GenomeRun, genome: Genome, todo: list[int]
                  ) -> Iterator[tuple[int, np.ndarray, list[Region]]]:
    """(start, one-hot (C, 4, W) uint8, regions) of the chunks to score, streaming the BED once."""
    wanted = set(todo)
    regions = iter_regions(run.regions, run.width)
    for start in range(0, max(todo, default=-1) + 1, run.chunk_size):
        chunk = list(itertools.islice(regions, run.chunk_size))
        if start in wanted:
            yield start, genome.one_hot(chunk), chunk


def _results(run: GenomeRun, genome: Genome, todo: list[int]
             ) -> Iterator[tuple[ChunkResult, np.ndarray]]:
    """Each scored chunk with its one-hot inputs (kept here, not sent back by workers)."""
    sent: dict[int, np.ndarray] = {}

    def remembered():
        for start, onehot, regions in _chunk_inputs(run, genome, todo):
            sent[start] = onehot
            yield start, onehot, regions

    if run.workers is None and run.ray_address is None:
        for start, onehot, regions in remembered():
            yield score_chunk(run.job, start, onehot, regions), sent.pop(start)
        return
    from .ray_runner import ray_score
    for result in ray_score(run.job, remembered(), run.workers, run.ray_address, run.use_gpu):
        yield result, sent.pop(result.start)


def _recorded_chunks(run: GenomeRun, record: PartsRecord, starts: list[int], lo: int, hi: int):
    regions = iter_regions(run.regions, run.width)
    for _ in itertools.islice(regions, lo):
        pass
    for start in starts:
        chunk = list(itertools.islice(regions, min(run.chunk_size, hi - start)))
        yield chunk, record.read(start)
