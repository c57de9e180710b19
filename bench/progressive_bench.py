#!/usr/bin/env python3
"""Progressive-JPEG 1/8 decode: the original stream against the DC-only rewrite (issue #8).

Run ``python3 bench/progressive_bench.py [DIR ...]`` (default: bench/.cache/, where the other
benchmarks unpack Debian wallpaper packages). Every progressive JPEG found under the directories is
decoded at 1/8 scale (``IMREAD_REDUCED_COLOR_8``, as shrink-on-load does) from the original bytes
and from ``jpeg_scans.dc_only_stream``'s rewrite; the two must be pixel-identical ("exact"). Times
are the best of N runs; the rewritten column includes the rewrite itself, which is also shown
alone. A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout even when the package is not installed

from imgmiddleware.imaging.jpeg_scans import dc_only_stream  # noqa: E402

FLAGS = cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION


def frame_info(data: bytes) -> tuple[int, int, list[tuple[int, int]]] | None:
    """(width, height, sampling factors) when ``data`` is a progressive JPEG (SOF2), else None."""
    pos = 2
    if data[:2] != b"\xff\xd8":
        return None
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        code = data[pos + 1]
        if code in (0xC0, 0xC1, 0xC3, 0xC9, 0xCA, 0xCB):
            return None
        if code == 0xC2:
            height = int.from_bytes(data[pos + 5:pos + 7])
            width = int.from_bytes(data[pos + 7:pos + 9])
            factors = data[pos + 11:pos + 10 + 3 * data[pos + 9]:3]
            return width, height, [(f >> 4, f & 15) for f in factors]
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4])
    return None


def subsampling_name(sampling: list[tuple[int, int]]) -> str:
    if len(sampling) == 1:
        return "grey"
    names = {((1, 1), (1, 1)): "4:4:4", ((2, 1), (1, 1)): "4:2:2", ((2, 2), (1, 1)): "4:2:0",
             ((1, 2), (1, 1)): "4:4:0", ((4, 1), (1, 1)): "4:1:1"}
    return names.get((sampling[0], sampling[1]), " ".join(f"{h}x{v}" for h, v in sampling))


def best_ms(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def short_name(path: Path, root: Path) -> str:
    """Package and wallpaper name: plasma ships one name in many sizes, under different themes."""
    parts = path.relative_to(root).parts
    noise = {"usr", "share", "backgrounds", "wallpapers", "contents", "images", "mate"}
    return parts[0].split("-")[0] + ":" + "/".join(p for p in parts[1:] if p not in noise)


def measure(path: Path, root: Path, runs: int) -> dict | None:
    data = path.read_bytes()
    info = frame_info(data)
    if info is None:
        return None
    width, height, sampling = info
    row = {"file": short_name(path, root), "mp": width * height / 1e6,
           "subsampling": subsampling_name(sampling)}
    rewritten = dc_only_stream(data)
    if rewritten is None:
        return row
    buf = np.frombuffer(data, np.uint8)
    exact = np.array_equal(cv2.imdecode(buf, FLAGS),
                           cv2.imdecode(np.frombuffer(rewritten, np.uint8), FLAGS))
    row.update(
        exact=exact, kept=len(rewritten) / len(data),
        original=best_ms(lambda: cv2.imdecode(buf, FLAGS), runs),
        rewrite=best_ms(lambda: dc_only_stream(data), runs),
        rewritten=best_ms(
            lambda: cv2.imdecode(np.frombuffer(dc_only_stream(data), np.uint8), FLAGS), runs))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, default=[HERE / ".cache"])
    parser.add_argument("--runs", type=int, default=5, help="best of this many decodes (default 5)")
    args = parser.parse_args()

    rows, seen = [], set()
    for root in args.dirs:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg") \
                    and path.resolve() not in seen:     # plasma links its sizes to one file
                seen.add(path.resolve())
                row = measure(path, root, args.runs)
                if row is not None:
                    rows.append(row)
    if not rows:
        print("no progressive JPEGs found under", ", ".join(map(str, args.dirs)))
        return 1

    print("| file | MP | subsampling | ms original | ms rewritten (incl. rewrite) | ms rewrite "
          "| bytes kept | speedup | exact |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "exact" not in r:
            print(f"| {r['file']} | {r['mp']:.1f} | {r['subsampling']} | | | | | | fallback |")
            continue
        print(f"| {r['file']} | {r['mp']:.1f} | {r['subsampling']} | {r['original']:.1f} "
              f"| {r['rewritten']:.1f} | {r['rewrite']:.2f} | {r['kept']:.0%} "
              f"| {r['original'] / r['rewritten']:.2f}x | {'yes' if r['exact'] else 'NO'} |")
    done = [r for r in rows if "exact" in r]
    speedups = [r["original"] / r["rewritten"] for r in done]
    all_exact = all(r["exact"] for r in done)
    if speedups:
        print(f"\n{len(done)} rewritten, {len(rows) - len(done)} fallback(s); speedup median "
              f"{statistics.median(speedups):.2f}x, min {min(speedups):.2f}x, "
              f"max {max(speedups):.2f}x; all exact: {'yes' if all_exact else 'NO'}")
    return 0 if all_exact else 1


if __name__ == "__main__":
    sys.exit(main())
