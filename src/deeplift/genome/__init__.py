"""Genome-scale scoring: BED regions of a genome FASTA, streamed in chunks to resumable outputs.

    regions.py   BED/narrowPeak parsing, centred windows, per-region shuffle seeds
    fasta.py     genome random access (pyfaidx), N padding at chromosome ends, reverse complement
    scoring.py   one chunk: per-region references, every model of an ensemble, both strands
    store.py     progress record (one file per finished chunk) and the ChromBPNet-style HDF5 file
    run.py       the run: chunk grid, shards, resume, progress bar, assembly
    ray_runner.py  the same chunks on Ray actors (optional extra ``deeplift[ray]``)
    bigwig.py / modisco.py  exports for genome browsers and TF-MoDISco-lite

Nothing here imports pyfaidx, pyBigWig or Ray until it is used (``pip install 'deeplift[genome]'``).
The command line is ``deeplift score MODEL [MODEL ...] --genome G.fa --regions R.bed --width W
--out OUT.h5`` and ``deeplift merge``.
"""

from .regions import Region, iter_regions, region_seed

__all__ = ["Region", "iter_regions", "region_seed"]
