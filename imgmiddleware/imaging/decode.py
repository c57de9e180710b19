"""Decode once into 8-bit BGR or BGRA, with OpenCV (PNG by Wuffs or libpng, png.py, to the same pixels);
JPEG and opaque WebP may decode reduced (shrink-on-load), a WebP at 1/4 or 1/8 by libwebp's own
scaled decode (webp_scaled.py), which never holds the full-size frame of a lossy WebP.

Which decoder runs is one table lookup per format and scale (:func:`_decoder`): NATIVE for a full
decode, REDUCED for a reduced one, OpenCV for everything they leave.

EXIF orientation is never applied here (IMREAD_IGNORE_ORIENTATION): the pipeline applies it itself,
so it can be switched off with auto-orient,0 and so the planner knows the geometry.

A decoder that fails on the source's bytes -- OpenCV returning nothing or raising ``cv2.error``, Pillow
or pillow-heif raising -- is a DecodeError (the client's 400, corrupt source): :func:`decoding` wraps
each decoder call and nothing else, so a ``cv2.error`` from our own work on pixels that decoded fine
(``to_bgr``, colour conversion, the actions) stays a bug, a logged 500. libwebp's scaled decode fails
the same way (a non-OK VP8StatusCode, webp_scaled.WebPError), so a damaged WebP is the same 400 at
every scale.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import cv2
import numpy as np
from PIL import Image

from . import colour, heif, jpeg_scans, png, webp_scaled
from .probe import PILLOW_BOMB, PILLOW_ERRORS, too_many_pixels

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


class DecodeError(Exception):
    pass


# OpenCV raises cv2.error from inside imdecode/imdecodeanimation on some inputs instead of returning
# nothing: e.g. a size over its own CV_IO_MAX_IMAGE_PIXELS (1 Gpx) that our limits let through when
# an operator raised them, checked outside libtiff/libpng's error handling.
DECODER_ERRORS = (cv2.error, webp_scaled.WebPError, *PILLOW_ERRORS)


@contextmanager
def decoding(what: str = "image"):
    """Around one decoder call: its failure on the bytes is a DecodeError; Pillow's bomb guard is
    TooManyPixels (too large), as in the probe."""
    try:
        yield
    except PILLOW_BOMB as exc:
        raise too_many_pixels(exc) from None
    except DECODER_ERRORS as exc:
        raise DecodeError(f"The {what} could not be decoded.") from exc


def can_reduce(probe) -> bool:
    """Whether a source's decoder can give its pixels at 1/2, 1/4 or 1/8 scale directly (shrink-on-
    load): libjpeg by DCT scaling; for a still opaque WebP, OpenCV's reduced flags at 1/2 and
    libwebp's scaled decode at 1/4 and 1/8 (REDUCED), both 3 channels, so a WebP with alpha is
    decoded whole."""
    return probe.format == "jpg" or (probe.format == "webp" and probe.mode == "RGB" and probe.frames == 1)


def reduced_size(width: int, height: int, factor: int, fmt: str = "jpg") -> tuple[int, int]:
    """The size a reduced decode produces at 1/factor scale: libjpeg rounds each side up, OpenCV's
    WebP decoder down, and libwebp's scaled decode is asked for that same size (bench/shrink_bench.py
    checks them against the decoders)."""
    if fmt == "webp":
        return width // factor, height // factor
    return -(-width // factor), -(-height // factor)


def decode_source(data: bytes | memoryview, info, reduce: int = 1, keep_16bit: bool = False
                  ) -> np.ndarray:
    """Pixels of a probed source in sRGB, as BGR or BGRA: the one way every source is decoded."""
    if info.format == "heic":
        with decoding():   # libheif's errors; the RGB->BGR swap inside can only fail on its output
            img = heif.decode(data)
    elif info.format == "jpg" and info.is_cmyk:
        return colour.cmyk_to_bgr(_pillow_jpeg(data, "CMYK", reduce), info.icc_profile)
    else:
        img = decode(data, info.format, reduce, keep_16bit)
    return colour.rgb_to_srgb(img, info.icc_profile)


def _pillow_jpeg(data: bytes | memoryview, mode: str, reduce: int) -> Image.Image:
    """OpenCV converts CMYK/YCCK to BGR naively and cannot return the inks; Pillow can, with the
    same DCT scaling for shrink-on-load."""
    with decoding():
        im = Image.open(io.BytesIO(data))
        if reduce > 1:
            im.draft(mode, reduced_size(im.width, im.height, reduce))
        im.load()
    return im


def decode(data: bytes | memoryview, fmt: str, reduce: int = 1, keep_16bit: bool = False
           ) -> np.ndarray:
    """Pixels of one still image at 1/reduce scale: the NATIVE or REDUCED decoder for this format
    and scale if there is one and it takes the file, else OpenCV."""
    native = _decoder(fmt, reduce)
    if native is not None:
        with decoding():
            img = native(data)
        if img is not None:
            return to_bgr(img, keep_16bit)
    if fmt == "jpg" and reduce == 8:
        # A progressive JPEG at 1/8 needs little more than its DC scans: same pixels, much faster.
        data = jpeg_scans.dc_only_stream(data) or data
    buf = np.frombuffer(data, dtype=np.uint8)  # a view, not a copy
    with decoding():
        if fmt == "jpg" or reduce > 1:
            img = cv2.imdecode(buf, REDUCED_FLAGS[reduce] | cv2.IMREAD_IGNORE_ORIENTATION)
        else:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keeps alpha; UNCHANGED ignores orientation
    if img is None or img.size == 0:
        raise DecodeError("The image could not be decoded.")
    return to_bgr(img, keep_16bit)


# Decoders used instead of OpenCV's for a full-size decode of a format; each returns None for a file
# it leaves to OpenCV.
NATIVE = {"png": png.decode}   # png.py: Wuffs, libpng or OpenCV, one rule


class Reduced(NamedTuple):
    scales: Callable[[int], bool]     # factor -> whether this decoder takes that reduced decode
    decode: Callable[..., np.ndarray | None]   # (data, factor) -> BGR pixels, or None for OpenCV


# Decoders used instead of OpenCV's for a reduced decode of a format. WebP at 1/4 and 1/8: libwebp's
# scaled decode, an area average that holds no full-size frame of a lossy WebP (OpenCV decodes whole,
# then resizes with a 2-tap filter that aliases); at 1/2 OpenCV's exact 2x2 average is ~12% faster,
# so 1/2 stays with it (webp_scaled.py, bench/shrink_bench.py). Without a usable libwebp, OpenCV.
REDUCED = {"webp": Reduced(webp_scaled.scales, webp_scaled.decode_scaled)}


def _decoder(fmt: str, reduce: int) -> Callable[[bytes | memoryview], np.ndarray | None] | None:
    """The non-OpenCV decoder of this format at 1/reduce scale, if any (one rule per format)."""
    if reduce == 1:
        return NATIVE.get(fmt)
    reduced = REDUCED.get(fmt)
    if reduced is not None and reduced.scales(reduce):
        return partial(reduced.decode, factor=reduce)
    return None


def reduces_natively(fmt: str, reduce: int) -> bool:
    """Whether a reduced decode of ``fmt`` at 1/reduce is REDUCED's rather than OpenCV's (the budget
    prices them differently: OpenCV holds the full-size frame)."""
    return reduce > 1 and _decoder(fmt, reduce) is not None


@dataclass
class Frames:
    """Every frame of an animation, fully composited, with its timing."""
    frames: list[np.ndarray]     # BGRA uint8, all the same size
    durations: list[int]         # milliseconds per frame
    loop_count: int              # 0 = forever


def decode_animation(data: bytes | memoryview) -> Frames:
    """All frames of an animated GIF or WebP (OpenCV 5's Animation API), decoded once."""
    with decoding("animation"):
        ok, animation = cv2.imdecodeanimation(np.frombuffer(data, dtype=np.uint8))
    if not ok or not animation.frames:
        raise DecodeError("The animation could not be decoded.")
    return Frames([to_bgr(frame) for frame in animation.frames],
                  [int(d) for d in animation.durations], int(animation.loop_count))


def to_bgr(img: np.ndarray, keep_16bit: bool = False) -> np.ndarray:
    """Normalise to 3 (BGR) or 4 (BGRA) channels, the two shapes the actions handle; 8 bits a
    channel unless ``keep_16bit`` and the source has 16."""
    if img.dtype == np.uint16:
        if not keep_16bit:
            img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:   # float TIFF and the like: stretch into 8 bits
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if channels == 2:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    return img
