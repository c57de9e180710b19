"""Header-only probing with Pillow: format, size, frames, EXIF orientation, JPEG quality.

Pillow parses headers lazily, so probing a 20 MB JPEG reads a few kilobytes; pixels are never decoded
here. That is what lets limits be enforced before any decoding work (spec §2).
"""

from __future__ import annotations

import io
import re
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import heif   # registers the HEIF opener with Pillow when the 'heif' extra is installed

# Pillow's format names -> OSS's format words (info's Format, format,<f>).
OSS_FORMAT = {
    "JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp",
    "TIFF": "tiff", "AVIF": "avif", "HEIF": "heic",
}

# Only GIF and WebP animate on OSS (spec §2). Every other format is a still image, its first frame or
# page, whatever else the file holds: a multi-page TIFF, an MPO's second picture, an APNG's frames, an
# image sequence in AVIF/HEIF. So only these two formats count frames (frames are 1 for the others):
# the planner then never treats a TIFF as an animation, and no limit counts pages that are never read.
ANIMATED_SOURCES = frozenset({"gif", "webp"})

# What Pillow (and pillow-heif) raise on bytes they cannot read: a source that is unsupported,
# truncated or corrupt, the client's 400 (EC 0040-00000005), never a 500. Pillow's plugins raise all
# of these while parsing hostile headers: OSError (UnidentifiedImageError, "truncated"), EOFError,
# SyntaxError ("not a PNG file"), ValueError, struct.error, TypeError, IndexError/KeyError
# (LookupError), ZeroDivisionError/OverflowError (ArithmeticError), NotImplementedError (a DDS pixel
# format Pillow does not decode; RuntimeError covers it and RecursionError). MemoryError is left out
# on purpose: running out of memory is the server's failure, not a property of the bytes.
# The decompression-bomb guard is the one Pillow failure that means "too large" (see allow_pixels).
# decode.py maps decoder failures with the same tuple, so this is the one list of them.
PILLOW_ERRORS = (OSError, EOFError, SyntaxError, ValueError, struct.error, TypeError, LookupError,
                 ArithmeticError, RuntimeError)
PILLOW_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)

ORIENTATION_TAG = 0x0112


class ProbeError(Exception):
    """The bytes are not an image we can read; ``reason`` says why in words for the client.
    ``container`` is the format the bytes announce (sniff_container) when they are a damaged one."""

    def __init__(self, message: str, container: str | None = None) -> None:
        super().__init__(message)
        self.container = container


class TooManyPixels(ProbeError):
    """Pillow's decompression-bomb guard refused the header; ``pixels`` is the size it read (None when
    its message did not say)."""

    def __init__(self, message: str, pixels: int | None = None) -> None:
        super().__init__(message)
        self.pixels = pixels


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def too_many_pixels(exc: BaseException) -> TooManyPixels:
    """TooManyPixels for Pillow's DecompressionBombError (or its warning, under ``-W error``)."""
    found = _BOMB_SIZE.search(str(exc))
    return TooManyPixels(str(exc), int(found.group(1)) if found else None)


@contextmanager
def reading(data: bytes | memoryview = b""):
    """Run Pillow on a source: the one place that says what its exceptions mean to the client.

    Pillow's bomb guard -> TooManyPixels (too large); everything in PILLOW_ERRORS -> ProbeError
    (unsupported or corrupt). Anything else (MemoryError, a bug of ours) goes on to be a 500."""
    try:
        yield
    except ProbeError:
        raise
    except PILLOW_BOMB as exc:
        raise too_many_pixels(exc) from None
    except PILLOW_ERRORS as exc:
        if not heif.AVAILABLE and sniff_heif(bytes(data[:16])):
            raise ProbeError(f"HEIC/HEIF sources need {heif.EXTRA_HINT}.") from None
        container = sniff_container(bytes(data[:16]))
        if container is not None:
            raise ProbeError(f"The {container.upper()} image is corrupt.", container) from exc
        if isinstance(exc, (UnidentifiedImageError, NotImplementedError)):
            raise ProbeError("The image format is not supported.") from exc
        raise ProbeError("The image is corrupt or its format is not supported.") from exc


