"""Odd files from a third-party test corpus that got a 5xx: each now gets a clean 4xx or a correct image.

1. Sources Pillow cannot open (a DDS of a pixel format it does not decode raised NotImplementedError)
   and every other exception Pillow raises on bad bytes: one mapping, 400 BadRequest EC 0040-00000005,
   or ImageTooLarge EC 0040-00000009 for its decompression-bomb guard.
2. Multi-page TIFFs, pages equal or not in size: a still image, the first page (only GIF and WebP
   animate), for every output format.
3. Decoder failures, cv2.error included, on still images, animations, JPEG, PNG, WebP, GIF, TIFF,
   HEIC: 400 BadRequest EC 0040-00000005; a cv2.error of our own processing stays a logged 500.
4. 179-250 MP headers: no longer refused by Pillow's guard with OSS's limit in the message; the
   messages name the image's real size and our limit.

Every file is generated here (tests/hostile_files.py); header bombs are only probed (image/info), so
memory stays small.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import threading
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from imgmiddleware.imaging import heif
from imgmiddleware.imaging.decode import DecodeError, decode_animation, decode_source
from imgmiddleware.imaging.probe import ProbeError, TooManyPixels, allow_pixels, probe
from imgmiddleware.process import engine

from .conftest import FIXTURES, get, make_client, ok, oss_error, size_of
from .hostile_files import (dds_with_fourcc, garbled_headers, jpeg_declaring,
                            odd_files, png_declaring, tiff_declaring, tiff_with_huge_later_page,
                            truncated_body)

BAD_REQUEST = (400, "BadRequest", "0040-00000005")
DAMAGED_WEBP = (400, "BadRequest", "0040-00000010")       # OSS's page for a damaged WebP source
TOO_LARGE = (400, "ImageTooLarge", "0040-00000009")        # a source over the limits, with a resize
TOO_LARGE_TO_DECODE = (400, "ImageTooLarge", "0040-00000012")   # ... and without one


def error_of(response) -> tuple[int, str, str]:
    fields = oss_error(response)
    assert fields["header_ec"] == fields["EC"]
    return fields["status"], fields["Code"], fields["EC"]


@pytest.fixture(autouse=True)
def pillow_guard():
    """Leave Pillow's global decompression-bomb guard as each test found it."""
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


@pytest.fixture(scope="module")
def odd_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("odd")
    for name, (data, _) in odd_files().items():
        (directory / name).write_bytes(data)
    (directory / "example.gif").write_bytes((FIXTURES / "example.gif").read_bytes())
    return directory


@pytest.fixture(scope="module")
def client(odd_dir):
    return make_client(odd_dir)


def write(directory, name: str, data: bytes) -> str:
    (directory / name).write_bytes(data)
    return name


# --- 1. whatever Pillow raises while probing ------------------------------------------------------

@pytest.mark.parametrize("fourcc", [b"ABCD", b"DX10"])
def test_a_dds_pillow_cannot_decode_is_bad_request(client, fourcc):
    data = dds_with_fourcc(fourcc)
    with pytest.raises(NotImplementedError):      # what escaped the probe (a 500)
        Image.open(io.BytesIO(data))
    with pytest.raises(ProbeError) as caught:
        probe(data)
    assert not isinstance(caught.value, TooManyPixels)
    name = {b"ABCD": "dds-fourcc-abcd.dds", b"DX10": "dds-dx10-unknown.dds"}[fourcc]
    for process in ("image/resize,w_100", "image/info", "image/format,webp"):
        assert error_of(get(client, name, process)) == BAD_REQUEST, process


@pytest.mark.parametrize("name", sorted(garbled_headers()))
def test_truncated_and_garbled_headers_are_bad_request(client, name):
    data = garbled_headers()[name]
    with pytest.raises(ProbeError):
        probe(data)
    key = next(key for key in odd_files() if key.startswith(name + "."))
    # A damaged WebP has OSS's WebP decode EC (its page: "the source WebP is damaged").
    expected = DAMAGED_WEBP if name.startswith("webp-") else BAD_REQUEST
    for process in ("image/resize,w_100", "image/info"):
        assert error_of(get(client, key, process)) == expected, process


