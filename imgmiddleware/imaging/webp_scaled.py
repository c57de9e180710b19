"""libwebp's own scaled decode (``WebPDecoderOptions.use_scaling``), for a WebP shrunk on load at 1/4
or 1/8, through ctypes on the libwebp that Pillow's wheel ships (pinned with Pillow by the lock).

OpenCV's reduced WebP decode (IMREAD_REDUCED_COLOR_N) decodes the whole image, then shrinks it with
INTER_LINEAR_EXACT: it holds the full-size frame, and at 1/4 and 1/8 its 2-tap filter skips pixels
and aliases. libwebp's rescaler averages each output pixel's whole area as the rows are decoded, so a
lossy WebP never exists at full size (bench/shrink_bench.py, 8 corpus WebPs: at 1/4 and 1/8 it takes
0.85-0.97x OpenCV's time and 14-38x less memory, and a fit-200 thumbnail is at SSIM 0.998 of the full
decode's, against OpenCV's 0.986). At 1/2 it is ~12% slower than OpenCV, whose 1/2 is an exact 2x2
average, so factor 2 -- and the full decode, identical pixels either way -- stay with OpenCV.
No maintained binding exposes use_scaling, hence the few structs of libwebp's src/webp/decode.h
mirrored below; all are passed by pointer, so only field order and C types matter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from pathlib import Path

import numpy as np

FACTORS = (4, 8)                     # the reduced decodes taken from OpenCV (see above)
WEBP_DECODER_ABI_VERSION = 0x0209    # WebPInit*Internal check the major byte only
MODE_BGR = 2                         # WEBP_CSP_MODE: packed B, G, R, OpenCV's order
VP8_STATUS_OK = 0                    # VP8StatusCode; anything else: the bitstream would not decode
_int, _u8p = ctypes.c_int, ctypes.POINTER(ctypes.c_uint8)


class WebPError(Exception):
    """libwebp refused the bitstream (a non-OK VP8StatusCode): decode.py makes it a DecodeError."""


# --- decode.h (libwebp 1.x) -------------------------------------------------------------------------

class WebPBitstreamFeatures(ctypes.Structure):
    _fields_ = [("width", _int), ("height", _int), ("has_alpha", _int), ("has_animation", _int),
                ("format", _int),                   # 0 mixed, 1 lossy, 2 lossless
                ("pad", ctypes.c_uint32 * 5)]


class WebPRGBABuffer(ctypes.Structure):             # packed samples: the view used here
    _fields_ = [("rgba", _u8p), ("stride", _int), ("size", ctypes.c_size_t)]


class WebPYUVABuffer(ctypes.Structure):             # planar samples: unused, but it sizes the union
    _fields_ = ([(c, _u8p) for c in "yuva"] + [(f"{c}_stride", _int) for c in "yuva"]
                + [(f"{c}_size", ctypes.c_size_t) for c in "yuva"])


class _WebPBuffers(ctypes.Union):
    _fields_ = [("RGBA", WebPRGBABuffer), ("YUVA", WebPYUVABuffer)]


class WebPDecBuffer(ctypes.Structure):
    _fields_ = [("colorspace", _int), ("width", _int), ("height", _int),
                ("is_external_memory", _int),       # 1: write into u.RGBA, allocate no output
                ("u", _WebPBuffers), ("pad", ctypes.c_uint32 * 4), ("private_memory", _u8p)]


class WebPDecoderOptions(ctypes.Structure):
    _fields_ = [(name, _int) for name in (
        "bypass_filtering", "no_fancy_upsampling", "use_cropping", "crop_left", "crop_top",
        "crop_width", "crop_height", "use_scaling", "scaled_width", "scaled_height", "use_threads",
        "dithering_strength", "flip", "alpha_dithering_strength")] + [("pad", ctypes.c_uint32 * 5)]


class WebPDecoderConfig(ctypes.Structure):
    _fields_ = [("input", WebPBitstreamFeatures), ("output", WebPDecBuffer),
                ("options", WebPDecoderOptions)]


# --- the library, loaded once on first use -----------------------------------------------------------

_LOCK = threading.Lock()
_LIB: list = []                      # [] not tried yet; [None] unusable; [CDLL] loaded


def _candidates() -> list[str]:
    """Pillow's wheel copy first (pillow.libs/ beside the PIL package), then the system's."""
    names = []
    try:
        import PIL
        names += [str(p) for p in sorted((Path(PIL.__file__).parent.parent / "pillow.libs")
                                         .glob("libwebp-*.so*"))]
    except ImportError:
        pass
    system = ctypes.util.find_library("webp")
    return names + ([system] if system else [])


def _load() -> ctypes.CDLL | None:
    config_p = ctypes.POINTER(WebPDecoderConfig)
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)     # CDLL, not PyDLL: every call releases the GIL
            lib.WebPInitDecoderConfigInternal.argtypes = [config_p, _int]
            lib.WebPGetFeaturesInternal.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                                    ctypes.POINTER(WebPBitstreamFeatures), _int]
            lib.WebPDecode.argtypes = [ctypes.c_void_p, ctypes.c_size_t, config_p]
            lib.WebPFreeDecBuffer.argtypes = [ctypes.POINTER(WebPDecBuffer)]
            lib.WebPFreeDecBuffer.restype = None
        except (OSError, AttributeError):
            continue
        if lib.WebPInitDecoderConfigInternal(WebPDecoderConfig(), WEBP_DECODER_ABI_VERSION):
            return lib
        # 0: a libwebp of another major ABI, whose structs are not the ones above
    return None


def library() -> ctypes.CDLL | None:
    """The libwebp loaded on first use (None: none usable); bench/shrink_bench.py measures with it."""
    if not _LIB:
        with _LOCK:
            if not _LIB:
                _LIB.append(_load())
    return _LIB[0]


def available() -> bool:
    """Whether a usable libwebp was found (loads it on the first call)."""
    return library() is not None


def scales(factor: int) -> bool:
    """Whether a reduced WebP decode at 1/factor is libwebp's scaled one (else OpenCV's)."""
    return factor in FACTORS and available()


def decode_scaled(data: bytes | memoryview, factor: int) -> np.ndarray | None:
    """BGR pixels of an opaque still WebP at (width // factor, height // factor), the size OpenCV's
    reduced decode gives (decode.reduced_size), written by libwebp straight into a numpy array.
    None to leave it to OpenCV: a factor not in FACTORS, no usable libwebp, a side that would be 0.
    A bitstream libwebp refuses raises WebPError."""
    lib = library() if factor in FACTORS else None
    return None if lib is None else decode_with(lib, data, factor)


def decode_with(lib: ctypes.CDLL, data: bytes | memoryview, factor: int = 1, threads: bool = False
                ) -> np.ndarray | None:
    """``decode_scaled`` at any factor (1: libwebp's plain decode), on a given library."""
    src = np.frombuffer(data, dtype=np.uint8)    # a view of bytes or memoryview, not a copy;
    pointer, length = src.ctypes.data, src.size  # `src` keeps it alive across the calls
    config = WebPDecoderConfig()
    if not lib.WebPInitDecoderConfigInternal(config, WEBP_DECODER_ABI_VERSION):
        return None
    status = lib.WebPGetFeaturesInternal(pointer, length, config.input, WEBP_DECODER_ABI_VERSION)
    if status != VP8_STATUS_OK:
        raise WebPError(f"WebPGetFeatures: VP8StatusCode {status}")
    width, height = config.input.width // factor, config.input.height // factor
    if width < 1 or height < 1:
        return None
    options = config.options
    options.use_threads = int(threads)
    if factor > 1:
        options.use_scaling, options.scaled_width, options.scaled_height = 1, width, height
    out = np.empty((height, width, 3), np.uint8)
    output = config.output
    output.colorspace, output.is_external_memory = MODE_BGR, 1
    output.u.RGBA.rgba = out.ctypes.data_as(_u8p)
    output.u.RGBA.stride, output.u.RGBA.size = width * 3, out.nbytes
    status = lib.WebPDecode(pointer, length, config)
    lib.WebPFreeDecBuffer(output)    # nothing to free with external memory; the API asks for it
    if status != VP8_STATUS_OK:
        raise WebPError(f"WebPDecode: VP8StatusCode {status}")
    return out
