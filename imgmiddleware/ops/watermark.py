"""watermark (spec §5.14): text, image, or both side by side; placed on the nine-grid or tiled.

The image of an image watermark is another object of the wrapped app, fetched through it by the
``load_object`` function the middleware puts in the RunContext, and optionally preprocessed by its own
nested pipeline (``panda.png?x-oss-process=image/resize,P_30``) restricted to NESTED_ACTIONS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import OssError
from ..imaging.pixels import blend_over, resample, rotate_bound, round_half_up, tile, with_alpha
from ..imaging.fonts import DEFAULT_FONT, FONT_NAMES, font_table_for
from ..imaging.text import text_mask
from . import crop, orient, resize, shape
from .base import (PIXEL, ActionSpec, Base64Text, Choice, HexColor, IntRange, Param, RunContext, Step,
                   StepCost, megapixels, parse_actions)

GRAVITIES = ("nw", "north", "ne", "west", "center", "east", "sw", "south", "se")
# Formats a watermark image may have (spec §5.14); anything else is EC 0040-00000027.
WATERMARK_FORMATS = frozenset({"jpg", "png", "bmp", "webp", "tiff"})
PROCESS_MARK = "?x-oss-process="
VOFFSET_DOWN = 1   # OSS leaves the sign of voffset undocumented; ours: positive moves the mark down


# --- the image_ parameter: a key, maybe with a nested pipeline --------------------------------------

@dataclass(frozen=True)
class WatermarkSource:
    key: str
    steps: tuple[Step, ...] = ()

    def canonical(self) -> str:
        if not self.steps:
            return self.key
        return self.key + PROCESS_MARK + "image/" + "/".join(step.canonical() for step in self.steps)


def _nested_resize_check(args: dict, config) -> dict:
    if "P" in args:   # P alone is enough: it sizes the mark from the base image
        return args
    return resize.SPEC.check(args, config)


def _nested_resize(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    if "P" not in args:
        return resize.apply(img, args, ctx)
    # P: fit the mark proportionally into P% of the base image (base 100x100, P_10 -> 10x10). It is
    # an explicit size, so it enlarges a small mark too.
    base_w, base_h = ctx.base_size
    box_w = round_half_up(base_w * args["P"] / 100)
    box_h = round_half_up(base_h * args["P"] / 100)
    height, width = img.shape[:2]
    ratio = min(box_w / width, box_h / height)
    return resample(img, (round_half_up(width * ratio), round_half_up(height * ratio)))


NESTED_RESIZE = replace(
    resize.SPEC,
    params=resize.SPEC.params + (Param("P", IntRange(1, 100), None, doc="percent of the base image"),),
    check=_nested_resize_check,
    apply=_nested_resize,
    resample_target=None,
)
# What a watermark image may do to itself first (spec §5.14); a nested watermark is EC 0040-00000373.
NESTED_ACTIONS = {spec.name: spec for spec in (
    NESTED_RESIZE, crop.CROP, crop.INDEXCROP, shape.ROUNDED_CORNERS, orient.ROTATE, orient.AUTO_ORIENT)}


class WatermarkImageKind(Base64Text):
    """base64 of '<key>' or '<key>?x-oss-process=image/...'. Converts to the decoded text; the
    action's check turns it into a WatermarkSource with its nested steps parsed (it has the config)."""

    def canon(self, value: WatermarkSource) -> str:
        return super().canon(value.canonical())

    def describe(self) -> str:
        return "base64 object key [+ ?x-oss-process=image/...]"


def watermark_source(text: str, config) -> WatermarkSource:
    key, mark, process = text.partition(PROCESS_MARK)
    if not mark:
        return WatermarkSource(key)
    if not process.startswith("image/"):
        raise OssError("InvalidArgument", "The watermark image's x-oss-process must start with image/.")
    body = process[len("image/"):]
    for segment in body.split("/"):
        name = segment.partition(",")[0]
        if name == "watermark":
            raise OssError("InvalidArgument", "A watermark image cannot carry a watermark.",
                           "0040-00000373")
        if name and name not in NESTED_ACTIONS:
            raise OssError("InvalidArgument",
                           f"The action: {name} is not supported for a watermark image; use "
                           + ", ".join(NESTED_ACTIONS) + ".")
    return WatermarkSource(key, tuple(parse_actions(body, NESTED_ACTIONS, config)))


# --- validation -------------------------------------------------------------------------------------

def check_image_count(steps, config) -> None:
    """At most ``max_watermark_images`` distinct watermark images in one process string, refused
    with OSS's EC page for it before any object is fetched."""
    keys = {step.args["image"].key for step in steps if step.name == "watermark" and "image" in step.args}
    if len(keys) > config.max_watermark_images:
        raise OssError("WatermarkError", f"At most {config.max_watermark_images} distinct watermark "
                       f"images can be used on one image; this asks for {len(keys)}.", "0040-00000026")


