"""info (spec §5.16) and average-hue (§5.17): actions that answer JSON instead of an image.

info writes OSS's own document, to the byte (docs/COMPATIBILITY.md decision 27): exiv2's tag names
and value texts, the JFIF density and the thumbnail IFD as OSS reports them, keys in sorted order,
one field a line.
"""

from __future__ import annotations

import json
from fractions import Fraction

import cv2
import numpy as np
from PIL import ExifTags, TiffImagePlugin

from .base import REPORT, ActionSpec, RunContext

_GPS_REF_WORDS = {"N": "North", "S": "South", "E": "East", "W": "West"}
# OSS names fields as exiv2 does; these are the tags whose Pillow name differs. ExifOffset and
# GPSInfo are the pointers OSS calls ExifTag and GPSTag (their values are the offsets).
_EXIV2_NAMES = {
    0x0201: "JPEGInterchangeFormat", 0x0202: "JPEGInterchangeFormatLength",
    0x8769: "ExifTag", 0x8825: "GPSTag", 0xA005: "InteroperabilityTag",
    0xA002: "PixelXDimension", 0xA003: "PixelYDimension", 0x9214: "SubjectArea",
    0x9290: "SubSecTime", 0x9291: "SubSecTimeOriginal", 0x9292: "SubSecTimeDigitized",
    0xA000: "FlashpixVersion",
}
_SKIPPED = {0x927C}                      # MakerNote: vendor bytes, not text
_GPS_DEGREES = ("GPSLatitude", "GPSLongitude", "GPSDestLatitude", "GPSDestLongitude")
_DEGREE_UNITS = (("deg", 7), ("'", 5), ('"', 3))
# The JFIF unit byte as EXIF's ResolutionUnit: 0 (no unit) -> 1, 1 (dpi) -> 2, 2 (dpcm) -> 3.
_JFIF_UNIT = {0: "1", 1: "2", 2: "3"}


def _exif_string(value) -> str:
    """EXIF value as text: rationals as n/d, sequences and short byte strings space-separated."""
    if isinstance(value, TiffImagePlugin.IFDRational):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, bytes):
        if len(value) <= 8:
            return " ".join(str(b) for b in value)
        return value.rstrip(b"\0").decode("latin-1", "replace")
    if isinstance(value, (tuple, list)):
        return " ".join(_exif_string(v) for v in value)
    return str(value).rstrip("\0")


def _degrees(value) -> str:
    """(degrees, minutes, seconds) as OSS writes them: a zero coordinate is "0deg ". Components up to
    the last non-zero one, each followed by its unit and a space; whole values without decimals,
    others with 7, 5 and 3 (the documented zero is all the evidence; the rest is exiv2's rule)."""
    try:
        parts = [(int(v.numerator), int(v.denominator)) for v in value]
    except (AttributeError, TypeError, ValueError):
        return _exif_string(value)
    if len(parts) != 3 or any(d == 0 for _, d in parts):
        return _exif_string(value)
    last = max((i for i, (n, _) in enumerate(parts) if n), default=0)
    text = ""
    for (n, d), (unit, decimals) in zip(parts[:last + 1], _DEGREE_UNITS):
        text += f"{n / d:.{0 if n % d == 0 else decimals}f}{unit} "
    return text


def _ifd(entries, names) -> dict[str, str]:
    fields = {}
    for tag, value in entries.items():
        name = _EXIV2_NAMES.get(tag) or names.get(tag)
        if name and tag not in _SKIPPED:
            fields[name] = _exif_string(value)
    return fields


def _jfif_resolution(density) -> dict[str, str]:
    if not density or density[0] not in _JFIF_UNIT:
        return {}
    unit, x, y = density
    return {"ResolutionUnit": _JFIF_UNIT[unit], "XResolution": f"{x}/1", "YResolution": f"{y}/1"}


