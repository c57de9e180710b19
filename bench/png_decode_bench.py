#!/usr/bin/env python3
"""PNG decode (issue 19): OpenCV's libpng against the PNG decoders of well-kept PyPI packages.

Run ``python3 bench/png_decode_bench.py`` (a few minutes; ``--help`` for the options). The corpus
is bench/peers.py's PNG sources (its ``build_corpus``: real photographs from Debian wallpaper
packages, every third one converted by Pillow to PNG at compress_level 6, longest side 3000), built
once into bench/.cache/png-corpus/ and reused (``--rebuild`` builds it again).

Each candidate decodes to exactly what ``cv2.imdecode(..., IMREAD_UNCHANGED)`` gives (BGR or BGRA
order, the same dtype and shape): the channel swap is part of its time, since the middleware would
have to pay it. Candidates, each only when installed: ``cv2.imdecode`` (OpenCV 5's PNG reader),
pyspng (libspng), imagecodecs' ``spng_decode`` (libspng) and ``png_decode`` (libpng), Wuffs (pywuffs), Pillow (its
own PNG reader), and decode.py: imgmiddleware.imaging.decode's PNG entry, what the middleware runs.
pyspng is no dependency of the project: when missing it is pip-installed once into bench/.cache/.
The header says which zlib each one links. Every round times every (file, candidate) once, the
candidates in a rotating order within the file, so a neighbour's load (2 cores, shared) hits them
all alike; the figure is the best of the rounds. ``--budget`` bounds the time: no round starts
after it. Beside the decoders, the whole thumbnail as the floor does it -- OpenCV decode,
cv2.resize INTER_AREA to fit 200 and 512, PNG encode with imgmiddleware.imaging.encode at the
Config defaults -- so the share of the decode in a PNG thumbnail shows.

Then identity: every candidate's output on every corpus file and on small generated PNGs of each
kind (RGB, RGBA, grey, grey+alpha, palette with and without tRNS, 1-bit, 16-bit, colour-keyed RGB,
gAMA, Adam7-interlaced, APNG) against OpenCV's, pixel for pixel. A measurement, not a test: no time
asserts.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import platform
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # peers, core_bench, whatever the working directory
sys.path.insert(0, str(HERE.parent))   # run from a checkout even when the package is not installed

from imgmiddleware import Config  # noqa: E402
from imgmiddleware.imaging.encode import EncodeOptions, encode  # noqa: E402
from imgmiddleware.imaging.pixels import round_half_up  # noqa: E402

CORPUS = HERE / ".cache" / "png-corpus"
PACKAGES = HERE / ".cache" / "png-decoders"   # candidates the project does not depend on
SIZES = (200, 512)


# --- candidates: bytes -> what cv2.imdecode(IMREAD_UNCHANGED) gives ----------------------------------

def cv_order(img: np.ndarray) -> np.ndarray:
    """An RGB-order decode (grey, grey+alpha, RGB, RGBA) as OpenCV returns it: grey stays one
    plane, grey+alpha becomes BGRA, colour is swapped to BGR(A)."""
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1:
        return img[:, :, 0]
    if channels == 2:
        out = cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2BGRA)
        out[:, :, 3] = img[:, :, 1]
        return out
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)


def opencv(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def pillow(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    return cv_order(np.asarray(im))


def candidates() -> dict:
    """name -> (decode function, library note), for the candidates installed here."""
    found = {"cv2.imdecode": (opencv, f"OpenCV {cv2.__version__}: libpng, {_cv2_zlib()} (before issue 19)")}
    try:
        pyspng = _import_or_fetch("pyspng")
        found["pyspng"] = (lambda data: cv_order(pyspng.load(data)),
                           f"pyspng {pyspng.__version__}: libspng, zlib {_static_zlib(pyspng.c.__file__)} "
                           "(static)")
    except ImportError:
        pass
    try:
        import imagecodecs
        versions = imagecodecs.version(dict)
        zlib_note = _linked_zlib(imagecodecs._spng.__file__)
        found["imagecodecs spng_decode"] = (
            lambda data: cv_order(imagecodecs.spng_decode(data)),
            f"imagecodecs {imagecodecs.__version__}: libspng {versions.get('libspng')}, {zlib_note}")
        found["imagecodecs png_decode"] = (
            lambda data: cv_order(imagecodecs.png_decode(data)),
            f"imagecodecs {imagecodecs.__version__}: libpng {versions.get('libpng')}, "
            f"{_linked_zlib(imagecodecs._png.__file__)} (its zlib-ng {versions.get('zlib_ng')} is "
            "only the separate zlibng codec)")
    except ImportError:
        pass
    try:
        import pywuffs
        from importlib.metadata import version
        from imgmiddleware.imaging import png as png_module
        found["Wuffs"] = (lambda data: _or_opencv(_wuffs_alone(data), data),
                          f"pywuffs {version('pywuffs')}: Wuffs' PNG decoder, its own inflate "
                          f"({_linked_zlib(pywuffs.__file__)}), checksums verified, straight to "
                          "BGR/BGRA")
    except ImportError:
        pass
    try:
        from imgmiddleware.imaging.decode import NATIVE
        shipped = NATIVE["png"]
        found["decode.py"] = (lambda data: _or_opencv(shipped(data), data),
                              "imgmiddleware.imaging.decode's PNG entry (what the middleware runs, "
                              "imaging/png.py: Wuffs for 8-bit RGB, RGBA and palette PNGs, "
                              "imagecodecs png_decode for the other still ones, OpenCV for the "
                              "PNGs it leaves)")
    except (ImportError, KeyError):
        pass
    from PIL import __version__ as pil_version, _imaging
    found["Pillow"] = (pillow, f"Pillow {pil_version}: its own PNG reader, "
                       f"{_linked_zlib(_imaging.__file__)}")
    return found


def _wuffs_alone(data: bytes):
    """Wuffs on any PNG, in the pixel format OpenCV's answer has (one grey plane, BGR, or BGRA when
    there is alpha), with none of png.py's rule around it."""
    from pywuffs import PixelFormat
    from imgmiddleware.imaging import png as png_module
    alpha = data[25] in (4, 6) or b"tRNS" in data[:data.find(b"IDAT")]
    grey = data[25] == 0 and not alpha
    img = png_module._wuffs(data, PixelFormat.Y if grey else
                           PixelFormat.BGRA_NONPREMUL if alpha else PixelFormat.BGR)
    return img[:, :, 0] if grey and img is not None else img


