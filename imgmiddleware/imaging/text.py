"""Text as an anti-aliased 8-bit coverage mask, drawn by FreeType (through Pillow) from a font file.

Chosen over OpenCV 5's ``FontFace`` on the same files by bench/text_bench.py (docs/BENCHMARKS.md):
OpenCV draws a cached face faster (0.03-1 ms a string against 0.2-2.5 ms) and, unhinted, closer to
the raw outlines, but it takes a path only and always opens face 0 of a .ttc collection, which in
Noto CJK is the Japanese face: three of OSS's seven names, and every name on a pip-only machine, would
draw Japanese glyph forms. FreeType selects the face, is the reference rasteriser for TrueType and CFF
outlines with hinting for small sizes, and its cost is far below an image's decode and encode. And
text no longer hangs on OpenCV's font API, which changed under us in 5.1. Layout is Pillow's BASIC
engine, so the pixels do not depend on whether libraqm happens to be on the machine.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fonts import Face

_fonts = threading.local()    # FreeType faces hold render state: one set per thread
_FONTS_PER_THREAD = 16


def _font(face: Face, size: int) -> ImageFont.FreeTypeFont:
    cache = getattr(_fonts, "cache", None)
    if cache is None:
        cache = _fonts.cache = {}
    key = (face.path, face.index, size)
    font = cache.pop(key, None)
    if font is None:
        font = ImageFont.truetype(face.path, size, index=face.index, layout_engine=ImageFont.Layout.BASIC)
    cache[key] = font                      # most recent last
    if len(cache) > _FONTS_PER_THREAD:
        del cache[next(iter(cache))]
    return font


def text_mask(runs: list[tuple[Face, str]], size: int) -> np.ndarray:
    """An 8-bit coverage mask of text at ``size`` pixels (the em size), tight around the drawn pixels
    + 1 px on each side. The text comes as runs of one face each (fonts.FontTable.runs), set one
    after the other on a common baseline."""
    placed = []                       # (font, run, pen x)
    left = top = right = bottom = None
    pen = 0.0
    for face, run in runs:
        font = _font(face, size)
        l, t, r, b = font.getbbox(run, anchor="ls")
        left = pen + l if left is None else min(left, pen + l)
        right = pen + r if right is None else max(right, pen + r)
        top = t if top is None else min(top, t)
        bottom = b if bottom is None else max(bottom, b)
        placed.append((font, run, pen))
        pen += font.getlength(run)
    if not placed:
        return np.zeros((3, 3), dtype=np.uint8)
    width, height = max(int(right - left), 1) + 2, max(int(bottom - top), 1) + 2
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for font, run, x in placed:
        draw.text((x - left + 1, 1 - top), run, font=font, fill=255, anchor="ls")
    return np.asarray(canvas)
