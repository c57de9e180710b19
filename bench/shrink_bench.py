#!/usr/bin/env python3
"""Shrink-on-load for WebP (issue 19): a thumbnail from a reduced decode against one from a full decode.

Run ``python3 bench/shrink_bench.py`` (under a minute; ``--photo PATH`` for a JPEG of your own, else
core_bench's real >= 12 MP photo, fetched once into bench/.cache/). The photo is re-encoded as an
opaque WebP (quality 85) and, for reference, kept as its JPEG. Each row runs one process string
through the engine in this process (``process.run``, bytes already in memory: probe, plan, decode,
resize, encode) with ``shrink_on_load`` on and off, in one run, and gives the median time of
``--iterations`` calls, the reduced decode the planner chose, and the PSNR and SSIM of the two
outputs (same size, by construction: the planner keeps the geometry of a full decode). Margins 1.0
and 2.0 (``shrink_on_load_margin``) are both shown. Then the decoders alone: OpenCV's full WebP decode
and its reduced ones (1/2, 1/4, 1/8), the sizes they give checked against ``decode.reduced_size``.

A measurement, not a test: no time asserts.
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
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from imgmiddleware import Config  # noqa: E402
from imgmiddleware.imaging.decode import REDUCED_FLAGS, reduced_size  # noqa: E402
from imgmiddleware.imaging.probe import probe  # noqa: E402
from imgmiddleware.process import parse, run  # noqa: E402
from imgmiddleware.process.plan import make_plan  # noqa: E402

PROCESSES = ("image/resize,w_200", "image/resize,w_512", "image/resize,m_fill,w_300,h_300",
             "image/resize,w_1200")


def median_ms(call, iterations: int) -> float:
    call()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the grey images (Gaussian window 11, sigma 1.5, Wang et al.'s constants)."""
    a = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    b = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return float(np.mean(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                         / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", help="a JPEG of your own (default: core_bench's photo)")
    parser.add_argument("--iterations", type=int, default=7)
    args = parser.parse_args(argv)
    if args.photo:
        path = Path(args.photo)
    else:
        from core_bench import fetch_photo
        path = fetch_photo().path
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    sources = {"webp": cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 85])[1].tobytes(),
               "jpg": path.read_bytes()}
    height, width = pixels.shape[:2]
    print(f"\n{path.name}: {width}x{height} ({width * height / 1e6:.1f} MP); WebP q85 "
          f"{len(sources['webp']) / 1e6:.1f} MB, JPEG {len(sources['jpg']) / 1e6:.1f} MB; "
          f"median of {args.iterations}\n")
    print("| source | process | margin | reduce | full decode ms | shrink-on-load ms | speed-up | PSNR dB | SSIM |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for fmt, data in sources.items():
        info = probe(data)
        for margin in (1.0, 2.0):
            on = Config(shrink_on_load_margin=margin, jpeg_quality=90, webp_quality=90)
            off = on.replace(shrink_on_load=False)
            for process in PROCESSES:
                text = process + "/format,png"
                reduce = make_plan(parse(text, on), info, len(data), on).reduce
                slow = median_ms(lambda: run(parse(text, off), data, off), args.iterations)
                fast = median_ms(lambda: run(parse(text, on), data, on), args.iterations)
                a = cv2.imdecode(np.frombuffer(run(parse(text, off), data, off).body, np.uint8), cv2.IMREAD_COLOR)
                b = cv2.imdecode(np.frombuffer(run(parse(text, on), data, on).body, np.uint8), cv2.IMREAD_COLOR)
                assert a.shape == b.shape, (a.shape, b.shape)
                quality = (f"{cv2.PSNR(a, b):.1f} | {ssim(a, b):.4f}" if reduce > 1 else "(same) | 1")
                print(f"| {fmt} | {process} | {margin:g} | 1/{reduce} | {slow:.1f} | {fast:.1f} | "
                      f"{slow / fast:.2f}x | {quality} |")
    print("\nOpenCV's WebP decoder alone:\n")
    print("| decode | size | checked against reduced_size | ms |")
    print("|---|---|---|---:|")
    buf = np.frombuffer(sources["webp"], np.uint8)
    full_ms = median_ms(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR), args.iterations)
    print(f"| full | {width}x{height} | - | {full_ms:.1f} |")
    for factor in (2, 4, 8):
        img = cv2.imdecode(buf, REDUCED_FLAGS[factor])
        expected = reduced_size(width, height, factor, "webp")
        ms = median_ms(lambda: cv2.imdecode(buf, REDUCED_FLAGS[factor]), args.iterations)
        print(f"| 1/{factor} | {img.shape[1]}x{img.shape[0]} | "
              f"{'yes' if (img.shape[1], img.shape[0]) == expected else 'NO: ' + str(expected)} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