def _import_or_fetch(name: str):
    """A candidate that is no dependency of the project: pip-installed once into bench/.cache/
    (no dependencies: NumPy is here) when this interpreter does not have it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    PACKAGES.mkdir(parents=True, exist_ok=True)
    if str(PACKAGES) not in sys.path:
        sys.path.append(str(PACKAGES))
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(PACKAGES), name], capture_output=True, timeout=600)
    return importlib.import_module(name)


def _or_opencv(img: np.ndarray | None, data: bytes) -> np.ndarray:
    return opencv(data) if img is None else img


def _cv2_zlib() -> str:
    so = sorted(Path(cv2.__file__).parent.glob("cv2*.so"))
    return _linked_zlib(str(so[0])) if so else "?"


def _linked_zlib(module_file: str) -> str:
    """The libz an extension module loads (ldd: its own and its libraries' needs)."""
    try:
        out = subprocess.run(["ldd", module_file], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "zlib: unknown"
    lines = [line for line in out.splitlines() if "libz.so" in line]
    libs = sorted({line.split("=>")[0].strip() for line in lines})
    where = "the system's" if any("=> /lib" in line or "=> /usr/lib" in line for line in lines) \
        else "bundled"
    return f"links {', '.join(libs)} ({where}, zlib {zlib.ZLIB_RUNTIME_VERSION})" if libs else \
        "links no libz"


def _static_zlib(module_file: str) -> str:
    blob = Path(module_file).read_bytes()
    marker = blob.find(b"inflate 1.")
    return blob[marker + 8:marker + 16].split(b" ")[0].decode() if marker >= 0 else "?"


# --- generated PNGs of each kind ---------------------------------------------------------------------

def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def write_png(pixels: np.ndarray, colour_type: int, interlace: bool = False,
              extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A PNG written by hand (filter 0 on every row), for what Pillow cannot write: Adam7 interlace,
    16 bits, ancillary chunks. ``pixels`` is H x W x C in RGB order, uint8 or uint16 (big-endian
    on the wire)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    wire = pixels.astype(">u2") if depth == 16 else pixels

    def rows(img: np.ndarray) -> bytes:
        return b"".join(b"\x00" + img[y].tobytes() for y in range(img.shape[0]))

    if interlace:
        raw = b"".join(rows(wire[y0::dy, x0::dx]) for x0, y0, dx, dy in ADAM7
                       if y0 < height and x0 < width)
    else:
        raw = rows(wire)
    head = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", head)
            + b"".join(_chunk(k, v) for k, v in extra)
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def sample_pngs(width: int = 67, height: int = 45) -> dict[str, bytes]:
    """Small PNGs of every kind a decoder may handle differently: odd sizes, photo-like noise over
    gradients, alpha that varies."""
    rng = np.random.default_rng(19)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.dstack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)])
    rgb = np.clip(rgb + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    alpha = ((x * 7 + y * 3) % 256).astype(np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, alpha])
    deep = (rgb.astype(np.uint16) * 257 + rng.integers(0, 257, rgb.shape)).astype(np.uint16)

    def pil(img: Image.Image, **kw) -> bytes:
        out = io.BytesIO()
        img.save(out, "PNG", compress_level=6, **kw)
        return out.getvalue()

    palette = Image.fromarray(rgb).quantize(64)
    key = tuple(int(v) for v in rgb[3, 5])
    frames = [Image.fromarray(rgba), Image.fromarray(np.ascontiguousarray(rgba[::-1]))]
    apng = io.BytesIO()
    frames[0].save(apng, "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)
    hidden = io.BytesIO()
    frames[1].save(hidden, "PNG", save_all=True, append_images=frames, duration=100, loop=0,
                   default_image=True)
    srgb = _chunk(b"sRGB", b"\x00")[8:-4]
    return {
        "RGB": pil(Image.fromarray(rgb)),
        "RGBA": pil(Image.fromarray(rgba)),
        "grey": pil(Image.fromarray(grey)),
        "grey+alpha": pil(Image.fromarray(np.dstack([grey, alpha]), "LA")),
        "palette": pil(palette),
        "palette+tRNS": pil(palette, transparency=bytes(range(0, 256, 4))),
        "1-bit": pil(Image.fromarray(grey > 127)),
        "RGB+tRNS key": pil(Image.fromarray(rgb), transparency=key),
        "grey+tRNS key": pil(Image.fromarray(grey), transparency=int(grey[3, 5])),
        "RGB+gAMA+sRGB": write_png(rgb, 2, extra=((b"gAMA", struct.pack(">I", 45455)), (b"sRGB", srgb))),
        "RGB 16-bit": write_png(deep, 2),
        "RGBA 16-bit": write_png(np.dstack([deep, alpha.astype(np.uint16) * 257]), 6),
        "grey 16-bit": write_png(deep[:, :, 0], 0),
        "grey+alpha 16-bit": write_png(np.dstack([deep[:, :, 0], alpha.astype(np.uint16) * 257]), 4),
        "RGB interlaced": write_png(rgb, 2, interlace=True),
        "RGBA interlaced": write_png(rgba, 6, interlace=True),
        "grey interlaced": write_png(grey, 0, interlace=True),
        "RGB 16-bit interlaced": write_png(deep, 2, interlace=True),
        "APNG (2 frames)": apng.getvalue(),
        "APNG, default image hidden": hidden.getvalue(),
    }


def same(reference: np.ndarray | None, decode, data: bytes) -> str:
    try:
        got = decode(data)
    except Exception as exc:  # a candidate that refuses a kind is a fallback, not a crash
        return f"error ({type(exc).__name__})"
    if reference is None or got is None:
        return "no image"
    if got.dtype != reference.dtype or got.shape != reference.shape:
        return f"{got.dtype} {'x'.join(map(str, got.shape))}"
    return "yes" if np.array_equal(got, reference) else "pixels differ"


# --- corpus and timing -------------------------------------------------------------------------------

def corpus(rebuild: bool) -> list[dict]:
    manifest = CORPUS / "png.json"
    if not rebuild and manifest.is_file():
        items = json.loads(manifest.read_text())
        if all((CORPUS / item["name"]).is_file() for item in items):
            return items
    from peers import build_corpus
    items = [item for item in build_corpus(CORPUS, quick=False, smoke=False) if item["kind"] == "png"]
    manifest.write_text(json.dumps(items, indent=1))
    return items


def thumbnail(decoder, data: bytes, size: int, opts: EncodeOptions) -> bytes:
    """A fit-``size`` PNG thumbnail as the floor makes it: decode, INTER_AREA, encode."""
    img = decoder(data)
    height, width = img.shape[:2]
    scale = min(size / width, size / height)
    img = cv2.resize(img, (max(1, round_half_up(width * scale)), max(1, round_half_up(height * scale))),
                     interpolation=cv2.INTER_AREA)
    return encode(img, opts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="best of this many rounds (default 7)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which no further round starts (default 300)")
    parser.add_argument("--rebuild", action="store_true", help="build the corpus again")
    parser.add_argument("--threads", type=int, default=1,
                        help="cv2.setNumThreads (default 1: one request's share of a worker)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)

    items = corpus(args.rebuild)
    found = candidates()
    names = list(found)
    config = Config()
    opts = EncodeOptions(format="png", quality=config.jpeg_quality,
                         png_compression=config.png_compression, png_strategy=config.png_strategy)
    files = [(item, (CORPUS / item["name"]).read_bytes()) for item in items]

    thumb_decoders = [name for name in ("cv2.imdecode", "decode.py") if name in found]
    tasks = [(f"decode:{name}", found[name][0]) for name in names]
    tasks += [(f"fit{size}:{name}", lambda data, size=size, name=name:
               thumbnail(found[name][0], data, size, opts))
              for size in SIZES for name in thumb_decoders]
    best = {(item["name"], label): float("inf") for item, _ in files for label, _ in tasks}
    started = time.monotonic()
    rounds = 0
    for round_ in range(args.rounds):
        if round_ and time.monotonic() - started > args.budget:
            break
        for index, (item, data) in enumerate(files):
            shift = (round_ + index) % len(tasks)
            for label, call in tasks[shift:] + tasks[:shift]:
                t0 = time.perf_counter()
                call(data)
                best[item["name"], label] = min(best[item["name"], label], time.perf_counter() - t0)
        rounds += 1
    elapsed = time.monotonic() - started

    print(f"\n{len(files)} PNGs of the peers corpus; {platform.machine()}, Python "
          f"{platform.python_version()}, cv2.setNumThreads({args.threads}); best of {rounds} "
          f"round(s), every (file, task) once a round, in an order rotating with the round and the "
          f"file ({elapsed:.0f} s)\n")
    for name in names:
        print(f"- {name}: {found[name][1]}")
    short = {"cv2.imdecode": "OpenCV", "pyspng": "pyspng", "imagecodecs spng_decode": "ic spng",
             "imagecodecs png_decode": "ic png", "Pillow": "Pillow", "decode.py": "decode.py"}
    print("\nDecode, ms to BGR(A) as cv2.imdecode gives it (x: OpenCV's time over the candidate's)\n")
    head = ["file", "MP", "KB"] + [short.get(n, n) + " ms" for n in names]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    ratios = {name: [] for name in names}
    ms = {key: value * 1000 for key, value in best.items()}
    for item, data in files:
        base = ms[item["name"], "decode:cv2.imdecode"]
        cells = [item["name"], f"{item['w'] * item['h'] / 1e6:.1f}", f"{len(data) / 1024:.0f}"]
        for name in names:
            value = ms[item["name"], f"decode:{name}"]
            ratios[name].append(base / value)
            cells.append(f"{value:.1f}" if name == "cv2.imdecode" else f"{value:.1f} ({base / value:.2f}x)")
        print("| " + " | ".join(cells) + " |")
    print("\nspeed-up over OpenCV, median (min-max) over the files: " + "; ".join(
        f"{name} {statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"
        for name, r in ratios.items() if name != "cv2.imdecode"))

    print("\nThumbnails: decode + cv2.resize INTER_AREA + PNG encode (level "
          f"{config.png_compression}, {config.png_strategy}), ms; OpenCV's decode share of the "
          "OpenCV thumbnail" + ("; decode.py: the same with the middleware's decoder" if
                                "decode.py" in thumb_decoders else "") + "\n")
    head = ["file"]
    for size in SIZES:
        head += [f"fit {size} OpenCV", "decode share"]
        if "decode.py" in thumb_decoders:
            head += [f"fit {size} decode.py", "x"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for item, _ in files:
        cells = [item["name"]]
        for size in SIZES:
            total = ms[item["name"], f"fit{size}:cv2.imdecode"]
            cells += [f"{total:.1f}", f"{ms[item['name'], 'decode:cv2.imdecode'] / total:.0%}"]
            if "decode.py" in thumb_decoders:
                ours = ms[item["name"], f"fit{size}:decode.py"]
                cells += [f"{ours:.1f}", f"{total / ours:.2f}x"]
        print("| " + " | ".join(cells) + " |")

    print("\nPixel identity with cv2.imdecode(IMREAD_UNCHANGED): same dtype, shape and pixels "
          "(otherwise what the candidate gives)\n")
    kinds = sample_pngs()
    others = [n for n in names if n != "cv2.imdecode"]
    print("| PNG | " + " | ".join(short.get(n, n) for n in others) + " |")
    print("|---|" + "---|" * len(others))
    corpus_ok = {n: all(same(opencv(data), found[n][0], data) == "yes" for _, data in files)
                 for n in others}
    print(f"| corpus ({len(files)} photos, RGB 8-bit) | "
          + " | ".join("yes" if corpus_ok[n] else "NO" for n in others) + " |")
    for kind, data in kinds.items():
        reference = opencv(data)
        print(f"| {kind} | " + " | ".join(same(reference, found[n][0], data) for n in others) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