# What Pillow's plugins raise on bad bytes (and MemoryError, which is not about the bytes).
PILLOW_FAILURES = [NotImplementedError("Unimplemented pixel format"), OSError("truncated"),
                   ValueError("bad value"), SyntaxError("not a PNG file"),
                   struct.error("unpack requires a buffer"), EOFError(),
                   TypeError("bad type"), IndexError("index"), KeyError("key"),
                   ZeroDivisionError("division"), OverflowError("overflow"),
                   RecursionError("deep"), Image.UnidentifiedImageError("cannot identify")]


@pytest.mark.parametrize("failure", PILLOW_FAILURES,
                         ids=lambda exc: f"{type(exc).__module__}.{type(exc).__name__}")
def test_every_pillow_failure_is_bad_request(monkeypatch, odd_dir, failure):
    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ProbeError) as caught:
        probe(b"any bytes at all")
    assert not isinstance(caught.value, TooManyPixels)
    response = get(make_client(odd_dir), "multipage-same.tif", "image/resize,w_10")
    assert error_of(response) == BAD_REQUEST


def test_pillows_bomb_guard_is_too_large_not_corrupt(monkeypatch, odd_dir):
    def bomb(*args, **kwargs):
        raise Image.DecompressionBombError("Image size (987654321 pixels) exceeds limit of 500000000 "
                                           "pixels, could be decompression bomb DOS attack.")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(TooManyPixels) as caught:
        probe(b"any bytes at all")
    assert caught.value.pixels == 987654321
    response = get(make_client(odd_dir), "multipage-same.tif", "image/info")
    assert error_of(response) == TOO_LARGE_TO_DECODE
    assert "987654321" in oss_error(response)["Message"]


def test_memory_error_is_not_blamed_on_the_source(monkeypatch, odd_dir):
    """Running out of memory is the server's failure: a logged 500, not 'corrupt image'."""
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image, "open", exhausted)
    with pytest.raises(MemoryError):
        probe(b"any bytes at all")
    fields = oss_error(get(make_client(odd_dir), "multipage-same.tif", "image/resize,w_10"))
    assert (fields["status"], fields["Code"]) == (500, "InternalError")


# --- 2. multi-page TIFF: the first page, a still image ----------------------------------------------

OUTPUTS = ["jpg", "png", "webp", "bmp", "gif", "tiff", "avif"] + (["heic"] if heif.AVAILABLE else [])
MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
        "gif": "image/tiff",     # format,gif keeps a non-GIF source's format (decision 11)
        "tiff": "image/tiff", "avif": "image/avif", "heic": "image/heic"}


def frame_count(body: bytes) -> int:
    with Image.open(io.BytesIO(body)) as im:
        return int(getattr(im, "n_frames", 1))


