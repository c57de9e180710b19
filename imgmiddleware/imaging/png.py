"""PNG sources: what cv2.imdecode(IMREAD_UNCHANGED) gives, by the fastest decoder that gives the same
pixels (issue 19, bench/png_decode_bench.py, docs/BENCHMARKS.md "PNG decode").

One rule, read from the chunk headers before the first IDAT (:func:`header`):

- still PNGs of up to 8 bits a sample without a colour key (almost every photo and web graphic,
  Adam7-interlaced ones too), when the 'wuffs' extra is installed: Wuffs, whose own inflate and
  filters decode 1.4x as fast as libpng on the same photos, straight into OpenCV's order and shape
  (no swap). It holds the still-filtered image while it decodes (one more image's bytes:
  DECODE_PEAK in process/budget.py covers it) and releases the GIL. Checksums are verified, so it
  refuses what libpng refuses; whatever it refuses goes to libpng (an interlaced one to OpenCV),
  whose answer (pixels or its error) stands, so a file's verdict is the same as before.
- the other still, non-interlaced PNGs (16 bits, colour keys), and every one of them without Wuffs:
  imagecodecs' libpng, 1.3-1.6x as fast as OpenCV's reader on the same zlib, the same pixels once
  RGB is swapped to BGR.
- OpenCV for the rest (None here): a grey PNG with a colour key (OpenCV ignores the key), an APNG
  (acTL before the pixels; OpenCV gives the animation's first frame, not the default image libpng
  gives when that is hidden), the Adam7-interlaced ones Wuffs does not take (imagecodecs' libpng
  warns on stderr for each), a header over OpenCV's own size caps (refused before anything is
  allocated), anything without the signature and a first IHDR.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import cv2
import numpy as np
from imagecodecs import png_decode as libpng_decode   # loads its PNG codec alone, not the others

from .pixels import swap_red_blue

try:                          # the 'wuffs' extra: a binding published as source only (setup.py)
    from pywuffs import ImageDecoderQuirks, ImageDecoderType, PixelFormat
    from pywuffs.aux import ImageDecoder, ImageDecoderConfig
except ImportError:           # every PNG to libpng: the same pixels, slower
    WUFFS = False
else:
    WUFFS = True

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# OpenCV's imgcodecs limits (CV_IO_MAX_IMAGE_WIDTH/HEIGHT/PIXELS), and the variables that move them.
_CV_MAX_WIDTH = int(os.environ.get("OPENCV_IO_MAX_IMAGE_WIDTH", 1 << 20))
_CV_MAX_HEIGHT = int(os.environ.get("OPENCV_IO_MAX_IMAGE_HEIGHT", 1 << 20))
_CV_MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
_MAX_CHUNKS_BEFORE_PIXELS = 4096

_GREY, _RGB, _PALETTE, _GREY_ALPHA, _RGBA = 0, 2, 3, 4, 6     # IHDR colour types
# The pixel format Wuffs writes for a colour type (and whether it has a tRNS chunk), chosen as
# OpenCV's shape: grey stays one plane, a palette's tRNS (its alpha) makes OpenCV's answer BGRA, as
# does an alpha channel. An RGB colour key (tRNS) stays with libpng: Wuffs writes the keyed pixels
# transparent black, libpng keeps their colour under alpha 0 (a grey one is OpenCV's: decode). Only
# up to 8 bits a sample (grey and palette from 1 bit). Empty without Wuffs.
_WUFFS_FORMAT = {(_GREY, False): PixelFormat.Y, (_RGB, False): PixelFormat.BGR,
                 (_PALETTE, False): PixelFormat.BGR, (_PALETTE, True): PixelFormat.BGRA_NONPREMUL,
                 (_GREY_ALPHA, False): PixelFormat.BGRA_NONPREMUL,
                 (_GREY_ALPHA, True): PixelFormat.BGRA_NONPREMUL,
                 (_RGBA, False): PixelFormat.BGRA_NONPREMUL,
                 (_RGBA, True): PixelFormat.BGRA_NONPREMUL} if WUFFS else {}


def decoders() -> str:
    """Which decoders read PNG sources here, for the startup log: without the extra, PNGs are slower
    and nothing else says so."""
    if WUFFS:
        return "PNG sources: Wuffs (the wuffs extra), libpng for 16 bits and colour keys"
    return ("PNG sources: libpng; install imgmiddleware[wuffs] (it needs a C++ compiler) to decode "
            "them 1.4x as fast")


class Header(NamedTuple):
    colour_type: int
    bit_depth: int
    has_trns: bool
    interlaced: bool


def header(data: bytes | memoryview) -> Header | None:
    """What decides the decoder, or None to leave the file to OpenCV (above). Reads the chunk
    headers before the first IDAT only."""
    if len(data) < 33 or bytes(data[:8]) != SIGNATURE or bytes(data[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    bit_depth, colour_type, interlace = data[24], data[25], data[28]
    if width > _CV_MAX_WIDTH or height > _CV_MAX_HEIGHT or width * height > _CV_MAX_PIXELS:
        return None
    has_trns = False
    offset, end = 8, len(data)
    for _ in range(_MAX_CHUNKS_BEFORE_PIXELS):
        if offset + 8 > end:
            break                               # no IDAT: libpng fails on it, a DecodeError
        length, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"IDAT":
            break
        if kind == b"acTL":
            return None
        has_trns = has_trns or kind == b"tRNS"
        offset += 12 + length                   # length, type, payload, CRC
    else:
        return None                             # a file of countless tiny chunks: not walked here
    return Header(colour_type, bit_depth, has_trns, interlace != 0)


def decode(data: bytes | memoryview) -> np.ndarray | None:
    """What cv2.imdecode(IMREAD_UNCHANGED) gives for this PNG; None to leave it to OpenCV.
    libpng's errors propagate (the caller's DecodeError)."""
    head = header(data)
    if head is None or (head.colour_type == _GREY and head.has_trns):
        # A grey colour key: OpenCV ignores it (one plane), libpng expands it to grey+alpha and Wuffs
        # blacks the keyed pixels, so OpenCV keeps it.
        return None
    if head.bit_depth <= 8:
        pixel_format = _WUFFS_FORMAT.get((head.colour_type, head.has_trns))
        if pixel_format is not None:
            img = _wuffs(data, pixel_format)
            if img is not None:
                return img[:, :, 0] if pixel_format == PixelFormat.Y else img
    if head.interlaced:
        return None                             # OpenCV's: imagecodecs' libpng warns on stderr for each
    return _libpng(data)


def _wuffs(data: bytes | memoryview, pixel_format: PixelFormat) -> np.ndarray | None:
    """Wuffs' decode in ``pixel_format``, or None when it refuses the file. A decoder object costs
    about a microsecond, so each call makes its own (no sharing between threads)."""
    config = ImageDecoderConfig()
    config.enabled_decoders = [ImageDecoderType.PNG]
    config.pixel_format = pixel_format
    config.quirks = {ImageDecoderQuirks.IGNORE_CHECKSUM: 0}   # unset, the binding skips CRC and Adler
    result = ImageDecoder(config).decode(_as_bytes(data))
    if result.error_message:
        return None
    return result.pixbuf


def _as_bytes(data: bytes | memoryview) -> bytes:
    """The binding takes bytes only: a view of a whole bytes object is passed as that object, with
    no copy."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, memoryview) and isinstance(data.obj, bytes) and data.nbytes == len(data.obj):
        return data.obj
    return bytes(data)


def _libpng(data: bytes | memoryview) -> np.ndarray:
    """imagecodecs' libpng, in OpenCV's channel order and shape."""
    img = libpng_decode(data)
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels in (3, 4):
        return swap_red_blue(img)
    if channels == 2:                           # grey+alpha: OpenCV gives it as BGRA
        out = cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2BGRA)
        out[:, :, 3] = img[:, :, 1]
        return out
    return img[:, :, 0]
