#!/usr/bin/env python3
"""Encode benchmark: WebP, AVIF, JPEG and PNG encode time, size and PSNR on a real photo.

Run ``python3 bench/encode_bench.py`` (about a minute; ``--help`` for the options, ``--photo PATH``
for your own JPEG). It uses the same real >= 12 MP photograph as bench/core_bench.py (its
``fetch_photo``: the first run downloads a Debian wallpaper package into bench/.cache/).

The photo is decoded once; every row then times ``imgmiddleware.imaging.encode.encode`` alone on
those pixels, with ``EncodeOptions`` built from ``Config()`` defaults as the middleware builds them
(WebP quality ``webp_quality``, AVIF quality ``avif_quality`` at speed ``avif_speed``, JPEG
``jpeg_quality`` with ``jpeg_optimize``, PNG ``png_compression`` with ``png_strategy``), plus a small
sweep around them: AVIF speed 6/8/10 at quality 80, WebP quality 75/90, JPEG without optimized
Huffman tables and at quality 90, PNG with zlib's default strategy (what OpenCV writes when given a
level alone). Each is
run on the full-size photo and on the photo resized to 1024 px wide (cv2.resize INTER_AREA, done
once, untimed). Reported: the median encode time over N runs (the settings take turns within each
round, so drift hits them all alike), the output size, and the PSNR of ``cv2.imdecode`` of the
output against the pixels that went in. A measurement, not a test: no time asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # core_bench, whatever the working directory
sys.path.insert(0, str(HERE.parent))   # run from a checkout even when the package is not installed

from core_bench import MIN_PIXELS, Photo, cpu_model, fetch_photo  # noqa: E402
from imgmiddleware import Config  # noqa: E402
from imgmiddleware.imaging.encode import EncodeOptions, encode  # noqa: E402
from imgmiddleware.imaging.probe import probe  # noqa: E402

THUMB_WIDTH = 1024


@dataclass
class Case:
    opts: EncodeOptions
    default: bool

    @property
    def settings(self) -> str:
        o = self.opts
        if o.format == "png":
            text = f"level {o.png_compression} {o.png_strategy}"
        else:
            text = f"q{o.quality}" + (f" speed {o.avif_speed}" if o.format == "avif" else "")
            text += (" optimized" if o.jpeg_optimize else " plain") if o.format == "jpg" else ""
        return text + (" (default)" if self.default else "")


def cases(config: Config) -> list[Case]:
    """The middleware's defaults (as process/plan.py builds them), then the sweep around them."""
    base = EncodeOptions(format="jpg", quality=config.jpeg_quality, jpeg_optimize=config.jpeg_optimize,
                         png_compression=config.png_compression, png_strategy=config.png_strategy,
                         avif_speed=config.avif_speed)
    webp = replace(base, format="webp", quality=config.webp_quality)
    avif = replace(base, format="avif", quality=config.avif_quality)
    png = replace(base, format="png")
    defaults = (webp, avif, base, png)
    wanted = [replace(webp, quality=q) for q in (90, 75)]
    wanted += [replace(avif, quality=80, avif_speed=s) for s in (6, 8, 10)]
    wanted += [replace(base, jpeg_optimize=False), replace(base, quality=90, jpeg_optimize=False)]
    wanted.append(replace(png, png_strategy="default"))
    out = [Case(o, True) for o in defaults]
    out += [Case(o, False) for o in wanted if o not in defaults]
    order = {"webp": 0, "avif": 1, "jpg": 2, "png": 3}
    return sorted(out, key=lambda c: (order[c.opts.format], -c.opts.quality, c.opts.avif_speed,
                                      not c.opts.jpeg_optimize, c.opts.png_strategy))


@dataclass
class Row:
    case: Case
    size: tuple[int, int]
    times: list[float]
    out_bytes: int
    psnr: float


def measure(img: np.ndarray, todo: list[Case], iterations: int, warmup: int) -> list[Row]:
    """Round-robin over the cases: each round encodes every case once."""
    times: list[list[float]] = [[] for _ in todo]
    last: list[bytes] = [b""] * len(todo)
    for round_ in range(warmup + iterations):
        for i, case in enumerate(todo):
            t0 = time.perf_counter()
            body = encode(img, case.opts)
            t1 = time.perf_counter()
            last[i] = body
            if round_ >= warmup:
                times[i].append((t1 - t0) * 1000)
    rows = []
    for case, ts, body in zip(todo, times, last):
        decoded = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None or decoded.shape != img.shape:
            raise RuntimeError(f"{case.opts.format} {case.settings}: decoding the output failed "
                               f"({None if decoded is None else decoded.shape} vs {img.shape})")
        rows.append(Row(case, (img.shape[1], img.shape[0]), ts, len(body), cv2.PSNR(img, decoded)))
    return rows


