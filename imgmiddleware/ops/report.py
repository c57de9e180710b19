"""info (spec §5.16) and average-hue (§5.17): actions that answer JSON instead of an image."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from PIL import ExifTags, TiffImagePlugin

from .base import REPORT, ActionSpec, RunContext

_GPS_REF_WORDS = {"N": "North", "S": "South", "E": "East", "W": "West"}


def _exif_string(value) -> str:
    """ImageMagick-like text for an EXIF value: rationals as n/d, sequences space-separated."""
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


def _gps_coordinate(value) -> str:
    """(deg, min, sec) -> '30deg 16' 27.48"' in the style of OSS's samples."""
    try:
        deg, minutes, seconds = (float(v) for v in value)
    except (TypeError, ValueError):
        return _exif_string(value)
    return f"{deg:g}deg {minutes:g}' {seconds:.2f}\""


def exif_fields(exif) -> dict[str, str]:
    fields: dict[str, str] = {}
    for tag, value in exif.items():
        name = ExifTags.TAGS.get(tag)
        if name and name not in ("ExifOffset", "GPSInfo"):
            fields[name] = _exif_string(value)
    if ExifTags.IFD.Exif in exif:
        fields["ExifTag"] = str(exif[ExifTags.IFD.Exif])
        for tag, value in exif.get_ifd(ExifTags.IFD.Exif).items():
            name = ExifTags.TAGS.get(tag)
            if name and name != "MakerNote":
                fields[name] = _exif_string(value)
    if ExifTags.IFD.GPSInfo in exif:
        fields["GPSTag"] = str(exif[ExifTags.IFD.GPSInfo])
        for tag, value in exif.get_ifd(ExifTags.IFD.GPSInfo).items():
            name = ExifTags.GPSTAGS.get(tag)
            if not name:
                continue
            if name in ("GPSLatitude", "GPSLongitude"):
                fields[name] = _gps_coordinate(value)
            elif name in ("GPSLatitudeRef", "GPSLongitudeRef"):
                text = _exif_string(value)
                fields[name] = _GPS_REF_WORDS.get(text, text)
            else:
                fields[name] = _exif_string(value)
    return fields


def info(img, args: dict, ctx: RunContext) -> dict:
    """The stored object's facts, from its header alone (no pixels decoded)."""
    probe = ctx.probe
    fields = exif_fields(probe.exif)
    fields.update({
        "FileSize": str(ctx.source_bytes),
        "Format": probe.format,
        "FrameCount": str(probe.frames),
        "ImageHeight": str(probe.height),
        "ImageWidth": str(probe.width),
    })
    return {name: {"value": fields[name]} for name in sorted(fields)}


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


INFO = ActionSpec(name="info", role=REPORT, apply=info, needs_pixels=False,
                  doc="JSON facts and EXIF of the stored object")
AVERAGE_HUE = ActionSpec(name="average-hue", role=REPORT, apply=average_hue,
                         doc="JSON dominant colour")
