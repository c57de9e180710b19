"""resize (spec §5.1): lfit, mfit, fill, pad, fixed; w, h, l, s, p, limit, color.

The geometry is a pure function of the input size and the arguments (:func:`geometry`), so the
planner can ask for the resample size before decoding and pick a JPEG shrink-on-load factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OssError
from ..imaging.pixels import canvas, resample, round_half_up
from .base import PIXEL, ActionSpec, Choice, HexColor, IntRange, Param, RunContext, StepCost, megapixels

MODES = ("lfit", "mfit", "fill", "pad", "fixed")
EC_TOO_LARGE = "0040-00000007"


@dataclass(frozen=True)
class Geometry:
    scaled: tuple[int, int]                          # resample the whole image to this (w, h)
    crop: tuple[int, int, int, int] | None = None    # then take (x, y, w, h) of it (fill)
    pad: tuple[int, int, int, int] | None = None     # or centre it on a (w, h) canvas at (x, y) (pad)

    @property
    def output(self) -> tuple[int, int]:
        if self.crop:
            return self.crop[2], self.crop[3]
        if self.pad:
            return self.pad[0], self.pad[1]
        return self.scaled


def _check(args: dict, config) -> dict:
    w, h = args.get("w"), args.get("h")
    if w == 0 and h == 0:
        raise OssError("InvalidArgument", "The width and height of resize cannot both be 0.",
                       "0040-00000321")
    if w == 0:
        raise OssError("InvalidArgument", "The value: 0 of parameter: w is invalid.", "0040-00000312")
    if h == 0:
        raise OssError("InvalidArgument", "The value: 0 of parameter: h is invalid.", "0040-00000313")
    if not any(k in args for k in ("w", "h", "l", "s", "p")):
        raise OssError("MissingArgument", "The action: resize requires w, h, l, s or p.",
                       "0040-00000322")
    # The requested box is checked against the output cap even where limit_1 would make it a no-op.
    box = (w, h) if w and h else (args["l"], args["s"]) if "l" in args and "s" in args else None
    if box and box[0] * box[1] > config.max_output_pixels:
        raise _too_large(config)
    return args


def _too_large(config) -> OssError:
    return OssError("InvalidArgument",
                    f"The resized image exceeds {config.max_output_side} pixels on a side or "
                    f"{config.max_output_pixels} pixels in total.", EC_TOO_LARGE)


def _fit(width: int, height: int, box_w: int, box_h: int, cover: bool) -> tuple[tuple[int, int], float]:
    """lfit (cover=False) or mfit (cover=True) into a box: the constraining side is exact."""
    rw, rh = box_w / width, box_h / height
    by_width = (rw >= rh) if cover else (rw <= rh)
    if by_width:
        return (box_w, round_half_up(height * rw)), rw
    return (round_half_up(width * rh), box_h), rh


def geometry(width: int, height: int, args: dict, never_enlarge: bool = False) -> Geometry | None:
    """What resize does to a width x height image, or None when it leaves it unchanged (limit)."""
    mode = args["m"]
    limit = args["limit"] == 1 or never_enlarge
    w, h, l, s, p = (args.get(k) for k in ("w", "h", "l", "s", "p"))
    proportional = mode in ("lfit", "mfit")
    landscape = width >= height

    # One side constrains a proportional mode: scale so that side is exact (w, h, l or s alone).
    single = None
    if w or h:                          # w/h present: l, s and p are ignored
        if w and h:
            box = (w, h)
        elif proportional:
            single = ("w", w) if w else ("h", h)
        else:
            box = (w, w) if w else (h, h)    # fixed/fill/pad with one side: a square box
    elif l or s:                        # l/s present: p is ignored
        if l and s:
            box = (l, s) if landscape else (s, l)
        elif proportional:
            constrain_width = landscape == bool(l)   # l binds the long side, s the short one
            single = ("w", l or s) if constrain_width else ("h", l or s)
        else:
            box = (l, l) if l else (s, s)
    else:
        if never_enlarge and p > 100:
            return None
        # p ignores limit (spec §11.8): it is an explicit percentage.
        return Geometry((round_half_up(width * p / 100), round_half_up(height * p / 100)))

    if single is not None:
        side, target = single
        ratio = target / (width if side == "w" else height)
        if limit and ratio > 1:
            return None
        if side == "w":
            return Geometry((target, round_half_up(height * ratio)))
        return Geometry((round_half_up(width * ratio), target))

    bw, bh = box
    if mode == "fixed":
        if limit and (bw > width or bh > height):
            return None
        return Geometry((bw, bh))
    scaled, ratio = _fit(width, height, bw, bh, cover=(mode in ("mfit", "fill")))
    if limit and ratio > 1:
        return None
    if mode == "fill":
        return Geometry(scaled, crop=((scaled[0] - bw) // 2, (scaled[1] - bh) // 2, bw, bh))
    if mode == "pad":
        return Geometry(scaled, pad=(bw, bh, (bw - scaled[0]) // 2, (bh - scaled[1]) // 2))
    return Geometry(scaled)


def _checked_geometry(width: int, height: int, args: dict, ctx: RunContext) -> Geometry | None:
    geo = geometry(width, height, args, never_enlarge=ctx.source_format == "gif")
    if geo is None:
        return None
    cfg = ctx.config
    for w, h in (geo.scaled, geo.output):
        if max(w, h) > cfg.max_output_side or w * h > cfg.max_output_pixels:
            raise _too_large(cfg)
    return geo


def resample_target(width: int, height: int, args: dict, ctx: RunContext) -> tuple[int, int] | None:
    geo = _checked_geometry(width, height, args, ctx)
    return geo.scaled if geo else None


def cost(size: tuple[int, int], args: dict, ctx: RunContext) -> StepCost:
    """Resampling reads the source once (0.5 ms a megapixel) and writes the scaled image (4 ms a
    megapixel, measured on enlargements, the dearer direction); the output size is the geometry's."""
    geo = _checked_geometry(size[0], size[1], args, ctx)
    if geo is None:
        return StepCost(0.0, size)
    return StepCost(0.5 * megapixels(size) + 4.0 * megapixels(geo.scaled), geo.output,
                    scratch=geo.scaled[0] * geo.scaled[1] * 4)