def exif_fields(exif, jfif_density=None) -> dict[str, str]:
    """Every field info reports besides the basic five. The thumbnail's IFD (Compression,
    JPEGInterchangeFormat...) first, then the JFIF density, then the main image's IFD over both: a
    resolution the main IFD gives wins, the thumbnail's is the last resort."""
    fields = _ifd(exif.get_ifd(ExifTags.IFD.IFD1), ExifTags.TAGS)
    fields.update(_jfif_resolution(jfif_density))
    fields.update(_ifd(exif, ExifTags.TAGS))
    if ExifTags.IFD.Exif in exif:
        fields.update(_ifd(exif.get_ifd(ExifTags.IFD.Exif), ExifTags.TAGS))
    if ExifTags.IFD.GPSInfo in exif:
        gps = _ifd(exif.get_ifd(ExifTags.IFD.GPSInfo), ExifTags.GPSTAGS)
        for tag, value in exif.get_ifd(ExifTags.IFD.GPSInfo).items():
            name = ExifTags.GPSTAGS.get(tag)
            if name in _GPS_DEGREES:
                gps[name] = _degrees(value)
            elif name and name.endswith("Ref") and name[:-3] in _GPS_DEGREES:
                gps[name] = _GPS_REF_WORDS.get(gps[name], gps[name])
        fields.update(gps)
    return fields


def info(img, args: dict, ctx: RunContext) -> dict:
    """The stored object's facts, from its header alone (no pixels decoded)."""
    probe = ctx.probe
    fields = exif_fields(probe.exif, probe.jfif_density)
    fields.update({
        "FileSize": str(ctx.source_bytes),
        "Format": probe.format,
        "FrameCount": str(probe.frames),
        "ImageHeight": str(probe.height),
        "ImageWidth": str(probe.width),
    })
    return {name: {"value": fields[name]} for name in sorted(fields)}


def info_document(fields: dict) -> bytes:
    """OSS's layout: "{", then one `    "Name": {"value": "..."}` a line, the last closed by "}"."""
    lines = [f'    {json.dumps(name, ensure_ascii=False)}: '
             f'{{"value": {json.dumps(field["value"], ensure_ascii=False)}}}'
             for name, field in fields.items()]
    return ("{\n" + ",\n".join(lines) + "}").encode("utf-8")


HUE_WINDOW_DEGREES = 40


# average-hue reads the image in strips of about this many pixels, so its own memory is a few MB
# whatever the image's size (issue 15: a whole-image pass took ~30 bytes a pixel, 5 GB at 169 MP).
HUE_STRIP_PIXELS = 1 << 18


def _strips(img: np.ndarray):
    rows = max(1, HUE_STRIP_PIXELS // max(img.shape[1], 1))
    for top in range(0, img.shape[0], rows):
        yield np.ascontiguousarray(img[top:top + rows, :, :3])


def _hue(bgr: np.ndarray) -> np.ndarray:
    """Hue in radians, 0..2pi, from OpenCV's 0..255 full-circle hue."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL)[:, :, 0].astype(np.float32) * np.float32(2 * np.pi / 256)


def average_hue(img: np.ndarray, args: dict, ctx: RunContext) -> dict:
    """OSS's FAQ algorithm: the mean colour of the pixels whose hue is near the image's mean hue.
    Two passes over strips (the circular mean hue, then the mean colour near it), sums in float64."""
    sin_sum = cos_sum = 0.0
    for bgr in _strips(img):
        hue = _hue(bgr)
        sin_sum += float(np.sin(hue).sum(dtype=np.float64))
        cos_sum += float(np.cos(hue).sum(dtype=np.float64))
    mean_hue = np.arctan2(sin_sum, cos_sum)                        # circular mean
    window = np.deg2rad(HUE_WINDOW_DEGREES)
    near_sum, near_count = np.zeros(3), 0
    all_sum = np.zeros(3)
    for bgr in _strips(img):
        hue = _hue(bgr)
        hue -= np.float32(mean_hue - np.pi)        # the angle to the mean, wrapped into -pi..pi
        np.remainder(hue, np.float32(2 * np.pi), out=hue)
        hue -= np.float32(np.pi)
        near = np.abs(hue, out=hue) <= window
        near_sum += bgr[near].sum(axis=0, dtype=np.float64)
        near_count += int(near.sum())
        all_sum += bgr.reshape(-1, 3).sum(axis=0, dtype=np.float64)
    total = img.shape[0] * img.shape[1]
    mean = near_sum / near_count if near_count else all_sum / max(total, 1)
    b, g, r = (int(v + 0.5) for v in mean)
    return {"RGB": f"0x{r:02x}{g:02x}{b:02x}"}


INFO = ActionSpec(name="info", role=REPORT, apply=info, render=info_document, needs_pixels=False,
                  doc="JSON facts and EXIF of the stored object")
AVERAGE_HUE = ActionSpec(name="average-hue", role=REPORT, apply=average_hue,
                         doc="JSON dominant colour")
