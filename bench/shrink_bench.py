#!/usr/bin/env python3
"""Shrink-on-load for WebP (issue 19): a thumbnail from a reduced decode against one from a full decode.

Run ``python3 bench/shrink_bench.py`` (about three minutes; ``--photo PATH`` for a JPEG of your own, else
core_bench's real >= 12 MP photo, fetched once into bench/.cache/). The photo is re-encoded as an
opaque WebP (quality 85) and, for reference, kept as its JPEG. Each row runs one process string
through the engine in this process (``process.run``, bytes already in memory: probe, plan, decode,
resize, encode) with ``shrink_on_load`` on and off, in one run, and gives the median time of
``--iterations`` calls, the reduced decode the planner chose, and the PSNR and SSIM of the two
outputs (same size, by construction: the planner keeps the geometry of a full decode). Margins 1.0
and 2.0 (``shrink_on_load_margin``) are both shown. Then the decoders alone: OpenCV's full WebP decode
and its reduced ones (1/2, 1/4, 1/8), the sizes they give checked against ``decode.reduced_size``.

Last, a separate table: libwebp's own scaled decode (``WebPDecoderOptions.use_scaling``, what libvips
uses) against OpenCV's reduced WebP decode (a full decode, then ``resize`` INTER_LINEAR_EXACT), on the
WebP files of the peers corpus (bench/out/peers/root/corpus/, ``--corpus``; without it, the q85 WebP
above). libwebp is imaging/webp_scaled.py's (ctypes, on the copy Pillow's wheel ships), which the
engine uses at 1/4 and 1/8; here at every factor. Per file and factor 1, 2, 4, 8: the median time of the two
decoders (interleaved in each repetition, so background load hits both alike), the mean absolute
difference of their pixels, and the peak memory each holds beyond the input bytes (VmHWM in a fresh
subprocess per decoder and factor, the high-water mark reset just before the decode); then whole
fit-200 / fit-512 thumbnails (reduced decode at the factor margin 2 picks, then INTER_AREA), both
ways, with the SSIM between them. ``--libwebp-only`` runs just that table (about 1.5 minutes;
``--iterations 3`` for a quicker look).

A measurement, not a test: no time asserts.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from imgmiddleware import Config  # noqa: E402
from imgmiddleware.imaging import webp_scaled  # noqa: E402
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


# --- libwebp's own scaled decode: imaging/webp_scaled.py's, at every factor for the comparison -------

DEFAULT_CORPUS = HERE / "out" / "peers" / "root" / "corpus"


def libwebp() -> ctypes.CDLL:
    """The libwebp imaging/webp_scaled.py decodes with (Pillow's wheel copy, else the system's)."""
    lib = webp_scaled.library()
    if lib is None:
        raise RuntimeError("no usable libwebp (neither Pillow's wheel copy nor the system's)")
    return lib


def libwebp_decode(data: bytes, factor: int = 1) -> np.ndarray:
    """BGR pixels at (w // factor, h // factor) by libwebp (its rescaler, an area average, shrinks the
    rows as they are decoded): what decode.py uses at 1/4 and 1/8, here at every factor."""
    return webp_scaled.decode_with(libwebp(), data, factor)


def opencv_decode(data: bytes, factor: int) -> np.ndarray:
    """OpenCV's WebP decode (the engine's at 1/1 and 1/2): for factor > 1 it decodes the whole image,
    then resizes it with INTER_LINEAR_EXACT (a 2-tap filter, so 1/4 and 1/8 skip pixels)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION)


DECODERS = {"opencv": opencv_decode, "libwebp": libwebp_decode}


