"""The OSS actions, one module per family; ``ACTIONS`` maps each action name to its declarative spec."""

from __future__ import annotations

from . import crop, effects, orient, output, report, resize, shape, watermark
from .base import ActionSpec

ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        resize.SPEC,
        crop.CROP, crop.INDEXCROP,
        shape.CIRCLE, shape.ROUNDED_CORNERS,
        orient.ROTATE, orient.AUTO_ORIENT,
        effects.BLUR, effects.BRIGHT, effects.CONTRAST, effects.SHARPEN,
        output.FORMAT, output.QUALITY, output.INTERLACE,
        watermark.SPEC,
        report.INFO, report.AVERAGE_HUE,
    )
}
