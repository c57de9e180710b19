"""Run a pipeline on a source body: probe, check limits, plan, decode once, act in order, encode once."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import OssError, rotation_range_exceeded, unsupported_source
from ..imaging.decode import DecodeError, decode_animation, decode_source
from ..imaging.encode import MIME, EncodeError, encode, encode_animation
from ..imaging.orientation import apply_orientation
from ..imaging.pixels import grey_if_neutral
from ..imaging.probe import Probe, ProbeError, TooManyPixels, probe
from . import budget, limits
from .parser import Pipeline
from .plan import Plan, make_plan


@dataclass(frozen=True)
class Result:
    body: bytes
    content_type: str
    format: str = ""                 # the output format ("jpg", "webp", ... "json"), for metrics
    decode_seconds: float = 0.0      # decoding the source, and encoding the result (telemetry/)
    encode_seconds: float = 0.0


# A source whose decoder fails on its bytes: the format's own EC page where OSS has one (a WebP,
# HEIC or AVIF "decode exception: the source is damaged"), the unsupported-format page otherwise.
CORRUPT_EC = {"webp": "0040-00000010", "heic": "0040-00000020", "avif": "0040-00000021"}


def source_error(exc: Exception, config, info: Probe | None = None, resizes: bool = False) -> OssError:
    """The one mapping from a source we cannot read to OSS's answer (docs/COMPATIBILITY.md 9, 10,
    184): too many pixels for Pillow's bomb guard -> ImageTooLarge (process/limits.py's EC);
    unsupported or corrupt, at the probe (ProbeError) or at the decoder (DecodeError, cv2.error
    included) -> 400 BadRequest, with the format's own EC for a damaged WebP, HEIC or AVIF and
    0040-00000005 otherwise. imaging/probe.py says which library exceptions are which."""
    if isinstance(exc, TooManyPixels):
        return limits.too_many_pixels(exc.pixels, None, config, resizes)
    if isinstance(exc, DecodeError):
        fmt = info.format if info is not None else ""
        return unsupported_source("The image is corrupt or cannot be decoded.",
                                  CORRUPT_EC.get(fmt, "0040-00000005"))
    container = getattr(exc, "container", None) or ""
    return unsupported_source(str(exc) or "The image format is not supported.",
                              CORRUPT_EC.get(container, "0040-00000005"))


def inspect(data: bytes | memoryview, config, resizes: bool = False) -> Probe:
    """The source's header, or the refusal of a source we cannot read or is over a limit; the EC of
    a limit depends on whether the pipeline ``resizes`` (process/limits.py)."""
    try:
        info = probe(data, config.max_source_pixels)
    except ProbeError as exc:
        raise source_error(exc, config, resizes=resizes) from None
    limits.check_source(info, len(data), config, resizes)
    return info


def load_image(data: bytes | memoryview, config, formats: frozenset, orient: bool = True) -> np.ndarray:
    """Pixels of a secondary image (a watermark): same limits as a source, formats restricted."""
    try:
        info = inspect(data, config)
    except OssError as err:
        if err.code != "BadRequest":     # unreadable, damaged or not supported: the watermark's EC
            raise
        info = None
    if info is None or info.format not in formats:
        raise OssError("WatermarkError", "The watermark image format is not supported.",
                       "0040-00000027")
    try:
        img = decode_source(data, info)
    except TooManyPixels as exc:
        raise source_error(exc, config, info) from None
    except DecodeError:
        raise OssError("WatermarkError", "The watermark image cannot be decoded.",
                       "0040-00000027") from None
    return apply_orientation(img, info.orientation) if orient else img


def run(pipeline: Pipeline, data: bytes | memoryview, config, load_object=None,
        auto_formats: tuple = (), info: Probe | None = None, admit=None) -> Result:
    """Process ``data``. ``load_object(key, formats, orient)`` fetches other objects (watermarks);
    ``auto_formats`` are the formats the client accepts, for a request that names none; ``info`` is
    the result of :func:`inspect` when the caller has it already. The plan's cost is checked against
    the budgets before any work; ``admit(estimate)`` is a context manager that holds the caller's
    transform slot for it (throttle.py), and the work inside has a deadline."""
    info = info or inspect(data, config, pipeline.resizes)
    plan = make_plan(pipeline, info, len(data), config, auto_formats)
    plan.context.load_object = load_object
    if plan.report is not None and not plan.report.spec.needs_pixels:
        return _report(plan.report, plan.report.spec.apply(None, plan.report.args, plan.context))
    if plan.auto_orient and info.rotates and max(info.width, info.height) >= config.max_rotate_side:
        raise rotation_range_exceeded()
    cost = budget.check(plan, info, config)
    if plan.report is None:
        limits.check_output(plan.output.format, cost.output_size)
    with admit(cost) if admit is not None else nullcontext():
        plan.context.deadline = budget.Deadline(config.transform_deadline_seconds,
                                                config.retry_after_seconds)
        return _work(plan, data, info)


def _work(plan: Plan, data, info: Probe) -> Result:
    """Decode once, act in order, encode once, with the plan's deadline checked between steps."""
    if plan.animate:
        return _run_animation(data, plan)
    started = time.perf_counter()
    try:
        img = decode_source(data, info, plan.reduce, plan.keep_depth)
    except (DecodeError, TooManyPixels) as exc:
        raise source_error(exc, plan.context.config, info, plan.resizes) from None
    decoded = time.perf_counter()
    if plan.auto_orient:
        img = apply_orientation(img, info.orientation)
    img = execute(img, plan)
    plan.context.deadline.check()

    if plan.report is not None:
        return _report(plan.report, plan.report.spec.apply(img, plan.report.args, plan.context))
    if plan.grey:
        img = grey_if_neutral(img)
    encoding = time.perf_counter()
    try:
        body = encode(img, plan.output)
    except EncodeError as exc:
        raise OssError("InternalError", str(exc)) from None
    return Result(body, MIME[plan.output.format], plan.output.format, decoded - started,
                  time.perf_counter() - encoding)


def _run_animation(data, plan: Plan) -> Result:
    """Every frame through the same steps (all of them keep animation), one animated encode."""
    started = time.perf_counter()
    try:
        animation = decode_animation(data)
    except (DecodeError, TooManyPixels) as exc:
        raise source_error(exc, plan.context.config, plan.context.probe, plan.resizes) from None
    decoded = time.perf_counter()
    frames = []
    for frame in animation.frames:
        frames.append(execute(frame, plan))
        plan.context.deadline.check()
    encoding = time.perf_counter()
    try:
        body = encode_animation(frames, animation.durations, animation.loop_count, plan.output)
    except EncodeError as exc:
        raise OssError("InternalError", str(exc)) from None
    return Result(body, MIME[plan.output.format], plan.output.format, decoded - started,
                  time.perf_counter() - encoding)


def execute(img, plan: Plan):
    ctx = plan.context
    if plan.reduce > 1:
        ctx.logical_size = plan.size
    for step in plan.steps:
        ctx.deadline.check()
        img = step.spec.apply(img, step.args, ctx)
        ctx.logical_size = None    # only the first step after a reduced decode sees the full size
    return img


def _report(step, payload) -> Result:
    render = step.spec.render
    body = render(payload) if render is not None else json.dumps(payload).encode("utf-8")
    return Result(body, "application/json", "json")