def codec_versions() -> str:
    wanted = ("ZLib:", "JPEG:", "WEBP:", "AVIF:", "PNG:")
    found = [line.strip() for line in cv2.getBuildInformation().splitlines()
             if line.strip().startswith(wanted)]
    return "; ".join(" ".join(line.split()) for line in found) or "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photo", help="a JPEG to use instead of the Debian wallpaper photo")
    ap.add_argument("--iterations", "-n", type=int, default=5,
                    help="timed encodes per setting on the full-size photo (default 5)")
    ap.add_argument("--thumb-iterations", type=int, default=15,
                    help=f"timed encodes per setting at {THUMB_WIDTH} px wide (default 15)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="cv2.setNumThreads (default 1, as core_bench: one request per worker thread; "
                         "0 leaves OpenCV's default)")
    args = ap.parse_args(argv)

    default_threads = cv2.getNumThreads()
    if args.threads:
        cv2.setNumThreads(args.threads)
    photo = Photo(Path(args.photo).resolve(), "--photo") if args.photo else fetch_photo()
    data = photo.path.read_bytes()
    info = probe(data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    height, width = img.shape[:2]
    thumb_size = (THUMB_WIDTH, max(1, int(height * THUMB_WIDTH / width + 0.5)))
    thumb = cv2.resize(img, thumb_size, interpolation=cv2.INTER_AREA)

    print()
    print(f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}"
          f" usable), {cpu_model()}, {platform.system()} {platform.machine()}")
    print(f"python {platform.python_version()}, cv2 {cv2.__version__}, numpy {np.__version__}")
    print(f"codecs in cv2: {codec_versions()}")
    print(f"cv2.getNumThreads(): {default_threads} by default, {cv2.getNumThreads()} for this run "
          f"(cv2.setNumThreads({args.threads}))" if args.threads else
          f"cv2.getNumThreads(): {default_threads} (OpenCV's default)")
    print("  (OpenCV 5 sets no thread count on libwebp or libavif: a still WebP/AVIF encodes on one thread"
          " whatever setNumThreads says)")
    print(f"photo: {photo.path}")
    print(f"  from: {photo.source}")
    print(f"  {width}x{height} = {width * height / 1e6:.1f} MP, {len(data) / 1e6:.2f} MB, {info.format}, "
          f"{'progressive' if info.progressive else 'baseline'}, estimated quality {info.jpeg_quality}, "
          f"EXIF orientation {info.orientation} (ignored here)")
    if width * height < MIN_PIXELS:
        print(f"  note: under {MIN_PIXELS / 1e6:g} MP (used as given, not upscaled)")
    config = Config()
    print(f"defaults from Config(): webp_quality {config.webp_quality}, avif_quality {config.avif_quality}, "
          f"avif_speed {config.avif_speed}, jpeg_quality {config.jpeg_quality}, jpeg_optimize "
          f"{config.jpeg_optimize}, png_compression {config.png_compression}, png_strategy {config.png_strategy}")

    todo = cases(config)
    rows: list[Row] = []
    print()
    for label, pixels, n in (("full size", img, args.iterations),
                             (f"{thumb_size[0]}x{thumb_size[1]}", thumb, args.thumb_iterations)):
        print(f"  measuring {label}: {len(todo)} settings x ({args.warmup} warm-up + {n}) ...",
              end="", flush=True)
        t0 = time.perf_counter()
        rows += measure(pixels, todo, n, args.warmup)
        print(f" {time.perf_counter() - t0:.0f} s", flush=True)

    print()
    header = (f"{'format':6} | {'settings':24} | {'size (px)':>9} | {'n':>2} | {'encode ms p50':>13} |"
              f" {'min':>7} | {'output KB':>9} | {'PSNR dB':>7}")
    print(header)
    print("-" * len(header))
    previous = None
    for r in rows:
        if previous is not None and r.size != previous:
            print("-" * len(header))
        previous = r.size
        print(f"{r.case.opts.format:6} | {r.case.settings:24} | {r.size[0]:>4}x{r.size[1]:<4} |"
              f" {len(r.times):2d} | {float(np.median(r.times)):13.1f} | {min(r.times):7.1f} |"
              f" {r.out_bytes / 1024:9.1f} | {r.psnr:7.2f}")
    print()
    print("encode ms: wall clock of imgmiddleware.imaging.encode.encode alone (pixels already decoded);")
    print("p50 = median of n, min = fastest. PSNR: cv2.PSNR of cv2.imdecode(output) against the encoder's")
    print("input (BGR, 8 bit, all channels). (default) = EncodeOptions from Config() defaults.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
