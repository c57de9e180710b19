"""Encode once, with OpenCV. Knows each output format's MIME type, options and whether it keeps alpha."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import heif
from .pixels import flatten_on

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


@dataclass(frozen=True)
class EncodeOptions:
    format: str
    quality: int                 # used by jpg, webp, avif
    progressive: bool = False    # jpg only (interlace,1)
    jpeg_optimize: bool = True   # jpg: optimized Huffman tables, as OSS writes them
    png_compression: int = 6
    png_strategy: str = "rle"    # a key of PNG_STRATEGIES
    avif_speed: int = 10


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
    ext = EXTENSION.get(opts.format)
    if ext is None:
        raise EncodeError(f"Encoding {opts.format} is not available.")
    ok, buf = cv2.imencode(ext, img, _params(opts))
    if not ok:
        raise EncodeError(f"Encoding {opts.format} failed.")
    return buf.tobytes()


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
