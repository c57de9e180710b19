"""blur (spec §5.8), bright (§5.9), contrast (§5.10), sharpen (§5.11).

OSS does not publish its algorithms; ours are the textbook ones, tuned so the documented ranges
behave as documented (0 is the identity for bright and contrast, larger means stronger).
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import (EC_SINGLE_VALUE, PIXEL, ActionSpec, IntRange, Param, RunContext, StepCost, megapixels,
                   per_megapixel)


def _check_blur(args: dict, config) -> dict:
    # OSS documents both r and s; with one missing we use the same value for the other.
    args.setdefault("r", args.get("s"))
    args.setdefault("s", args.get("r"))
    return args


def apply_blur(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    k = 2 * args["r"] + 1
    return cv2.GaussianBlur(img, (k, k), sigmaX=args["s"])


def blur_cost(size, args, ctx) -> StepCost:
    """A separable Gaussian: about 0.5 + 1.2 x r ms a megapixel (r 1: 1.5, r 10: 10, r 50: 58)."""
    return StepCost((0.5 + 1.2 * args["r"]) * megapixels(size), size)


def _lut_colour(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry table to the colour channels; alpha passes through unchanged."""
    table = table.astype(np.uint8)
    if img.shape[2] == 4:
        identity = np.arange(256, dtype=np.uint8)
        table = np.stack([table, table, table, identity], axis=-1).reshape(1, 256, 4)
    return cv2.LUT(img, table)


_LEVELS = np.arange(256, dtype=np.float32)


def apply_bright(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    value = args["value"]
    if value == 0:
        return img
    return _lut_colour(img, np.clip(_LEVELS + value * 255 / 100 + 0.5, 0, 255))


def apply_contrast(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    value = args["value"]
    if value == 0:
        return img
    # Slope through mid-grey: -100 flattens to grey, +100 is a near-threshold (slope 10).
    slope = (100 + value) / 100 if value < 0 else 1 + 9 * value / 100
    return _lut_colour(img, np.clip((_LEVELS - 127.5) * slope + 127.5 + 0.5, 0, 255))


def apply_sharpen(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    # Unsharp mask: amount grows with the value; 100 (OSS's recommendation) adds half the detail again.
    amount = args["value"] / 200
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=1.0)
    out = cv2.addWeighted(img, 1 + amount, blurred, -amount, 0)
    if img.shape[2] == 4:
        out[:, :, 3] = img[:, :, 3]
    return out


BLUR = ActionSpec(
    name="blur",
    role=PIXEL,
    params=(
        Param("r", IntRange(1, 50), "0040-00000241", doc="radius"),
        Param("s", IntRange(1, 50), "0040-00000242", doc="standard deviation"),
    ),
    required=True,
    missing_ec="0040-00000241",
    check=_check_blur,
    apply=apply_blur,
    cost=blur_cost,
    doc="Gaussian blur",
)

BRIGHT = ActionSpec(
    name="bright",
    role=PIXEL,
    positional=Param("value", IntRange(-100, 100), "0040-00000246", doc="<0 darker, >0 brighter"),
    required=True,
    missing_ec="0040-00000245",
    many_values_ec=EC_SINGLE_VALUE,
    apply=apply_bright,
    cost=per_megapixel(1.5),
    doc="brightness",
)

CONTRAST = ActionSpec(
    name="contrast",
    role=PIXEL,
    positional=Param("value", IntRange(-100, 100), None, doc="<0 less, >0 more"),
    required=True,
    apply=apply_contrast,
    cost=per_megapixel(1.5),
    doc="contrast",
)

SHARPEN = ActionSpec(
    name="sharpen",
    role=PIXEL,
    positional=Param("value", IntRange(50, 399), "0040-00000280", doc="strength, 100 recommended"),
    required=True,
    missing_ec="0040-00000279",
    many_values_ec=EC_SINGLE_VALUE,
    apply=apply_sharpen,
    cost=per_megapixel(3.5),
    doc="unsharp mask",
)
