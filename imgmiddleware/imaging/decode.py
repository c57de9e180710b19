"""Decode once, with OpenCV, into 8-bit BGR or BGRA; JPEG may decode reduced (shrink-on-load).

EXIF orientation is never applied here (IMREAD_IGNORE_ORIENTATION): the pipeline applies it itself,
so it can be switched off with auto-orient,0 and so the planner knows the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


class DecodeError(Exception):
    pass


def reduced_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The size libjpeg produces when it decodes at 1/factor scale: each side rounded up."""
    return -(-width // factor), -(-height // factor)


def decode(data: bytes | memoryview, fmt: str, reduce: int = 1) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)  # a view, not a copy
    if fmt == "jpg":
        img = cv2.imdecode(buf, REDUCED_FLAGS[reduce] | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keeps alpha; UNCHANGED ignores orientation
    if img is None:
        raise DecodeError("The image could not be decoded.")
    return to_bgr8(img)


@dataclass
class Frames:
    """Every frame of an animation, fully composited, with its timing."""
    frames: list[np.ndarray]     # BGRA uint8, all the same size
    durations: list[int]         # milliseconds per frame
    loop_count: int              # 0 = forever


def decode_animation(data: bytes | memoryview) -> Frames:
    """All frames of an animated GIF or WebP (OpenCV 5's Animation API), decoded once."""
    ok, animation = cv2.imdecodeanimation(np.frombuffer(data, dtype=np.uint8))
    if not ok or not animation.frames:
        raise DecodeError("The animation could not be decoded.")
    return Frames([to_bgr8(frame) for frame in animation.frames],
                  [int(d) for d in animation.durations], int(animation.loop_count))


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Normalise to uint8 with 3 (BGR) or 4 (BGRA) channels, the two shapes the actions handle."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if channels == 2:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    return img
