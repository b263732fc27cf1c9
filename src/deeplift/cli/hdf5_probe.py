"""Open an HDF5 file from someone else in a child process first.

Some damaged HDF5 files make the HDF5 C library loop forever (e.g. a corrupted global heap behind
a string attribute) or crash the process; no Python exception can be raised from inside the C
call, so an in-process read would hang ``deeplift`` or kill it with a segfault. The command line
therefore walks such a file (every attribute, every dataset's shape, and the data up to a budget)
in a short-lived child process with a time limit, and refuses the file when the child hangs or
crashes. Errors the library reports normally are left to the real reader, which words them better.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .common import CliError

#: seconds the child may take to walk one file
TIMEOUT = 60.0
#: bytes of dataset values the child reads (metadata and attributes are always read in full)
DATA_BUDGET = 256 << 20

_WALK = """
import io, sys
import h5py
source, budget = sys.argv[1], int(sys.argv[2])
f = h5py.File(io.BytesIO(sys.stdin.buffer.read()) if source == "-" else source, "r")
def visit(name, obj):
    global budget
    for key in obj.attrs.keys():
        obj.attrs[key]
    if isinstance(obj, h5py.Dataset):
        nbytes = obj.size * obj.dtype.itemsize
        if nbytes <= budget:
            budget -= nbytes
            obj[()]
visit("/", f)
f.visititems(visit)
"""


def probe_hdf5(source: str | Path | bytes, what: str, timeout: float | None = None) -> None:
    """Refuse ``source`` (a path, or the bytes of an HDF5 file) if reading it hangs or crashes."""
    limit = TIMEOUT if timeout is None else timeout
    is_bytes = isinstance(source, (bytes, bytearray))
    argv = [sys.executable, "-I", "-c", _WALK, "-" if is_bytes else str(source), str(DATA_BUDGET)]
    try:
        done = subprocess.run(argv, input=bytes(source) if is_bytes else b"", capture_output=True,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        raise CliError(f"{what}: the HDF5 library did not finish reading it within {limit:.0f} s "
                       "(a damaged file makes it loop)", "give an undamaged file") from None
    except OSError:
        return  # no child process possible here: fall back to reading in-process
    if done.returncode < 0:
        raise CliError(f"{what}: the HDF5 library crashed reading it (signal {-done.returncode}); "
                       "the file is damaged", "give an undamaged file")
