"""Encode once, with OpenCV (large WebP outputs with imagecodecs' libwebp, at a cheaper effort). Knows
each output format's MIME type, options and whether it keeps alpha."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from imagecodecs import webp_encode

from . import heif
from .pixels import flatten_on, swap_red_blue

MIME = {
    "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
    "gif": "image/gif", "tiff": "image/tiff", "avif": "image/avif", "heic": "image/heic",
}
# Formats whose encoder keeps an alpha channel (GIF: one-bit transparency, through the animation
# encoder; OpenCV's still GIF encoder drops it).
KEEPS_ALPHA = {"png", "webp", "bmp", "tiff", "avif", "heic", "gif"}
EXTENSION = {"jpg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "gif": ".gif",
             "tiff": ".tiff", "avif": ".avif"}


class EncodeError(Exception):
    pass


# zlib strategies by name, for PNG. OSS writes PNG with Z_RLE (docs/COMPATIBILITY.md decision 12).
PNG_STRATEGIES = {
    "default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT, "filtered": cv2.IMWRITE_PNG_STRATEGY_FILTERED,
    "huffman": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY, "rle": cv2.IMWRITE_PNG_STRATEGY_RLE,
    "fixed": cv2.IMWRITE_PNG_STRATEGY_FIXED,
}


# libwebp's effort (its "method": 0 fastest .. 6 smallest) by output size: rows of (at least this
# many pixels, method); an output takes the row with the largest threshold it reaches. Below every
# row, and for a row of method 4, OpenCV's encoder: libwebp's simple API at method 4, the bytes the
# tests pin. Another method goes through imagecodecs' libwebp, which takes one (at method 4 it, and
# Pillow's libwebp, gave OpenCV's bytes on every image measured). Config.webp_effort sets the rows.
# bench/large_output_bench.py, a 27 MP photo at q82, one thread, best of 3 on a busy 2-core machine
# (clean photo / with grain):
#   method 4, OpenCV    2.2 / 3.0 s   the reference (thumbor's call, Pillow's method 4: 2.4 / 3.3 s)
#   method 2            1.0 / 1.2 s   +15 / +14% bytes, SSIM -0.002 / +0.001, PSNR -0.3 / -0.2 dB
#   methods 0 and 1     0.7 / 0.9 s   +22..27% bytes
#   method 3            no faster than 4
# At 9.4 MP method 4 takes 0.7 s (and method 2 saves 0.2 s), so the row starts at 16 MP.
WEBP_EFFORT: tuple[tuple[int, int], ...] = ((16_000_000, 2),)
WEBP_DEFAULT_METHOD = 4


@dataclass(frozen=True)
class EncodeOptions:
    format: str
    quality: int                 # used by jpg, webp, avif
    progressive: bool = False    # jpg only (interlace,1)
    jpeg_optimize: bool = True   # jpg: optimized Huffman tables, as OSS writes them
    png_compression: int = 6
    png_strategy: str = "rle"    # a key of PNG_STRATEGIES
    avif_speed: int = 10
    webp_effort: tuple = WEBP_EFFORT   # rows of (pixels, libwebp method), as WEBP_EFFORT


# Formats OpenCV writes with 16 bits a channel, and with a single grey channel.
DEEP = {"png", "tiff"}
GREY = {"jpg", "png", "tiff", "bmp"}
# Formats whose encoder writes several frames (OpenCV 5's Animation API), keeping per-frame alpha.
ANIMATED = {"gif", "webp"}


def encode_animation(frames: list[np.ndarray], durations: list[int], loop_count: int,
                     opts: EncodeOptions) -> bytes:
    animation = cv2.Animation()
    animation.frames = [frame if frame.ndim == 3 and frame.shape[2] == 4
                        else cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA if frame.ndim == 3
                                          else cv2.COLOR_GRAY2BGRA)
                        for frame in frames]
    animation.durations = durations
    animation.loop_count = loop_count
    ok, buf = cv2.imencodeanimation(EXTENSION[opts.format], animation, _params(opts))
    if not ok:
        raise EncodeError(f"Encoding an animated {opts.format} failed.")
    return buf.tobytes()


def encode(img: np.ndarray, opts: EncodeOptions) -> bytes:
    if opts.format == "gif":
        return encode_animation([img], [0], 0, opts)
    if opts.format == "heic":
        return heif.encode(img, opts.quality)
    if opts.format not in KEEPS_ALPHA:
        img = flatten_on(img)
    if opts.format == "webp" and img.dtype == np.uint8:
        method = webp_method(img.shape[0] * img.shape[1], opts.webp_effort)
        if method != WEBP_DEFAULT_METHOD:
            return _webp_at(img, opts.quality, method)
    ext = EXTENSION.get(opts.format)
    if ext is None:
        raise EncodeError(f"Encoding {opts.format} is not available.")
    ok, buf = cv2.imencode(ext, img, _params(opts))
    if not ok:
        raise EncodeError(f"Encoding {opts.format} failed.")
    return buf.tobytes()


def webp_method(pixels: int, effort: tuple) -> int:
    """libwebp's method for an output of ``pixels``: the row with the largest threshold it reaches."""
    reached = [(threshold, method) for threshold, method in effort if pixels >= threshold]
    return max(reached)[1] if reached else WEBP_DEFAULT_METHOD


def _webp_at(img: np.ndarray, quality: int, method: int) -> bytes:
    """A still WebP at libwebp ``method`` (OpenCV sets none) by imagecodecs' libwebp, which imports
    RGB(A) straight to YUV. It takes no BGR, so the pixels' red and blue are swapped in place for the
    encode and back after (a copy of a 27 MP image would be 77 MB more; a read-only array is copied):
    at 27 MP and method 2 the encode then holds about 50 MB beside the pixels, OpenCV's method 4
    about 150 MB. libwebp writes no alpha for an opaque image."""
    def webp(rgb: np.ndarray) -> bytes:
        try:
            return webp_encode(rgb, level=quality, lossless=False, method=method)
        except (OSError, RuntimeError, ValueError) as exc:
            raise EncodeError(f"Encoding webp failed: {exc}") from exc

    if img.ndim == 2:
        return webp(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB))
    if not img.flags.writeable:
        return webp(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB))
    swap_red_blue(img)
    try:
        return webp(img)
    finally:
        swap_red_blue(img)                  # the caller's pixels as they were, whatever happened


def _params(opts: EncodeOptions) -> list[int]:
    params: list[int] = []
    if opts.format == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, opts.quality,
                  cv2.IMWRITE_JPEG_PROGRESSIVE, int(opts.progressive),
                  cv2.IMWRITE_JPEG_OPTIMIZE, int(opts.jpeg_optimize)]
    elif opts.format == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, opts.quality]   # 1..100 is lossy; OpenCV's default is lossless
    elif opts.format == "png":
        # The strategy after the level: OpenCV resets the strategy to the default when it reads a level.
        params = [cv2.IMWRITE_PNG_COMPRESSION, opts.png_compression,
                  cv2.IMWRITE_PNG_STRATEGY, PNG_STRATEGIES[opts.png_strategy]]
    elif opts.format == "avif":
        params = [cv2.IMWRITE_AVIF_QUALITY, opts.quality, cv2.IMWRITE_AVIF_SPEED, opts.avif_speed]
    return params
