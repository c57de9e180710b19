"""Parse an x-oss-process string into a validated :class:`Pipeline` (spec §1.2), before any I/O.

The twelve rules of §1.2, in one place: ``image/`` prefix (EC 0040-00000212 when empty), actions left to
right, case-sensitive names, items split at the first ``_``, unknown keys ignored, last duplicate wins,
empty items (trailing comma) skipped, unknown action rejected (EC 0040-00000213), required values
(rotate, interlace, quality, resize, watermark) enforced, lenient base64. Parameter kinds, ranges,
defaults and ECs come from each action's declarative spec in :mod:`imgmiddleware.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import OssError
from ..ops import ACTIONS
from ..ops.base import ActionSpec, Step


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    def canonical(self) -> str:
        """One spelling per meaning: parameters sorted, defaults filled, unknown keys and noise dropped.

        Two process strings that must give the same image give the same canonical string, so it can
        be part of a cache key.
        """
        return "image/" + "/".join(canonical_step(step) for step in self.steps)

    def names(self) -> list[str]:
        return [step.name for step in self.steps]


def canonical_step(step: Step) -> str:
    parts = [step.name]
    spec = step.spec
    positional = spec.positional
    if positional is not None and positional.key in step.args:
        parts.append(positional.kind.canon(step.args[positional.key]))   # rotate,90
    for key in sorted(step.args):
        param = spec.param_index.get(key)
        if param is not None:
            parts.append(f"{key}_{param.kind.canon(step.args[key])}")
    return ",".join(parts)


def parse(process: str, config, styles: Mapping[str, str] | None = None) -> Pipeline:
    """Validate a whole GET process string. Raises OssError (400/404) on the first problem."""
    if len(process.encode("utf-8")) > config.max_process_length:
        raise OssError("InvalidArgument", "The length of x-oss-process exceeds the limit.",
                       "0017-00000288")
    steps: list[Step] = []
    for stage in process.split("|"):
        if stage.startswith("sys/"):
            raise OssError("InvalidArgument",
                           "sys/saveas is only supported by POST (persistence); a GET cannot save.")
        if stage.startswith("style/"):
            steps.extend(_parse_style(stage[len("style/"):], config, styles))
        elif stage.startswith("image/"):
            steps.extend(_parse_image_stage(stage[len("image/"):], config))
        else:
            raise OssError("InvalidArgument",
                           f"The value: {stage} of parameter: x-oss-process is invalid.")
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
    segments = [seg for seg in body.split("/") if seg]
    if not segments:
        raise OssError("InvalidArgument", "No image action is specified after image/.",
                       "0040-00000212")
    return [parse_action(segment, config) for segment in segments]


def parse_action(segment: str, config) -> Step:
    name, _, rest = segment.partition(",")
    spec = ACTIONS.get(name)
    if spec is None:
        raise OssError("InvalidArgument", f"The action: {name} is not supported.", "0040-00000213")
    items = [item for item in rest.split(",") if item] if rest else []
    return Step(spec, _bind(spec, items, config))


def _bind(spec: ActionSpec, items: list[str], config) -> dict:
    raw: dict[str, str] = {}
    positional_raw: str | None = None
    for item in items:
        if spec.positional is not None and not spec.params:
            # A purely positional action (rotate,90): the first value is it, extra values are noise.
            if positional_raw is None:
                positional_raw = item
            continue
        key, sep, value = item.partition("_")
        if not sep:
            if spec.positional is not None and positional_raw is None:
                positional_raw = item   # quality,90
            continue                    # a bare word in a keyed action is ignored like an unknown key
        if key in spec.param_index:
            raw[key] = value            # last duplicate wins (rule 8); unknown keys ignored (rule 7)

    if not raw and positional_raw is None and spec.required:
        raise OssError("MissingArgument", f"The action: {spec.name} requires a parameter.",
                       spec.missing_ec)

    args: dict = {}
    for param in spec.params:           # spec order, so the EC reported for several errors is stable
        if param.key in raw:
            args[param.key] = param.convert(raw[param.key])
        elif param.default is not None:
            args[param.key] = param.default
    if spec.positional is not None:
        if positional_raw is not None:
            args[spec.positional.key] = spec.positional.convert(positional_raw, spec.name)
        elif spec.positional.default is not None and spec.positional.key not in args:
            args[spec.positional.key] = spec.positional.default
    if spec.check is not None:
        args = spec.check(args, config)
    return args
