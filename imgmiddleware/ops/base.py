"""The declarative vocabulary every OSS action is written in.

An action module declares one :class:`ActionSpec`: its parameters (key, kind, default, EC), whether it
takes a positional value, what EC a missing value raises, and the function that runs it. The parser,
the validator, the canonical cache-key string and the compatibility table are all derived from these
specs, so a parameter is described exactly once.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import OssError, invalid_argument

_INT_RE = re.compile(r"-?[0-9]+\Z")
_HEX6_RE = re.compile(r"[0-9A-Fa-f]{6}\Z")


# ---------------------------------------------------------------------------------------------------
# Parameter kinds: each turns the raw text of a value into a Python value or raises ValueError.

class OutOfRange(ValueError):
    """A well-formed value outside the kind's range: some parameters have an EC of their own for it."""


@dataclass(frozen=True)
class IntRange:
    lo: int
    hi: int

    def convert(self, raw: str) -> int:
        if not _INT_RE.match(raw):
            raise ValueError(raw)
        value = int(raw)
        if not self.lo <= value <= self.hi:
            raise OutOfRange(raw)
        return value

    def canon(self, value: int) -> str:
        return str(value)

    def describe(self) -> str:
        return f"integer {self.lo}..{self.hi}"


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]

    def convert(self, raw: str) -> str:
        if raw not in self.values:
            raise ValueError(raw)
        return raw

    def canon(self, value: str) -> str:
        return value

    def describe(self) -> str:
        return ", ".join(self.values)


@dataclass(frozen=True)
class HexColor:
    """Exactly six hex digits RRGGBB; returned as an (r, g, b) tuple."""

    def convert(self, raw: str) -> tuple[int, int, int]:
        if not _HEX6_RE.match(raw):
            raise ValueError(raw)
        return int(raw[0:2], 16), int(raw[2:4], 16), int(raw[4:6], 16)

    def canon(self, value: tuple[int, int, int]) -> str:
        return "%02x%02x%02x" % value

    def describe(self) -> str:
        return "RRGGBB hex"


def decode_base64_lenient(raw: str) -> bytes:
    """OSS base64 values: URL-safe or standard alphabet, padding optional (spec §1.2 rule 12).

    A '+' that reached us as a space (form decoding by a proxy) is taken back as '+'.
    """
    text = raw.strip().replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    if not text or len(text) % 4 == 1:
        raise ValueError(raw)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(raw) from None


class TooLong(ValueError):
    """Decodable, but longer than the kind allows: an invalid value, not a base64 error."""


@dataclass(frozen=True)
class Base64Text:
    """URL-safe base64 of UTF-8 text, at most ``max_bytes`` bytes once decoded."""
    max_bytes: int = 1024

    def convert(self, raw: str) -> str:
        data = decode_base64_lenient(raw)
        if len(data) > self.max_bytes:
            raise TooLong(raw)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(raw) from None

    def canon(self, value: str) -> str:
        return base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=")

    def describe(self) -> str:
        return f"base64 UTF-8 text, <= {self.max_bytes} bytes"


Kind = IntRange | Choice | HexColor | Base64Text


@dataclass(frozen=True)
class Param:
    key: str
    kind: Kind
    ec: str | None               # EC of "this value is invalid"; None where OSS publishes none
    default: Any = None          # None: absent unless given
    doc: str = ""
    code: str = "InvalidArgument"  # OSS Code of the error (BadRequest for base64 values, spec §1.2)
    # EC of a well-formed number outside the range, or of a text over its length, where OSS's EC
    # pages give it one of its own (indexcrop: y_abc is 0040-00000224, y_0 is 0040-00000230;
    # watermark text: not base64 257, too long 259); None: the same as ``ec``.
    range_ec: str | None = None
    # EC of the key given without a value (``watermark,text`` or ``text_``: 0040-00000258), where
    # OSS has a page for it; None: a bare word is ignored and an empty value is just invalid.
    missing_ec: str | None = None

    def convert(self, raw: str, name: str | None = None) -> Any:
        """``name``: what the error message calls the parameter (a positional value: its action's name)."""
        try:
            return self.kind.convert(raw)
        except ValueError as exc:
            if self.code == "InvalidArgument" or isinstance(exc, TooLong):
                ec = self.range_ec if isinstance(exc, (OutOfRange, TooLong)) and self.range_ec else self.ec
                raise invalid_argument(name or self.key, raw, ec) from None
            raise OssError(self.code, "Input is not base64 decoding.", self.ec) from None


