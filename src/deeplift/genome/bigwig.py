"""A bigWig track of the contribution of each base (``projected_shap`` summed over A, C, G, T).

Where windows overlap, a base's value is the mean over the windows covering it; bases no window
covers have no entry; off-chromosome padding is dropped. The file is written in one sorted sweep
with a buffer the size of one overlap cluster's open part (about one window), so memory does not
grow with the number of regions; per-base values wait in a temporary memory-mapped file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import replacing
from .store import iter_rows


def _pybigwig():
    try:
        import pyBigWig
    except ImportError:
        raise InputError("writing bigWig needs pyBigWig; install it with pip install 'deeplift[genome]'") from None
    return pyBigWig


def write_bigwig(h5_path: str | os.PathLike, bw_path: str | os.PathLike, chrom_sizes: dict[str, int],
                 group: str = "") -> Path:
    """bigWig of per-base contributions from ``<group>projected_shap/seq`` of a scores file."""
    import h5py
    pyBigWig = _pybigwig()
    bw_path = Path(bw_path)
    with h5py.File(h5_path, "r") as f:
        chroms = f["regions/chrom"].asstr()[()]
        starts = f["regions/start"][()]
        n, _, width = f["raw/seq"].shape
    rank = {c: i for i, c in enumerate(chrom_sizes)}
    unknown = sorted(set(chroms) - set(rank))
    if unknown:
        raise InputError(f"regions on {unknown[:3]} are not in the genome's chromosome list")
    fd, tmp_values = tempfile.mkstemp(prefix=f".{bw_path.name}.", suffix=".f32", dir=bw_path.parent)
    os.close(fd)
    try:
        per_base = np.memmap(tmp_values, dtype=np.float32, mode="w+", shape=(max(n, 1), width))
        row = 0
        for block in iter_rows(h5_path, group + "projected_shap/seq"):
            per_base[row:row + len(block)] = block.astype(np.float32).sum(axis=1)
            row += len(block)
        order = np.lexsort((starts, np.array([rank[c] for c in chroms], dtype=np.int64)))
        with replacing(bw_path) as tmp_bw:
            bw = pyBigWig.open(str(tmp_bw), "w")
            try:
                bw.addHeader([(c, int(s)) for c, s in chrom_sizes.items()])
                _sweep(bw, order, chroms, starts, per_base, width, chrom_sizes)
            finally:
                bw.close()
        del per_base
    finally:
        if os.path.exists(tmp_values):
            os.unlink(tmp_values)
    return bw_path


def _sweep(bw, order, chroms, starts, per_base, width: int, chrom_sizes: dict[str, int]) -> None:
    """Windows in (chromosome, start) order; each base's mean is emitted once no window can add to it."""
    chrom, base = None, 0
    sums = np.zeros(0)
    counts = np.zeros(0, dtype=np.int64)
    for i in order:
        c, s = chroms[i], int(starts[i])
        if c != chrom:
            if chrom is not None:
                _emit(bw, chrom, base, sums, counts, chrom_sizes[chrom])
            chrom, base, sums, counts = c, s, np.zeros(0), np.zeros(0, dtype=np.int64)
        if s > base:  # everything before s is final
            done = min(s - base, len(sums))
            _emit(bw, chrom, base, sums[:done], counts[:done], chrom_sizes[chrom])
            sums, counts, base = sums[done:], counts[done:], s
        need = s + width - base
        if need > len(sums):
            sums = np.concatenate([sums, np.zeros(need - len(sums))])
            counts = np.concatenate([counts, np.zeros(need - len(counts), dtype=np.int64)])
        sums[s - base:need] += per_base[i]
        counts[s - base:need] += 1
    if chrom is not None:
        _emit(bw, chrom, base, sums, counts, chrom_sizes[chrom])


def _emit(bw, chrom: str, base: int, sums: np.ndarray, counts: np.ndarray, size: int) -> None:
    """Write the covered, on-chromosome bases of ``[base, base + len(sums))`` as runs of fixed steps."""
    pos = base + np.arange(len(sums))
    keep = (counts > 0) & (pos >= 0) & (pos < size)
    if not keep.any():
        return
    values = np.zeros(len(sums))
    values[keep] = sums[keep] / counts[keep]
    idx = np.flatnonzero(keep)
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    for run in np.split(idx, breaks):
        bw.addEntries(chrom, int(pos[run[0]]), values=values[run].astype(np.float64).tolist(),
                      span=1, step=1)


def task_bigwig_paths(bw_path: str | os.PathLike, task_names: list[str]) -> list[Path]:
    """OUT.bw for one task; OUT.<task>.bw for each of several."""
    p = Path(bw_path)
    if len(task_names) == 1:
        return [p]
    return [p.with_name(f"{p.stem}.{t}{p.suffix}") for t in task_names]


def task_names_of(h5_path: str | os.PathLike) -> list[str]:
    import h5py
    with h5py.File(h5_path, "r") as f:
        return json.loads(f.attrs["task_names"])
