#!/usr/bin/env python3
"""In-process thumbnailers for bench/peers.py: the bare OpenCV floor and pyvips thumbnail_buffer.

    python inproc.py ENGINE SIZE DURATION PROCS OUTDIR FILE...

ENGINE is ``floor`` (this interpreter needs cv2 and numpy) or ``vips`` (needs pyvips; run it with
bench/.venv-bench/bin/python). Each of PROCS processes loops over the files, bytes already in memory,
for DURATION seconds; one JSON line on stdout: {"ops": total/s, "p50": ms, "p99": ms}. One output per
file is written to OUTDIR/<index>.<ext> first (for sizes and quality). Only the standard library
besides the engine.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import sys
import time

JPEG_QUALITY = 90
WEBP_QUALITY = 90
PNG_COMPRESSION = 6
# The floor writes what imgmiddleware writes (its defaults: optimized Huffman tables, zlib's Z_RLE,
# a reduced decode only when it covers the target twice, sizes rounded half up), so that the floor
# share compares the same work: the output bytes are identical.
SHRINK_MARGIN = 2.0


def _ext(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".jpg"


def floor_fn(size: int):
    """Reduced decode that still covers the target (JPEG), INTER_AREA, encode in the source format."""
    import cv2
    import numpy as np
    cv2.setNumThreads(1)

    def run(data: bytes) -> bytes:
        ext = _ext(data)
        arr = np.frombuffer(data, np.uint8)
        flag = cv2.IMREAD_COLOR
        if ext == ".jpg":
            # the header gives the size cheaply; cv2 has no header-only call, so parse SOF.
            w, h = _jpeg_size(data)
            tw, th = _fit(w, h, size)
            for f, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                               (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if -(-w // f) >= SHRINK_MARGIN * tw and -(-h // f) >= SHRINK_MARGIN * th:
                    flag = reduced
                    break
        img = cv2.imdecode(arr, flag | cv2.IMREAD_IGNORE_ORIENTATION)
        if ext != ".jpg":
            h, w = img.shape[:2]
            tw, th = _fit(w, h, size)
        if (img.shape[1], img.shape[0]) != (tw, th):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1],
                  ".webp": [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY],
                  ".png": [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION,
                           cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]}[ext]
        ok, buf = cv2.imencode(ext, img, params)
        assert ok
        return buf.tobytes()
    return run


def _fit(w: int, h: int, size: int) -> tuple[int, int]:
    """The lfit box of ``size`` x ``size``, never enlarging, sides rounded half up (as OSS)."""
    scale = min(size / w, size / h, 1.0)
    return max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ValueError("no SOF marker")


def vips_fn(size: int):
    import pyvips
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)

    def run(data: bytes) -> bytes:
        ext = _ext(data)
        img = pyvips.Image.thumbnail_buffer(data, size, height=size, size="down")
        opts = {".jpg": "[Q=%d]" % JPEG_QUALITY, ".webp": "[Q=%d]" % WEBP_QUALITY,
                ".png": "[compression=%d]" % PNG_COMPRESSION}[ext]
        return img.write_to_buffer(ext + opts)
    return run


def _worker(engine, size, files, duration, barrier, queue, offset):
    fn = floor_fn(size) if engine == "floor" else vips_fn(size)
    blobs = [open(f, "rb").read() for f in files]
    fn(blobs[0])                                     # warm
    barrier.wait()                                   # every process ready: start together
    times, i = [], offset
    end = time.time() + duration
    while time.time() < end:
        t0 = time.perf_counter()
        fn(blobs[i % len(blobs)])
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
    queue.put(times)


def main(argv: list[str]) -> int:
    engine, size, duration, procs, outdir, *files = argv
    size, duration, procs = int(size), float(duration), int(procs)
    fn = floor_fn(size) if engine == "floor" else vips_fn(size)
    os.makedirs(outdir, exist_ok=True)
    for n, f in enumerate(files):
        data = open(f, "rb").read()
        out = fn(data)
        with open(os.path.join(outdir, f"{n}{_ext(out)}"), "wb") as fh:
            fh.write(out)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(procs)
    workers = [ctx.Process(target=_worker, args=(engine, size, files, duration, barrier, queue,
                                                 k * max(1, len(files) // procs)))
               for k in range(procs)]
    for w in workers:
        w.start()
    times = []
    for _ in workers:
        times += queue.get()
    for w in workers:
        w.join()
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")  # noqa: E731
    print(json.dumps({"ops": len(times) / duration, "p50": p(0.5), "p99": p(0.99),
                      "n": len(times), "mean": statistics.fmean(times) if times else 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