def _check(args: dict, config) -> dict:
    if "text" not in args and "image" not in args:
        # Same Code as a bare `image/watermark` (a missing value, docs/COMPATIBILITY.md decision 7)
        raise OssError("MissingArgument", "The watermark needs text or image.", "0040-00000278")
    font = args.get("type", DEFAULT_FONT)
    if font not in FONT_NAMES:
        raise OssError("InvalidArgument", f"The value: {font} of parameter: type is invalid.",
                       "0040-00000251")
    args["type"] = font
    if "text" in args:
        text_runs(args, config)      # text no font here can draw is refused before any work
    if "image" in args:
        args["image"] = watermark_source(args["image"], config)
    return args


# --- rendering --------------------------------------------------------------------------------------

def text_runs(args: dict, config):
    """The text cut into runs of the faces that draw it for its OSS font name (imaging/fonts.py).
    Text with characters no font here has is refused, never drawn as empty boxes or '?'
    (docs/COMPATIBILITY.md)."""
    runs, missing = font_table_for(config).runs(args["type"], args["text"])
    if missing:
        chars = " ".join(f"U+{ord(c):04X}" for c in missing[:8])
        raise OssError("InvalidArgument",
                       f"The text has characters no font on this server can draw: {chars}.",
                       "0040-00000257")
    return runs


def text_patch(args: dict, config) -> np.ndarray:
    """BGRA block of the text in its colour, with its shadow, rotated; alpha is glyph coverage."""
    mask = text_mask(text_runs(args, config), args["size"])
    shadow = args["shadow"]
    offset = max(1, round(args["size"] / 20)) if shadow else 0
    height, width = mask.shape[0] + offset, mask.shape[1] + offset
    alpha = np.zeros((height, width), dtype=np.float32)
    if shadow:   # a black copy down and right, at shadow% opacity, under the text
        alpha[offset:, offset:] = mask * (shadow / 100)
    glyph = np.zeros((height, width), dtype=np.float32)
    glyph[:mask.shape[0], :mask.shape[1]] = mask
    glyph *= 1 / 255
    r, g, b = args["color"]
    # Text over shadow: colour = text colour where the glyph covers, black beneath; alpha "over".
    patch = np.zeros((height, width, 4), dtype=np.float32)
    shadow_a = alpha * (1 / 255)
    out_a = glyph + shadow_a * (1 - glyph)
    safe = np.where(out_a > 0, out_a, 1)
    for channel, value in enumerate((b, g, r)):
        patch[:, :, channel] = value * glyph / safe
    patch[:, :, 3] = out_a * 255
    patch = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    if args["rotate"] % 360:
        patch = rotate_bound(patch, args["rotate"], (0, 0, 0, 0))
    return patch


def image_patch(source: WatermarkSource, ctx: RunContext, base_size: tuple[int, int]) -> np.ndarray:
    if ctx.load_object is None:
        raise OssError("WatermarkError", "Image watermarks need an object loader.", "0040-00000025")
    # auto-orient is a flag here as at the top level: on unless the mark's own pipeline says 0.
    orient = all(step.args["value"] == 1 for step in source.steps if step.name == "auto-orient")
    img = with_alpha(ctx.load_object(source.key, WATERMARK_FORMATS, orient))
    # The mark keeps its alpha through its own pipeline: it is processed as if for a PNG output.
    nested = replace(ctx, output_format="png", output_has_alpha=True, logical_size=None,
                     base_size=base_size)
    for step in source.steps:
        if step.spec.role == PIXEL:
            img = with_alpha(step.spec.apply(img, step.args, nested))
    return img