def centre_colour(body: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(body)) as im:
        im = im.convert("RGB")
        return im.getpixel((im.width // 2, im.height // 2))


@pytest.mark.parametrize("name", ["multipage-same.tif", "multipage-sizes.tif"])
def test_a_multipage_tiff_is_its_first_page(client, name):
    info = probe(odd_files()[name][0])
    assert (info.format, info.width, info.height, info.frames) == ("tiff", 64, 48, 1)
    for fmt in OUTPUTS:
        for process in (f"image/format,{fmt}", f"image/resize,w_32/format,{fmt}"):
            body = ok(get(client, name, process), MIME[fmt])
            assert size_of(body) == ((64, 48) if "resize" not in process else (32, 24)), process
            assert frame_count(body) == 1, process
            r, g, b = centre_colour(body)
            assert r > 150 and g < 90 and b < 90, (process, (r, g, b))   # page 0 is red
    assert size_of(ok(get(client, name, "image/resize,w_16"), "image/tiff")) == (16, 12)
    fields = json.loads(ok(get(client, name, "image/info"), "application/json"))
    assert fields["Format"] == {"value": "tiff"} and fields["FrameCount"] == {"value": "1"}
    assert (fields["ImageWidth"], fields["ImageHeight"]) == ({"value": "64"}, {"value": "48"})


@pytest.mark.parametrize("fmt", ["MPO", "PNG"])
def test_other_multi_frame_formats_are_still_images_too(tmp_path, fmt):
    """An MPO's second picture and an APNG's frames: JPEG and PNG do not animate on OSS either."""
    pages = [Image.new("RGB", (64, 48), (220, 20, 20)), Image.new("RGB", (64, 48), (20, 220, 20))]
    buf = io.BytesIO()
    pages[0].save(buf, fmt, save_all=True, append_images=pages[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.n_frames == 2
    assert probe(buf.getvalue()).frames == 1
    name = write(tmp_path, "two." + ("jpg" if fmt == "MPO" else "png"), buf.getvalue())
    client = make_client(tmp_path)
    for process in ("image/format,webp", "image/resize,w_32/format,webp"):
        body = ok(get(client, name, process), "image/webp")
        assert frame_count(body) == 1 and centre_colour(body)[0] > 150, process
    assert json.loads(ok(get(client, name, "image/info")))["FrameCount"] == {"value": "1"}


def test_a_later_page_opencv_cannot_decode_is_never_read(client):
    """The attacker's file: page 2 declares 50,000 x 50,000; OpenCV's multi-page decoder raised
    cv2.error on it. Only page 1 is read now."""
    data = tiff_with_huge_later_page()
    with pytest.raises(cv2.error):
        cv2.imdecodeanimation(np.frombuffer(data, np.uint8))
    for process in ("image/format,webp", "image/resize,w_20/format,webp", "image/format,png",
                    "image/format,gif", "image/resize,w_20"):
        body = ok(get(client, "multipage-huge-page2.tif", process))
        assert size_of(body) in ((40, 30), (20, 15)) and frame_count(body) == 1, process


def test_a_multipage_tiff_can_be_a_watermark(odd_dir):
    mark = base64.urlsafe_b64encode(b"multipage-sizes.tif?x-oss-process=image/resize,w_20").decode()
    response = get(make_client(odd_dir), "multipage-same.tif",
                   f"image/watermark,image_{mark.rstrip('=')},g_nw,x_0,y_0")
    assert size_of(ok(response, "image/tiff")) == (64, 48)


# --- 3. decoder failures ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiff-compression-12345.tif", "tiff-strips-past-end.tif",
                                  "tiff-short-strip.tif", "body-cut.png", "body-cut.webp"])
def test_a_source_the_decoder_fails_on_is_bad_request(client, name):
    expected = DAMAGED_WEBP if name.endswith(".webp") else BAD_REQUEST
    for process in ("image/resize,w_20", "image/format,webp", "image/format,png",
                    "image/resize,w_20/format,webp", "image/rotate,90"):
        assert error_of(get(client, name, process)) == expected, (name, process)


@pytest.mark.parametrize("name", ["body-cut.jpg", "body-cut.gif"])
def test_a_cut_jpeg_or_gif_is_bad_request_or_what_was_decoded(client, name):
    """libjpeg and giflib may give the part of a cut body they read; if not, it is a clean 400."""
    for process in ("image/resize,w_20", "image/format,png", "image/format,webp"):
        response = get(client, name, process)
        if response.status_code == 200:
            size_of(response.get_data())
        else:
            assert error_of(response) == BAD_REQUEST, (name, process)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_cut_bodies_with_whole_headers(tmp_path, fmt):
    """A header that probes, a body that stops: the decoders' failure is a DecodeError and a 400."""
    data = truncated_body(fmt, 0.4)
    if fmt == "WEBP":                  # Pillow already refuses a cut WebP at the probe
        with pytest.raises(ProbeError):
            probe(data)
    else:
        info = probe(data)
        try:                            # some decoders give what they read; any other failure escapes
            decode_source(data, info)
        except DecodeError:
            pass
    name = write(tmp_path, f"cut.{fmt.lower()}", data)
    response = get(make_client(tmp_path), name, "image/resize,w_20")
    if response.status_code != 200:
        assert error_of(response) == (DAMAGED_WEBP if fmt == "WEBP" else BAD_REQUEST)


# OpenCV's own cap (CV_IO_MAX_IMAGE_PIXELS, 2^30) is checked outside its codecs' error handling, so
# a header over it raises cv2.error out of imdecode. Our limits are below it, unless an operator
# raises them: these limits let 40,000 x 30,000 (1.2 Gpx) through the probe to the decoder.
RAISED_LIMITS = dict(max_source_side=50_000, max_source_pixels=2_000_000_000,
                     max_transform_bytes=10**13, worker_transform_bytes=10**13,
                     max_transform_ms=10**9, large_image_pixels=10**10)


@pytest.mark.parametrize("name,data,process", [
    ("huge.tif", tiff_declaring(40_000, 30_000), "image/resize,w_100"),
    ("huge.png", png_declaring(40_000, 30_000), "image/resize,w_100"),
    ("huge.jpg", jpeg_declaring(40_000, 30_000), "image/format,png"),       # a full-size decode
], ids=["tiff", "png", "jpeg"])
def test_cv2_error_while_decoding_is_bad_request(tmp_path, name, data, process):
    with pytest.raises(cv2.error):      # the decoder itself raises: this is what was a 500
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    info = probe(data, RAISED_LIMITS["max_source_pixels"])
    with pytest.raises(DecodeError):
        decode_source(data, info)
    write(tmp_path, name, data)
    # A TIFF over 16,384 px a side is refused before its decoder runs: OSS's TIFF limit (EC 018).
    expected = (400, "ImageTooLarge", "0040-00000018") if name.endswith(".tif") else BAD_REQUEST
    assert error_of(get(make_client(tmp_path, **RAISED_LIMITS), name, process)) == expected


def test_the_same_jpeg_header_shrunk_on_load_is_what_libjpeg_read(tmp_path):
    """At 1/8 scale (5,000 x 3,750) the header is under OpenCV's cap; libjpeg decodes the short scan
    as far as it goes, as for any cut JPEG: an image of the planned size, or else a clean 400."""
    name = write(tmp_path, "huge.jpg", jpeg_declaring(40_000, 30_000))
    response = get(make_client(tmp_path, **RAISED_LIMITS), name, "image/resize,w_100")
    if response.status_code == 200:
        assert size_of(response.get_data()) == (100, 75)
    else:
        assert error_of(response) == BAD_REQUEST


def test_cv2_error_in_the_animation_decoder_is_bad_request(monkeypatch, odd_dir):
    def broken(*args, **kwargs):
        raise cv2.error("OpenCV(5) loadsave.cpp: error: (-215:Assertion failed) in validateInputImageSize")

    gif = (FIXTURES / "example.gif").read_bytes()
    monkeypatch.setattr(cv2, "imdecodeanimation", broken)
    with pytest.raises(DecodeError):
        decode_animation(gif)
    assert error_of(get(make_client(odd_dir), "example.gif", "image/resize,w_100")) == BAD_REQUEST


def test_a_heic_whose_bitstream_is_garbage_is_bad_request(tmp_path):
    assert heif.AVAILABLE, "the test extra installs pillow-heif"
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "HEIF", quality=80)
    data, offset = buf.getvalue(), 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"mdat":
            data = data[:offset + 8] + b"\x42" * (size - 8) + data[offset + size:]
            break
        offset += size
    info = probe(data)
    assert info.format == "heic"
    with pytest.raises(DecodeError):    # libheif raised EOFError: a 500
        decode_source(data, info)
    write(tmp_path, "garbage.heic", data)
    # OSS's page for a damaged HEIC source: 0040-00000020
    assert error_of(get(make_client(tmp_path), "garbage.heic", "image/resize,w_20")) == (
        400, "BadRequest", "0040-00000020")


def test_a_grey_heic_decodes_and_stays_grey(tmp_path):
    """pillow-heif gives a 2-D array for a grey (mode L) HEIC; it was read as if it had channels."""
    buf = io.BytesIO()
    Image.fromarray(np.tile((np.arange(64) * 4).astype(np.uint8), (48, 1)), "L").save(buf, "HEIF", quality=90)
    write(tmp_path, "grey.heic", buf.getvalue())
    answer = get(make_client(tmp_path), "grey.heic", "image/resize,w_32/format,png")
    ok(answer, "image/png")
    out = cv2.imdecode(np.frombuffer(answer.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape[:2] == (24, 32)
    assert out.ndim == 2 or (np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2]))
    row = out[12] if out.ndim == 2 else out[12, :, 0]
    assert int(row[-1]) - int(row[0]) > 150                      # the ramp survived


def test_cv2_error_of_our_own_processing_stays_a_logged_500(monkeypatch, odd_dir, caplog):
    """A cv2.error after a successful decode is a bug of ours: 500 with its cause logged."""
    def buggy(img, plan):
        return cv2.cvtColor(np.zeros((0, 0), np.uint8), cv2.COLOR_BGR2GRAY)

    monkeypatch.setattr(engine, "execute", buggy)
    with caplog.at_level(logging.ERROR, logger="imgmiddleware"):
        response = get(make_client(odd_dir), "multipage-same.tif", "image/resize,w_20")
    fields = oss_error(response)
    assert (fields["status"], fields["Code"]) == (500, "InternalError")
    assert any(record.exc_info and isinstance(record.exc_info[1], cv2.error)
               for record in caplog.records)


# --- 4. Pillow's decompression-bomb guard and our limits -------------------------------------------

def info_of(response) -> dict:
    return json.loads(ok(response, "application/json"))


def test_a_195_mp_header_is_not_refused_by_pillows_guard(tmp_path):
    """15,000 x 13,000 = 195 MP: over Pillow's default guard (179 MP), under OSS's 250 MP."""
    data = png_declaring(15_000, 13_000)
    Image.MAX_IMAGE_PIXELS = 89_478_485          # Pillow's default
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    info = probe(data, 250_000_000)
    assert (info.width, info.height) == (15_000, 13_000)
    name = write(tmp_path, "195mp.png", data)
    fields = info_of(get(make_client(tmp_path), name, "image/info"))
    assert (fields["ImageWidth"], fields["ImageHeight"]) == ({"value": "15000"}, {"value": "13000"})
    # refused for its real reason, with its real size, under a lower limit
    response = get(make_client(tmp_path, max_source_pixels=190_000_000), name, "image/info")
    assert error_of(response) == TOO_LARGE_TO_DECODE
    message = oss_error(response)["Message"]
    assert "195000000" in message and "15000 x 13000" in message and "190000000" in message


@pytest.mark.parametrize("width,height", [(20_000, 13_000), (29_000, 29_000)])
def test_a_header_over_250_mp_is_too_large_with_the_right_numbers(tmp_path, width, height):
    """260 MP (over our limit, under twice it) and 841 MP (over twice it: Pillow's guard fires)."""
    name = write(tmp_path, "big.png", png_declaring(width, height))
    for process, expected in (("image/info", TOO_LARGE_TO_DECODE), ("image/resize,w_100", TOO_LARGE)):
        response = get(make_client(tmp_path), name, process)
        assert error_of(response) == expected
        message = oss_error(response)["Message"]
        assert str(width * height) in message and "250000000" in message, message
        assert "exceeds 250000000 pixels" not in message


def test_a_side_over_the_limit_names_the_size(tmp_path):
    name = write(tmp_path, "wide.png", png_declaring(40_000, 100))
    message = oss_error(get(make_client(tmp_path), name, "image/info"))["Message"]
    assert "40000 x 100" in message and "30000" in message


def test_the_bomb_warning_as_an_error_is_too_large():
    """Under ``-W error`` Pillow's DecompressionBombWarning is raised: still 'too large'."""
    data = png_declaring(20_000, 13_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(TooManyPixels) as caught:
            probe(data, 250_000_000)
    assert caught.value.pixels == 260_000_000


def test_pillows_guard_is_only_ever_raised():
    Image.MAX_IMAGE_PIXELS = None                 # a host that switched it off keeps it off
    allow_pixels(250_000_000)
    assert Image.MAX_IMAGE_PIXELS is None
    Image.MAX_IMAGE_PIXELS = 10**12               # a host's higher guard is kept
    allow_pixels(250_000_000)
    assert Image.MAX_IMAGE_PIXELS == 10**12
    Image.MAX_IMAGE_PIXELS = 1000
    limits = [250_000_000, 100_000_000, 300_000_000, 5_000] * 8
    threads = [threading.Thread(target=allow_pixels, args=(limit,)) for limit in limits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Image.MAX_IMAGE_PIXELS == 300_000_000  # the largest configured limit, whatever the order