# ---------------------------------------------------------------------------------------------------
# Actions.

@dataclass(frozen=True)
class StepCost:
    """What one step will cost, estimated from sizes alone before any pixel is decoded
    (process/budget.py adds them up and checks them against the config's budgets).

    ``ms``: milliseconds of one core of the reference machine (docs/SECURITY.md has the measurements
    behind each action's figure); ``size``: the (width, height) the step hands on; ``scratch``: bytes
    it holds beyond its input and output while it runs (float copies, a tiled layer)."""
    ms: float
    size: tuple[int, int]
    scratch: int = 0


def megapixels(size: tuple[int, int]) -> float:
    return size[0] * size[1] / 1e6


def per_megapixel(ms: float) -> Callable[..., StepCost]:
    """The cost of an action that makes one pass of ``ms`` per megapixel and keeps the size."""
    def cost(size: tuple[int, int], args: Mapping[str, Any], ctx: "RunContext") -> StepCost:
        return StepCost(ms * megapixels(size), size)
    return cost


# OSS's EC for a second value on a single-value action; its page names auto-orient, rotate, bright,
# sharpen and interlace (contrast, format and quality are not among them: their extra values are
# ignored, docs/COMPATIBILITY.md decision 140).
EC_SINGLE_VALUE = "0040-00000203"

PIXEL = "pixel"      # transforms pixels, runs in URL order
OUTPUT = "output"    # an encode-time setting (format, quality, interlace); last one wins
FLAG = "flag"        # a global flag applied before the pipeline (auto-orient)
REPORT = "report"    # answers JSON instead of an image (info, average-hue)


@dataclass(frozen=True)
class ActionSpec:
    name: str
    role: str
    params: tuple[Param, ...] = ()
    positional: Param | None = None     # the bare value of rotate,90 / format,png / quality,90
    required: bool = False              # an action with nothing usable given is rejected ...
    missing_ec: str | None = None       # ... with this EC (rotate -> 0040-00000216)
    # A purely positional action given more than one value (rotate,90,200,300): rejected with this
    # EC (0040-00000203, whose page names the actions it covers); None: values after the first are
    # ignored.
    many_values_ec: str | None = None
    check: Callable[[dict], dict] | None = None          # cross-parameter rules; raises OssError
    apply: Callable[..., Any] | None = None              # see Step and RunContext
    # For a PIXEL action that resamples the whole image in one go: the size it resamples to, given the
    # logical input size. Lets the planner use JPEG shrink-on-load with provably the same geometry.
    resample_target: Callable[[int, int, dict, "RunContext"], tuple[int, int] | None] | None = None
    # OSS: only resize, crop and watermark keep an animation; any other action gives the first frame.
    # A callable decides per arguments (resize by percentage gives a static image).
    keeps_animation: bool | Callable[[Mapping[str, Any]], bool] = False
    # Whether the action works on 16-bit pixels unchanged (geometry only: no 255s in its maths).
    keeps_depth: bool | Callable[[Mapping[str, Any]], bool] = False
    needs_pixels: bool = True           # False for info, which reads only the header
    # A REPORT action's answer as bytes; None: compact JSON (info writes OSS's own layout).
    render: Callable[[Any], bytes] | None = None
    # For a PIXEL action: (size, args, ctx) -> StepCost, its estimated time, output size and scratch
    # memory, so a pipeline's whole cost is known before any work (process/budget.py).
    cost: Callable[[tuple[int, int], Mapping[str, Any], "RunContext"], StepCost] = per_megapixel(2.0)
    doc: str = ""
    param_index: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_index", {p.key: p for p in self.params})

    def animates(self, args: Mapping[str, Any]) -> bool:
        return _decide(self.keeps_animation, args)

    def handles_16bit(self, args: Mapping[str, Any]) -> bool:
        return _decide(self.keeps_depth, args)


def _decide(rule, args) -> bool:
    return rule(args) if callable(rule) else rule


