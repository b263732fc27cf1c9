"""Opt-in tuning of the C allocator for large CPU runs.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc hands blocks of more than a
few MB back to the operating system when they are freed, and the next allocation of that size
faults fresh pages in again. DeepLIFT's rules create many activation-sized temporaries (differences,
rescale factors, the positive and negative parts), so on large inputs this page-faulting can cost
more than the arithmetic: RevealCancel on a 64 × 4 × 1000 BPNet-like batch ran about twice as
fast with freed memory kept (benchmarks/bench_methods.py measures both).

:func:`keep_freed_memory` makes glibc keep freed memory for reuse. It is process-wide — the
process's resident memory then stays near its peak — so the library never calls it on its own;
the ``deeplift`` command does, since it owns its process. It does nothing where the C library is
not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, top_pad: int = 512 << 20) -> bool:
    """Serve allocations up to ``mmap_threshold`` bytes from the heap and never trim it.

    Returns True if the settings were applied (glibc on Linux), False otherwise.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
    ok &= mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    ok &= mallopt(_M_TOP_PAD, int(top_pad))
    return bool(ok)
