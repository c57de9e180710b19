"""rotate (spec §5.7) and auto-orient (§5.6, a global flag applied before the pipeline)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import rotation_range_exceeded
from ..imaging.pixels import rotate_bound, with_alpha
from .base import (EC_SINGLE_VALUE, FLAG, PIXEL, ActionSpec, IntRange, Param, RunContext, StepCost,
                   megapixels)

_EXACT = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def apply_rotate(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    height, width = img.shape[:2]
    if max(width, height) > ctx.config.max_rotate_side:
        raise rotation_range_exceeded()
    angle = args["value"] % 360
    if angle == 0:
        return img
    if angle in _EXACT:
        return cv2.rotate(img, _EXACT[angle])
    # Any other angle: clockwise, on a canvas grown to the rotated bounding box. The new corners are
    # transparent where the output keeps alpha, white otherwise.
    if ctx.output_has_alpha:
        return rotate_bound(with_alpha(img), angle, (0, 0, 0, 0))
    return rotate_bound(img, angle, (255, 255, 255, 255))


def rotate_cost(size, args, ctx) -> StepCost:
    """Right angles: a 2 ms a megapixel copy; other angles: a cubic warp onto the grown bounding box,
    about 30 ms a megapixel of the source."""
    width, height = size
    angle = args["value"] % 360
    if angle == 0:
        return StepCost(0.0, size)
    if angle in _EXACT:
        return StepCost(2.0 * megapixels(size), (height, width) if angle != 180 else size)
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    grown = (math.ceil(width * cos + height * sin), math.ceil(width * sin + height * cos))
    return StepCost(30.0 * megapixels(size), grown)


ROTATE = ActionSpec(
    name="rotate",
    role=PIXEL,
    positional=Param("value", IntRange(0, 360), "0040-00000217", doc="clockwise degrees"),
    required=True,
    missing_ec="0040-00000216",
    many_values_ec=EC_SINGLE_VALUE,
    apply=apply_rotate,
    cost=rotate_cost,
    keeps_depth=lambda args: args["value"] % 90 == 0,   # exact turns; other angles fill white
    doc="rotate clockwise; the canvas grows for angles off the right angles",
)

AUTO_ORIENT = ActionSpec(
    name="auto-orient",
    role=FLAG,
    positional=Param("value", IntRange(0, 1), "0040-00000215", doc="1: follow EXIF Orientation"),
    required=True,                      # on by default when absent, yet a bare auto-orient is an error
    missing_ec="0040-00000214",
    many_values_ec=EC_SINGLE_VALUE,
    doc="global flag, applied before every other action whatever its position; on when absent",
)
