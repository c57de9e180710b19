"""Colour management: embedded ICC profiles are honoured and every output is sRGB.

The fixtures make their own profiles (tests/colour_fixtures.py): Display P3 and Adobe RGB matrix
profiles, and a CMYK print profile that renders inks clearly unlike the naive formula, so a test
can tell "the profile was used" from "the pixels were taken as they are".
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from . import colour_fixtures as cf
from .conftest import decode, get, ok

PATCH = 32


def rgb_of(body: bytes) -> np.ndarray:
    img = decode(body)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB if img.shape[2] == 3 else cv2.COLOR_BGRA2RGB)


def means(img: np.ndarray, patch: int = PATCH) -> dict[str, np.ndarray]:
    return cf.patch_means(img, patch)


def assert_close(mine: dict, expected: dict, tolerance: float, names=None):
    for name in names or expected:
        assert np.abs(mine[name] - expected[name]).max() <= tolerance, (name, mine[name], expected[name])


def assert_differs(mine: dict, other: dict, at_least: float, names):
    worst = max(np.abs(mine[name] - other[name]).max() for name in names)
    assert worst >= at_least, worst


MUTED = [f"muted_{name}" for name in cf.PATCH_NAMES]


@pytest.mark.parametrize("encode, ext", [(cf.rgb_jpeg, "jpg"), (cf.rgb_png, "png")])
@pytest.mark.parametrize("profile", [cf.display_p3_profile, cf.adobe_rgb_profile])
def test_wide_gamut_profiles_are_converted_to_srgb(serve_file, encode, ext, profile):
    card = cf.saturated_patches(PATCH)
    data = encode(card, profile())
    client = serve_file(f"wide.{ext}", data)
    body = ok(get(client, f"wide.{ext}", "image/format,png"))
    shown = means(rgb_of(body))
    assert_close(shown, means(cf.reference_srgb(data)), 3)       # what a colour-managed viewer shows
    assert_differs(shown, means(card), 8, MUTED)                 # not the raw numbers
    assert "icc_profile" not in Image.open(io.BytesIO(body)).info   # converted, so no profile needed


def test_p3_conversion_survives_shrink_on_load(serve_file):
    card = cf.saturated_patches(PATCH)
    big = cv2.resize(card, (card.shape[1] * 8, card.shape[0] * 8), interpolation=cv2.INTER_NEAREST)
    data = cf.rgb_jpeg(big, cf.display_p3_profile())
    client = serve_file("p3big.jpg", data)
    body = ok(get(client, "p3big.jpg", f"image/resize,w_{card.shape[1]}/format,png"))
    expected = cv2.resize(cf.reference_srgb(data), (card.shape[1], card.shape[0]), interpolation=cv2.INTER_AREA)
    assert_close(means(rgb_of(body)), means(expected), 4)


def test_srgb_tagged_and_untagged_are_left_alone(serve_file):
    card = cf.saturated_patches(PATCH)
    for name, icc in (("tagged.png", cf.srgb_profile()), ("plain.png", None)):
        client = serve_file(name, cf.rgb_png(card, icc))
        assert np.array_equal(rgb_of(ok(get(client, name, "image/format,png"))), card)


def test_a_broken_profile_is_ignored_not_fatal(serve_file):
    card = cf.saturated_patches(PATCH)
    client = serve_file("broken.png", cf.rgb_png(card, b"not an icc profile at all" * 10))
    assert np.array_equal(rgb_of(ok(get(client, "broken.png", "image/format,png"))), card)


@pytest.mark.parametrize("writer", [cf.cmyk_jpeg, cf.ycck_jpeg], ids=["cmyk", "ycck"])
def test_cmyk_without_a_profile_keeps_its_colours(serve_file, writer):
    data = writer(cf.saturated_patches(PATCH, mode="CMYK"))
    client = serve_file("ink.jpg", data)
    shown = means(rgb_of(ok(get(client, "ink.jpg", "image/format,png"))))
    assert_close(shown, means(cf.saturated_patches(PATCH)), 6)   # a CMYK red stays red, and so on
    red = shown["red"]
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


@pytest.mark.parametrize("writer", [cf.cmyk_jpeg, cf.ycck_jpeg], ids=["cmyk", "ycck"])
def test_cmyk_with_a_profile_is_rendered_through_it(serve_file, writer):
    data = writer(cf.saturated_patches(PATCH, mode="CMYK"), cf.cmyk_profile())
    client = serve_file("print.jpg", data)
    body = ok(get(client, "print.jpg", "image/format,png"))
    shown = means(rgb_of(body))
    assert_close(shown, means(cf.reference_srgb(data)), 4)
    assert_differs(shown, means(cf.saturated_patches(PATCH)), 25, list(cf.PATCH_NAMES))   # not naive
    assert shown["red"][0] > shown["red"][1] + 100                # still red, as the print shows it


def test_cmyk_shrink_on_load_keeps_size_and_colour(serve_file):
    card = cf.saturated_patches(PATCH, mode="CMYK")
    big = np.repeat(np.repeat(card, 8, axis=0), 8, axis=1)
    data = cf.cmyk_jpeg(big, cf.cmyk_profile())
    client = serve_file("bigprint.jpg", data)
    width, height = card.shape[1], card.shape[0]
    body = ok(get(client, "bigprint.jpg", f"image/resize,w_{width}/format,png"))
    assert rgb_of(body).shape[:2] == (height, width)
    expected = cv2.resize(cf.reference_srgb(data), (width, height), interpolation=cv2.INTER_AREA)
    assert_close(means(rgb_of(body)), means(expected), 5)


def test_a_cmyk_jpeg_comes_out_as_an_rgb_jpeg(serve_file):
    client = serve_file("ink.jpg", cf.cmyk_jpeg(cf.saturated_patches(PATCH, mode="CMYK")))
    body = ok(get(client, "ink.jpg", "image/resize,w_96"), "image/jpeg")
    assert Image.open(io.BytesIO(body)).mode == "RGB"


def test_profiled_16_bit_png_is_converted_in_8_bits(serve_file):
    card16 = cf.saturated_patches(PATCH).astype(np.uint16) * 257
    im_bytes = cv2.imencode(".png", cv2.cvtColor(card16, cv2.COLOR_RGB2BGR))[1].tobytes()
    # embed the P3 profile into the 16-bit PNG (an iCCP chunk before IDAT)
    import struct
    import zlib
    profile = cf.display_p3_profile()
    chunk_data = b"P3\x00\x00" + zlib.compress(profile)
    chunk = struct.pack(">I", len(chunk_data)) + b"iCCP" + chunk_data + struct.pack(
        ">I", zlib.crc32(b"iCCP" + chunk_data) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4
    data = im_bytes[:ihdr_end] + chunk + im_bytes[ihdr_end:]
    client = serve_file("deep_p3.png", data)
    out = decode(ok(get(client, "deep_p3.png", "image/resize,w_96")))
    assert out.dtype == np.uint8                                    # converted, so 8 bits
    shown = means(cv2.cvtColor(out, cv2.COLOR_BGR2RGB), PATCH // 2)
    assert shown["muted_red"][0] - 192 >= 8                         # P3 -> sRGB happened
