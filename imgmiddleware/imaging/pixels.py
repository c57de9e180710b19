"""Small pixel helpers shared by several actions: resampling, rotation, alpha, compositing, canvases."""

from __future__ import annotations

import math

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


_SWAP_BAND_BYTES = 1 << 18


def swap_red_blue(img: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A) in ``img`` itself, a band of rows at a time: cvtColor copies its source first
    when it is also its destination, and a copy of a whole 27 MP image is 77 MB more; a band's copy
    is a quarter of a megabyte, and the whole swap as fast. Returns ``img``."""
    code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
    rows = max(1, _SWAP_BAND_BYTES // (img.shape[1] * img.shape[2] * img.itemsize))
    for top in range(0, img.shape[0], rows):
        band = img[top:top + rows]
        cv2.cvtColor(band, code, dst=band)
    return img


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
    if img.ndim != 3 or img.shape[2] != 4:
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


def rotate_bound(img: np.ndarray, degrees: float, border: tuple) -> np.ndarray:
    """Rotate clockwise on a canvas grown to the rotated bounding box (sides rounded half up)."""
    height, width = img.shape[:2]
    rad = math.radians(degrees)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    new_w = round_half_up(width * cos + height * sin)
    new_h = round_half_up(width * sin + height * cos)
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), -degrees, 1.0)
    matrix[0, 2] += (new_w - width) / 2
    matrix[1, 2] += (new_h - height) / 2
    return cv2.warpAffine(img, matrix, (new_w, new_h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def blend_over(base: np.ndarray, patch: np.ndarray, left: int, top: int) -> np.ndarray:
    """Composite a BGRA patch over ``base`` with its top-left corner at (left, top), clipped to base.

    Returns a new array; ``base`` is untouched. Where the patch is fully transparent the base pixels
    come out exactly as they went in.
    """
    out = base.copy()
    height, width = base.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + patch.shape[1], width), min(top + patch.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return out
    piece = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    alpha = piece[:, :, 3:4].astype(np.float32) * (1 / 255)
    region = out[y0:y1, x0:x1]
    colour = region[:, :, :3].astype(np.float32)
    colour += (piece[:, :, :3].astype(np.float32) - colour) * alpha
    region[:, :, :3] = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
    if out.shape[2] == 4:   # alpha "over": a + b(1 - a)
        below = region[:, :, 3:4].astype(np.float32) * (1 / 255)
        region[:, :, 3:4] = np.clip((alpha + below * (1 - alpha)) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def tile(patch: np.ndarray, width: int, height: int, left: int, top: int, gap_x: int, gap_y: int
         ) -> np.ndarray:
    """A width x height BGRA layer of ``patch`` repeated every (patch + gap), one copy at (left, top)."""
    cell = np.zeros((patch.shape[0] + gap_y, patch.shape[1] + gap_x, 4), dtype=np.uint8)
    cell[:patch.shape[0], :patch.shape[1]] = patch
    step_y, step_x = cell.shape[:2]
    start_x, start_y = left % step_x, top % step_y      # shift so a tile lands exactly on (left, top)
    reps_x = -(-(width + step_x) // step_x)
    reps_y = -(-(height + step_y) // step_y)
    layer = np.tile(cell, (reps_y, reps_x, 1))
    off_x, off_y = (step_x - start_x) % step_x, (step_y - start_y) % step_y
    return layer[off_y:off_y + height, off_x:off_x + width]


def grey_if_neutral(img: np.ndarray) -> np.ndarray:
    """One grey channel when every pixel of a BGR image is neutral (B == G == R), else the image.

    A grey source stays grey through actions that keep it neutral; a coloured watermark makes it
    colour, and then colour is what is written."""
    if img.ndim != 3 or img.shape[2] != 3:
        return img
    b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
    if np.array_equal(b, g) and np.array_equal(g, r):
        return np.ascontiguousarray(b)
    return img