@dataclass(frozen=True)
class Step:
    """One validated action of a pipeline: its spec and its arguments (defaults filled in)."""
    spec: ActionSpec
    args: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    def canonical(self) -> str:
        """``name,value,k_v,...``: positional value first, keys sorted, defaults filled, noise dropped."""
        parts = [self.spec.name]
        positional = self.spec.positional
        if positional is not None and positional.key in self.args:
            parts.append(positional.kind.canon(self.args[positional.key]))   # rotate,90
        for key in sorted(self.args):
            param = self.spec.param_index.get(key)
            if param is not None:
                parts.append(f"{key}_{param.kind.canon(self.args[key])}")
        return ",".join(parts)


# ---------------------------------------------------------------------------------------------------
# The action grammar (spec §1.2): "name,item,item/name,item"; shared by the top-level parser and by
# the nested pipeline of a watermark image.

def parse_actions(body: str, table: Mapping[str, ActionSpec], config) -> list[Step]:
    """Bind each ``/``-separated action of ``body`` to its spec in ``table``; empty segments skipped."""
    segments = [seg for seg in body.split("/") if seg]
    if not segments:
        raise OssError("InvalidArgument", "No image action is specified after image/.",
                       "0040-00000212")
    return [parse_action(segment, table, config) for segment in segments]


def parse_action(segment: str, table: Mapping[str, ActionSpec], config) -> Step:
    name, _, rest = segment.partition(",")
    spec = table.get(name)
    if spec is None:
        raise OssError("InvalidArgument", f"The action: {name} is not supported.", "0040-00000213")
    items = [item for item in rest.split(",") if item] if rest else []
    return Step(spec, bind(spec, items, config))


def bind(spec: ActionSpec, items: list[str], config) -> dict:
    """Raw items -> validated arguments with defaults, by the spec's table (rules 4, 7-12)."""
    if spec.many_values_ec and spec.positional is not None and not spec.params and len(items) > 1:
        # The count is checked before the values: interlace,xx,22 is 203, not 282.
        raise invalid_argument(spec.name, ",".join(items), spec.many_values_ec)
    raw: dict[str, str] = {}
    positional_raw: str | None = None
    for item in items:
        if spec.positional is not None and not spec.params:
            # A purely positional action (rotate,90): the first value is it, extra values are noise.
            if positional_raw is None:
                positional_raw = item
            continue
        key, sep, value = item.partition("_")
        if not value and key in spec.param_index and spec.param_index[key].missing_ec:
            raise OssError("MissingArgument", f"The parameter: {key} of {spec.name} has no value.",
                           spec.param_index[key].missing_ec)
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


class _NoDeadline:
    """A run without a deadline (offline tools, direct calls)."""

    def check(self) -> None:
        pass


_NO_DEADLINE = _NoDeadline()


@dataclass
class RunContext:
    """What a running action may know beyond its pixels. Built by the pipeline runner, per request."""
    config: Any                         # imgmiddleware.config.Config
    source_format: str                  # 'jpg', 'png', ... of the stored object
    output_format: str                  # the format the result will be encoded in
    output_has_alpha: bool              # whether that format keeps transparency
    source_quality: int | None = None   # estimated JPEG quality of the source, if JPEG
    animated: bool = False              # the source has several frames (GIF/WebP)
    # Set only for the first step after a reduced (shrink-on-load) decode: the full-resolution size
    # the step must compute its geometry from. Only actions with resample_target read it.
    logical_size: tuple[int, int] | None = None
    probe: Any = None                   # imgmiddleware.imaging.probe.Probe of the source
    source_bytes: int = 0               # size of the stored object (info's FileSize)
    # Loads another object of the wrapped app as pixels, for image watermarks: (key, allowed formats,
    # apply EXIF orientation) -> BGR/BGRA ndarray, or OssError. Handed down by the middleware so ops
    # never import it.
    load_object: Callable[[str, frozenset, bool], Any] | None = None
    base_size: tuple[int, int] | None = None   # the watermarked image's size, for a nested resize,P_
    # process/budget.Deadline of this transform: the runner checks it between steps and frames.
    deadline: Any = _NO_DEADLINE
