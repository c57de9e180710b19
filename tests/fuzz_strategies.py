"""Hypothesis strategies for the x-oss-process language, derived from the action tables (imgmiddleware.ops).

Valid strings are built from each ActionSpec's params (kind, range, choices), so a new parameter is
fuzzed without touching this file. Mutated strings start valid and get edited with the characters the
grammar cares about; garbage strings are arbitrary text. Used by tests/test_fuzz.py.
"""

from __future__ import annotations

import base64
import functools

from hypothesis import strategies as st

from imgmiddleware.imaging.fonts import FONT_NAMES
from imgmiddleware.ops import ACTIONS
from imgmiddleware.ops.base import Base64Text, Choice, HexColor, IntRange
from imgmiddleware.ops.watermark import NESTED_ACTIONS, WatermarkImageKind

# Characters that matter to the grammar or to escaping, mixed into mutations and garbage.
SPECIAL = list("/|,_=-+ .%&<>\"'\\\x00\n\t") + ["]]>", "image/", "style/", "sys/saveas", "\u00e9", "\U0001f600"]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def int_values(kind: IntRange, cap: int | None, clean: bool = False) -> st.SearchStrategy[str]:
    hi = kind.hi if cap is None else min(kind.hi, max(kind.lo, cap))
    inside = st.integers(kind.lo, hi)
    if clean:
        return inside.map(str)
    edges = st.sampled_from([kind.lo, kind.hi, kind.lo - 1, kind.hi + 1])
    return st.one_of(inside, inside, inside, edges).map(str) | st.sampled_from(["", "-", "1e3", "0x10", "07"])


def value_strategy(kind, cap: int | None, depth: int, clean: bool = False) -> st.SearchStrategy[str]:
    if isinstance(kind, IntRange):
        return int_values(kind, cap, clean)
    if clean and isinstance(kind, Choice):
        return st.sampled_from(kind.values)
    if clean and isinstance(kind, HexColor):
        return st.from_regex(r"[0-9a-f]{6}", fullmatch=True)
    if isinstance(kind, Choice):
        return st.sampled_from(kind.values) | st.sampled_from(["", "LFIT", "x"])
    if isinstance(kind, HexColor):
        return st.from_regex(r"[0-9A-Fa-f]{6}", fullmatch=True) | st.sampled_from(["fff", "GGGGGG", ""])
    if isinstance(kind, WatermarkImageKind):
        keys = st.sampled_from(["example.jpg", "nodejs-1024x768.png", "missing.png", "../x.png",
                                "http://127.0.0.1:1/x.png"])
        nested = (action_strategy(NESTED_ACTIONS, cap, depth + 1).map(lambda a: "?x-oss-process=image/" + a)
                  if depth == 0 else st.just(""))
        return st.tuples(keys, st.just("") | nested).map(lambda t: b64(t[0] + t[1]))
    if isinstance(kind, Base64Text):
        # Text a font can draw (Latin, digits, common Chinese) as often as arbitrary text, which is
        # mostly refused: characters no font on the server has are an error, never empty boxes.
        # The same kind carries watermark's font name, so OSS's font names are drawn too.
        drawable = st.text(alphabet="abcXYZ019 .,!?-图片服务水印文字", min_size=1, max_size=20)
        fonts = st.sampled_from(FONT_NAMES)
        return (drawable | fonts | st.text(max_size=20)).map(b64) | st.sampled_from(["!!", "a", "===="])
    raise AssertionError(f"unknown kind {kind!r}: teach tests/fuzz_strategies.py about it")


@functools.cache
def _cached_actions(table_id: str, cap: int | None, depth: int, clean: bool) -> st.SearchStrategy[str]:
    table = {"nested": NESTED_ACTIONS, "top": ACTIONS, "resize": {"resize": ACTIONS["resize"]}}[table_id]
    return _action_strategy(table, cap, depth, clean)


def action_strategy(table, cap: int | None = None, depth: int = 0, clean: bool = False):
    """One ``name,item,...`` action of ``table`` (built once per table/cap/depth/clean)."""
    table_id = "nested" if table is NESTED_ACTIONS else "top" if table is ACTIONS else "resize"
    return _cached_actions(table_id, cap, depth, clean)


def _action_strategy(table, cap: int | None = None, depth: int = 0, clean: bool = False):
    def for_spec(spec) -> st.SearchStrategy[str]:
        items = [st.tuples(st.just(p.key), value_strategy(p.kind, cap, depth, clean)).map("_".join)
                 for p in spec.params]
        if spec.positional is not None:
            items.append(value_strategy(spec.positional.kind, cap, depth, clean))
        if not items:
            return st.just(spec.name)
        chosen = st.lists(st.one_of(items), max_size=5)
        return chosen.map(lambda xs: ",".join([spec.name, *xs]))
    return st.one_of([for_spec(table[name]) for name in sorted(table)])


@functools.cache
def valid_process(cap: int | None = None, max_actions: int = 4, clean: bool = False,
                  resize_only: bool = False) -> st.SearchStrategy[str]:
    """image/<action>/<action>... built from ACTIONS (values mostly in range, some edge cases;
    clean: only in-range values; resize_only: only resize actions, whose geometry is predictable)."""
    table = {"resize": ACTIONS["resize"]} if resize_only else ACTIONS
    return st.lists(action_strategy(table, cap, clean=clean), min_size=1, max_size=max_actions).map(
        lambda acts: "image/" + "/".join(acts))


@st.composite
def mutated_process(draw, cap: int | None = None) -> str:
    text = draw(valid_process(cap))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup", "swap-case"]))
        pos = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(SPECIAL) | st.characters()) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 5)):]
        elif op == "replace" and pos < len(text):
            text = text[:pos] + draw(st.sampled_from(SPECIAL)) + text[pos + 1:]
        elif op == "dup":
            text = text[:pos] + text[pos:] + "|" + text
        else:
            text = text[:pos] + text[pos:].upper()
    return text


def garbage_process() -> st.SearchStrategy[str]:
    parts = st.lists(st.sampled_from(SPECIAL) | st.text(max_size=8)
                     | st.sampled_from(sorted(ACTIONS)), max_size=12).map("".join)
    return st.text(max_size=60) | parts | parts.map(lambda s: "image/" + s)
