"""circle (spec §5.4) and rounded-corners (§5.5): masks that make the outside transparent.

The alpha survives where the output format keeps it; the encoder flattens it on white for JPG.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..imaging.pixels import apply_mask
from .base import PIXEL, ActionSpec, IntRange, Param, RunContext, StepCost, megapixels, per_megapixel


def apply_circle(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    height, width = img.shape[:2]
    r = min(args["r"], (min(width, height) - 1) // 2)   # capped: the (2r+1) square must fit
    cx, cy = width // 2, height // 2
    square = img[cy - r:cy + r + 1, cx - r:cx + r + 1]
    mask = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.uint8)
    cv2.circle(mask, (r, r), r, 255, thickness=-1, lineType=cv2.LINE_AA)
    return apply_mask(square, mask)


def apply_rounded_corners(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    height, width = img.shape[:2]
    r = min(args["r"], min(width, height) // 2)
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.rectangle(mask, (r, 0), (width - 1 - r, height - 1), 255, thickness=-1)
    cv2.rectangle(mask, (0, r), (width - 1, height - 1 - r), 255, thickness=-1)
    for cx, cy in ((r, r), (width - 1 - r, r), (r, height - 1 - r), (width - 1 - r, height - 1 - r)):
        cv2.circle(mask, (cx, cy), r, 255, thickness=-1, lineType=cv2.LINE_AA)
    return apply_mask(img, mask)


def circle_cost(size, args, ctx) -> StepCost:
    """A mask on the (2r + 1) square it keeps: about 2 ms a megapixel of that square."""
    r = max(0, min(args["r"], (min(size) - 1) // 2))
    side = 2 * r + 1
    return StepCost(2.0 * megapixels((side, side)), (side, side))


CIRCLE = ActionSpec(
    name="circle",
    role=PIXEL,
    params=(Param("r", IntRange(1, 4096), "0040-00000233", doc="radius"),),
    required=True,
    missing_ec="0040-00000233",
    apply=apply_circle,
    cost=circle_cost,
    doc="inscribed circle, outside transparent (white in JPG)",
)

ROUNDED_CORNERS = ActionSpec(
    name="rounded-corners",
    role=PIXEL,
    params=(Param("r", IntRange(1, 4096), "0040-00000237", doc="corner radius"),),
    required=True,
    missing_ec="0040-00000237",
    apply=apply_rounded_corners,
    cost=per_megapixel(2.0),
    doc="round the corners, outside transparent (white in JPG)",
)
