"""What a whole pipeline will cost, known from the probe and the plan before any pixel is decoded
(issue 15), and the deadline that stops work which runs past its time anyway.

Each action declares its own cost (``ActionSpec.cost``: reference milliseconds, the size it hands
on, scratch bytes); this module adds decode and encode, multiplies by the frames of an animation and
follows the image's size and bytes through the steps. A request over ``max_transform_ms`` or
``max_transform_bytes`` is refused with a 400 before it takes a transform slot; the slots then admit
requests by their estimated peak bytes (throttle.py), and ``transform_deadline_seconds`` bounds the
wall time of whatever the estimate misjudges (checked between steps, frames and watermark tiles).

The figures are milliseconds of one core of the machine they were measured on (docs/SECURITY.md
lists them): a budget of 20,000 is about 20 s of one core there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import OssError
from ..imaging.decode import reduced_size, reduces_natively
from ..imaging.probe import Probe
from ..ops.base import megapixels
from .plan import Plan

# Milliseconds per megapixel of one core, measured per format on a 3.8 MP photo-like image:
# decoding the source, and encoding the output at the configured defaults.
DECODE_MS = {"jpg": 16, "png": 41, "webp": 27, "avif": 63, "heic": 63, "gif": 57, "tiff": 24, "bmp": 1}
ENCODE_MS = {"jpg": 6, "png": 152, "webp": 144, "avif": 118, "heic": 118, "gif": 64, "tiff": 70, "bmp": 2}
OTHER_MS = 60          # a format not listed: as dear as the dearest decoders
# The most a decoder holds while it decodes, in multiples of the image it returns (VmHWM of a fresh
# process around decode_source, 24 MP): OpenCV's decoders fill a buffer of their own and convert it.
DECODE_PEAK = {"jpg": 2.15, "png": 2.1, "webp": 2.2, "tiff": 2.1, "bmp": 2.1, "gif": 2.7, "avif": 5.7,
               "heic": 2.8}
OTHER_PEAK = 6.0
# A reduced decode may still hold something at full size (bench/transform_memory_bench.py, 12 MP): a
# progressive JPEG libjpeg's whole-image coefficients (Probe.coefficient_bytes, 3 bytes a pixel at
# 4:2:0, at every scale); a WebP reduced by OpenCV (1/2, or any factor without a usable libwebp) its
# full decode, which it then shrinks (3 bytes a pixel; a lossless one libwebp's ARGB too, 4 more).
# libwebp's own scaled decode (1/4, 1/8: imaging/webp_scaled.py) shrinks a lossy WebP's rows as
# they are decoded: its output and ~0.1-0.4 MB, nothing at full size; a lossless (VP8L) one it
# still decodes whole into 4-byte ARGB before scaling.
# (format, by decode.REDUCED's decoder rather than OpenCV, lossless) -> the full frame's bytes a
# reduced decode holds, as a multiple; anything not listed holds nothing at full size.
FULL_FRAME_REDUCED = {("webp", False, False): 1.1, ("webp", False, True): 2.4,
                      ("webp", True, False): 0.0, ("webp", True, True): 1.4}
# Pillow's WebP probe holds two more copies of the source while it reads the header (its read of the
# file, and the copy libwebp's demuxer takes): before any pixel, so it is a floor, not a term to add.
# Measured: 2.0 x the source's bytes (3.1 MB lossy, 17.8 MB lossless, 12 MP); other probes read less.
PROBE_SOURCE_COPIES = {"webp": 2.0}
# Encoding holds the pixels, a converted copy and the output: 2.5 times the image at worst (a PNG
# source rotated and written as JPEG: 7.5 bytes a source pixel).
ENCODE_PEAK = 2.5
# A 16-bit source written with 8 bits: the decoder's 16-bit frame and the conversion to 8 bits hold
# 5 times the 8-bit image (a 24 MP PNG, measured by the PNG-decode work of issue 19).
DEEP_SOURCE_PEAK = 5.0
# What every transform holds besides pixels: the codecs' own state, row buffers, the encoded output
# of a small image, Python objects (the measured peaks run up to 1 MB over the pixel terms at 12 MP).
FIXED_BYTES = 4 << 20


@dataclass(frozen=True)
class Estimate:
    ms: float            # reference milliseconds of one core for the whole request
    peak_bytes: int      # the most pixel memory it holds at once
    output_size: tuple[int, int] = (0, 0)   # (width, height) the steps hand to the encoder


def _bytes(size: tuple[int, int], channels: int, depth: int) -> int:
    return size[0] * size[1] * channels * depth


def estimate(plan: Plan, info: Probe) -> Estimate:
    """The cost of running ``plan`` on the probed source: decode once, each step in order (each
    frame, for an animation, all frames held at once), encode once."""
    frames = info.frames if plan.animate else 1
    channels = 4 if plan.animate or "A" in info.mode or info.mode in ("P", "PA") else 3
    depth = 2 if plan.keep_depth and info.mode.startswith("I;16") else 1
    size = plan.size
    decoded = (reduced_size(size[0], size[1], plan.reduce, plan.context.source_format)
               if plan.reduce > 1 else size)
    ms = DECODE_MS.get(info.format, OTHER_MS) * megapixels(decoded) * frames
    held = _bytes(decoded, channels, depth) * frames
    peak = int(held * DECODE_PEAK.get(info.format, OTHER_PEAK))
    peak = max(peak, held + info.coefficient_bytes * frames)
    if info.bit_depth > 8 and depth == 1:
        peak = max(peak, int(DEEP_SOURCE_PEAK * _bytes(decoded, channels, 1) * frames))
    share = _full_frame_share(info, plan.reduce)
    if share:
        full = _bytes((info.width, info.height), channels, depth) * frames
        peak = max(peak, held + int(share * full))
    ctx = plan.context
    for step in plan.steps:
        cost = step.spec.cost(size, step.args, ctx)
        ms += cost.ms * frames
        out = _bytes(cost.size, channels, depth) * frames
        peak = max(peak, held + out + cost.scratch)
        held, size = out, cost.size
    if plan.report is None:
        ms += ENCODE_MS.get(plan.output.format, OTHER_MS) * megapixels(size) * frames
        peak = max(peak, int(ENCODE_PEAK * held))
    peak = max(peak, int(PROBE_SOURCE_COPIES.get(info.format, 0.0) * plan.context.source_bytes))
    # The source's own bytes are held for the whole request too (a 12 MP PNG: 20 MB).
    return Estimate(ms, peak + FIXED_BYTES + plan.context.source_bytes, size)


def _full_frame_share(info: Probe, reduce: int) -> float:
    """What a reduced decode holds at full size, as a multiple of the full frame's bytes (above)."""
    if reduce == 1:
        return 0.0
    return FULL_FRAME_REDUCED.get((info.format, reduces_natively(info.format, reduce), info.lossless), 0.0)


