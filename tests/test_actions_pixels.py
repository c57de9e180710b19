"""Conformance of the pixel-effect and output actions through the real middleware.

blur, bright, contrast, sharpen (spec §5.8-§5.11), average-hue (§5.17), transparency (§3.2), and the
encode-time settings format, quality and interlace (§3.1, §5.12, §5.15). Effects are judged by what
they are meant to do to an image (mean, spread, high-frequency energy), never by bytes.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from imgmiddleware.imaging.probe import probe

from .conftest import (
    FIXTURES, decode, format_of, get, make_client, ok, psnr, save_image, size_of, source,
)


def png(client, process: str, key: str = "example.jpg") -> np.ndarray:
    """The result of ``process`` on ``key``, encoded losslessly so only the action is measured."""
    return decode(ok(get(client, key, process + "/format,png"), "image/png"))


def sharpness(img: np.ndarray) -> float:
    """High-frequency energy: variance of the Laplacian of the grey image."""
    grey = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def grey_stats(img: np.ndarray) -> tuple[float, float]:
    grey = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY).astype(np.float64)
    return float(grey.mean()), float(grey.std())


# ---------------------------------------------------------------------------------------------------
# §10 #18 average-hue

def test_average_hue(client):
    r = get(client, "example.jpg", "image/average-hue")
    body = ok(r, "application/json")
    payload = json.loads(body)
    assert list(payload) == ["RGB"]
    value = payload["RGB"]
    assert isinstance(value, str) and len(value) == 8 and value.startswith("0x")
    assert value == value.lower()
    rgb = [int(value[i:i + 2], 16) for i in (2, 4, 6)]
    for got, want in zip(rgb, (0x5C, 0x78, 0x3B)):
        assert abs(got - want) <= 6, value


def test_average_hue_of_a_flat_colour(image_dir):
    save_image(image_dir, "flat.png", np.full((40, 60, 3), (30, 160, 200), np.uint8))   # BGR
    payload = json.loads(ok(get(make_client(image_dir), "flat.png", "image/average-hue"), "application/json"))
    assert payload == {"RGB": "0xc8a01e"}


# ---------------------------------------------------------------------------------------------------
# blur / sharpen

def test_blur_lowers_high_frequencies(client):
    original = sharpness(png(client, "image/resize,w_400"))
    light = sharpness(png(client, "image/blur,r_3,s_2"))
    heavy = sharpness(png(client, "image/blur,r_10,s_10"))
    assert light < original * 0.5
    assert heavy < light * 0.5


@pytest.mark.parametrize("weaker, stronger", [("r_1,s_1", "r_1,s_5"), ("r_2,s_20", "r_20,s_20")])
def test_blur_larger_radius_or_sigma_blurs_more(client, weaker, stronger):
    assert sharpness(png(client, f"image/blur,{stronger}")) < sharpness(png(client, f"image/blur,{weaker}"))


def test_blur_keeps_size_and_colour(client):
    out = png(client, "image/blur,r_5,s_5")
    src = source("example.jpg")
    assert out.shape == src.shape
    assert np.abs(out.mean(axis=(0, 1)) - src.mean(axis=(0, 1))).max() < 2


@pytest.mark.parametrize("value", [50, 100, 399])
def test_sharpen_raises_high_frequencies(client, value):
    original = sharpness(source("example.jpg"))
    out = png(client, f"image/sharpen,{value}")
    assert out.shape == (267, 400, 3)
    assert sharpness(out) > original * 1.1
    assert psnr(out, source("example.jpg")) > 15      # still the same picture


def test_sharpen_stronger_is_sharper(client):
    assert sharpness(png(client, "image/sharpen,300")) > sharpness(png(client, "image/sharpen,100"))


def test_sharpen_jpeg_output(client):
    body = ok(get(client, "example.jpg", "image/sharpen,100"), "image/jpeg")
    assert sharpness(decode(body)) > sharpness(source("example.jpg")) * 1.1


# ---------------------------------------------------------------------------------------------------
# bright / contrast

def test_bright(client):
    base_mean, _ = grey_stats(source("example.jpg"))
    up, _ = grey_stats(png(client, "image/bright,50"))
    down, _ = grey_stats(png(client, "image/bright,-50"))
    assert up > base_mean + 40
    assert down < base_mean - 40
    assert grey_stats(png(client, "image/bright,100"))[0] > up
    assert abs(grey_stats(png(client, "image/bright,0"))[0] - base_mean) < 1


def test_bright_jpeg_output(client):
    base_mean, _ = grey_stats(source("example.jpg"))
    body = ok(get(client, "example.jpg", "image/bright,50"), "image/jpeg")
    assert grey_stats(decode(body))[0] > base_mean + 40


def test_contrast(client):
    _, base_std = grey_stats(source("example.jpg"))
    _, more = grey_stats(png(client, "image/contrast,50"))
    _, less = grey_stats(png(client, "image/contrast,-50"))
    assert more > base_std * 1.3
    assert less < base_std * 0.7
    _, flat_std = grey_stats(png(client, "image/contrast,-100"))
    assert flat_std < 3
    assert abs(grey_stats(png(client, "image/contrast,0"))[1] - base_std) < 1


# ---------------------------------------------------------------------------------------------------
# transparency (spec §3.2): an RGBA PNG source

@pytest.fixture
def rgba(image_dir):
    """200x100 RGBA: left half opaque red, right half fully transparent (black underneath)."""
    pixels = np.zeros((100, 200, 4), np.uint8)
    pixels[:, :100] = (0, 0, 255, 255)
    save_image(image_dir, "alpha.png", pixels)
    return make_client(image_dir)


@pytest.mark.parametrize("process", [
    "image/resize,w_100", "image/rotate,90", "image/crop,w_150", "image/bright,10",
])
def test_alpha_png_stays_transparent(rgba, process):
    body = ok(get(rgba, "alpha.png", process), "image/png")
    out = decode(body)
    assert out.ndim == 3 and out.shape[2] == 4
    alpha = out[:, :, 3]
    assert alpha.min() == 0 and alpha.max() == 255
    assert (alpha == 0).mean() > 0.25


def test_alpha_png_resize_pixels(rgba):
    out = decode(ok(get(rgba, "alpha.png", "image/resize,w_100"), "image/png"))
    assert out.shape == (50, 100, 4)
    assert (out[:, :45, 3] == 255).all() and (out[:, 55:, 3] == 0).all()
    assert (out[:, :45, :3] == (0, 0, 255)).all()


@pytest.mark.parametrize("process", ["image/format,jpg", "image/resize,w_100/format,jpg", "image/format,bmp"])
def test_alpha_flattened_on_white(rgba, process):
    body = ok(get(rgba, "alpha.png", process))
    out = decode(body)
    w = out.shape[1]
    if format_of(body) == "JPEG":
        assert out.shape[2] == 3
        left, right = out[:, : w * 2 // 5].astype(int), out[:, w * 3 // 5:]
        assert (right >= 250).all()                                # white, not the black underneath
        assert np.abs(left - (0, 0, 255)).max() <= 8              # the opaque part is unchanged
    else:   # BMP keeps alpha (spec §3.2: PNG, WebP, BMP)
        assert out.shape[2] == 4 and out[:, w - 1, 3].max() == 0


def test_alpha_webp_keeps_transparency(rgba):
    out = decode(ok(get(rgba, "alpha.png", "image/format,webp"), "image/webp"))
    assert out.shape[2] == 4
    assert out[:, 150:, 3].max() <= 5 and out[:, :50, 3].min() >= 250


def test_gif_transparency_carried_into_png(client):
    out = decode(ok(get(client, "example.gif", "image/format,png"), "image/png"))
    assert out.shape == (300, 500, 4)
    transparent = (out[:, :, 3] == 0).mean()      # the first frame's transparent index: 76 % of it
    assert 0.6 < transparent < 0.9 and out[:, :, 3].max() == 255


def test_circle_on_alpha_source_keeps_both_masks(rgba):
    out = decode(ok(get(rgba, "alpha.png", "image/circle,r_40"), "image/png"))
    assert out.shape == (81, 81, 4)
    assert out[0, 0, 3] == 0 and out[40, 20, 3] == 255 and out[40, 60, 3] == 0


# ---------------------------------------------------------------------------------------------------
# format (spec §3.1)

MAGIC = {
    "jpg": lambda b: b[:3] == b"\xff\xd8\xff",
    "png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "bmp": lambda b: b[:2] == b"BM",
    "tiff": lambda b: b[:4] in (b"II*\x00", b"MM\x00*"),
    "avif": lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"),
    "gif": lambda b: b[:6] in (b"GIF87a", b"GIF89a"),
}
PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF", "avif": "AVIF",
              "gif": "GIF"}
MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
        "tiff": "image/tiff", "avif": "image/avif", "gif": "image/gif"}


@pytest.mark.parametrize("key, fmt", [
    ("example.jpg", "png"), ("example.jpg", "webp"), ("example.jpg", "bmp"), ("example.jpg", "tiff"),
    ("example.jpg", "avif"), ("example.jpg", "jpg"),
    ("nodejs-1024x768.png", "jpg"), ("example.gif", "gif"), ("example.gif", "png"), ("example.gif", "jpg"),
])
def test_format(client, key, fmt):
    body = ok(get(client, key, f"image/format,{fmt}"), MIME[fmt])
    assert MAGIC[fmt](body)
    assert format_of(body) == PIL_FORMAT[fmt]
    src_size = {"example.jpg": (400, 267), "nodejs-1024x768.png": (1024, 768), "example.gif": (500, 300)}[key]
    assert size_of(body) == src_size


@pytest.mark.parametrize("fmt", ["png", "webp", "bmp", "tiff", "avif"])
def test_format_keeps_the_picture(client, fmt):
    out = decode(ok(get(client, "example.jpg", f"image/format,{fmt}")))
    assert psnr(out[:, :, :3], source("example.jpg")) > 30


@pytest.mark.parametrize("key, fmt", [("example.jpg", "jpg"), ("nodejs-1024x768.png", "png")])
def test_format_gif_on_non_gif_source_keeps_source_format(client, key, fmt):
    body = ok(get(client, key, "image/format,gif"), MIME[fmt])
    assert format_of(body) == PIL_FORMAT[fmt]


def test_no_format_keeps_source_format(client):
    assert format_of(ok(get(client, "nodejs-1024x768.png", "image/rotate,90"), "image/png")) == "PNG"
    assert format_of(ok(get(client, "example.gif", "image/crop,w_10"), "image/gif")) == "GIF"


def test_last_format_wins(client):
    body = ok(get(client, "example.jpg", "image/format,png/resize,w_100/format,webp"), "image/webp")
    assert size_of(body) == (100, 67)


def test_webp_default_is_lossy(client):
    body = ok(get(client, "nodejs-1024x768.png", "image/format,webp"), "image/webp")
    assert body[12:16] == b"VP8 "                      # lossy bitstream, not VP8L
    ok_, lossless = cv2.imencode(".webp", source("nodejs-1024x768.png"), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok_ and lossless.tobytes()[12:16] == b"VP8L"
    assert len(body) < 0.5 * len(lossless)


def test_webp_quality_changes_size(client):
    low = ok(get(client, "example.jpg", "image/format,webp/quality,Q_20"), "image/webp")
    high = ok(get(client, "example.jpg", "image/format,webp/quality,Q_80"), "image/webp")
    assert len(low) < len(high)


# ---------------------------------------------------------------------------------------------------
# quality (spec §5.15): example.jpg was saved at quality 82

def jpeg_quality(body: bytes) -> int:
    info = probe(body)
    assert info.format == "jpg"
    return info.jpeg_quality


def test_source_quality_is_82():
    assert jpeg_quality((FIXTURES / "example.jpg").read_bytes()) == 82


@pytest.mark.parametrize("process, expected", [
    ("image/quality,q_50", 41),          # relative: 82 x 50%
    ("image/quality,q_100", 82),
    ("image/quality,Q_50", 50),          # absolute
    ("image/quality,Q_95", 82),          # never above the source
    ("image/quality,q_10,Q_70", 70),     # Q wins over q
    ("image/quality,Q_70,q_10", 70),
    ("image/resize,w_200/quality,Q_30", 30),
])
def test_jpeg_quality(client, process, expected):
    body = ok(get(client, "example.jpg", process), "image/jpeg")
    assert abs(jpeg_quality(body) - expected) <= 1


def test_quality_lower_means_smaller(client):
    q30 = ok(get(client, "example.jpg", "image/quality,Q_30"))
    q80 = ok(get(client, "example.jpg", "image/quality,Q_80"))
    assert len(q30) < len(q80)
    assert psnr(decode(q30), source("example.jpg")) < psnr(decode(q80), source("example.jpg"))


def test_quality_ignored_for_png(client):
    body = ok(get(client, "nodejs-1024x768.png", "image/resize,w_200/quality,Q_10"), "image/png")
    assert format_of(body) == "PNG"
    ref = cv2.resize(source("nodejs-1024x768.png"), (200, 150), interpolation=cv2.INTER_AREA)
    assert psnr(decode(body), ref) > 40


# ---------------------------------------------------------------------------------------------------
# interlace (spec §5.12)

def progressive(body: bytes) -> bool:
    with Image.open(io.BytesIO(body)) as im:
        return bool(im.info.get("progressive") or im.info.get("progression"))


@pytest.mark.parametrize("key, process, fmt, expected", [
    ("example.jpg", "image/interlace,1", "JPEG", True),
    ("example.jpg", "image/interlace,0", "JPEG", False),
    ("example.jpg", "image/resize,w_100", "JPEG", False),
    ("example.jpg", "image/interlace,1/interlace,0", "JPEG", False),
    ("nodejs-1024x768.png", "image/interlace,1", "PNG", False),
    ("nodejs-1024x768.png", "image/interlace,1/format,jpg", "JPEG", True),
    ("nodejs-1024x768.png", "image/format,jpg/interlace,1", "JPEG", True),
])
def test_interlace(client, key, process, fmt, expected):
    body = ok(get(client, key, process))
    assert format_of(body) == fmt
    if fmt == "JPEG":
        assert progressive(body) is expected
        assert probe(body).progressive is expected


def test_progressive_jpeg_keeps_pixels(client):
    body = ok(get(client, "example.jpg", "image/interlace,1"), "image/jpeg")
    assert psnr(decode(body), source("example.jpg")) > 30
