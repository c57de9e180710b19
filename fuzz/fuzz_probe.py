"""Fuzz target: the header probe (imgmiddleware.imaging.probe), the first code that reads a source.

Property: probe() returns a Probe or raises ProbeError (TooManyPixels included); its derived fields
(oriented_size, jpeg_quality) never raise. Anything else is a crash.

    python3 fuzz/fuzz_probe.py -atheris_runs=100000      # coverage-guided (pip install atheris)
    python3 fuzz/fuzz_probe.py --plain 100000            # seeded random mutation, no atheris
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import _have_atheris, main

if _have_atheris() and "--plain" not in sys.argv:
    import atheris

    # Pillow's header parsers are instrumented too: they are what this target really exercises.
    with atheris.instrument_imports(include=["imgmiddleware", "PIL"]):
        from imgmiddleware.imaging.probe import ProbeError, probe
else:
    from imgmiddleware.imaging.probe import ProbeError, probe

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [p.read_bytes()[:64 * 1024] for p in sorted((ROOT / "imgmiddleware" / "samples").iterdir())
         if p.is_file()]
SEEDS += [p.read_bytes()[:64 * 1024] for p in sorted((ROOT / "tests" / "fixtures").glob("*.png"))]
DICTIONARY = [b"\xff\xd8\xff", b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff", b"\x89PNG\r\n\x1a\n", b"IHDR",
              b"GIF89a", b"RIFF", b"WEBPVP8 ", b"Exif\x00\x00", b"II*\x00", b"MM\x00*", b"ftypheic",
              b"ICC_PROFILE\x00", b"\x01\x12"]


def one_input(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = probe(data)
        except ProbeError:
            return
        _ = result.oriented_size, result.jpeg_quality   # derived fields must not raise either


if __name__ == "__main__":
    main(one_input, SEEDS, DICTIONARY)
