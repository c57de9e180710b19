"""Fuzz target: the x-oss-process parser (imgmiddleware.process.parser).

Property: parse() returns a Pipeline or raises OssError with a 4xx status and a Code; a parsed
pipeline's canonical string parses back to the same pipeline. Anything else is a crash.

    python3 fuzz/fuzz_parser.py -atheris_runs=100000      # coverage-guided (pip install atheris)
    python3 fuzz/fuzz_parser.py --plain 100000            # seeded random mutation, no atheris
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import _have_atheris, main

if _have_atheris() and "--plain" not in sys.argv:
    import atheris

    with atheris.instrument_imports(include=["imgmiddleware"]):
        from imgmiddleware import Config
        from imgmiddleware.errors import OssError
        from imgmiddleware.ops import ACTIONS
        from imgmiddleware.process.parser import parse, parse_post
else:
    from imgmiddleware import Config
    from imgmiddleware.errors import OssError
    from imgmiddleware.ops import ACTIONS
    from imgmiddleware.process.parser import parse, parse_post

CONFIG = Config()
# The canonical string fills in defaults, so it may be longer than the client's string and than the
# length cap (found by this target); it is a cache key, never re-sent, so re-parse it uncapped.
UNCAPPED = CONFIG.replace(max_process_length=1 << 30)
STYLES = {"thumb": "image/resize,w_100", "bad": "style/thumb"}

SEEDS = [s.encode() for s in (
    "image/resize,w_100,h_100,m_fill", "image/crop,x_10,y_10,w_50,h_50,g_se/rotate,90",
    "image/watermark,text_SGVsbG8,color_ff0000,size_30,g_se,x_10,y_10",
    "image/watermark,image_ZXhhbXBsZS5qcGc_eC1vc3MtcHJvY2Vzcz1pbWFnZS9yZXNpemUsUF8yMA",
    "image/format,webp/quality,q_80/interlace,1", "image/blur,r_3,s_2/bright,50/contrast,-20/sharpen,100",
    "image/circle,r_100/rounded-corners,r_30/indexcrop,x_100,i_0", "image/auto-orient,1/info",
    "style/thumb", "image/average-hue", "x-oss-process=image/resize,w_10|sys/saveas,o_YS5qcGc,b_Yg",
)]
DICTIONARY = [t.encode() for t in (*ACTIONS, "image/", "style/", "sys/saveas", "|", "/", ",", "_",
                                   "w_", "h_", "m_", "p_", "x-oss-process=", "%", "\x00", "=")]


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        if text.startswith("x-oss-process="):
            pipeline, _ = parse_post(text, CONFIG, STYLES)
        else:
            pipeline = parse(text, CONFIG, STYLES)
    except OssError as exc:
        # A bad style table (operator config, not client input) is the one 500 the parser may raise.
        if exc.status >= 500 and exc.ec != "0040-00000601":
            raise AssertionError(f"{text!r} -> {exc!r}") from None
        if exc.status < 500 and not (400 <= exc.status < 500 and exc.code):
            raise AssertionError(f"{text!r} -> {exc!r}") from None
        return
    canonical = pipeline.canonical()
    again = parse(canonical, UNCAPPED, STYLES)
    if again != pipeline or again.canonical() != canonical:
        raise AssertionError(f"canonical form unstable: {text!r} -> {canonical!r}")


if __name__ == "__main__":
    main(one_input, SEEDS, DICTIONARY)
