#!/usr/bin/env python3
"""Text renderer benchmark: Pillow's FreeType against OpenCV 5's FontFace, on the same font files.

Run ``python3 bench/text_bench.py`` (a few seconds). For each font file that serves an OSS font name
here (imgmiddleware/imaging/fonts.py) and three sizes, both renderers draw the same mixed Latin and
Chinese string white on black. Reported per renderer:

* ms per string, with the font object made once and reused (as the service does);
* ms to open the font file (each process does it once per face and size);
* PSNR of each glyph against the same renderer's drawing of it at 8x the size, reduced with
  INTER_AREA and moved (sub-pixel) onto the same centre of mass: how close its anti-aliased shapes
  come to the exact coverage of the outlines, whatever the pen positions (higher is better);
* whether it drew the face the OSS name asks for: OpenCV's FontFace takes a path only and always
  opens face 0 of a .ttc collection (Noto CJK's face 0 is Japanese, not SC).

A measurement, not a test: no time asserts. imaging/text.py records the choice it led to.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

from imgmiddleware import Config  # noqa: E402
from imgmiddleware.imaging.fonts import font_table_for  # noqa: E402

TEXT = "Hello 图片服务 OSS 水印文字"
SCALE = 8
SIZES = (20, 40, 100)


def canvas_size(size: int, scale: int) -> tuple[int, int]:
    return (len(TEXT) * size + 40) * scale, 2 * size * scale


class PillowRenderer:
    name = "Pillow FreeType"

    def open(self, path: str, index: int, size: int):
        return ImageFont.truetype(path, size, index=index, layout_engine=ImageFont.Layout.BASIC)

    def draw(self, font, size: int, scale: int = 1, text: str = TEXT) -> np.ndarray:
        width, height = canvas_size(size, scale)
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).text((10 * scale, int(1.4 * size) * scale), text, font=font, fill=255,
                                    anchor="ls")
        return np.asarray(canvas)


class OpenCVRenderer:
    name = "OpenCV FontFace"

    def open(self, path: str, index: int, size: int):
        return cv2.FontFace(path)          # no way to ask for face `index` of a collection

    def draw(self, font, size: int, scale: int = 1, text: str = TEXT) -> np.ndarray:
        width, height = canvas_size(size, scale)
        canvas = np.zeros((height, width), np.uint8)
        cv2.putText(canvas, text, (10 * scale, int(1.4 * size) * scale), (255,), font, size * scale, 400)
        return canvas


def centred(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` moved (bilinear, sub-pixel) so its centre of mass is the middle of a ``size`` canvas."""
    moments = cv2.moments(mask.astype(np.float32))
    if moments["m00"] == 0:
        return np.zeros(size[::-1], np.float32)
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    shift = np.float32([[1, 0, size[0] / 2 - cx], [0, 1, size[1] / 2 - cy]])
    return cv2.warpAffine(mask.astype(np.float32), shift, size, flags=cv2.INTER_LINEAR)


def glyph_psnr(renderer, font, big_font, size: int) -> float:
    """PSNR over every glyph of TEXT, each drawn alone and centred against its 8x reference."""
    errors = []
    for char in dict.fromkeys(TEXT.replace(" ", "")):
        small = renderer.draw(font, size, text=char)
        big = renderer.draw(big_font, size, SCALE, text=char)
        reduced = cv2.resize(big, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
        box = (3 * size, 3 * size)
        errors.append(float(np.mean((centred(small, box) - centred(reduced, box)) ** 2)))
    mse = float(np.mean(errors))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def timed(fn, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="renders timed per cell (default 30)")
    args = parser.parse_args()
    table = font_table_for(Config())
    faces = {}
    for name, face in table.faces.items():
        if face is not None:
            faces.setdefault((face.path, face.index), (face, []))[1].append(name)
    print(f"Text renderers, {platform.machine()}, {os.cpu_count()} cores, Pillow "
          f"{Image.__version__}, OpenCV {cv2.__version__}")
    print(f"String: {TEXT!r}; glyph PSNR against the same renderer at {SCALE}x, reduced with INTER_AREA\n")
    print("| face (OSS names) | size | renderer | ms/string | ms to open | PSNR dB | right face |")
    print("|---|---:|---|---:|---:|---:|---|")
    for face, names in faces.values():
        for size in SIZES:
            for renderer in (PillowRenderer(), OpenCVRenderer()):
                open_ms = timed(lambda: renderer.open(face.path, face.index, size), 3)
                font = renderer.open(face.path, face.index, size)
                big_font = renderer.open(face.path, face.index, size * SCALE)
                quality = glyph_psnr(renderer, font, big_font, size)
                ms = timed(lambda: renderer.draw(font, size), args.runs)
                right = "yes" if face.index == 0 or isinstance(renderer, PillowRenderer) else \
                    f"no (face 0, not #{face.index})"
                label = f"{face.family} {face.style} ({', '.join(names)})"
                print(f"| {label} | {size} | {renderer.name} | {ms:.2f} | {open_ms:.1f} | "
                      f"{quality:.1f} | {right} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