def interleaved_ms(calls: list, iterations: int) -> list[float]:
    """Median ms of each call. Every repetition runs all of them, the order reversed every other
    time, so a burst of background load lands on each alike."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for rep in range(iterations):
        for k in (reversed(range(len(calls))) if rep % 2 else range(len(calls))):
            started = time.perf_counter()
            calls[k]()
            times[k].append((time.perf_counter() - started) * 1000)
    return [statistics.median(t) for t in times]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_child(decoder: str, factor: int, file: Path) -> float:
    """In a fresh process: MB the resident set peaks above what it was before one decode of ``file``
    (input bytes already read). tracemalloc would miss the C allocations, so /proc: VmHWM is reset
    to VmRSS (clear_refs 5) after a warm-up decode of a small image has mapped the code."""
    data, decode_once = file.read_bytes(), DECODERS[decoder]
    decode_once(cv2.imencode(".webp", np.full((64, 64, 3), 128, np.uint8))[1].tobytes(), factor)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = _status_kb("VmRSS")
    img = decode_once(data, factor)
    peak = _status_kb("VmHWM")
    del img
    return (peak - before) / 1024


def peak_mb(decoder: str, factor: int, file: Path) -> float:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--peak-child", decoder,
                           str(factor), str(file)], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def libwebp_table(files: list[Path], iterations: int) -> None:
    """OpenCV's reduced WebP decode against libwebp's scaled one: decoders alone, then thumbnails."""
    lib = libwebp()
    lib.WebPGetDecoderVersion.restype = ctypes.c_int
    version = lib.WebPGetDecoderVersion()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{'=' * 100}\nlibwebp scaled decode (imaging/webp_scaled.py) against OpenCV's reduced decode\n{'=' * 100}\n")
    print(f"libwebp {version >> 16}.{version >> 8 & 255}.{version & 255} ({Path(lib._name).name}), "
          f"use_threads 0, output MODE_BGR into numpy; OpenCV {cv2.__version__} (decode.decode); "
          f"{len(files)} WebP files; median of {iterations} interleaved repetitions; peak = VmHWM "
          f"above VmRSS in a fresh process per decoder and factor; load average before: {load}\n")
    print("| file | source | factor | output | OpenCV ms | libwebp ms | libwebp/OpenCV | mean abs diff "
          "| OpenCV peak MB | libwebp peak MB | output MB |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for path in files:
        data = path.read_bytes()
        for factor in (1, 2, 4, 8):
            a, b = opencv_decode(data, factor), libwebp_decode(data, factor)
            assert a.shape == b.shape, (path.name, factor, a.shape, b.shape)
            diff = float(np.abs(a.astype(np.int16) - b).mean())
            cv_ms, lw_ms = interleaved_ms([lambda: opencv_decode(data, factor),
                                           lambda: libwebp_decode(data, factor)], iterations)
            cv_mb, lw_mb = peak_mb("opencv", factor, path), peak_mb("libwebp", factor, path)
            info = probe(data)
            rows.append((factor, cv_ms, lw_ms, diff, cv_mb, lw_mb))
            print(f"| {path.stem[:24]} | {info.width}x{info.height} | 1/{factor} | "
                  f"{a.shape[1]}x{a.shape[0]} | {cv_ms:.1f} | {lw_ms:.1f} | {lw_ms / cv_ms:.2f} | "
                  f"{diff:.2f} | {cv_mb:.1f} | {lw_mb:.1f} | {a.nbytes / 2**20:.1f} |")
    print("\nPer factor, over the files:\n")
    print("| factor | OpenCV ms (sum) | libwebp ms (sum) | libwebp/OpenCV | per-file range | mean abs diff "
          "| OpenCV peak MB (sum) | libwebp peak MB (sum) | libwebp/OpenCV peak |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for factor in (1, 2, 4, 8):
        sel = [r for r in rows if r[0] == factor]
        cv_ms, lw_ms = sum(r[1] for r in sel), sum(r[2] for r in sel)
        ratios = [r[2] / r[1] for r in sel]
        cv_mb, lw_mb = sum(r[4] for r in sel), sum(r[5] for r in sel)
        print(f"| 1/{factor} | {cv_ms:.0f} | {lw_ms:.0f} | {lw_ms / cv_ms:.2f} | {min(ratios):.2f}-"
              f"{max(ratios):.2f} | {statistics.mean(r[3] for r in sel):.2f} | {cv_mb:.0f} | {lw_mb:.0f} | "
              f"{lw_mb / cv_mb:.2f} |")

    print("\nWhole thumbnails: reduced decode at the factor margin 2 picks, then cv2.resize INTER_AREA to "
          "the fit (m_lfit,w_N,h_N); SSIM/PSNR between the two paths' thumbnails, and each path's SSIM "
          "against the full decode resized the same way:\n")
    print("| file | fit | reduce | thumbnail | OpenCV path ms | libwebp path ms | libwebp/OpenCV | SSIM "
          "| PSNR dB | SSIM vs full: OpenCV | SSIM vs full: libwebp |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    config = Config(shrink_on_load_margin=2.0)
    totals = {}
    for path in files:
        data = path.read_bytes()
        info = probe(data)
        full = opencv_decode(data, 1)
        for fit in (200, 512):
            process = parse(f"image/resize,m_lfit,w_{fit},h_{fit}", config)
            plan = make_plan(process, info, len(data), config)
            step, factor = plan.steps[0], plan.reduce
            size = step.spec.resample_target(*plan.size, step.args, plan.context)

            def thumb(decoder, factor=factor, size=size):
                return cv2.resize(decoder(data, factor), size, interpolation=cv2.INTER_AREA)

            a, b = thumb(opencv_decode), thumb(libwebp_decode)
            ref = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
            cv_ms, lw_ms = interleaved_ms([lambda: thumb(opencv_decode), lambda: thumb(libwebp_decode)],
                                          iterations)
            t = totals.setdefault(fit, [0.0, 0.0, []])
            t[0] += cv_ms
            t[1] += lw_ms
            t[2].append(ssim(a, b))
            psnr = cv2.PSNR(a, b)
            print(f"| {path.stem[:24]} | {fit} | 1/{factor} | {size[0]}x{size[1]} | {cv_ms:.1f} | "
                  f"{lw_ms:.1f} | {lw_ms / cv_ms:.2f} | {t[2][-1]:.4f} | "
                  f"{'inf' if psnr >= 100 else f'{psnr:.1f}'} | "
                  f"{ssim(a, ref):.4f} | {ssim(b, ref):.4f} |")
    for fit, (cv_ms, lw_ms, ssims) in totals.items():
        print(f"| **all** | {fit} | | | {cv_ms:.0f} | {lw_ms:.0f} | {lw_ms / cv_ms:.2f} | "
              f"{min(ssims):.4f} (min) | | | |")
    print(f"\nload average after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs): timings on a shared machine, read the ratios, not the ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", help="a JPEG of your own (default: core_bench's photo)")
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS),
                        help="folder whose *.webp the libwebp table uses (default: the peers corpus)")
    parser.add_argument("--libwebp-only", action="store_true",
                        help="run only the libwebp scaled-decode table")
    parser.add_argument("--peak-child", nargs=3, metavar=("DECODER", "FACTOR", "FILE"),
                        help=argparse.SUPPRESS)   # internal: one decode's peak memory, in a fresh process
    args = parser.parse_args(argv)
    if args.peak_child:
        decoder, factor, file = args.peak_child
        print(peak_child(decoder, int(factor), Path(file)))
        return 0
    corpus = sorted(Path(args.corpus).glob("*.webp")) if Path(args.corpus).is_dir() else []
    if args.libwebp_only and corpus:
        libwebp_table(corpus, args.iterations)
        return 0
    if args.photo:
        path = Path(args.photo)
    else:
        from core_bench import fetch_photo
        path = fetch_photo().path
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    sources = {"webp": cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 85])[1].tobytes(),
               "jpg": path.read_bytes()}
    if args.libwebp_only or not corpus:      # no corpus: the q85 WebP of the photo stands in for it
        with tempfile.TemporaryDirectory() as tmp:
            fallback = Path(tmp) / f"{path.stem}_q85.webp"
            fallback.write_bytes(sources["webp"])
            if args.libwebp_only:
                libwebp_table([fallback], args.iterations)
                return 0
            return photo_tables(path, pixels, sources, args.iterations, [fallback])
    return photo_tables(path, pixels, sources, args.iterations, corpus)


def photo_tables(path: Path, pixels: np.ndarray, sources: dict, iterations: int, webps: list[Path]
                 ) -> int:
    """The engine with shrink-on-load on and off, OpenCV's decoder alone, then the libwebp table."""
    height, width = pixels.shape[:2]
    print(f"\n{path.name}: {width}x{height} ({width * height / 1e6:.1f} MP); WebP q85 "
          f"{len(sources['webp']) / 1e6:.1f} MB, JPEG {len(sources['jpg']) / 1e6:.1f} MB; "
          f"median of {iterations}\n")
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
                slow = median_ms(lambda: run(parse(text, off), data, off), iterations)
                fast = median_ms(lambda: run(parse(text, on), data, on), iterations)
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
    full_ms = median_ms(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR), iterations)
    print(f"| full | {width}x{height} | - | {full_ms:.1f} |")
    for factor in (2, 4, 8):
        img = cv2.imdecode(buf, REDUCED_FLAGS[factor])
        expected = reduced_size(width, height, factor, "webp")
        ms = median_ms(lambda: cv2.imdecode(buf, REDUCED_FLAGS[factor]), iterations)
        print(f"| 1/{factor} | {img.shape[1]}x{img.shape[0]} | "
              f"{'yes' if (img.shape[1], img.shape[0]) == expected else 'NO: ' + str(expected)} | {ms:.1f} |")
    libwebp_table(webps, iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
