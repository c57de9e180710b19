"""format (spec §3.1), quality (§5.15), interlace (§5.12): encode-time settings; the last one wins.

They have no pixel function: the planner reads them and hands the encoder one set of options.
"""

from __future__ import annotations

from ..errors import OssError
from ..imaging import heif
from .base import EC_SINGLE_VALUE, OUTPUT, ActionSpec, Choice, IntRange, Param

FORMATS = ("jpg", "png", "webp", "bmp", "gif", "tiff", "heic", "avif")
EC_FORMAT = "0040-00000206"


def heif_available() -> bool:
    """HEIC output needs an encoder OpenCV lacks; it comes with the optional 'heif' extra."""
    return heif.AVAILABLE


def _check_format(args: dict, config) -> dict:
    value = args["value"]
    if value == "jpeg":
        if not config.accept_jpeg_alias:
            raise OssError("InvalidArgument", "The value: jpeg of parameter: format is invalid.",
                           EC_FORMAT)
        args["value"] = "jpg"
    if value == "heic" and not heif_available():
        raise OssError("InvalidArgument", f"HEIC output needs {heif.EXTRA_HINT}.", EC_FORMAT)
    return args


def _check_quality(args: dict, config) -> dict:
    """One spelling per meaning: a bare value is Q, and Q makes q irrelevant (Q wins, spec §5.15)."""
    bare = args.pop("value", None)
    if "Q" not in args and bare is not None:
        args["Q"] = bare
    if "Q" in args:
        args.pop("q", None)
    return args


FORMAT = ActionSpec(
    name="format",
    role=OUTPUT,
    positional=Param("value", Choice(FORMATS + ("jpeg",)), EC_FORMAT, doc="output format"),
    required=True,
    missing_ec="0040-00000207",
    check=_check_format,
    doc="output format; gif is ignored for a non-GIF source",
)

QUALITY = ActionSpec(
    name="quality",
    role=OUTPUT,
    params=(
        Param("q", IntRange(1, 100), "0040-00000309", doc="relative to the source JPEG quality (%)"),
        Param("Q", IntRange(1, 100), "0040-00000308", doc="absolute, never above the source"),
    ),
    positional=Param("value", IntRange(1, 100), "0040-00000310", doc="bare value: taken as Q"),
    required=True,
    missing_ec="0040-00000307",
    check=_check_quality,
    doc="JPG/WebP quality; Q wins over q",
)

INTERLACE = ActionSpec(
    name="interlace",
    role=OUTPUT,
    positional=Param("value", IntRange(0, 1), "0040-00000282", doc="1: progressive JPEG"),
    required=True,
    missing_ec="0040-00000281",
    many_values_ec=EC_SINGLE_VALUE,
    doc="progressive JPEG output",
)
