"""crop (spec §5.2) and indexcrop (§5.3): rectangular cuts. Both return views, never copies."""

from __future__ import annotations

import numpy as np

from ..errors import OssError
from .base import PIXEL, ActionSpec, Choice, IntRange, Param, RunContext, StepCost

GRAVITIES = ("nw", "north", "ne", "west", "center", "east", "sw", "south", "se")
BIG = 2**31 - 1


def grid_origin(gravity: str, src_w: int, src_h: int, w: int, h: int) -> tuple[int, int]:
    """The nine-grid anchor of a w x h box in a src_w x src_h image (the 2024 formula table)."""
    if gravity in ("nw", "west", "sw"):
        x = 0
    elif gravity in ("north", "center", "south"):
        x = src_w // 2 - w // 2
    else:
        x = src_w - w
    if gravity in ("nw", "north", "ne"):
        y = 0
    elif gravity in ("west", "center", "east"):
        y = src_h // 2 - h // 2
    else:
        y = src_h - h
    return max(0, x), max(0, y)


def apply_crop(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    src_h, src_w = img.shape[:2]
    w = args.get("w") or src_w          # absent or 0: to the boundary
    h = args.get("h") or src_h
    ox, oy = grid_origin(args["g"], src_w, src_h, min(w, src_w), min(h, src_h))
    ox += args["x"]
    oy += args["y"]
    if ox >= src_w or oy >= src_h:
        raise OssError("BadRequest", "Advance cut's position is out of image.")
    return img[oy:oy + min(h, src_h - oy), ox:ox + min(w, src_w - ox)]


def crop_cost(size, args, ctx) -> StepCost:
    """A view: no pixel work; the size of the box (the whole image when the box is off it, which
    fails when it runs)."""
    src_w, src_h = size
    w = min(args.get("w") or src_w, src_w)
    h = min(args.get("h") or src_h, src_h)
    ox, oy = grid_origin(args["g"], src_w, src_h, w, h)
    ox, oy = ox + args["x"], oy + args["y"]
    if ox >= src_w or oy >= src_h:
        return StepCost(0.0, size)
    return StepCost(0.0, (min(w, src_w - ox), min(h, src_h - oy)))


def indexcrop_cost(size, args, ctx) -> StepCost:
    src_w, src_h = size
    index = args["i"]
    if "y" in args:
        step = args["y"]
        return StepCost(0.0, size if index * step >= src_h else (src_w, min(step, src_h - index * step)))
    step = args["x"]
    return StepCost(0.0, size if index * step >= src_w else (min(step, src_w - index * step), src_h))


def _check_indexcrop(args: dict, config) -> dict:
    if "x" not in args and "y" not in args:
        raise OssError("InvalidArgument", "indexcrop needs x or y.", "0040-00000230")
    return args


def apply_indexcrop(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    src_h, src_w = img.shape[:2]
    index = args["i"]
    if "y" in args:                     # both given: y wins (spec §5.3)
        step = args["y"]
        if index * step >= src_h:       # index past the last slice: the image unchanged
            return img
        return img[index * step:min((index + 1) * step, src_h), :]
    step = args["x"]
    if index * step >= src_w:
        return img
    return img[:, index * step:min((index + 1) * step, src_w)]


CROP = ActionSpec(
    name="crop",
    role=PIXEL,
    params=(
        Param("w", IntRange(0, BIG), "0040-00000225", doc="width; 0 or absent: to the edge"),
        Param("h", IntRange(0, BIG), "0040-00000226", doc="height; 0 or absent: to the edge"),
        Param("x", IntRange(0, BIG), "0040-00000227", default=0, doc="offset right of the anchor"),
        Param("y", IntRange(0, BIG), "0040-00000228", default=0, doc="offset down from the anchor"),
        Param("g", Choice(GRAVITIES), "0040-00000209", default="nw", doc="nine-grid anchor"),
    ),
    apply=apply_crop,
    cost=crop_cost,
    keeps_animation=True,
    keeps_depth=True,
    doc="cut a rectangle anchored on the nine-grid",
)

INDEXCROP = ActionSpec(
    name="indexcrop",
    role=PIXEL,
    params=(
        Param("x", IntRange(1, BIG), "0040-00000230", doc="slice width (vertical strips)"),
        Param("y", IntRange(1, BIG), "0040-00000224", range_ec="0040-00000230",
              doc="slice height (horizontal strips)"),
        Param("i", IntRange(0, BIG), "0040-00000229", default=0, doc="slice index"),
    ),
    check=_check_indexcrop,
    apply=apply_indexcrop,
    cost=indexcrop_cost,
    keeps_depth=True,
    doc="cut into equal strips and keep one",
)
