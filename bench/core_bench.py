#!/usr/bin/env python3
"""Core benchmark: the middleware's time per request beside the bare OpenCV floor, on a real photo.

Run ``python3 bench/core_bench.py`` (about a minute; ``--photo PATH`` for your own JPEG, ``--help``
for the rest). The first run fetches a real >= 12 MP photograph by ``apt-get download`` of a Debian
wallpaper package + ``dpkg-deb -x`` into bench/.cache/ (git-ignored) and prints its provenance. Each
request is ``ImageMiddleware(static_app(dir))`` called as a WSGI app with a werkzeug EnvironBuilder
environ, body consumed. The floor is OpenCV alone making the same output from the bytes already in
memory: for resize, ``cv2.imdecode`` with the smallest IMREAD_REDUCED_COLOR_8/4/2 that still covers
the target (| IMREAD_IGNORE_ORIENTATION) + ``cv2.resize`` INTER_AREA + ``cv2.imencode('.jpg', 90)``;
otherwise the full decode + the operation + the encode. A measurement, not a test: no time asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import PIL
from PIL import Image
from werkzeug.test import EnvironBuilder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout even when the package is not installed

from imgmiddleware import Config, ImageMiddleware  # noqa: E402
from imgmiddleware.imaging.probe import probe  # noqa: E402
from imgmiddleware.origins.static import static_app  # noqa: E402

CACHE = HERE / ".cache"
MIN_PIXELS = 12_000_000
# Debian packages that ship large real photographs (checked by hand: these are photos, not artwork).
# (package, substring the file name must contain or None): the first JPEG of at least MIN_PIXELS in
# sorted path order is taken. lomiri-wallpapers-16.04 (~16 MB) gives Dragonfly_by_Bolly.jpg,
# 4224x3168, a progressive JPEG; the fallback is a 6028x3391 baseline JPEG.
PHOTO_PACKAGES = (
    ("lomiri-wallpapers-16.04", None),
    ("lomiri-wallpapers-20.04", "Kleiber"),
)
PROCESSES = (
    "image/resize,w_200",
    "image/resize,w_1024",
    "image/crop,w_1000,h_1000,g_center",
    "image/rotate,90",
    "image/format,webp",
)
# The floor encodes as the middleware does by default (Config: quality, optimized Huffman tables).
DEFAULTS = Config()
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, DEFAULTS.jpeg_quality,
               cv2.IMWRITE_JPEG_OPTIMIZE, int(DEFAULTS.jpeg_optimize)]
WEBP_QUALITY = DEFAULTS.webp_quality


# --- the photo ---------------------------------------------------------------------------------------

@dataclass
class Photo:
    path: Path
    source: str          # where it came from, for the report


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _download(package: str, debs: Path) -> Path | None:
    """``apt-get download`` the package into ``debs``; one ``apt-get update`` retry when root."""
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        return None
    result = _run(["apt-get", "download", package], debs)
    if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        print(f"  apt-get download {package} failed; running apt-get update once", flush=True)
        _run(["apt-get", "update"], debs)
        result = _run(["apt-get", "download", package], debs)
    if result.returncode != 0:
        print(f"  apt-get download {package} failed: {result.stderr.strip()[-300:]}", flush=True)
        return None
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def _first_big_jpeg(root: Path, name_hint: str | None) -> Path | None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        if name_hint and name_hint not in path.name:
            continue
        try:
            with Image.open(path) as im:
                if im.format == "JPEG" and im.width * im.height >= MIN_PIXELS:
                    return path
        except Exception:
            continue
    return None


def fetch_photo() -> Photo:
    """A real >= 12 MP photograph from a Debian wallpaper package, cached under bench/.cache/."""
    manifest = CACHE / "photo.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        path = CACHE / meta["cached_path"]
        if path.is_file():
            return Photo(path, f"Debian package {meta['package']} {meta['version']}, file /{meta['member']}")
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package, hint in PHOTO_PACKAGES:
        print(f"fetching a photo: apt-get download {package}", flush=True)
        deb = _download(package, debs)
        if deb is None:
            continue
        tree = CACHE / package
        if not tree.is_dir():
            result = _run(["dpkg-deb", "-x", str(deb), str(tree)], CACHE)
            if result.returncode != 0:
                print(f"  dpkg-deb -x failed: {result.stderr.strip()[-300:]}", flush=True)
                continue
        path = _first_big_jpeg(tree, hint)
        if path is None:
            print(f"  {package} has no JPEG of at least {MIN_PIXELS / 1e6:g} MP", flush=True)
            continue
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], CACHE).stdout.strip() or "?"
        meta = {"package": package, "version": version, "deb": deb.name,
                "member": str(path.relative_to(tree)), "cached_path": str(path.relative_to(CACHE))}
        manifest.write_text(json.dumps(meta, indent=2) + "\n")
        return Photo(path, f"Debian package {package} {version}, file /{meta['member']}")
    sys.exit("No photo: apt-get download of " + ", ".join(p for p, _ in PHOTO_PACKAGES) +
             " failed (run 'apt-get update' first?). Pass --photo PATH to use a JPEG of your own.")


# --- the floor: OpenCV alone, from bytes in memory ---------------------------------------------------

def _round_half_up(value: float) -> int:
    return max(1, int(value + 0.5))


def resize_floor(width: int, height: int, target_w: int) -> tuple[Callable[[bytes], bytes], str]:
    size = (target_w, _round_half_up(height * target_w / width))
    flag, factor = cv2.IMREAD_COLOR, 1
    for f, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                       (2, cv2.IMREAD_REDUCED_COLOR_2)):
        margin = DEFAULTS.shrink_on_load_margin          # the middleware's planner rule
        if -(-width // f) >= size[0] * margin and -(-height // f) >= size[1] * margin:
            flag, factor = reduced, f
            break
    flag |= cv2.IMREAD_IGNORE_ORIENTATION

    def run(data: bytes) -> bytes:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if (img.shape[1], img.shape[0]) != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return _jpeg(img)
    return run, f"decode 1/{factor} + resize {size[0]}x{size[1]} AREA + jpg"


def _decode_full(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, JPEG_PARAMS)
    assert ok
    return buf.tobytes()


def crop_floor(data: bytes) -> bytes:
    img = _decode_full(data)
    h, w = img.shape[:2]
    x, y = max(0, w // 2 - 500), max(0, h // 2 - 500)
    return _jpeg(img[y:y + 1000, x:x + 1000])


def rotate_floor(data: bytes) -> bytes:
    return _jpeg(cv2.rotate(_decode_full(data), cv2.ROTATE_90_CLOCKWISE))


def webp_floor(data: bytes) -> bytes:
    ok, buf = cv2.imencode(".webp", _decode_full(data), [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY])
    assert ok
    return buf.tobytes()


def floors(width: int, height: int) -> dict[str, tuple[Callable[[bytes], bytes], str]]:
    return {
        "image/resize,w_200": resize_floor(width, height, 200),
        "image/resize,w_1024": resize_floor(width, height, 1024),
        "image/crop,w_1000,h_1000,g_center": (crop_floor, "full decode + crop + jpg"),
        "image/rotate,90": (rotate_floor, "full decode + cv2.rotate + jpg"),
        "image/format,webp": (webp_floor, "full decode + webp"),
    }


# --- the middleware side -----------------------------------------------------------------------------

def middleware_request(app, key: str, process: str) -> Callable[[], bytes]:
    """One GET through the middleware; the environ is built before the clock starts."""
    from urllib.parse import quote
    path = "/" + quote(key)
    query = "x-oss-process=" + process

    def prepare():
        return EnvironBuilder(path=path, query_string=query).get_environ()

    def call(environ) -> bytes:
        return wsgi_body(app, environ, process)
    return prepare, call


def wsgi_body(app, environ, label: str) -> bytes:
    """Call a WSGI app in-process and return its 200 body (closing it as WSGI requires)."""
    status: list[str] = []
    result = app(environ, lambda s, h, exc_info=None: status.append(s))
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"{label}: {status} {body[:300]!r}")
    return body


# --- measuring ---------------------------------------------------------------------------------------

@dataclass
class Row:
    process: str
    n: int
    mw: list[float]
    floor: list[float]
    same: bool
    out_bytes: int
    floor_desc: str


def measure(process, prepare, call, floor, data, iterations, warmup, budget) -> Row:
    fn, desc = floor
    for _ in range(warmup):
        mw_body = call(prepare())
        floor_body = fn(data)
    mw_times: list[float] = []
    floor_times: list[float] = []
    start = time.perf_counter()
    # Alternate the two sides so that drift (thermal, neighbours) hits both alike.
    while len(mw_times) < iterations and (len(mw_times) < 5 or time.perf_counter() - start < budget):
        environ = prepare()
        t0 = time.perf_counter()
        mw_body = call(environ)
        t1 = time.perf_counter()
        floor_body = fn(data)
        t2 = time.perf_counter()
        mw_times.append((t1 - t0) * 1000)
        floor_times.append((t2 - t1) * 1000)
    return Row(process, len(mw_times), mw_times, floor_times, mw_body == floor_body, len(mw_body), desc)


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photo", help="a JPEG to use instead of the Debian wallpaper photo")
    ap.add_argument("--iterations", "-n", type=int, default=15,
                    help="timed requests per process (default 15; at least 5, fewer if over --budget)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed requests first (default 1)")
    ap.add_argument("--budget", type=float, default=8.0,
                    help="seconds of timing per process after the first 5 iterations (default 8)")
    ap.add_argument("--threads", type=int, default=1,
                    help="cv2.setNumThreads for both sides (default 1: one request per worker thread; "
                         "0 leaves OpenCV's default)")
    ap.add_argument("--only", action="append", help="run only processes containing this text")
    args = ap.parse_args(argv)

    default_threads = cv2.getNumThreads()
    if args.threads:
        cv2.setNumThreads(args.threads)
    if args.photo:
        photo = Photo(Path(args.photo).resolve(), "--photo")
    else:
        photo = fetch_photo()
    data = photo.path.read_bytes()
    info = probe(data)
    width, height = info.width, info.height

    print()
    print(f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}"
          f" usable), {cpu_model()}, {platform.system()} {platform.machine()}")
    print(f"python {platform.python_version()}, cv2 {cv2.__version__}, numpy {np.__version__}, "
          f"Pillow {PIL.__version__}")
    print(f"cv2.getNumThreads(): {default_threads} by default, {cv2.getNumThreads()} for this run "
          f"(cv2.setNumThreads({args.threads}) for both middleware and floor)"
          if args.threads else
          f"cv2.getNumThreads(): {default_threads} (OpenCV's default, both middleware and floor)")
    print(f"photo: {photo.path}")
    print(f"  from: {photo.source}")
    print(f"  {width}x{height} = {width * height / 1e6:.1f} MP, {len(data) / 1e6:.2f} MB, {info.format}, "
          f"{'progressive' if info.progressive else 'baseline'}, estimated quality {info.jpeg_quality}, "
          f"EXIF orientation {info.orientation}")
    if width * height < MIN_PIXELS:
        print(f"  note: under {MIN_PIXELS / 1e6:g} MP (used as given, not upscaled)")
    if info.orientation != 1:
        print("  note: EXIF orientation is not 1: the middleware applies it, the floor does not")

    config = Config()
    app = ImageMiddleware(static_app(photo.path.parent))
    rotate_app = app
    if max(width, height) > config.max_rotate_side:
        # OSS refuses rotate on a side over 4096 px (400); raise the cap so the work is measured.
        rotate_app = ImageMiddleware(static_app(photo.path.parent), max_rotate_side=max(width, height))
        print(f"  note: sides over max_rotate_side={config.max_rotate_side}: rotate,90 runs with "
              f"max_rotate_side={max(width, height)} (the default answers 400, as OSS does)")

    table = floors(width, height)
    processes = [p_ for p_ in PROCESSES if not args.only or any(o in p_ for o in args.only)]
    rows = []
    print()
    for process in processes:
        target = rotate_app if process.startswith("image/rotate") else app
        prepare, call = middleware_request(target, photo.path.name, process)
        print(f"  measuring {process} ...", end="", flush=True)
        row = measure(process, prepare, call, table[process], data, args.iterations, args.warmup,
                      args.budget)
        print(f" {row.n} iterations", flush=True)
        rows.append(row)

    print()
    header = (f"{'process':34} {'n':>3}  {'middleware p50':>14} {'p90':>9}  {'floor p50':>10} {'p90':>9}"
              f"  {'ratio':>5} {'+ms':>6}  {'same':4} {'out KB':>7}  floor")
    print(header)
    print("-" * (len(header) + 32))
    for r in rows:
        mw50, fl50 = p(r.mw, 50), p(r.floor, 50)
        print(f"{r.process:34} {r.n:3d}  {mw50:11.1f} ms {p(r.mw, 90):6.1f} ms  {fl50:7.1f} ms"
              f" {p(r.floor, 90):6.1f} ms  {mw50 / fl50:5.2f} {mw50 - fl50:+6.1f}  {'yes' if r.same else 'no':4}"
              f" {r.out_bytes / 1024:7.1f}  {r.floor_desc}")
    print()
    print("ms per request, wall clock. ratio = middleware p50 / floor p50; +ms = their difference;")
    print("same = identical output bytes. The middleware also reads the file through the static app and")
    print("probes it; the floor starts from the bytes already in memory.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