def apply(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    width, height = ctx.logical_size or (img.shape[1], img.shape[0])
    geo = _checked_geometry(width, height, args, ctx)
    if geo is None:
        return img
    out = resample(img, geo.scaled)
    if geo.crop:
        x, y, w, h = geo.crop
        out = out[y:y + h, x:x + w]
    elif geo.pad:
        cw, ch, x, y = geo.pad
        board = canvas(cw, ch, out.shape[2], args["color"])
        board[y:y + out.shape[0], x:x + out.shape[1]] = out
        out = board
    return out


SPEC = ActionSpec(
    name="resize",
    role=PIXEL,
    params=(
        Param("m", Choice(MODES), "0040-00000311", default="lfit", doc="mode"),
        Param("w", IntRange(0, 16384), "0040-00000312", doc="target width"),
        Param("h", IntRange(0, 16384), "0040-00000313", doc="target height"),
        Param("l", IntRange(1, 16384), "0040-00000314", doc="target longer side"),
        Param("s", IntRange(1, 16384), "0040-00000315", doc="target shorter side"),
        Param("p", IntRange(1, 1000), "0040-00000317", doc="percentage"),
        Param("limit", IntRange(0, 1), "0040-00000319", default=1, doc="1: never enlarge"),
        Param("color", HexColor(), "0040-00000318", default=(255, 255, 255), doc="pad colour"),
    ),
    required=True,
    missing_ec="0040-00000322",
    check=_check,
    apply=apply,
    cost=cost,
    resample_target=resample_target,
    # OSS: a percentage resize gives a static image; sizes by w/h/l/s keep the animation.
    keeps_animation=lambda args: any(k in args for k in ("w", "h", "l", "s")),
    keeps_depth=lambda args: args["m"] != "pad",   # the pad canvas is an 8-bit colour
    doc="scale by a box, a side or a percentage",
)
