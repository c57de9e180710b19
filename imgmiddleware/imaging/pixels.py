"""Small pixel helpers shared by several actions: resampling, alpha, canvases."""

from __future__ import annotations

import cv2
import numpy as np


def round_half_up(value: float) -> int:
    """OSS rounds derived sizes to the nearest integer, halves up (spec §4); never below 1."""
    return max(1, int(value + 0.5))


def resample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): INTER_AREA whenever no side grows (the right kernel for shrinking)."""
    height, width = img.shape[:2]
    if (width, height) == size:
        return img
    if size[0] <= width and size[1] <= height:
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def with_alpha(img: np.ndarray) -> np.ndarray:
    """BGRA version of the image (a new array when it had no alpha)."""
    if img.shape[2] == 4:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)


def apply_mask(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Multiply the image's alpha by an 8-bit mask of the same size (transparent where mask is 0)."""
    out = with_alpha(img)
    if out is img:
        out = img.copy()
    out[:, :, 3] = cv2.multiply(out[:, :, 3], mask, scale=1 / 255)
    return out


def flatten_on(img: np.ndarray, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Composite a BGRA image over an opaque colour (OSS: transparent becomes white in JPG)."""
    if img.shape[2] != 4:
        return img
    alpha = img[:, :, 3:4].astype(np.float32) * (1 / 255)
    background = np.array(color[::-1], dtype=np.float32)  # RGB -> BGR
    out = img[:, :, :3].astype(np.float32) * alpha + background * (1 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def canvas(width: int, height: int, channels: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """An opaque canvas of one colour, with an alpha channel when ``channels`` is 4."""
    fill = list(rgb[::-1]) + ([255] if channels == 4 else [])
    out = np.empty((height, width, channels), dtype=np.uint8)
    out[:] = fill
    return out