# Pillow's decompression-bomb guard is a module global (Image.MAX_IMAGE_PIXELS, 89.5 MP by default:
# a warning above it, DecompressionBombError above twice it, i.e. 179 MP). Left alone it refuses
# sources of 179-250 MP that OSS (and our Config.max_source_pixels) allow, with Pillow's numbers in
# the message. It cannot be set per call (Image.open takes no limit) and other threads -- ours and
# the host application's -- read it at any time, so it is never lowered and never switched off here:
# each probe only raises it, under a lock, to at least the caller's pixel limit. In effect it is set
# once to the largest configured limit. Our own check (process/limits.check_source, on the
# header, before any decode) stays the real limit; Pillow's guard then only fires on headers far
# above it (more than twice the limit), which are refused as too large with the size Pillow read.
# A host that set MAX_IMAGE_PIXELS = None (no guard) keeps it so.
_GUARD_LOCK = threading.Lock()


def allow_pixels(limit: int) -> None:
    """Make Pillow's bomb guard accept every image of up to ``limit`` pixels (see above)."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current >= limit:
        return
    with _GUARD_LOCK:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < limit:
            Image.MAX_IMAGE_PIXELS = limit


@dataclass(frozen=True)
class Probe:
    format: str                 # OSS word: jpg, png, gif, webp, bmp, tiff, avif, heic
    width: int                  # as stored (before EXIF orientation)
    height: int
    frames: int
    orientation: int            # EXIF Orientation 1..8 (1 when absent or invalid)
    mode: str                   # Pillow mode: L, RGB, RGBA, P, CMYK, I;16 ...
    progressive: bool
    quantization: tuple         # JPEG quantisation tables (empty for other formats)
    icc_profile: bytes | None   # the embedded ICC profile, if any
    exif: Image.Exif            # the EXIF block, read from the header (empty when absent)
    jfif_density: tuple[int, int, int] | None = None   # JPEG's JFIF (unit, x, y); unit 0, 1 dpi, 2 dpcm
    jpeg_sampling: tuple[tuple[int, int], ...] = ()     # JPEG: each component's (h, v) sampling factors
    bit_depth: int = 8          # bits a sample: 16 for a 16-bit PNG (Pillow opens some as 8-bit modes)
    lossless: bool = False      # a WebP whose image is VP8L: libwebp decodes it whole, at any scale

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames

    @property
    def is_cmyk(self) -> bool:
        return self.mode == "CMYK"

    @property
    def is_grey(self) -> bool:
        return self.mode in ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N")

    @property
    def coefficient_bytes(self) -> int:
        """What libjpeg holds for a progressive JPEG at any decode scale: every component's DCT
        coefficients for the whole image (64 two-byte values a block, chroma at its sampling); 0 for
        anything else. Measured: 3.1 bytes a pixel for a 4:2:0 file decoded at 1/8."""
        if not (self.progressive and self.jpeg_sampling):
            return 0
        h_max = max(h for h, _ in self.jpeg_sampling)
        v_max = max(v for _, v in self.jpeg_sampling)
        blocks = sum(-(-self.width * h // (8 * h_max)) * -(-self.height * v // (8 * v_max))
                     for h, v in self.jpeg_sampling)
        return blocks * 64 * 2

    @property
    def rotates(self) -> bool:
        """Whether applying the orientation needs a rotation (not only a flip)."""
        return self.orientation in (3, 5, 6, 7, 8)

    @property
    def oriented_size(self) -> tuple[int, int]:
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height

    @cached_property
    def jpeg_quality(self) -> int | None:
        return estimate_jpeg_quality(self.quantization) if self.quantization else None


def sniff_heif(data: bytes) -> bool:
    """ISO-BMFF 'ftyp' box naming a HEIF brand: tells a HEIC upload from garbage without a decoder."""
    return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1")


def sniff_container(head: bytes) -> str | None:
    """The format a RIFF or ISO-BMFF header announces (webp, avif, heic), whether or not the rest
    parses: OSS answers a damaged one of these with the format's own EC (process/engine.CORRUPT_EC)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        if head[8:12] in (b"avif", b"avis"):
            return "avif"
        if sniff_heif(head) and heif.AVAILABLE:
            return "heic"
    return None


