"""Conformance of the geometry actions through the real middleware (spec §5.1-§5.7, §10, §2 limits).

info, resize, crop, indexcrop, circle, rounded-corners, rotate, auto-orient, animated-GIF sources,
source/output/rotation limits and JPEG shrink-on-load. Every request is an HTTP GET with
?x-oss-process=...; images are compared by size, format and pixel similarity (PSNR), never by bytes.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from imgmiddleware import Config
from imgmiddleware.imaging.probe import probe
from imgmiddleware.process import parse
from imgmiddleware.process.plan import make_plan

from .conftest import (
    FIXTURES, decode, format_of, get, make_client, ok, oss_error, psnr, save_image, size_of, source,
)

ROTATION_ERROR = "Picture exceed the maximum allowable rotation range."   # OSS's words, with its period


def s200_pixels() -> np.ndarray:
    """200x100 BGR test card: a colour gradient, an 8 px checkerboard band and a dark disc.

    Sharp, position-dependent detail everywhere, so a misplaced crop or pad shows in the PSNR.
    """
    y, x = np.mgrid[0:100, 0:200]
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0] = (x * 255 // 199).astype(np.uint8)
    img[..., 1] = (y * 255 // 99).astype(np.uint8)
    img[..., 2] = 90
    checker = ((x // 8 + y // 8) % 2).astype(bool) & (y >= 20) & (y < 60)
    img[checker] = (20, 40, 200)
    cv2.circle(img, (150, 70), 20, (10, 10, 10), -1)
    cv2.putText(img, "OSS", (10, 95), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (250, 250, 250), 2)
    return img


@pytest.fixture
def s200(image_dir):
    """(client, pixels) serving the 200x100 test card as s200.png (lossless, so pixels are exact)."""
    pixels = s200_pixels()
    save_image(image_dir, "s200.png", pixels)
    return make_client(image_dir), pixels


# ---------------------------------------------------------------------------------------------------
# §10 #1 info

def test_info_json_fields_are_strings(client):
    r = get(client, "example.jpg", "image/info")
    body = json.loads(ok(r, "application/json"))
    assert body["FileSize"] == {"value": "21839"}
    assert body["Format"] == {"value": "jpg"}
    assert body["ImageHeight"] == {"value": "267"}
    assert body["ImageWidth"] == {"value": "400"}
    for name, field in body.items():
        assert set(field) == {"value"}, name
        assert isinstance(field["value"], str), name


def test_info_reports_stored_object_of_gif(client):
    body = json.loads(ok(get(client, "example.gif", "image/info"), "application/json"))
    assert body["Format"] == {"value": "gif"}
    assert (body["ImageWidth"], body["ImageHeight"]) == ({"value": "500"}, {"value": "300"})
    assert body["FileSize"] == {"value": str((FIXTURES / "example.gif").stat().st_size)}


# ---------------------------------------------------------------------------------------------------
# Sizes: §10 vectors and the Derived lines on the fixtures

@pytest.mark.parametrize("key, process, size, content_type", [
    ("example.jpg", "image/resize,m_fixed,w_100,h_100", (100, 100), "image/jpeg"),       # #2
    ("example.jpg", "image/crop,w_100,h_100,x_100,y_100,r_1", (100, 100), "image/jpeg"),  # #3
    ("example.jpg", "image/rotate,90", (267, 400), "image/jpeg"),                        # #4
    ("example.jpg", "image/sharpen,100", (400, 267), "image/jpeg"),                      # #5
    ("example.jpg", "image/format,png", (400, 267), "image/png"),                        # #7
    ("nodejs-1024x768.png", "image/resize,w_200", (200, 150), "image/png"),              # #8
    ("f.jpg", "image/resize,w_100/auto-orient,1", (100, 127), "image/jpeg"),             # #15
    ("example.jpg", "image/resize,w_500", (400, 267), "image/jpeg"),                     # #16
    ("example.jpg", "image/indexcrop,y_100,i_10", (400, 267), "image/jpeg"),             # #17
    # Derived
    ("example.jpg", "image/resize,w_100", (100, 67), "image/jpeg"),
    ("example.jpg", "image/resize,h_100", (150, 100), "image/jpeg"),
    ("example.jpg", "image/resize,l_100", (100, 67), "image/jpeg"),
    ("example.jpg", "image/resize,s_100", (150, 100), "image/jpeg"),
    ("example.jpg", "image/resize,w_500,limit_0", (500, 334), "image/jpeg"),
    ("example.jpg", "image/crop,x_100,y_50", (300, 217), "image/jpeg"),
    ("example.jpg", "image/crop,w_200,h_200,g_se", (200, 200), "image/jpeg"),
    ("example.jpg", "image/crop,x_10,y_10,w_200,h_200,g_se", (190, 190), "image/jpeg"),
    ("example.jpg", "image/circle,r_200", (267, 267), "image/jpeg"),
    ("example.jpg", "image/indexcrop,x_150,i_2", (100, 267), "image/jpeg"),
    ("example.jpg", "image/rounded-corners,r_30", (400, 267), "image/jpeg"),
    ("f.jpg", "image/resize,w_100/auto-orient,0", (100, 79), "image/jpeg"),
    # auto-orient is a global flag: its position does not matter
    ("f.jpg", "image/auto-orient,1/resize,w_100", (100, 127), "image/jpeg"),
    ("f.jpg", "image/resize,w_100", (100, 127), "image/jpeg"),     # on by default
])
def test_output_size(client, key, process, size, content_type):
    body = ok(get(client, key, process), content_type)
    assert size_of(body) == size
    assert format_of(body) == {"image/jpeg": "JPEG", "image/png": "PNG"}[content_type]


@pytest.mark.parametrize("process, size", [
    ("resize,m_lfit,w_150,h_80", (150, 75)),     # #9
    ("resize,m_mfit,w_150,h_80", (160, 80)),     # #10
    ("resize,m_fill,w_150,h_80", (150, 80)),     # #11
    ("resize,m_pad,w_150,h_80", (150, 80)),      # #12
    ("resize,m_fixed,w_150,h_80", (150, 80)),    # #13
    ("resize,m_fixed,h_100", (100, 100)),        # #14
    ("resize,h_80,m_lfit,w_150", (150, 75)),     # parameter order is irrelevant
    ("resize,w_100,p_300", (100, 50)),           # w/h present: p ignored
    ("resize,l_100,s_80", (100, 50)),            # l and s: the (l, s) box, lfit
    ("resize,p_50", (100, 50)),
])
def test_resize_modes_on_s200(s200, process, size):
    c, _ = s200
    body = ok(get(c, "s200.png", "image/" + process), "image/png")
    assert size_of(body) == size


# ---------------------------------------------------------------------------------------------------
# resize pixels

def test_resize_lfit_is_the_scaled_source(s200):
    c, pixels = s200
    out = decode(ok(get(c, "s200.png", "image/resize,w_100")))
    assert psnr(out, cv2.resize(pixels, (100, 50), interpolation=cv2.INTER_AREA)) > 35


def test_resize_fixed_distorts(s200):
    c, pixels = s200
    out = decode(ok(get(c, "s200.png", "image/resize,m_fixed,w_150,h_80")))
    assert psnr(out, cv2.resize(pixels, (150, 80), interpolation=cv2.INTER_AREA)) > 35


@pytest.mark.parametrize("color, bgr", [
    (None, (255, 255, 255)), ("FF0000", (0, 0, 255)), ("00ff00", (0, 255, 0)),
])
def test_resize_pad_bands(s200, color, bgr):
    c, pixels = s200
    process = "image/resize,m_pad,w_200,h_200" + (f",color_{color}" if color else "")
    # PNG output: exact pixels
    out = decode(ok(get(c, "s200.png", process), "image/png"))
    assert out.shape[:2] == (200, 200)
    assert (out[:50, :, :3] == bgr).all() and (out[150:, :, :3] == bgr).all()
    assert psnr(out[50:150, :, :3], pixels) > 40
    # JPG output: the bands are the colour too (away from the seam)
    out = decode(ok(get(c, "s200.png", process + "/format,jpg"), "image/jpeg"))
    band = np.concatenate([out[:40], out[160:]]).astype(int)
    assert np.abs(band - np.array(bgr)).max() <= 6


def test_resize_pad_centres_lfit(s200):
    c, pixels = s200
    out = decode(ok(get(c, "s200.png", "image/resize,m_pad,w_150,h_80")))
    assert out.shape[:2] == (80, 150)
    # 150x75 centred: offset floor(5/2) = 2 rows of white above, 3 below
    assert (out[:2] == 255).all() and (out[77:] == 255).all()
    inner = cv2.resize(pixels, (150, 75), interpolation=cv2.INTER_AREA)
    assert psnr(out[2:77, :, :3], inner) > 35


def test_resize_fill_is_centre_crop_of_mfit(client):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/resize,m_fill,w_100,h_100/format,png")))
    assert out.shape[:2] == (100, 100)
    mfit = cv2.resize(src, (150, 100), interpolation=cv2.INTER_AREA)    # 400x267 covers 100x100
    assert psnr(out, mfit[:, 25:125]) > 30
    assert psnr(out, mfit[:, 25:125]) > psnr(out, mfit[:, 0:100]) + 5    # centred, not from the left
    via_api = decode(ok(get(client, "example.jpg", "image/resize,m_mfit,w_100,h_100/format,png")))
    assert via_api.shape[:2] == (100, 150)
    assert psnr(out, via_api[:, 25:125]) > 35


def test_resize_fill_s200(s200):
    c, pixels = s200
    out = decode(ok(get(c, "s200.png", "image/resize,m_fill,w_150,h_80")))
    ref = cv2.resize(pixels, (160, 80), interpolation=cv2.INTER_AREA)[:, 5:155]
    assert psnr(out, ref) > 35


# ---------------------------------------------------------------------------------------------------
# crop / indexcrop pixels

@pytest.mark.parametrize("process, x, y, w, h", [
    ("crop,w_100,h_100,x_100,y_100,r_1", 100, 100, 100, 100),
    ("crop,w_200,h_200,g_se", 200, 67, 200, 200),
    ("crop,x_10,y_10,w_200,h_200,g_se", 210, 77, 190, 190),
    ("crop,x_100,y_50", 100, 50, 300, 217),
    ("crop,w_100,h_100,g_center", 150, 83, 100, 100),
    ("crop,w_1000,h_1000", 0, 0, 400, 267),                 # clipped at the edge
    ("indexcrop,x_150,i_2", 300, 0, 100, 267),
    ("indexcrop,x_150,i_1", 150, 0, 150, 267),
    ("indexcrop,y_100,i_1", 0, 100, 400, 100),
    ("indexcrop,x_150,y_100,i_2", 0, 200, 400, 67),         # both given: y wins
    ("indexcrop,y_100,i_10", 0, 0, 400, 267),               # index out of range: the source
])
def test_crop_region(client, process, x, y, w, h):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", f"image/{process}/format,png"), "image/png"))
    assert out.shape[:2] == (h, w)
    assert psnr(out, src[y:y + h, x:x + w]) > 30
    if (w, h) != (400, 267):    # a region one pixel off does not pass
        ox, oy = min(x + 8, 400 - w), min(y + 8, 267 - h)
        if (ox, oy) != (x, y):
            assert psnr(out, src[oy:oy + h, ox:ox + w]) < psnr(out, src[y:y + h, x:x + w]) - 5


def test_crop_jpeg_output_region(client):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/crop,w_200,h_200,g_se"), "image/jpeg"))
    assert psnr(out, src[67:267, 200:400]) > 30


@pytest.mark.parametrize("process", [
    "image/crop,x_400,y_0", "image/crop,x_0,y_267", "image/crop,x_10,y_10,w_200,h_200,g_se,x_300",
])
def test_crop_start_outside_image(client, process):
    err = oss_error(get(client, "example.jpg", process))
    assert err["status"] == 400
    assert err["Code"] == "BadRequest"
    assert err["Message"] == "Advance cut's position is out of image."


# ---------------------------------------------------------------------------------------------------
# circle / rounded-corners

def test_circle_png_corners_transparent(client):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/circle,r_200/format,png"), "image/png"))
    assert out.shape == (267, 267, 4)
    for y, x in ((0, 0), (0, 266), (266, 0), (266, 266), (10, 10)):
        assert out[y, x, 3] == 0
    assert (out[93:173, 93:173, 3] == 255).all()
    # the square is centred on the image centre: x from 200 - 133 = 67
    assert psnr(out[93:173, 93:173, :3], src[93:173, 67 + 93:67 + 173]) > 30


def test_circle_jpg_corners_white(client):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/circle,r_200"), "image/jpeg"))
    assert out.shape == (267, 267, 3)
    for y, x in ((0, 0), (0, 266), (266, 0), (266, 266), (5, 5)):
        assert (out[y, x] >= 250).all()
    assert psnr(out[93:173, 93:173], src[93:173, 160:240]) > 30


def test_circle_small_radius(client):
    out = decode(ok(get(client, "example.jpg", "image/circle,r_50/format,png")))
    assert out.shape == (101, 101, 4)
    assert out[0, 0, 3] == 0 and out[50, 50, 3] == 255


def test_rounded_corners_png(client):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/rounded-corners,r_30/format,png"), "image/png"))
    assert out.shape == (267, 400, 4)
    for y, x in ((0, 0), (0, 399), (266, 0), (266, 399), (3, 3)):
        assert out[y, x, 3] == 0
    assert (out[30:237, :, 3] == 255).all() and (out[:, 30:370, 3] == 255).all()
    assert psnr(out[30:237, 30:370, :3], src[30:237, 30:370]) > 40


def test_rounded_corners_jpg(client):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/rounded-corners,r_30"), "image/jpeg"))
    for y, x in ((0, 0), (0, 396), (264, 0), (264, 396)):   # a 3x3 corner patch (JPEG rings a little)
        assert out[y:y + 3, x:x + 3].mean() >= 245
    assert psnr(out[30:237, 30:370], src[30:237, 30:370]) > 30
    big = decode(ok(get(client, "example.jpg", "image/rounded-corners,r_100"), "image/jpeg"))
    for y, x in ((2, 2), (2, 397), (264, 2), (264, 397)):
        assert (big[y, x] >= 250).all()


# ---------------------------------------------------------------------------------------------------
# rotate

@pytest.mark.parametrize("angle, code", [(90, cv2.ROTATE_90_CLOCKWISE), (180, cv2.ROTATE_180),
                                         (270, cv2.ROTATE_90_COUNTERCLOCKWISE)])
def test_rotate_right_angles(client, angle, code):
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", f"image/rotate,{angle}/format,png")))
    assert psnr(out, cv2.rotate(src, code)) > 40
    out = decode(ok(get(client, "example.jpg", f"image/rotate,{angle}"), "image/jpeg"))
    assert psnr(out, cv2.rotate(src, code)) > 30


@pytest.mark.parametrize("angle", [0, 360])
def test_rotate_full_turn_is_identity(client, angle):
    out = decode(ok(get(client, "example.jpg", f"image/rotate,{angle}/format,png")))
    assert psnr(out, source("example.jpg")) > 40


def test_rotate_45_jpg_grows_canvas_white_corners(client):
    out = decode(ok(get(client, "example.jpg", "image/rotate,45"), "image/jpeg"))
    assert out.shape == (472, 472, 3)
    for y, x in ((0, 0), (0, 471), (471, 0), (471, 471), (20, 20)):
        assert (out[y, x] >= 250).all()
    # the centre is image content, not background
    src = source("example.jpg")
    assert abs(float(out[226:246, 226:246].mean()) - float(src[123:143, 190:210].mean())) < 25


def test_rotate_45_png_transparent_corners(client):
    out = decode(ok(get(client, "example.jpg", "image/rotate,45/format,png"), "image/png"))
    assert out.shape == (472, 472, 4)
    for y, x in ((0, 0), (0, 471), (471, 0), (471, 471), (20, 20)):
        assert out[y, x, 3] == 0
    assert (out[200:272, 200:272, 3] == 255).all()


def test_rotate_matches_geometric_rotation(client):
    """rotate,30 is clockwise: compare with an independent warp on the grown canvas."""
    src = source("example.jpg")
    out = decode(ok(get(client, "example.jpg", "image/rotate,30/format,png")))
    h, w = src.shape[:2]
    cos = np.cos(np.pi / 6)
    assert out.shape[:2] == (int(w * 0.5 + h * cos + 0.5), int(w * cos + h * 0.5 + 0.5))
    nh, nw = out.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -30, 1.0)
    m[0, 2] += (nw - w) / 2
    m[1, 2] += (nh - h) / 2
    ref = cv2.warpAffine(src, m, (nw, nh), flags=cv2.INTER_LINEAR)
    inner = (slice(nh // 2 - 60, nh // 2 + 60), slice(nw // 2 - 60, nw // 2 + 60))
    assert psnr(out[inner][:, :, :3], ref[inner]) > 25
    counter = cv2.getRotationMatrix2D((w / 2, h / 2), 30, 1.0)     # the wrong direction
    counter[0, 2] += (nw - w) / 2
    counter[1, 2] += (nh - h) / 2
    wrong = cv2.warpAffine(src, counter, (nw, nh), flags=cv2.INTER_LINEAR)
    assert psnr(out[inner][:, :, :3], wrong[inner]) < psnr(out[inner][:, :, :3], ref[inner]) - 5


# ---------------------------------------------------------------------------------------------------
# auto-orient (f.jpg: stored 424x333, EXIF Orientation 7)

def exif_transposed(name: str) -> np.ndarray:
    with Image.open(FIXTURES / name) as im:
        rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@pytest.mark.parametrize("process", [
    "image/format,png", "image/auto-orient,1/format,png", "image/format,png/auto-orient,1",
])
def test_auto_orient_matches_exif_transpose(client, process):
    ref = exif_transposed("f.jpg")
    assert ref.shape[:2] == (424, 333)
    out = decode(ok(get(client, "f.jpg", process)))
    assert out.shape[:2] == (424, 333)
    assert psnr(out, ref) > 35
    # and not merely rotated the other way
    assert psnr(out, cv2.rotate(source("f.jpg"), cv2.ROTATE_90_CLOCKWISE)) < 25


def test_auto_orient_0_keeps_stored_orientation(client):
    out = decode(ok(get(client, "f.jpg", "image/auto-orient,0/format,png")))
    assert out.shape[:2] == (333, 424)
    assert psnr(out, source("f.jpg")) > 35


def test_auto_orient_then_resize_pixels(image_dir):
    ref = cv2.resize(exif_transposed("f.jpg"), (100, 127), interpolation=cv2.INTER_AREA)
    wrong = cv2.resize(cv2.rotate(source("f.jpg"), cv2.ROTATE_90_CLOCKWISE), (100, 127),
                       interpolation=cv2.INTER_AREA)
    full_client = make_client(image_dir, shrink_on_load=False)
    full = decode(ok(get(full_client, "f.jpg", "image/resize,w_100/format,png")))
    assert psnr(full, ref) > 35
    # shrink-on-load (1/2 decode) softens this black-on-white line art a little: ~27 dB, still far
    # from the wrongly oriented image
    out = decode(ok(get(make_client(image_dir), "f.jpg", "image/resize,w_100/format,png")))
    assert psnr(out, ref) > 25
    assert psnr(out, wrong) < 18


# ---------------------------------------------------------------------------------------------------
# animated GIF source

def test_gif_resize(client):
    body = ok(get(client, "example.gif", "image/resize,w_100"), "image/gif")
    assert format_of(body) == "GIF"
    assert size_of(body) == (100, 60)


@pytest.mark.parametrize("process", [
    "image/resize,w_1000,limit_0", "image/resize,m_fixed,w_600,h_400,limit_0", "image/resize,p_200",
])
def test_gif_never_enlarged(client, process):
    body = ok(get(client, "example.gif", process), "image/gif")
    assert size_of(body) == (500, 300)


def test_gif_crop_keeps_gif(client):
    body = ok(get(client, "example.gif", "image/crop,w_100,h_50"), "image/gif")
    assert size_of(body) == (100, 50)


# ---------------------------------------------------------------------------------------------------
# limits (spec §2)

@pytest.mark.parametrize("overrides, key", [
    ({"max_source_side": 300}, "example.jpg"),
    ({"max_source_pixels": 100_000}, "example.jpg"),            # 400 x 267 = 106,800
    ({"max_source_pixels": 200_000}, "example.gif"),            # 500 x 300 x 3 frames = 450,000
])
def test_source_over_limits(image_dir, overrides, key):
    c = make_client(image_dir, **overrides)
    err = oss_error(get(c, key, "image/resize,w_100"))
    assert err["status"] == 400
    assert err["EC"] == err["header_ec"] == "0040-00000009"


def test_source_within_limits(image_dir):
    c = make_client(image_dir, max_source_side=300, max_source_pixels=100_000)
    save_image(image_dir, "small.png", s200_pixels())
    assert size_of(ok(get(c, "small.png", "image/resize,w_100"))) == (100, 50)


@pytest.mark.parametrize("overrides, process", [
    ({"max_output_pixels": 1_000_000}, "image/resize,p_1000"),                  # 4000 x 2670
    ({"max_output_side": 3000}, "image/resize,p_1000"),
    ({}, "image/resize,m_fixed,w_5000,h_5000"),                                 # §10 #22
    ({}, "image/resize,w_16384,h_16384,limit_0"),
])
def test_resize_output_over_cap(image_dir, overrides, process):
    c = make_client(image_dir, **overrides)
    err = oss_error(get(c, "example.jpg", process))
    assert err["status"] == 400
    assert err["EC"] == err["header_ec"] == "0040-00000007"


def test_resize_output_within_cap(client):
    assert size_of(ok(get(client, "example.jpg", "image/resize,p_1000"))) == (4000, 2670)


def test_rotate_over_max_rotate_side(image_dir):
    c = make_client(image_dir, max_rotate_side=300)
    for process in ("image/rotate,90", "image/rotate,45"):
        err = oss_error(get(c, "example.jpg", process))
        assert err["status"] == 400
        assert err["Message"] == ROTATION_ERROR
    save_image(image_dir, "small.png", s200_pixels())
    assert size_of(ok(get(c, "small.png", "image/rotate,90"))) == (100, 200)
    # a resize first brings the image under the limit
    assert size_of(ok(get(c, "example.jpg", "image/resize,w_200/rotate,90"))) == (134, 200)


def test_exif_rotation_over_max_rotate_side(image_dir):
    c = make_client(image_dir, max_rotate_side=300)
    err = oss_error(get(c, "f.jpg", "image/resize,w_100"))
    assert err["status"] == 400
    assert err["Message"] == ROTATION_ERROR
    assert size_of(ok(get(c, "f.jpg", "image/resize,w_100/auto-orient,0"))) == (100, 79)
    # example.jpg has no EXIF rotation: no limit applies without a rotate action
    assert size_of(ok(get(c, "example.jpg", "image/resize,w_100"))) == (100, 67)


# ---------------------------------------------------------------------------------------------------
# JPEG shrink-on-load: same geometry and nearly the same pixels as a full decode

BIG_W, BIG_H = 2400, 1600


def big_jpeg_pixels() -> np.ndarray:
    y, x = np.mgrid[0:BIG_H, 0:BIG_W].astype(np.float32)
    img = np.empty((BIG_H, BIG_W, 3), np.uint8)
    img[..., 0] = 128 + 100 * np.sin(x / 300)
    img[..., 1] = y * 255 / BIG_H
    img[..., 2] = 128 + 100 * np.cos((x + y) / 400)
    for i, text in enumerate(("Shrink on load", "OSS x-oss-process", "0123456789")):
        cv2.putText(img, text, (100, 400 + 400 * i), cv2.FONT_HERSHEY_SIMPLEX, 6, (255, 255, 255), 14)
    return img


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    ok_, buf = cv2.imencode(".jpg", big_jpeg_pixels(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok_
    return buf.tobytes()


@pytest.mark.parametrize("process, size", [
    ("image/resize,w_200", (200, 133)),
    ("image/resize,m_fill,w_300,h_100", (300, 100)),
    ("image/resize,m_pad,w_300,h_300", (300, 300)),
    ("image/resize,l_500", (500, 333)),
])
def test_shrink_on_load_matches_full_decode(image_dir, big_jpeg, process, size):
    (image_dir / "big.jpg").write_bytes(big_jpeg)
    fast = ok(get(make_client(image_dir), "big.jpg", process + "/format,png"))
    full = ok(get(make_client(image_dir, shrink_on_load=False), "big.jpg", process + "/format,png"))
    assert size_of(fast) == size_of(full) == size
    assert psnr(decode(fast), decode(full)) > 35


def test_planner_shrink_factor(big_jpeg):
    config = Config(shrink_on_load_margin=1.0)
    info = probe(big_jpeg)

    def reduce(process: str, cfg: Config = config) -> int:
        return make_plan(parse(process, cfg), info, len(big_jpeg), cfg).reduce

    assert reduce("image/resize,w_200") == 8
    assert reduce("image/resize,m_fill,w_300,h_100") == 8
    assert reduce("image/resize,w_1000") == 2
    assert reduce("image/resize,w_2000") == 1
    assert reduce("image/crop,w_200,h_200/resize,w_100") == 1
    assert reduce("image/rotate,90/resize,w_100") == 1
    assert reduce("image/resize,w_200", config.replace(shrink_on_load=False)) == 1
    # The default margin of 2 keeps the reduced decode at least twice the target: 2400 wide -> w_200
    # stays 1/4 (docs/COMPATIBILITY.md decision 12: OSS's own thumbnails, byte for byte).
    default = Config()
    assert default.shrink_on_load_margin == 2.0
    assert reduce("image/resize,w_200", default) == 4
    assert reduce("image/resize,w_1000", default) == 1


def test_shrink_margin_is_configurable_from_the_environment():
    assert Config.load(environ={"IMGMW_SHRINK_ON_LOAD_MARGIN": "2"}).shrink_on_load_margin == 2.0
    with pytest.raises(ValueError):
        Config(shrink_on_load_margin=0.5)


def test_planner_no_shrink_for_png(image_dir):
    data = cv2.imencode(".png", big_jpeg_pixels()[:800, :1200])[1].tobytes()
    config = Config()
    assert make_plan(parse("image/resize,w_100", config), probe(data), len(data), config).reduce == 1


def test_shrink_on_load_with_exif_rotation(image_dir):
    """A big JPEG with EXIF orientation 6: the reduced decode is oriented before the resize."""
    pixels = big_jpeg_pixels()
    im = Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    (image_dir / "rot.jpg").write_bytes(buf.getvalue())
    fast = ok(get(make_client(image_dir), "rot.jpg", "image/resize,w_200/format,png"))
    full = ok(get(make_client(image_dir, shrink_on_load=False), "rot.jpg", "image/resize,w_200/format,png"))
    assert size_of(fast) == size_of(full) == (200, 300)
    assert psnr(decode(fast), decode(full)) > 35
    ref = cv2.resize(cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE), (200, 300), interpolation=cv2.INTER_AREA)
    assert psnr(decode(fast), ref) > 30


# --- shrink-on-load for WebP: the same planner rule, OpenCV's reduced WebP decode -----------------

ODD_W, ODD_H = 2403, 1601        # odd sides: libwebp's reduced decode rounds down, libjpeg's up


def big_webp(alpha: bool = False) -> bytes:
    pixels = cv2.resize(big_jpeg_pixels(), (ODD_W, ODD_H), interpolation=cv2.INTER_LINEAR)
    if alpha:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2BGRA)
        pixels[:, :, 3] = 200
    return cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()


@pytest.mark.parametrize("process, size", [
    ("image/resize,w_200", (200, 133)),
    ("image/resize,m_fill,w_300,h_100", (300, 100)),
    ("image/resize,l_500", (500, 333)),
])
def test_webp_shrink_on_load_matches_full_decode(image_dir, process, size):
    (image_dir / "big.webp").write_bytes(big_webp())
    fast = ok(get(make_client(image_dir), "big.webp", process + "/format,png"))
    full = ok(get(make_client(image_dir, shrink_on_load=False), "big.webp", process + "/format,png"))
    assert size_of(fast) == size_of(full) == size
    assert psnr(decode(fast), decode(full)) > 40


def test_planner_shrinks_opaque_webp_only():
    config = Config(shrink_on_load_margin=1.0)    # the reduced decode may be as small as the target

    def reduce(data: bytes, process: str) -> int:
        return make_plan(parse(process, config), probe(data), len(data), config).reduce

    opaque, with_alpha = big_webp(), big_webp(alpha=True)
    assert reduce(opaque, "image/resize,w_200") == 8      # 2403 // 8 = 300 >= 200
    assert reduce(opaque, "image/resize,w_1000") == 2
    assert reduce(opaque, "image/resize,w_1202") == 1     # 2403 // 2 = 1201: a pixel short
    assert reduce(with_alpha, "image/resize,w_200") == 1  # the reduced flags give no alpha


def test_reduced_sizes_are_what_the_decoders_give():
    from imgmiddleware.imaging.decode import REDUCED_FLAGS, reduced_size

    webp = np.frombuffer(big_webp(), np.uint8)
    jpeg = cv2.imencode(".jpg", cv2.resize(big_jpeg_pixels(), (ODD_W, ODD_H)))[1]
    for factor in (2, 4, 8):
        for fmt, buf in (("webp", webp), ("jpg", jpeg)):
            img = cv2.imdecode(buf, REDUCED_FLAGS[factor])
            assert (img.shape[1], img.shape[0]) == reduced_size(ODD_W, ODD_H, factor, fmt), (fmt, factor)
