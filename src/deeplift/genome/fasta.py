"""Random access to a genome FASTA (via pyfaidx's ``.fai`` index) as one-hot windows.

Positions a window has outside its chromosome (before 0 or past the end) are read as N, i.e.
all-zero one-hot rows, like any other letter than A, C, G, T: they contribute nothing and the
model sees padding. The window keeps its full width so every region has the model's length.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import InputError
from .regions import Region


def _pyfaidx():
    try:
        import pyfaidx
    except ImportError:
        raise InputError("reading a genome FASTA needs pyfaidx; install it with "
                         "pip install 'deeplift[genome]'") from None
    return pyfaidx


class Genome:
    """A genome FASTA opened for random access (its ``.fai`` index is made if missing)."""

    def __init__(self, path: str | os.PathLike) -> None:
        pyfaidx = _pyfaidx()
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise InputError(f"genome FASTA {self.path} does not exist")
        try:
            self._fasta = pyfaidx.Fasta(self.path, as_raw=True, sequence_always_upper=True)
        except Exception as exc:  # noqa: BLE001 - pyfaidx raises several kinds for bad files
            raise InputError(f"cannot index genome FASTA {self.path}: {exc}") from exc
        self.sizes: dict[str, int] = {name: len(rec) for name, rec in self._fasta.records.items()}

    @property
    def chroms(self) -> list[str]:
        """Chromosome names in FASTA order."""
        return list(self.sizes)

    def sequence(self, chrom: str, start: int, end: int) -> str:
        """Letters of ``[start, end)``; positions outside the chromosome are ``N``."""
        size = self.sizes.get(chrom)
        if size is None:
            raise InputError(f"chromosome {chrom!r} is not in genome {self.path} (it has "
                             f"{', '.join(self.chroms[:5])}{', ...' if len(self.sizes) > 5 else ''})")
        lo, hi = max(start, 0), min(end, size)
        body = str(self._fasta[chrom][lo:hi]) if hi > lo else ""
        return "N" * (lo - start) + body + "N" * (end - max(hi, lo))

    def one_hot(self, regions: Sequence[Region]) -> np.ndarray:
        """(C, 4, W) uint8 one-hot windows of the regions (A, C, G, T; N rows all zero)."""
        from ..genomics import one_hot_encode
        seqs = [self.sequence(r.chrom, r.start, r.end) for r in regions]
        return one_hot_encode(seqs, layout="channels_first", dtype=np.uint8, allow_unknown=True)

    def close(self) -> None:
        self._fasta.close()


def reverse_complement(x: np.ndarray) -> np.ndarray:
    """Reverse complement of (..., 4, W) one-hot arrays or scores (channels A, C, G, T)."""
    return np.ascontiguousarray(x[..., ::-1, ::-1])
