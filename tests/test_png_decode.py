"""PNG sources through imagecodecs' libpng (issue 19; imaging/decode.py's NATIVE["png"]): the same
pixels, dtype and shape as cv2.imdecode(IMREAD_UNCHANGED) for every kind of PNG, OpenCV kept for the
ones it treats otherwise (APNG, interlaced, headers over its caps), the same failures, and the same
answers through the middleware. The PNGs of each kind come from bench/png_decode_bench.py, which
checks the same identity on the benchmark's corpus."""

from __future__ import annotations

import io
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from imgmiddleware.imaging import decode as decode_module
from imgmiddleware.imaging.decode import NATIVE, DecodeError, decode_source
from imgmiddleware.imaging.probe import probe

from .conftest import FIXTURES, get, make_client, ok
from .hostile_files import garbled_headers, png_declaring, truncated_body

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from png_decode_bench import sample_pngs, write_png  # noqa: E402

KINDS = sample_pngs()
LEFT_TO_OPENCV = {"RGB interlaced", "RGBA interlaced", "grey interlaced", "RGB 16-bit interlaced",
                  "APNG (2 frames)", "APNG, default image hidden"}


def opencv(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    assert np.array_equal(got, want)


@pytest.fixture
def opencv_only(monkeypatch):
    """decode.py as it was before issue 19: every PNG through OpenCV."""
    monkeypatch.setattr(decode_module, "NATIVE", {})


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_decodes_to_opencvs_pixels(kind):
    data = KINDS[kind]
    got = NATIVE["png"](data)
    if kind in LEFT_TO_OPENCV:
        assert got is None
    else:
        assert got is not None, kind
        assert_same(got, opencv(data))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("keep_16bit", [False, True])
def test_decode_source_is_unchanged(kind, keep_16bit, monkeypatch):
    """What the pipeline gets (to_bgr: grey to BGR, 16 bits to 8 unless kept, alpha kept)."""
    data = KINDS[kind]
    info = probe(data)
    got = decode_source(memoryview(data), info, keep_16bit=keep_16bit)
    monkeypatch.setattr(decode_module, "NATIVE", {})
    assert_same(got, decode_source(data, info, keep_16bit=keep_16bit))


@pytest.mark.parametrize("size", [(601, 433), (1, 1), (3, 2000), (2000, 3)])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_photos_of_many_bands_and_odd_shapes(size, mode):
    """The swap to BGR(A) goes a band of rows at a time: images of many bands, of one row a band,
    one pixel."""
    with Image.open(FIXTURES / "example.jpg") as im:
        im = im.convert(mode).resize(size)
    if mode == "RGBA":
        im.putalpha(Image.linear_gradient("L").resize(size))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    data = buf.getvalue()
    assert_same(NATIVE["png"](data), opencv(data))


def test_an_icc_profile_is_applied_as_before(monkeypatch):
    """ICC handling is after the decode (colour.rgb_to_srgb, from the probe): the same sRGB pixels."""
    from PIL import ImageCms
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    with Image.open(FIXTURES / "example.jpg") as im:
        im = im.convert("RGB").resize((120, 80))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (srgb, profile):
        buf = io.BytesIO()
        im.save(buf, "PNG", icc_profile=icc)
        data = buf.getvalue()
        info = probe(data)
        assert info.icc_profile == icc
        got = decode_source(data, info)
        with monkeypatch.context() as patch:
            patch.setattr(decode_module, "NATIVE", {})
            assert_same(got, decode_source(data, info))


def test_headers_over_opencvs_caps_stay_with_opencv():
    """OpenCV refuses them before allocating (a cv2.error, then a DecodeError); imagecodecs would
    allocate the whole image first."""
    assert NATIVE["png"](png_declaring(40_000, 30_000)) is None
    assert NATIVE["png"](png_declaring(2_000_000, 1)) is None
    assert NATIVE["png"](write_png(np.zeros((2, 3, 3), np.uint8), 2)) is not None


@pytest.mark.parametrize("keep", [0.4, 0.9, 0.99])
def test_a_cut_png_is_a_decode_error(keep):
    data = truncated_body("PNG", keep)
    assert opencv(data) is None
    with pytest.raises(DecodeError):
        decode_source(data, probe(data))


def test_garbled_and_empty_pngs_fail_as_before():
    for name, data in garbled_headers().items():
        if name.startswith("png"):
            with pytest.raises(DecodeError):
                decode_module.decode(data, "png")
    no_pixels = write_png(np.zeros((4, 4, 3), np.uint8), 2)
    no_pixels = no_pixels[:no_pixels.index(b"IDAT") - 4] + no_pixels[-12:]    # IHDR, IEND only
    with pytest.raises(DecodeError):
        decode_module.decode(no_pixels, "png")


PROCESSES = ("image/resize,w_200", "image/resize,w_64/format,png", "image/format,webp",
             "image/circle,r_40/format,png", "image/rotate,90/format,jpg", "image/info")


@pytest.mark.parametrize("kind", ["RGBA", "grey+alpha", "palette+tRNS", "RGB 16-bit", "grey",
                                  "RGB+tRNS key"])
def test_answers_through_the_middleware_are_unchanged(tmp_path, kind, monkeypatch):
    (tmp_path / "src.png").write_bytes(KINDS[kind])
    (tmp_path / "nodejs.png").write_bytes((FIXTURES / "nodejs-1024x768.png").read_bytes())
    client = make_client(tmp_path, cache_memory_bytes=0, cache_dir="")
    answers = {(key, process): ok(get(client, key, process))
               for key in ("src.png", "nodejs.png") for process in PROCESSES}
    monkeypatch.setattr(decode_module, "NATIVE", {})
    before = make_client(tmp_path, cache_memory_bytes=0, cache_dir="")
    for (key, process), body in answers.items():
        assert body == ok(get(before, key, process)), (kind, key, process)


def test_a_png_of_countless_chunks_before_its_pixels_is_left_to_opencv():
    """The walk looking for acTL stops after a few thousand chunks (a hostile file could hold
    millions): OpenCV decodes the rest, the same pixels."""
    plain = write_png(np.full((4, 5, 3), 77, np.uint8), 2)
    at = plain.index(b"IDAT") - 4
    empty_private_chunk = b"\0\0\0\0prVt" + zlib.crc32(b"prVt").to_bytes(4, "big")
    padded = plain[:at] + empty_private_chunk * 5000 + plain[at:]
    assert NATIVE["png"](padded) is None
    assert_same(decode_module.decode(padded, "png"), decode_module.decode(plain, "png"))
