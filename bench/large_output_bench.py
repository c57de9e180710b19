#!/usr/bin/env python3
"""Large outputs (issue 19): WebP encoder effort on a 27 MP photo, against thumbor's encode; largest AVIF.

Run ``python3 bench/large_output_bench.py`` (about four minutes on 2 cores; ``--help`` for the options). The
source is built, never downloaded: four photographs side by side, 2 x 2, each cut to 4:3 and resized
(INTER_AREA) to a quarter of a 6000x4500 canvas (27 MP): the Debian wallpapers bench/core_bench.py
keeps in bench/.cache/ when a benchmark fetched them before, else the photos of tests/fixtures,
upscaled (INTER_CUBIC) with Gaussian noise for the grain an upscale lacks (``--photos`` for your own).

Rows, each timed on the same pixels (BGR, 8 bit), best of ``--rounds`` rounds (the settings take
turns within a round, so load from other processes hits them alike; a round past ``--max-seconds``
is the last):

- OpenCV: ``cv2.imencode(".webp", img, [IMWRITE_WEBP_QUALITY, q])``, what the middleware wrote for
  every still WebP before issue 19: libwebp's simple API, method 4, one thread;
- Pillow method M: ``Image.save(buf, "WEBP", quality=q, method=M)``, the BGR -> RGBA conversion
  included (what imgmiddleware.imaging.encode does for it). Pillow's still WebP encoder takes
  quality, method, lossless, alpha_quality, exact and the metadata chunks; it has no thread option
  (it leaves libwebp's thread_level at 0), so every row is one thread;
- thumbor's encode: what thumbor's PIL engine does for a WebP output (engines/pil.py, ``read``):
  ``image.save(buf, "WEBP", quality=q)`` on the RGB image it holds, so Pillow's defaults (method 4);
  the conversion is not timed, thumbor keeps a PIL image;
- imgmiddleware: ``imaging.encode.encode`` with the options ``Config()`` gives (its effort rule; a
  method other than 4 through imagecodecs' libwebp, red and blue swapped in place);
- AVIF: ``encode`` at ``avif_quality`` and ``avif_speed`` on the largest output OSS allows for AVIF
  (4096 x 2304: the canvas's 16:9 middle, resized). thumbor's PIL engine writes no AVIF.

The same WebP rows run on the 27 MP photo with grain added (``--grain``: a high-ISO camera's noise,
which libwebp spends far more bits and time on) and on the 4096 x 2304 image (where a size threshold
would sit). Quality:
SSIM of the decoded output's luma against the source's (11 x 11 Gaussian window, sigma 1.5; computed
in bands to bound memory) and PSNR over the BGR channels. A measurement, not a test: no time asserts.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, features

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout even when the package is not installed

from imgmiddleware import Config  # noqa: E402
from imgmiddleware.imaging.encode import EncodeOptions, encode  # noqa: E402

WALLPAPERS = HERE / ".cache" / "lomiri-wallpapers-16.04" / "usr" / "share" / "backgrounds"
WALLPAPER_NAMES = ("Dragonfly_by_Bolly.jpg", "seeding_by_Clements_Engelhardt.jpg",
                   "sunset_by_Aitzol_Berasategi.jpg", "Bridge_by_Sander_Klootwijk.jpg")
FIXTURES = HERE.parent / "tests" / "fixtures"
FIXTURE_NAMES = ("example.jpg", "f.jpg", "nodejs-1024x768.png", "example.gif")
CANVAS = (6000, 4500)                  # 27.0 MP, 4:3
AVIF_MAX = (4096, 2304)                # OSS's AVIF output limit (process/limits.py)
OPENCV = "OpenCV imencode (before)"
THUMBOR = "thumbor's encode (Pillow defaults)"


def photos(paths: list[str]) -> tuple[list[Path], str, float]:
    """The photos to stitch, where they come from, and the noise to add (0 for real photos)."""
    if paths:
        return [Path(p) for p in paths], "--photos", 0.0
    cached = [WALLPAPERS / name for name in WALLPAPER_NAMES]
    if all(p.is_file() for p in cached):
        return cached, "Debian lomiri-wallpapers-16.04 (bench/.cache/, as core_bench.py fetched it)", 0.0
    return [FIXTURES / name for name in FIXTURE_NAMES], "tests/fixtures, upscaled, noise sigma 3", 3.0


def cut(img: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """The middle of ``img`` at the aspect of ``size``, resized to it."""
    height, width = img.shape[:2]
    want_w, want_h = size
    if width * want_h > height * want_w:
        w = height * want_w // want_h
        img = img[:, (width - w) // 2:(width - w) // 2 + w]
    else:
        h = width * want_h // want_w
        img = img[(height - h) // 2:(height - h) // 2 + h]
    return cv2.resize(img, size, interpolation=interpolation)


def build_source(paths: list[Path], noise: float, seed: int = 19) -> np.ndarray:
    tile = (CANVAS[0] // 2, CANVAS[1] // 2)
    tiles = []
    for i in range(4):
        img = cv2.imread(str(paths[i % len(paths)]), cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"cannot read {paths[i % len(paths)]}")
        up = img.shape[1] < tile[0] or img.shape[0] < tile[1]
        tiles.append(cut(img, tile, cv2.INTER_CUBIC if up else cv2.INTER_AREA))
    canvas = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    return add_grain(canvas, noise, seed) if noise else canvas


def add_grain(img: np.ndarray, sigma: float, seed: int = 19) -> np.ndarray:
    """Gaussian noise of ``sigma`` on every channel (seeded: the same pixels every run)."""
    grain = np.random.default_rng(seed).normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def ssim(a: np.ndarray, b: np.ndarray, band: int = 512) -> float:
    """Mean SSIM of the two images' luma (Gaussian window 11, sigma 1.5, Wang et al.'s constants),
    computed a band of rows at a time (with 16 rows of context each side) to bound memory."""
    ya = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
    yb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    height = ya.shape[0]
    total = 0.0
    for top in range(0, height, band):
        lo, hi = max(0, top - 16), min(height, top + band + 16)
        x = ya[lo:hi].astype(np.float32)
        y = yb[lo:hi].astype(np.float32)
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        total += float(m[top - lo:top - lo + min(band, height - top)].astype(np.float64).sum())
    return total / (ya.shape[0] * ya.shape[1])


def carrier() -> str:
    try:
        import imagecodecs
        return f"imagecodecs {imagecodecs.__version__} ({imagecodecs.webp_version()})"
    except ImportError:
        return "Pillow (imagecodecs is not installed)"


def pillow_webp(img: np.ndarray, quality: int, method: int) -> bytes:
    """Pillow's WebP encode from BGR pixels, the conversion included (an RGBA array Pillow wraps
    without a copy; libwebp drops an opaque alpha)."""
    rgba = cv2.cvtColor(img, cv2.COLOR_BGR2RGBA)
    pil = Image.frombuffer("RGBX", (img.shape[1], img.shape[0]), rgba, "raw", "RGBX", 0, 1)
    buf = io.BytesIO()
    pil.save(buf, "WEBP", quality=quality, method=method)
    return buf.getvalue()


def thumbor_webp(pil_rgb: Image.Image, quality: int) -> bytes:
    """thumbor's PIL engine for a WebP output: save with the quality alone (Pillow's method 4)."""
    buf = io.BytesIO()
    pil_rgb.save(buf, "WEBP", quality=quality)
    return buf.getvalue()


@dataclass
class Case:
    label: str
    run: Callable[[], bytes]
    times: list[float] = field(default_factory=list)
    body: bytes = b""


def measure(cases: list[Case], rounds: int, max_seconds: float) -> int:
    """Round-robin: each round runs every case once; stops after ``rounds`` or past ``max_seconds``."""
    started = time.perf_counter()
    done = 0
    for _ in range(rounds):
        for case in cases:
            t0 = time.perf_counter()
            case.body = case.run()
            case.times.append(time.perf_counter() - t0)
        done += 1
        print(f"    round {done}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if time.perf_counter() - started > max_seconds:
            break
    return done


def decoded(body: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError("an output does not decode")
    return img


def table(title: str, img: np.ndarray, cases: list[Case], reference: str | None = None,
          thumbor: str | None = None) -> None:
    """Time (best round), bytes and quality of each case; against the reference and thumbor's if given."""
    height, width = img.shape[:2]
    print(f"\n{title}: {width}x{height} ({width * height / 1e6:.1f} MP), best of {len(cases[0].times)} "
          f"round(s)\n")
    ref = next((c for c in cases if c.label == reference), None)
    peer = next((c for c in cases if c.label == thumbor), None)
    head = ["encode", "s"] + (["x OpenCV"] if ref else []) + (["x thumbor"] if peer else []) + ["bytes"]
    head += (["bytes vs OpenCV"] if ref else []) + ["SSIM", "PSNR dB"] + (["OpenCV's bytes"] if ref else [])
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 2) + ("---|" if ref else "---:|"))
    for case in cases:
        out = decoded(case.body)
        assert out.shape == img.shape, (case.label, out.shape, img.shape)
        best = min(case.times)
        cells = [case.label, f"{best:.2f}"]
        cells += [f"{best / min(ref.times):.2f}"] if ref else []
        cells += [f"{best / min(peer.times):.2f}"] if peer else []
        cells += [f"{len(case.body):,}"]
        cells += [f"{(len(case.body) / len(ref.body) - 1) * 100:+.1f}%"] if ref else []
        cells += [f"{ssim(img, out):.4f}", f"{cv2.PSNR(img, out):.2f}"]
        cells += ["yes" if case.body == ref.body else "no"] if ref else []
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", nargs="*", default=[], help="photos to stitch (2 x 2; fewer repeat)")
    ap.add_argument("--quality", type=int, default=Config().webp_quality,
                    help="WebP quality (default: Config().webp_quality)")
    ap.add_argument("--methods", default="0,1,2,3,4,5,6", help="Pillow's WebP methods to run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the best of them is reported")
    ap.add_argument("--max-seconds", type=float, default=240.0,
                    help="no new round of a size starts after this many seconds on it")
    ap.add_argument("--grain", type=float, default=4.0,
                    help="also the 27 MP photo with Gaussian noise of this sigma, a high-ISO camera's "
                         "grain (default 4; 0 skips it)")
    ap.add_argument("--no-mid", action="store_true", help="skip the WebP rows at 4096x2304")
    ap.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (default 1, as one request)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    methods = [int(m) for m in args.methods.split(",") if m.strip()]

    paths, origin, noise = photos(args.photos)
    img = build_source(paths, noise)
    h, w = img.shape[:2]
    wide = cut(img, AVIF_MAX, cv2.INTER_AREA)
    config = Config()
    print()
    print(f"- machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}; python "
          f"{platform.python_version()}, cv2 {cv2.__version__}, Pillow {Image.__version__} "
          f"(libwebp {features.version('webp')}, libavif {features.version('avif')}); "
          f"cv2.setNumThreads({args.threads})")
    print(f"- source: {w}x{h} ({w * h / 1e6:.1f} MP) from {origin}: {', '.join(p.name for p in paths)}")
    print(f"- WebP quality {args.quality}; Config(): webp_effort {config.webp_effort!r}, "
          f"avif_quality {config.avif_quality}, avif_speed {config.avif_speed}; encode()'s other "
          f"methods by {carrier()}")

    def webp_cases(pixels: np.ndarray) -> list[Case]:
        pil_rgb = Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))
        opts = EncodeOptions(format="webp", quality=args.quality, webp_effort=config.webp_effort_rows)
        cases = [Case(OPENCV,
                      lambda: cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, args.quality])[1].tobytes())]
        cases += [Case(f"Pillow method {m}", lambda m=m: pillow_webp(pixels, args.quality, m)) for m in methods]
        cases.append(Case(THUMBOR, lambda: thumbor_webp(pil_rgb, args.quality)))
        cases.append(Case("imgmiddleware encode(), Config()", lambda: encode(pixels, opts)))
        return cases

    sizes = [("WebP, 27 MP photo", img)]
    if args.grain:
        sizes.append((f"WebP, 27 MP photo + grain (sigma {args.grain:g})", add_grain(img, args.grain)))
    if not args.no_mid:
        sizes.append(("WebP, 4096x2304 photo", wide))
    for title, pixels in sizes:
        cases = webp_cases(pixels)
        print(f"  measuring {title}: {len(cases)} encodes a round ...", file=sys.stderr, flush=True)
        measure(cases, args.rounds, args.max_seconds)
        table(title, pixels, cases, OPENCV, THUMBOR)

    avif = EncodeOptions(format="avif", quality=config.avif_quality, avif_speed=config.avif_speed)
    cases = [Case(f"imgmiddleware AVIF q{config.avif_quality} speed {config.avif_speed}",
                  lambda: encode(wide, avif))]
    print("  measuring AVIF ...", file=sys.stderr, flush=True)
    measure(cases, args.rounds, args.max_seconds)
    table("AVIF, the largest output OSS allows", wide, cases)
    print("\ns (best): the fastest round's wall clock of the encode alone (pixels in memory, one thread). "
          "SSIM/PSNR: the decoded output against the encoder's input.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
