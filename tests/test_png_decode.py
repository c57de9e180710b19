"""PNG sources through Wuffs and imagecodecs' libpng (issue 19; imaging/png.py, decode.py's NATIVE["png"]): the same
pixels, dtype and shape as cv2.imdecode(IMREAD_UNCHANGED) for every kind of PNG, OpenCV kept for the
ones it treats otherwise (APNG, interlaced, headers over its caps), the same failures, and the same
answers through the middleware. The PNGs of each kind come from bench/png_decode_bench.py, which
checks the same identity on the benchmark's corpus."""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from imgmiddleware.imaging import decode as decode_module
from imgmiddleware.imaging import png as png_module
from imgmiddleware.imaging.decode import NATIVE, DecodeError, decode_source
from imgmiddleware.imaging.probe import probe

from .conftest import FIXTURES, get, make_client, ok
from .hostile_files import garbled_headers, png_declaring, truncated_body

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from png_decode_bench import _chunk, sample_pngs, write_png  # noqa: E402

KINDS = sample_pngs()
BY_WUFFS = {"RGB", "RGBA", "palette", "palette+tRNS", "RGB+gAMA+sRGB", "grey", "grey+alpha", "1-bit",
            "RGB interlaced", "RGBA interlaced", "grey interlaced"}
LEFT_TO_OPENCV = {"grey+tRNS key", "RGB 16-bit interlaced",
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


@pytest.fixture
def libpng_calls(monkeypatch):
    """The files png.py hands to libpng (Wuffs refused them, or they are not Wuffs' kind)."""
    calls = []
    real = png_module._libpng

    def counting(data):
        calls.append(bytes(data))
        return real(data)

    monkeypatch.setattr(png_module, "_libpng", counting)
    return calls


@pytest.mark.parametrize("kind", sorted(set(KINDS) - LEFT_TO_OPENCV))
def test_wuffs_takes_up_to_8_bits_and_libpng_the_rest(kind, libpng_calls):
    """The rule: up to 8 bits a sample by Wuffs (a palette's tRNS as BGRA, grey as one plane, grey+
    alpha as BGRA); 16 bits and colour keys by libpng. Either way OpenCV's pixels."""
    data = KINDS[kind]
    assert_same(NATIVE["png"](data), opencv(data))
    assert (libpng_calls == []) == (kind in BY_WUFFS), kind


def test_a_photo_is_decoded_by_wuffs_to_opencvs_pixels(libpng_calls):
    with Image.open(FIXTURES / "example.jpg") as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG", compress_level=6)
    data = buf.getvalue()
    got = NATIVE["png"](memoryview(data))
    assert_same(got, opencv(data))
    assert libpng_calls == []
    assert got.flags["C_CONTIGUOUS"] and got.flags["WRITEABLE"]   # the actions write in place


def _one_idat(rows: bytes, width: int = 5, height: int = 4, colour_type: int = 2) -> bytes:
    ihdr = _chunk(b"IHDR", (width).to_bytes(4, "big") + (height).to_bytes(4, "big")
                  + bytes([8, colour_type, 0, 0, 0]))
    return png_module.SIGNATURE + ihdr + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


RAW = b"".join(b"\0" + bytes(range(y * 15, y * 15 + 15)) for y in range(4))   # 5x4 RGB, filter 0


def _with_bad(data: bytes, what: str) -> bytes:
    """``data`` with one checksum broken: a chunk's CRC (IHDR, IDAT) or zlib's Adler-32."""
    if what == "Adler-32":
        stream = bytearray(zlib.compress(RAW))
        stream[-1] ^= 1
        return data[:33] + _chunk(b"IDAT", bytes(stream)) + _chunk(b"IEND", b"")
    at = data.index(what.encode()) - 4
    crc = at + 8 + int.from_bytes(data[at:at + 4], "big")
    return data[:crc] + bytes([data[crc] ^ 1]) + data[crc + 1:]


@pytest.mark.parametrize("what", ["IHDR", "IDAT", "Adler-32"])
def test_a_broken_checksum_is_refused_as_libpng_refuses_it(what, libpng_calls):
    """Wuffs verifies CRCs and Adler-32 (its binding skips them unless told): a damaged file is the
    same DecodeError as before, never pixels OpenCV would not give."""
    data = _with_bad(_one_idat(RAW), what)
    assert opencv(data) is None
    with pytest.raises(DecodeError):
        decode_module.decode(data, "png")
    assert len(libpng_calls) == 1


@pytest.mark.parametrize("rows", [RAW + b"\0" * 16, RAW + RAW[:16]], ids=["zeros", "a row"])
def test_what_wuffs_refuses_and_libpng_takes_is_libpngs_answer(rows, libpng_calls):
    """Pixel data running past the last row: Wuffs refuses it, libpng (and OpenCV) ignore the rest."""
    data = _one_idat(rows)
    assert_same(NATIVE["png"](data), opencv(data))
    assert len(libpng_calls) == 1


def test_a_view_of_the_whole_body_is_passed_without_a_copy():
    body = _one_idat(RAW)
    assert png_module._as_bytes(memoryview(body)) is body
    assert png_module._as_bytes(memoryview(body)[1:]) == body[1:]
    assert png_module._as_bytes(bytearray(body)) == body


def test_without_the_wuffs_extra_every_png_goes_to_libpng():
    """pywuffs is an extra (published as source only): without it the same pixels, by libpng."""
    script = (
        "import sys\n"
        "sys.modules['pywuffs'] = sys.modules['pywuffs.aux'] = None   # as if not installed\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import cv2, numpy as np\n"
        "from png_decode_bench import sample_pngs\n"
        "from imgmiddleware.imaging import png\n"
        "assert not png.WUFFS and png._WUFFS_FORMAT == {}\n"
        "assert 'install imgmiddleware[wuffs]' in png.decoders()\n"
        "calls = []\n"
        "real = png._libpng\n"
        "png._libpng = lambda data: calls.append(1) or real(data)\n"
        "for kind in ('RGB', 'RGBA', 'palette', 'palette+tRNS'):\n"
        "    data = sample_pngs()[kind]\n"
        "    want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)\n"
        "    got = png.decode(data)\n"
        "    assert got.shape == want.shape and np.array_equal(got, want), kind\n"
        "assert len(calls) == 4, calls\n"
        "print('libpng only')\n")
    bench = Path(__file__).resolve().parent.parent / "bench"
    done = subprocess.run([sys.executable, "-c", script, str(bench)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "libpng only"


def _packed_png(values: np.ndarray, depth: int, colour_type: int, extra: bytes = b"") -> bytes:
    """A grey or palette PNG of 1, 2 or 4 bits a sample (Pillow writes these only for some modes):
    samples packed high bits first, each row padded to a byte, filter 0."""
    height, width = values.shape
    per_byte = 8 // depth
    padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint8)
    padded[:, :width] = values
    groups = padded.reshape(height, -1, per_byte)
    packed = np.zeros(groups.shape[:2], np.uint8)
    for i in range(per_byte):
        packed |= groups[:, :, i] << (8 - depth * (i + 1))
    rows = b"".join(b"\0" + row.tobytes() for row in packed)
    ihdr = _chunk(b"IHDR", width.to_bytes(4, "big") + height.to_bytes(4, "big")
                  + bytes([depth, colour_type, 0, 0, 0]))
    return (png_module.SIGNATURE + ihdr + extra + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("kind", ["grey", "palette", "palette+tRNS"])
def test_grey_and_palette_of_fewer_bits_decode_to_opencvs_pixels(depth, kind, libpng_calls):
    values = (np.arange(13 * 7).reshape(7, 13) * 5 % (1 << depth)).astype(np.uint8)
    extra = b""
    if kind != "grey":
        colours = 1 << depth
        extra = _chunk(b"PLTE", bytes((i * 37 + c * 91) % 256 for i in range(colours) for c in range(3)))
        if kind == "palette+tRNS":
            extra += _chunk(b"tRNS", bytes(range(0, 256, 256 // colours))[:colours - 1])
    data = _packed_png(values, depth, 0 if kind == "grey" else 3, extra)
    want = opencv(data)
    assert want is not None and want.shape[:2] == (7, 13)
    assert_same(NATIVE["png"](data), want)
    assert libpng_calls == []


@pytest.mark.parametrize("depth", [1, 8])
def test_a_grey_colour_key_stays_with_opencv(depth, libpng_calls):
    """OpenCV gives one grey plane and ignores the key; libpng (imagecodecs) gave grey+alpha, so
    BGRA, and Wuffs blacks the keyed pixels: such a file is OpenCV's, as before issue 19."""
    values = (np.arange(13 * 7).reshape(7, 13) % (1 << depth)).astype(np.uint8)
    key = _chunk(b"tRNS", (1).to_bytes(2, "big"))
    data = (_packed_png(values, depth, 0, key) if depth < 8 else
            write_png(values * 50, 0, extra=((b"tRNS", (50).to_bytes(2, "big")),)))
    assert NATIVE["png"](data) is None
    assert opencv(data).shape == (7, 13)
    assert_same(decode_module.decode(data, "png"), cv2.cvtColor(opencv(data), cv2.COLOR_GRAY2BGR))
    assert libpng_calls == []


def test_an_interlaced_png_wuffs_refuses_is_opencvs(libpng_calls):
    """Wuffs takes Adam7 (1.4x OpenCV's speed); what it refuses goes to OpenCV, as every interlaced
    PNG did before, never to libpng (which warns on stderr for each)."""
    pixels = (np.arange(9 * 11 * 3).reshape(9, 11, 3) * 7 % 256).astype(np.uint8)
    good = write_png(pixels, 2, interlace=True)
    assert_same(NATIVE["png"](good), opencv(good))
    broken = _with_bad(good, "IDAT")
    assert NATIVE["png"](broken) is None and opencv(broken) is None
    with pytest.raises(DecodeError):
        decode_module.decode(broken, "png")
    assert libpng_calls == []