def probe(data: bytes | memoryview, max_pixels: int | None = None) -> Probe:
    """The header of ``data``, or ProbeError (TooManyPixels for Pillow's bomb guard). ``max_pixels`` is
    the caller's own pixel limit (Config.max_source_pixels): Pillow's guard is raised to it first, so
    that only the caller's limit decides what is too large (see allow_pixels)."""
    if max_pixels is not None:
        allow_pixels(max_pixels)
    with reading(data):
        im = Image.open(io.BytesIO(data))
        fmt = OSS_FORMAT.get(im.format or "")
        if fmt is None:
            raise ProbeError(f"The image format {im.format} is not supported.")
        width, height, mode = im.width, im.height, im.mode
        quant = getattr(im, "quantization", None) or {}
        quantization = tuple(tuple(quant[k]) for k in sorted(quant))
        progressive = bool(im.info.get("progressive") or im.info.get("progression"))
        icc_profile = im.info.get("icc_profile") or None
        density = im.info.get("jfif_density") if fmt == "jpg" else None
        jfif_density = (int(im.info.get("jfif_unit", 0)), *map(int, density)) if density else None
        sampling = tuple((h, v) for _, h, v, _ in getattr(im, "layer", ())) if fmt == "jpg" else ()
        # IHDR is a PNG's first chunk: its bit depth is byte 24 of the file.
        bit_depth = data[24] if fmt == "png" and len(data) > 24 else (16 if mode.startswith("I;16") else 8)
    frames = count_frames(im) if fmt in ANIMATED_SOURCES else 1
    exif = read_exif(im, data)
    try:
        orientation = int(exif.get(ORIENTATION_TAG, 1))
    except Exception:
        orientation = 1
    if not 1 <= orientation <= 8:
        orientation = 1
    return Probe(
        format=fmt,
        width=width,
        height=height,
        frames=frames,
        orientation=orientation,
        mode=mode,
        progressive=progressive,
        quantization=quantization,
        icc_profile=icc_profile,
        exif=exif,
        jfif_density=jfif_density,
        jpeg_sampling=sampling,
        bit_depth=bit_depth,
        lossless=fmt == "webp" and webp_lossless(data),
    )


def webp_lossless(data: bytes | memoryview) -> bool:
    """Whether a WebP's (first) image is a VP8L bitstream: the first VP8 or VP8L chunk after the
    RIFF header decides; the chunks before it (VP8X, ICCP, ANIM, ...) are skipped unread."""
    offset, end = 12, len(data)
    for _ in range(64):
        if offset + 8 > end:
            return False
        kind, length = struct.unpack_from("<4sI", data, offset)
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8L"
        offset += 8 + length + (length & 1)      # payloads are padded to an even size
    return False


def count_frames(im: Image.Image) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1) or 1))
    except Exception:  # a truncated animation: its first frame is what can be read
        return 1


def read_exif(im: Image.Image, data: bytes | memoryview) -> Image.Exif:
    """The EXIF block without decoding pixels. Pillow's PNG ``getexif`` decodes the whole image when
    no eXIf chunk precedes the pixel data (one may follow it), which doubled the cost of every PNG
    request; walking the chunk list finds it for the price of reading a few lengths."""
    try:
        if im.format == "PNG" and "exif" not in im.info:
            exif = Image.Exif()
            raw = png_chunk(data, b"eXIf")
            if raw:
                exif.load(raw)
            return exif
        return im.getexif()
    except Exception:      # corrupt EXIF is no reason to refuse the image: treat it as absent
        return Image.Exif()


def png_chunk(data: bytes | memoryview, wanted: bytes) -> bytes | None:
    """The payload of the first chunk of type ``wanted``, skipping every other chunk unread."""
    offset, end = 8, len(data)
    while offset + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, offset)
        start = offset + 8
        if kind == wanted:
            return bytes(data[start:start + length])
        if kind == b"IEND":
            return None
        offset = start + length + 4          # payload, then CRC
    return None


# --- JPEG quality estimation -------------------------------------------------------------------------
# libjpeg scales the Annex K tables by a factor derived from the quality (jcparam.c). Comparing the sum
# of each candidate's table with the file's recovers the quality exactly for libjpeg-made files and
# closely for others; sums make the comparison independent of zigzag vs natural order.

_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
_STD_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.int64)


def _candidate_sums(std: np.ndarray) -> np.ndarray:
    qualities = np.arange(1, 101)
    scale = np.where(qualities < 50, 5000 // qualities, 200 - 2 * qualities)
    tables = np.clip((std[None, :] * scale[:, None] + 50) // 100, 1, 255)
    return tables.sum(axis=1)


_LUMA_SUMS = _candidate_sums(_STD_LUMA)
_CHROMA_SUMS = _candidate_sums(_STD_CHROMA)


def estimate_jpeg_quality(tables: tuple) -> int:
    error = np.abs(_LUMA_SUMS - sum(tables[0])).astype(np.float64)
    if len(tables) > 1:
        error += np.abs(_CHROMA_SUMS - sum(tables[1]))
    return int(np.argmin(error)) + 1
