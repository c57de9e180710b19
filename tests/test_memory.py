"""glibc malloc settings (imgmiddleware/memory.py): they must really change where big blocks live."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# In a fresh process: malloc an 8 MB block, then ask glibc (mallinfo2) how many bytes it holds in
# mmap()ed regions. glibc's default threshold is 128 kB, so an 8 MB block is mmap()ed; with the
# threshold at 32 MB it comes from the heap, where a freed block can be reused without page faults.
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from imgmiddleware.cli import tune_worker_malloc
    from imgmiddleware.config import Config

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    tuned = tune_worker_malloc(Config(**json.loads(sys.argv[1])))
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(8 << 20)
    print(json.dumps({"tuned": tuned, "mmapped": libc.mallinfo2().hblkhd - before}))
""")


def mmapped_bytes(**settings) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(settings)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_the_configured_mmap_threshold_keeps_big_blocks_in_the_heap():
    tuned = mmapped_bytes()                       # Config's defaults: 32 MB threshold
    assert tuned == {"tuned": True, "mmapped": 0}
    untuned = mmapped_bytes(malloc_mmap_threshold=0, malloc_trim_threshold=0, malloc_arena_max=0)
    assert untuned["mmapped"] >= 8 << 20          # glibc's default: straight to mmap()
