"""Regions to score: BED / narrowPeak lines, centred fixed-width windows, per-region seeds.

A region's window is ``width`` bases centred on the narrowPeak summit (column 10, when given and
not -1) or else on the middle of the interval — the windows ChromBPNet scores. Windows may reach
past a chromosome end; :mod:`deeplift.genome.fasta` pads those positions with N (all-zero
one-hot rows). Strand (column 6) is ignored: every window is scored on the forward strand (add
``--revcomp-average`` to average with the reverse complement).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from typing import Iterator

from ..errors import InputError

_HEADER_PREFIXES = ("#", "track", "browser")


@dataclass(frozen=True)
class Region:
    """One BED line and the window scored for it (0-based, end exclusive)."""

    index: int          # position in the BED file (0 = first region line)
    chrom: str
    bed_start: int
    bed_end: int
    name: str
    start: int          # window start (may be < 0 near a chromosome start)
    end: int            # window end = start + width (may pass the chromosome end)


def _open_text(path: str | os.PathLike):
    path = os.fspath(path)
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path, "r")


def iter_regions(path: str | os.PathLike, width: int) -> Iterator[Region]:
    """The regions of a BED/narrowPeak file in file order, each with its ``width``-base window.

    Streams the file (memory does not grow with its length). Header lines (``#``, ``track``,
    ``browser``) and blank lines are skipped; a malformed line is an :class:`InputError` naming it.
    """
    if width < 1:
        raise InputError(f"width must be a positive number of bases, got {width}")
    index = 0
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(_HEADER_PREFIXES):
                continue
            fields = line.rstrip("\n\r").split("\t")
            if len(fields) < 3:
                fields = line.split()
            yield _parse(fields, path, line_no, index, width)
            index += 1


def _parse(fields: list[str], path, line_no: int, index: int, width: int) -> Region:
    where = f"{os.fspath(path)} line {line_no}"
    if len(fields) < 3:
        raise InputError(f"{where} has {len(fields)} column(s); a BED line needs chrom, start, end "
                         "(tab-separated)")
    chrom = fields[0]
    try:
        start, end = int(fields[1]), int(fields[2])
    except ValueError:
        raise InputError(f"{where}: start {fields[1]!r} and end {fields[2]!r} must be integers") from None
    if start < 0 or end <= start:
        raise InputError(f"{where}: interval {chrom}:{start}-{end} is empty or negative "
                         "(BED is 0-based, end exclusive)")
    name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else f"{chrom}:{start}-{end}"
    centre = (start + end) // 2
    if len(fields) >= 10:  # narrowPeak: summit offset from start, -1 = not called
        try:
            summit = int(fields[9])
        except ValueError:
            raise InputError(f"{where}: narrowPeak summit (column 10) {fields[9]!r} is not an integer") from None
        if summit >= 0:
            centre = start + summit
    w_start = centre - width // 2
    return Region(index, chrom, start, end, name, w_start, w_start + width)


def region_seed(chrom: str, start: int, end: int, seed: int) -> int:
    """The shuffle seed of one window: a hash of ``chrom:start-end`` and the user's seed.

    Why: references then depend on the region alone, not on which batch, chunk, shard or worker
    scored it, so resumed, sharded and Ray runs write identical numbers.
    """
    digest = hashlib.blake2b(f"{chrom}:{start}-{end}|{seed}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")