def check(plan: Plan, info: Probe, config) -> Estimate:
    """The estimate, or a 400 when it is over a budget: refused before any work (docs/SECURITY.md)."""
    cost = estimate(plan, info)
    if cost.ms > config.max_transform_ms:
        raise over_budget(f"The process would take about {cost.ms / 1000:.1f} s of work, above this "
                          f"server's budget of {config.max_transform_ms / 1000:.1f} s.")
    if cost.peak_bytes > config.max_transform_bytes:
        raise over_budget(f"The process would hold about {math.ceil(cost.peak_bytes / 2**20)} MB of "
                          f"pixels, above this server's budget of {config.max_transform_bytes // 2**20} MB.")
    return cost


def over_budget(message: str) -> OssError:
    # OSS publishes no budget for a pipeline's work; the nearest rule it does publish is the cap on
    # what one process string may ask (its length, EC 0017-00000288), so the refusal shares its EC.
    return OssError("InvalidArgument", message, "0017-00000288")


class Deadline:
    """The wall time a transform may take; ``check()`` raises once it has passed, so the work stops
    between steps and frames instead of running on after its answer. 0 seconds: no deadline."""

    def __init__(self, seconds: float, retry_after: int = 1) -> None:
        self.seconds = seconds
        self.retry_after = retry_after
        self.at = time.monotonic() + seconds if seconds > 0 else math.inf

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise deadline_passed(self.seconds, self.retry_after)


def deadline_passed(seconds: float, retry_after: int) -> OssError:
    # 503: the server gave up, the request was not wrong (on a less busy moment the same work may
    # fit); OSS publishes nothing for this, so the Code is ours and there is no EC.
    return OssError("ProcessTimeout", f"The image processing took longer than {seconds:g} s and was "
                    "stopped.", status=503, headers=[("Retry-After", str(retry_after))])
