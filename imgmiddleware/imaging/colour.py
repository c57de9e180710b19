"""Colour management: every output is sRGB. Embedded ICC profiles are honoured, through LittleCMS
(Pillow's ImageCms), on the decoded (possibly shrunk) pixels before any action runs.

- RGB with a non-sRGB profile (Display P3 from phones, Adobe RGB from cameras): converted to sRGB.
- CMYK / YCCK JPEG: OpenCV's decoder converts CMYK to BGR with the naive formula and cannot hand over
  the ink values, so these are decoded by Pillow (with its DCT scaling for shrink-on-load) and
  converted through their embedded profile; without a profile the naive formula is all anyone has.
- sRGB-tagged, untagged and grey images are left alone (sRGB is what untagged pixels mean).
"""

from __future__ import annotations

import hashlib
import io
import threading

import cv2
import numpy as np
from cachetools import LRUCache
from PIL import Image, ImageCms

_SRGB = ImageCms.createProfile("sRGB")
_transforms: LRUCache = LRUCache(maxsize=32)
_lock = threading.Lock()


def _profile(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError):
        return None   # a broken profile: the pixels are used as they are, like an untagged image


def is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    return "srgb" in (ImageCms.getProfileDescription(profile) or "").lower()


def _transform(icc: bytes, in_mode: str, out_mode: str):
    """The cached icc -> sRGB transform, or None when no conversion is needed or possible."""
    key = (hashlib.sha1(icc).digest(), in_mode, out_mode)
    with _lock:
        if key in _transforms:
            return _transforms[key]
    profile = _profile(icc)
    transform = None
    if profile is not None and profile.profile.xcolor_space.strip() == in_mode[:4].strip() \
            and not is_srgb(profile):
        try:
            # NOCACHE: LittleCMS transforms are only thread-safe without their one-pixel cache.
            transform = ImageCms.buildTransform(profile, _SRGB, in_mode, out_mode,
                                                flags=ImageCms.Flags.NOCACHE)
        except ImageCms.PyCMSError:
            transform = None
    with _lock:
        _transforms[key] = transform
    return transform


def needs_conversion(icc: bytes | None, colour_space: str = "RGB") -> bool:
    return bool(icc) and _transform(icc, colour_space, "RGB") is not None


def rgb_to_srgb(img: np.ndarray, icc: bytes | None) -> np.ndarray:
    """BGR/BGRA pixels described by ``icc`` -> sRGB BGR/BGRA (alpha untouched)."""
    if not icc or img.dtype != np.uint8 or img.ndim != 3:
        return img
    transform = _transform(icc, "RGB", "RGB")
    if transform is None:
        return img
    rgb = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
    converted = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), transform))
    bgr = cv2.cvtColor(converted, cv2.COLOR_RGB2BGR)
    if img.shape[2] == 4:
        return np.dstack([bgr, img[:, :, 3]])
    return bgr


def cmyk_to_bgr(im: Image.Image, icc: bytes | None) -> np.ndarray:
    """A decoded Pillow CMYK image -> sRGB BGR, through its profile when it has a usable one."""
    transform = _transform(icc, "CMYK", "RGB") if icc else None
    rgb = ImageCms.applyTransform(im, transform) if transform is not None else im.convert("RGB")
    return cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
