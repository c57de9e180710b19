"""What OSS refuses about a source or an output for its size, and the EC it answers with.

OSS publishes one EC page per refusal (``0040-000000xx``); this table is those pages, so that the same
image gets the same EC here. The rules, checked on the header before any pixel is decoded:

- a decoder with a tighter side limit than the general one refuses first, whatever the pipeline: a
  TIFF over 16,384 px a side (0040-00000018), an AVIF over 10,000 px (0040-00000014);
- a source over the general limits (``max_source_side``, ``max_source_pixels``, frames counted, and
  our own ``max_frames``) is 0040-00000009 when the pipeline resizes (the resize page's own example),
  and otherwise the decoder's: a side over the limit of a JPEG, BMP or HEIC has its format's page
  (019, 017, 013), anything else the general decode page (0040-00000012, "over 250 MP");
- an output its encoder cannot write: WebP over 16,383 px a side (libwebp's bound; OSS's page says
  16,384) is 0040-00000011, AVIF over 4,096 x 2,304 px (either way round) is 0040-00000014.

Bytes over ``max_source_bytes`` keep 0040-00000009: OSS's page for it ("the source is too large,
20 MB by default") exists, but its number could not be found (docs/COMPATIBILITY.md decision 184).
"""

from __future__ import annotations

from ..errors import image_too_large
from ..imaging.probe import Probe

RESIZE_EC = "0040-00000009"
DECODE_EC = "0040-00000012"
# Decoders with their own side limit, below the general one: format -> (largest side, EC).
DECODER_SIDE = {"tiff": (16_384, "0040-00000018"), "avif": (10_000, "0040-00000014")}
# A side over the general limit, with no resize: the format's own EC page where OSS has one.
OVERSIDE_EC = {"jpg": "0040-00000019", "bmp": "0040-00000017", "heic": "0040-00000013"}
# Encoders' limits on the output: format -> (longer side, shorter side, EC).
ENCODER_SIDES = {"webp": (16_383, 16_383, "0040-00000011"), "avif": (4_096, 2_304, "0040-00000014")}


def check_source(info: Probe, size: int, config, resizes: bool) -> None:
    """Refuse a source over a limit (bytes, a decoder's side, sides, frames, pixels), each message
    naming the source's own figure and the limit it is over."""
    if size > config.max_source_bytes:
        raise image_too_large(f"The image is {size} bytes, larger than the limit of "
                               f"{config.max_source_bytes} bytes.", RESIZE_EC)
    side = max(info.width, info.height)
    if info.format in DECODER_SIDE and side > DECODER_SIDE[info.format][0]:
        limit, ec = DECODER_SIDE[info.format]
        raise image_too_large(f"The {info.format.upper()} image is {info.width} x {info.height} "
                               f"pixels: a side is larger than its decoder's limit of {limit} pixels.", ec)
    general = RESIZE_EC if resizes else DECODE_EC
    if info.frames > config.max_frames:
        raise image_too_large(f"The image has {info.frames} frames, more than the limit of "
                               f"{config.max_frames}.", general)
    if side > config.max_source_side:
        ec = RESIZE_EC if resizes else OVERSIDE_EC.get(info.format, DECODE_EC)
        raise image_too_large(f"The image is {info.width} x {info.height} pixels: a side is larger "
                               f"than the limit of {config.max_source_side} pixels.", ec)
    if info.pixels > config.max_source_pixels:
        raise too_many_pixels(info.pixels, info, config, resizes)


def too_many_pixels(pixels: int | None, info: Probe | None, config, resizes: bool):
    """The refusal of a source with more pixels than ``max_source_pixels`` (frames counted)."""
    found = f"The image has {pixels} pixels" if pixels else "The image has too many pixels"
    if info is not None and pixels:
        frames = f" x {info.frames} frames" if info.frames > 1 else ""    # OSS counts frames
        found += f" ({info.width} x {info.height}{frames})"
    return image_too_large(f"{found}, more than the limit of {config.max_source_pixels}.",
                            RESIZE_EC if resizes else DECODE_EC)


def check_output(fmt: str, size: tuple[int, int]) -> None:
    """Refuse an output its encoder cannot write, known from the plan before any work."""
    if fmt not in ENCODER_SIDES:
        return
    longer, shorter, ec = ENCODER_SIDES[fmt]
    if max(size) > longer or min(size) > shorter:
        bound = f"{longer} x {shorter}" if longer != shorter else f"{longer} pixels a side"
        raise image_too_large(f"The {fmt.upper()} output would be {size[0]} x {size[1]} pixels, "
                               f"larger than its encoder's limit of {bound}.", ec)
