"""glibc malloc settings for image workers, applied with mallopt() when a worker starts.

Every request allocates and frees buffers of several MB: the source body, libjpeg's whole-image
coefficient buffer for a progressive JPEG, decoded pixels, the encoded result. glibc's defaults serve
big blocks with mmap() and trim freed heap back to the kernel, so the next request page-faults the
same memory in again (and the kernel zeroes every page first); gthread workers also give each
thread an arena of its own, each holding on to its own free memory. Measured (bench/malloc_bench.py,
docs/BENCHMARKS.md): a low mmap threshold halves progressive-JPEG throughput through page faults,
so Config pins it at glibc's own ceiling (32 MB) from the first request; two arenas lower the peak
RSS of large sources at no measurable cost.

mallopt() instead of MALLOC_* environment variables, because glibc reads those once, at the first
malloc of the process, long before a config file is read; mallopt works at any time. It is a no-op
(returning False) where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc(mmap_threshold: int = 0, trim_threshold: int = 0, arena_max: int = 0) -> bool:
    """Apply the settings that are non-zero (0 keeps glibc's default). Call it before the worker
    starts its threads: arenas already made are not merged. True when every setting took."""
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    for option, value in ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold),
                          (M_ARENA_MAX, arena_max)):
        if value:
            ok = bool(libc.mallopt(option, int(value))) and ok
    return ok
