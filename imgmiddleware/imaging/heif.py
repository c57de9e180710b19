"""HEIC/HEIF through pillow-heif, the optional 'heif' extra (pip install 'imgmiddleware[heif]').

OpenCV has no HEVC codec. With the extra installed, Pillow can probe HEIF (its opener is registered)
and these functions decode and encode; without it, HEIC sources and format,heic are clear 400s that
name the extra. libheif applies the file's rotation itself and resets EXIF Orientation to 1.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

try:
    import pillow_heif
except ImportError:   # the extra is not installed
    pillow_heif = None

AVAILABLE = pillow_heif is not None
EXTRA_HINT = "the optional 'heif' extra (pip install 'imgmiddleware[heif]')"

if AVAILABLE:
    pillow_heif.register_heif_opener()


def decode(data: bytes | memoryview) -> np.ndarray:
    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    pixels = np.asarray(heif)
    if pixels.ndim == 2 or pixels.shape[2] == 1:      # a grey HEIC (mode L): BGR like other sources
        return cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2BGR)
    code = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
    return cv2.cvtColor(pixels, code)


def encode(img: np.ndarray, quality: int) -> bytes:
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    alpha = img.shape[2] == 4
    pixels = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if alpha else cv2.COLOR_BGR2RGB)
    heif = pillow_heif.from_bytes(mode="RGBA" if alpha else "RGB", size=(img.shape[1], img.shape[0]),
                                  data=pixels.tobytes())
    out = io.BytesIO()
    heif.save(out, quality=quality)
    return out.getvalue()