def side_by_side(first: np.ndarray, second: np.ndarray, align: int, interval: int) -> np.ndarray:
    """Two BGRA blocks in a row, ``interval`` apart, aligned top (0), middle (1) or bottom (2)."""
    height = max(first.shape[0], second.shape[0])
    block = np.zeros((height, first.shape[1] + interval + second.shape[1], 4), dtype=np.uint8)
    for left, part in ((0, first), (first.shape[1] + interval, second)):
        top = (0, (height - part.shape[0]) // 2, height - part.shape[0])[align]
        block[top:top + part.shape[0], left:left + part.shape[1]] = part
    return block


def placement(args: dict, base_w: int, base_h: int, mark_w: int, mark_h: int) -> tuple[int, int]:
    """(left, top) of the mark on the nine-grid, with x/y margins and the voffset shift."""
    g, x, y = args["g"], args["x"], args["y"]
    if g in ("nw", "west", "sw"):
        left = x
    elif g in ("north", "center", "south"):
        left = (base_w - mark_w) // 2
    else:
        left = base_w - mark_w - x
    if g in ("nw", "north", "ne"):
        top = y
    elif g in ("west", "center", "east"):
        top = (base_h - mark_h) // 2 + VOFFSET_DOWN * args["voffset"]
    else:
        top = base_h - mark_h - y
    return left, top


def apply(img: np.ndarray, args: dict, ctx: RunContext) -> np.ndarray:
    base_h, base_w = img.shape[:2]
    parts = []
    if "image" in args:
        parts.append(image_patch(args["image"], ctx, (base_w, base_h)))
    if "text" in args:
        parts.append(text_patch(args, ctx.config))
    if len(parts) == 2:
        image_part, text_part = parts
        first, second = (text_part, image_part) if args["order"] == 1 else (image_part, text_part)
        block = side_by_side(first, second, args["align"], args["interval"])
    else:
        block = parts[0]
    opacity = args["t"]
    if opacity == 0:
        return img
    if opacity < 100:
        block = block.copy()
        block[:, :, 3] = (block[:, :, 3].astype(np.uint16) * opacity // 100).astype(np.uint8)
    left, top = placement(args, base_w, base_h, block.shape[1], block.shape[0])
    if args["fill"]:
        layer = tile(block, base_w, base_h, left, top, args["padx"], args["pady"])
        return blend_over(img, layer, 0, 0)
    return blend_over(img, block, left, top)


def cost(size: tuple[int, int], args: dict, ctx: RunContext) -> StepCost:
    """A mark blended where it lands: 2 ms a megapixel of the base, plus the text's own drawing
    (about 20 ms a megapixel of its block) and an image mark's fetch and decode (20 ms). Tiled
    (fill_1), the blend covers the whole base: 30 ms a megapixel, with a tiled layer and float copies
    of it (24 bytes a pixel) held meanwhile."""
    ms = 20.0 if "image" in args else 0.0
    if "text" in args:
        size_px = args["size"]
        ms += 20.0 * megapixels((size_px * max(len(args["text"]), 1), size_px))
    if args["fill"]:
        return StepCost(ms + 30.0 * megapixels(size), size, scratch=size[0] * size[1] * 24)
    return StepCost(ms + 2.0 * megapixels(size), size)


SPEC = ActionSpec(
    name="watermark",
    role=PIXEL,
    params=(
        Param("t", IntRange(0, 100), "0040-00000263", default=100, doc="opacity"),
        Param("g", Choice(GRAVITIES), "0040-00000260", default="se", doc="anchor on the nine-grid"),
        Param("x", IntRange(0, 4096), "0040-00000262", default=10, doc="horizontal margin"),
        Param("y", IntRange(0, 4096), "0040-00000264", default=10, doc="vertical margin"),
        Param("voffset", IntRange(-1000, 1000), "0040-00000268", default=0,
              doc="vertical shift for west/center/east; positive moves down"),
        Param("fill", IntRange(0, 1), "0040-00000274", default=0, doc="1: tile over the whole image"),
        Param("padx", IntRange(0, 4096), "0040-00000276", default=0, doc="horizontal gap between tiles"),
        Param("pady", IntRange(0, 4096), "0040-00000277", default=0, doc="vertical gap between tiles"),
        Param("text", Base64Text(max_bytes=64), "0040-00000257", code="BadRequest",
              range_ec="0040-00000259", missing_ec="0040-00000258",
              doc="base64 of the UTF-8 text, <= 64 bytes"),
        Param("type", Base64Text(max_bytes=64), "0040-00000250", code="BadRequest",
              doc="base64 of the font name"),
        Param("color", HexColor(), "0040-00000254", default=(0, 0, 0), doc="text colour"),
        Param("size", IntRange(1, 1000), "0040-00000256", default=40, doc="text size in px"),
        Param("shadow", IntRange(0, 100), "0040-00000255", default=0, doc="text shadow opacity"),
        Param("rotate", IntRange(0, 360), "0040-00000272", default=0, doc="text rotation, clockwise"),
        Param("image", WatermarkImageKind(max_bytes=4096), "0040-00000265", code="BadRequest",
              doc="base64 of an object key, optionally with ?x-oss-process="),
        Param("order", IntRange(0, 1), "0040-00000269", default=0, doc="0: image first, 1: text first"),
        Param("align", IntRange(0, 2), "0040-00000271", default=2,
              doc="text vs image: 0 top, 1 middle, 2 bottom"),
        Param("interval", IntRange(0, 1000), "0040-00000270", default=0, doc="gap between image and text"),
    ),
    required=True,
    missing_ec="0040-00000278",
    check=_check,
    apply=apply,
    cost=cost,
    keeps_animation=True,
    doc="text and/or image watermark",
)
