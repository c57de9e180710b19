"""Plan a validated pipeline against a probed source: output settings, orientation, decode scale.

Nothing here touches pixels. The plan is what makes "decode once, encode once" and shrink-on-load
safe: the decode scale is chosen only when the first pixel step resamples the whole image and the
reduced decode still covers the size that step resamples to, so the geometry is exactly that of a
full decode.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..imaging.decode import can_reduce, reduced_size
from ..imaging import heif
from ..imaging.colour import needs_conversion
from ..imaging.encode import ANIMATED, DEEP, GREY, KEEPS_ALPHA, EncodeOptions
from ..imaging.probe import Probe
from ..ops.base import FLAG, PIXEL, REPORT, RunContext, Step
from .parser import Pipeline

SHRINK_FACTORS = (8, 4, 2)


@dataclass
class Plan:
    auto_orient: bool
    output: EncodeOptions
    steps: list[Step]          # pixel steps to run, in URL order, up to a report
    report: Step | None        # info / average-hue: the answer is JSON
    reduce: int                # shrink-on-load factor, JPEG or opaque WebP (1 = full decode)
    animate: bool              # decode every frame, run each step per frame, encode an animation
    keep_depth: bool           # a 16-bit source stays 16-bit (PNG/TIFF out, geometry-only actions)
    grey: bool                 # a grey source is written grey if it still is
    size: tuple[int, int]      # full-resolution (width, height) the first pixel step starts from
    context: RunContext
    resizes: bool = False      # the pipeline resizes: which EC a source too large gets (limits.py)


def output_options(pipeline: Pipeline, probe: Probe, config, auto_formats: tuple = ()
                   ) -> EncodeOptions:
    fmt = negotiated(pipeline, probe, auto_formats) or probe.format
    quality_args: dict = {}
    progressive = False
    for step in pipeline.steps:
        if step.name == "format":
            value = step.args["value"]
            if value == "gif" and probe.format != "gif":
                continue             # OSS: format,gif keeps the source format for a non-GIF source
            fmt = value
        elif step.name == "quality":
            quality_args = dict(step.args)
        elif step.name == "interlace":
            progressive = step.args["value"] == 1
    return EncodeOptions(
        format=fmt,
        quality=resolve_quality(fmt, quality_args, probe.jpeg_quality, config),
        progressive=progressive and fmt == "jpg",
        jpeg_optimize=config.jpeg_optimize,
        png_compression=config.png_compression,
        png_strategy=config.png_strategy,
        avif_speed=config.avif_speed,
        webp_effort=config.webp_effort_rows,
    )


def negotiated(pipeline: Pipeline, probe: Probe, auto_formats: tuple) -> str | None:
    """The first Accept-negotiated format that fits, when the request names no format itself.

    An animated source only takes a format that animates; HEIC only when its extra is there."""
    if not auto_formats or any(step.name == "format" for step in pipeline.steps):
        return None
    for fmt in auto_formats:
        if probe.frames > 1 and fmt not in ANIMATED:
            continue
        if fmt == "heic" and not heif.AVAILABLE:
            continue
        return fmt
    return None


def resolve_quality(fmt: str, args: dict, source_quality: int | None, config) -> int:
    """Spec §5.15: Q absolute but never above the source; q relative to the source JPEG quality."""
    default = {"jpg": config.jpeg_quality, "webp": config.webp_quality, "avif": config.avif_quality,
               "heic": config.heic_quality}.get(fmt, config.jpeg_quality)
    if fmt not in ("jpg", "webp"):
        return default
    absolute = args.get("Q")
    if absolute is not None:
        return min(absolute, source_quality) if source_quality else absolute
    relative = args.get("q")
    if relative is not None:
        if fmt == "jpg" and source_quality:
            return max(1, int(source_quality * relative / 100 + 0.5))
        return min(relative, source_quality) if source_quality else relative  # WebP: q acts as Q
    return default


def make_plan(pipeline: Pipeline, probe: Probe, source_bytes: int, config, auto_formats: tuple = ()
              ) -> Plan:
    auto_orient = True
    for step in pipeline.steps:
        if step.spec.role == FLAG and step.name == "auto-orient":
            auto_orient = step.args["value"] == 1
    output = output_options(pipeline, probe, config, auto_formats)

    steps: list[Step] = []
    report = None
    for step in pipeline.steps:
        if step.spec.role == PIXEL:
            steps.append(step)
        elif step.spec.role == REPORT:
            report = step            # a report ends the pipeline; later actions are validated only
            break

    context = RunContext(
        config=config,
        source_format=probe.format,
        output_format=output.format,
        output_has_alpha=output.format in KEEPS_ALPHA,
        source_quality=probe.jpeg_quality,
        animated=probe.frames > 1,
        probe=probe,
        source_bytes=source_bytes,
    )
    size = probe.oriented_size if auto_orient else (probe.width, probe.height)
    reduce = 1
    if report is None or report.spec.needs_pixels:
        reduce = shrink_factor(probe, size, steps, context, config)
    # An animation stays one only into an animated format and through actions that keep it (§2).
    animate = (probe.frames > 1 and report is None and output.format in ANIMATED
               and all(step.spec.animates(step.args) for step in steps))
    keep_depth = (output.format in DEEP and report is None
                  and not needs_conversion(probe.icc_profile)   # LittleCMS here works on 8 bits
                  and all(step.spec.handles_16bit(step.args) for step in steps))
    grey = probe.is_grey and output.format in GREY
    return Plan(auto_orient, output, steps, report, reduce, animate, keep_depth, grey, size, context,
                pipeline.resizes)


def shrink_factor(probe: Probe, size: tuple[int, int], steps: list[Step], ctx: RunContext,
                  config) -> int:
    if not (config.shrink_on_load and can_reduce(probe) and steps):
        return 1
    first = steps[0].spec
    if first.resample_target is None:
        return 1
    width, height = size
    target = first.resample_target(width, height, steps[0].args, ctx)
    if target is None:
        return 1
    margin = config.shrink_on_load_margin
    for factor in SHRINK_FACTORS:
        reduced_w, reduced_h = reduced_size(width, height, factor, probe.format)
        if reduced_w >= target[0] * margin and reduced_h >= target[1] * margin:
            return factor
    return 1
