"""Text as an anti-aliased 8-bit mask, with OpenCV 5's FontFace and its built-in Unicode fonts.

OpenCV 5 ships 'uni' (a full Unicode face with CJK) and 'sans'/'italic' (Latin faces that fall back to
'uni' for CJK), so every OSS font name renders Chinese and Latin without font files on the machine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Font:
    face: str      # an OpenCV built-in face name
    weight: int    # 100..1000; 400 regular, 700 bold


# OSS's seven font names (spec §5.14) -> the closest built-in face. The Hei (sans) faces map to the sans
# faces, Kai (calligraphic) to the italic face, Song/FangSong (serif) to 'uni' at a light weight.
FONTS = {
    "wqy-zenhei": Font("uni", 400),
    "wqy-microhei": Font("sans", 400),
    "fangzhengshusong": Font("uni", 300),
    "fangzhengkaiti": Font("italic", 400),
    "fangzhengheiti": Font("sans", 700),
    "fangzhengfangsong": Font("uni", 300),
    "droidsansfallback": Font("uni", 400),
}
DEFAULT_FONT = "wqy-zenhei"

_faces = threading.local()   # FontFace objects hold render state: one set per thread


def _face(name: str) -> cv2.FontFace:
    cache = getattr(_faces, "cache", None)
    if cache is None:
        cache = _faces.cache = {}
    face = cache.get(name)
    if face is None:
        face = cache[name] = cv2.FontFace(name)
    return face


def text_mask(text: str, font: Font, size: int) -> np.ndarray:
    """An 8-bit coverage mask of ``text`` at ``size`` pixels, tight around the text's box + 1 px."""
    face = _face(font.face)
    x0, y0, width, height = cv2.getTextSize((0, 0), text, (0, 0), face, size, font.weight)
    mask = np.zeros((max(height, 1) + 2, max(width, 1) + 2), dtype=np.uint8)
    cv2.putText(mask, text, (1 - x0, 1 - y0), (255,), face, size, font.weight)
    return mask
