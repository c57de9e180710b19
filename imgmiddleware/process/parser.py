"""Parse an x-oss-process string into a validated :class:`Pipeline` (spec §1.2), before any I/O.

This module owns the pipeline level: the length cap, ``|`` stages, ``style/`` and ``image/`` prefixes
and the Pipeline with its canonical string. How one ``name,k_v,...`` segment binds to its action (the
rest of §1.2's twelve rules: first ``_`` split, unknown keys ignored, last duplicate wins, required
values, lenient base64) is the action vocabulary's job: :func:`imgmiddleware.ops.base.parse_actions`,
driven by each action's declarative spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import OssError
from ..ops import ACTIONS
from ..ops.base import Step, parse_actions
from ..ops.watermark import check_image_count

# OSS's page for EC 0040-00000211: at most 5 pipes ('|') in one process string by default.
MAX_PIPES = 5


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    def canonical(self) -> str:
        """One spelling per meaning: parameters sorted, defaults filled, unknown keys and noise dropped.

        Two process strings that must give the same image give the same canonical string, so it can
        be part of a cache key.
        """
        return "image/" + "/".join(step.canonical() for step in self.steps)

    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    @property
    def resizes(self) -> bool:
        """Whether a source over the size limits gets the resize EC (process/limits.py)."""
        return "resize" in self.names()


@dataclass(frozen=True)
class SaveAs:
    """sys/saveas (spec §1.5): where a POST stores its result. ``bucket`` "" means the source's."""
    key: str
    bucket: str


def parse_post(body: str, config, styles: Mapping[str, str] | None = None) -> tuple[Pipeline, SaveAs]:
    """A ProcessObject body: ``x-oss-process=<pipeline>|sys/saveas,o_<b64>[,b_<b64>]``.

    The body is taken as it is after the prefix: no '+'-as-space decoding, because ali-oss sends raw
    '+' inside base64 values (spec §1.5)."""
    text = body.strip()
    if not text.startswith("x-oss-process="):
        raise OssError("InvalidArgument", "no x-oss-process parameter found in the request body.")
    process = text[len("x-oss-process="):]
    stages = process.split("|")
    saves = [s for s in stages if s.startswith("sys/")]
    if len(saves) != 1 or stages[-1] != saves[0] or not saves[0].startswith("sys/saveas"):
        raise OssError("InvalidArgument", "The process must end with one sys/saveas.")
    pipeline = parse("|".join(stages[:-1]), config, styles)
    return pipeline, _saveas(saves[0])


def _saveas(stage: str) -> SaveAs:
    from ..ops.base import decode_base64_lenient

    values = {}
    for item in stage.split(",")[1:]:
        key, sep, value = item.partition("_")
        if sep and key in ("o", "b"):
            values[key] = value
    if "o" not in values:
        raise OssError("InvalidArgument", "sys/saveas needs o_ (the target object, base64).")
    decoded = {}
    for key, value in values.items():
        try:
            decoded[key] = decode_base64_lenient(value).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise OssError("BadRequest", "Input is not base64 decoding.") from None
    return SaveAs(decoded["o"], decoded.get("b", ""))


def parse(process: str, config, styles: Mapping[str, str] | None = None) -> Pipeline:
    """Validate a whole GET process string. Raises OssError (400/404) on the first problem."""
    if len(process.encode("utf-8")) > config.max_process_length:
        raise OssError("InvalidArgument", "The length of x-oss-process exceeds the limit.",
                       "0017-00000288")
    stages = process.split("|")
    if len(stages) - 1 > MAX_PIPES:
        raise OssError("TooManyPipe", f"A process string can have at most {MAX_PIPES} pipes ('|'); "
                       f"this one has {len(stages) - 1}.", "0040-00000211")
    steps: list[Step] = []
    for stage in stages:
        if stage.startswith("sys/"):
            raise OssError("InvalidArgument",
                           "sys/saveas is only supported by POST (persistence); a GET cannot save.")
        if stage.startswith("style/"):
            steps.extend(_parse_style(stage[len("style/"):], config, styles))
        elif stage.startswith("image/"):
            steps.extend(_parse_image_stage(stage[len("image/"):], config))
        else:
            # OSS publishes no EC for a stage without the image/ (or style/) prefix. 0040-00000212 is
            # the EC of the same rule (spec §1.2 rule 1: "image/" is mandatory, and "image/" alone is
            # 212): in both the request names no image pipeline. Chosen so that every answer has an
            # EC a client can look up.
            raise OssError("InvalidArgument",
                           f"The value: {stage} of parameter: x-oss-process is invalid.", "0040-00000212")
    check_image_count(steps, config)
    return Pipeline(tuple(steps))


def _parse_style(name: str, config, styles: Mapping[str, str] | None) -> list[Step]:
    table = styles if styles is not None else config.styles
    content = table.get(name)
    if content is None:
        raise OssError("NoSuchStyle", "The specified style does not exist.")
    if not content.startswith("image/"):  # a style holds an image pipeline, never another style
        raise OssError("InternalError", "The style content is invalid.", "0040-00000601")
    return _parse_image_stage(content[len("image/"):], config)


def _parse_image_stage(body: str, config) -> list[Step]:
    return parse_actions(body, ACTIONS, config)
