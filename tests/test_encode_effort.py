"""Encoder effort by output size (issue 19): a large format,webp answer is written at libwebp's cheaper
method (Config.webp_effort, imaging/encode.py WEBP_EFFORT), a small one keeps OpenCV's bytes. What a
client gets is checked byte for byte against Pillow's libwebp at the chosen method; no time asserts
(bench/large_output_bench.py measures the time)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from imgmiddleware import Config
from imgmiddleware.imaging.encode import WEBP_EFFORT, EncodeOptions, encode, webp_method
from imgmiddleware.imaging.probe import probe
from imgmiddleware.process import parse
from imgmiddleware.process.plan import output_options

from .conftest import FIXTURES, decode, format_of, get, make_client, ok, size_of, source

LARGE = (4096, 4000)        # 16.4 MP: over the default row's 16,000,000 pixels


def libwebp_at(bgr: np.ndarray, quality: int, method: int) -> bytes:
    """Pillow's WebP encoder from an RGB image at ``method``: what the answer must be, byte for byte."""
    out = io.BytesIO()
    Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(out, "WEBP", quality=quality, method=method)
    return out.getvalue()


def opencv_webp(bgr: np.ndarray, quality: int) -> bytes:
    return cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, quality])[1].tobytes()


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory):
    """A 16.4 MP photo-like JPEG (a fixture photo stretched, with grain) and its decoded pixels."""
    rng = np.random.default_rng(19)
    stretched = cv2.resize(source("example.jpg"), LARGE, interpolation=cv2.INTER_LINEAR)
    grain = rng.integers(-6, 7, stretched.shape, dtype=np.int16)
    pixels = np.clip(stretched.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    folder = tmp_path_factory.mktemp("large")
    (folder / "large.jpg").write_bytes(data)
    return folder, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_the_default_rule_is_the_shipped_table():
    assert Config().webp_effort_rows == WEBP_EFFORT == ((16_000_000, 2),)
    assert Config.load(None, environ={}).webp_effort == "16000000:2"


def test_a_large_webp_answer_is_written_at_the_cheaper_method(large_jpeg):
    folder, pixels = large_jpeg
    body = ok(get(make_client(folder), "large.jpg", "image/format,webp"), "image/webp")
    assert format_of(body) == "WEBP" and size_of(body) == LARGE
    assert decode(body).shape == (LARGE[1], LARGE[0], 3)          # opaque: no alpha written
    assert body == libwebp_at(pixels, 82, 2)
    assert body != opencv_webp(pixels, 82)                         # not libwebp's method 4


def test_quality_still_applies_to_a_large_webp(large_jpeg):
    folder, pixels = large_jpeg
    body = ok(get(make_client(folder), "large.jpg", "image/format,webp/quality,Q_60"), "image/webp")
    assert body == libwebp_at(pixels, 60, 2)


def test_a_small_webp_answer_keeps_opencvs_bytes(client):
    """Below every row: OpenCV's encoder, the bytes the other tests pin."""
    body = ok(get(client, "example.jpg", "image/format,webp"), "image/webp")
    assert body == opencv_webp(source("example.jpg"), 82)
    assert body == libwebp_at(source("example.jpg"), 82, 4)       # the same as Pillow's method 4


@pytest.mark.parametrize("pixels, method", [(0, 4), (15_999_999, 4), (16_000_000, 2), (27_000_000, 2)])
def test_the_row_an_output_reaches(pixels, method):
    assert webp_method(pixels, WEBP_EFFORT) == method


def test_rows_pick_the_largest_threshold_reached():
    rows = Config(webp_effort="8000000:3, 24_000_000:0,16000000:1").webp_effort_rows
    assert rows == ((8_000_000, 3), (16_000_000, 1), (24_000_000, 0))
    assert [webp_method(p, rows) for p in (1, 8_000_000, 20_000_000, 30_000_000)] == [4, 3, 1, 0]
    assert webp_method(30_000_000, Config(webp_effort="").webp_effort_rows) == 4


@pytest.mark.parametrize("bad", ["16000000", "16000000:7", "x:2", "-5:2", "1:2,1:3", "16000000:2:1"])
def test_a_malformed_effort_table_is_refused(bad):
    with pytest.raises(ValueError, match="webp_effort"):
        Config(webp_effort=bad)


def test_the_effort_comes_from_the_environment_and_keys_the_cache():
    config = Config.load(None, environ={"IMGMW_WEBP_EFFORT": "4000000:1"})
    assert config.webp_effort_rows == ((4_000_000, 1),)
    assert "webp_effort=4000000:1" in config.output_fingerprint()
    assert config.output_fingerprint() != Config().output_fingerprint()


def test_encode_at_another_method_keeps_alpha_and_grey():
    """The Pillow path takes what OpenCV's takes: BGRA (alpha kept) and one grey channel."""
    rng = np.random.default_rng(7)
    bgra = rng.integers(0, 256, (96, 128, 4), dtype=np.uint8)
    bgra[:, :40, 3] = 0
    bgra[:, 40:, 3] = 255
    opts = EncodeOptions(format="webp", quality=82, webp_effort=((0, 1),))
    out = cv2.imdecode(np.frombuffer(encode(bgra, opts), np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape == (96, 128, 4)
    assert (out[:, :40, 3] == 0).all() and (out[:, 40:, 3] == 255).all()
    grey = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    body = encode(grey, opts)
    assert size_of(body) == (70, 50) and format_of(body) == "WEBP"
    assert body != encode(grey, EncodeOptions(format="webp", quality=82, webp_effort=()))


def test_a_configured_effort_reaches_the_answer():
    """Config.webp_effort reaches the encoder through the planner (process/plan.py, output_options)."""
    config = Config(webp_effort="0:1")
    info = probe((FIXTURES / "example.jpg").read_bytes())
    assert output_options(parse("image/format,webp", config), info, config).webp_effort == ((0, 1),)
    body = ok(get(make_client(config=Config(webp_effort="0:1")), "example.jpg", "image/format,webp"),
              "image/webp")
    assert body == libwebp_at(source("example.jpg"), 82, 1)
    assert body != opencv_webp(source("example.jpg"), 82)


def test_the_pixels_are_handed_back_as_they_came():
    """The cheaper method swaps red and blue in place for its encoder and back: the caller's array is
    unchanged, a view of a larger one too, and a read-only array is encoded alike (copied)."""
    rng = np.random.default_rng(11)
    opts = EncodeOptions(format="webp", quality=82, webp_effort=((0, 2),))
    whole = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    kept = whole.copy()
    view = whole[37:590, 11:700]
    body = encode(view, opts)
    assert np.array_equal(whole, kept)
    assert body == libwebp_at(kept[37:590, 11:700], 82, 2)
    frozen = kept.copy()
    frozen.flags.writeable = False
    assert encode(frozen, opts) == libwebp_at(kept, 82, 2)
