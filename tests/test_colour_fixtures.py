"""Self-check of tests/colour_fixtures.py: the ICC profiles are valid and mean what they say, and the
encoded images carry them. LittleCMS (through Pillow's ImageCms) is the judge throughout."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from . import colour_fixtures as cf

SRGB = ImageCms.createProfile("sRGB")


def lcms(icc: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


def to_srgb(icc: bytes, mode: str, pixel) -> np.ndarray:
    im = Image.new(mode, (1, 1), tuple(int(v) for v in pixel))
    return np.array(ImageCms.profileToProfile(im, lcms(icc), SRGB, outputMode="RGB").getpixel((0, 0)))


def parse_icc(data: bytes) -> tuple[dict, dict[bytes, bytes]]:
    """Header fields and {tag signature: tag data} of an ICC profile, checking the layout on the way."""
    size, = struct.unpack(">I", data[:4])
    header = {
        "size": size, "version": data[8:12], "class": data[12:16], "space": data[16:20],
        "pcs": data[20:24], "magic": data[36:40],
        "illuminant": tuple(v / 65536 for v in struct.unpack(">3i", data[68:80])),
    }
    count, = struct.unpack(">I", data[128:132])
    tags = {}
    for i in range(count):
        sig, off, length = struct.unpack(">4sII", data[132 + 12 * i:144 + 12 * i])
        assert off % 4 == 0, f"{sig} not 4-byte aligned"
        assert off >= 132 + 12 * count and off + length <= size, sig
        tags[sig] = data[off:off + length]
    return header, tags


PROFILES = {
    "p3": (cf.display_p3_profile, "Display P3", b"mntr", b"RGB ", b"XYZ "),
    "adobe": (cf.adobe_rgb_profile, "Adobe RGB (1998)", b"mntr", b"RGB ", b"XYZ "),
    "srgb": (cf.srgb_profile, "sRGB", b"mntr", b"RGB ", b"XYZ "),
    "cmyk": (cf.cmyk_profile, "Test CMYK print profile", b"prtr", b"CMYK", b"Lab "),
}


@pytest.mark.parametrize("key", PROFILES)
def test_profile_layout_and_lcms_accepts_it(key):
    make, description, device_class, space, pcs = PROFILES[key]
    data = make()
    assert data == make(), "profiles are deterministic"
    header, tags = parse_icc(data)
    assert header["size"] == len(data) and len(data) % 4 == 0
    assert header["magic"] == b"acsp"
    assert header["version"] == b"\x02\x10\x00\x00"
    assert (header["class"], header["space"], header["pcs"]) == (device_class, space, pcs)
    assert header["illuminant"] == pytest.approx(cf.D50_WHITE, abs=1e-4)
    assert tags[b"desc"][:4] == b"desc" and tags[b"cprt"][:4] == b"text" and tags[b"wtpt"][:4] == b"XYZ "
    if space == b"RGB ":
        assert set(tags) == {b"desc", b"cprt", b"wtpt", b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC"}
    else:
        assert set(tags) == {b"desc", b"cprt", b"wtpt", b"A2B0", b"B2A0"}

    profile = lcms(data)
    assert description in ImageCms.getProfileDescription(profile)
    assert ImageCms.getProfileCopyright(profile).strip() == "No copyright, test fixture"
    assert profile.profile.version == pytest.approx(2.1)
    assert profile.profile.xcolor_space == space.decode()
    assert profile.profile.connection_space == pcs.decode()


def test_custom_description_and_white():
    data = cf.rgb_matrix_profile("My space", *cf.P3_D50_PRIMARIES, white_xyz=cf.D65_WHITE, trc=2.2)
    assert ImageCms.getProfileDescription(lcms(data)).strip() == "My space"
    _, tags = parse_icc(data)
    assert struct.unpack(">3i", tags[b"wtpt"][8:20]) == tuple(round(v * 65536) for v in cf.D65_WHITE)
    assert ImageCms.getProfileDescription(lcms(cf.cmyk_profile("Other press"))).strip() == "Other press"


def test_colorants_and_curves():
    _, p3 = parse_icc(cf.display_p3_profile())
    red = struct.unpack(">3i", p3[b"rXYZ"][8:20])
    assert red == tuple(round(v * 65536) for v in (0.5151, 0.2412, -0.0011))
    assert struct.unpack(">I", p3[b"rTRC"][8:12]) == (1024,) and len(p3[b"rTRC"]) == 12 + 2048
    _, adobe = parse_icc(cf.adobe_rgb_profile())
    assert adobe[b"gTRC"] == b"curv\0\0\0\0" + struct.pack(">IH", 1, 563)
    _, cmyk = parse_icc(cf.cmyk_profile())
    assert cmyk[b"A2B0"][:12] == b"mft2\0\0\0\0" + bytes([4, 3, 9, 0])
    assert cmyk[b"B2A0"][:12] == b"mft2\0\0\0\0" + bytes([3, 4, 17, 0])


def test_transforms_build():
    ImageCms.buildTransform(lcms(cf.display_p3_profile()), SRGB, "RGB", "RGB")
    ImageCms.buildTransform(lcms(cf.adobe_rgb_profile()), SRGB, "RGB", "RGB")
    ImageCms.buildTransform(lcms(cf.cmyk_profile()), SRGB, "CMYK", "RGB")
    ImageCms.buildTransform(SRGB, lcms(cf.cmyk_profile()), "RGB", "CMYK")


def test_p3_red_is_outside_srgb_and_clips():
    # Unclipped: P3 red in linear sRGB, from the profile's own matrix.
    p3_to_xyz = np.array(cf.P3_D50_PRIMARIES).T
    linear = cf._XYZ_D50_TO_SRGB @ p3_to_xyz @ [1.0, 0, 0]
    assert linear[0] > 1.1 and linear[1] < 0 and linear[2] < 0
    r, g, b = to_srgb(cf.display_p3_profile(), "RGB", (255, 0, 0))
    assert r >= 250 and g <= 10 and b <= 10


def test_wide_gamut_mid_colours_shift():
    for icc in (cf.display_p3_profile(), cf.adobe_rgb_profile()):
        r, g, b = to_srgb(icc, "RGB", (200, 100, 80))
        assert r >= 205 and g <= 100 and b <= 80, (r, g, b)   # more saturated than the raw numbers
        assert np.abs(to_srgb(icc, "RGB", (128, 128, 128)) - 128).max() <= 1   # greys stay grey
        assert list(to_srgb(icc, "RGB", (255, 255, 255))) == [255, 255, 255]
    # Our own sRGB profile is (close to) LittleCMS's sRGB.
    rng = np.random.default_rng(0)
    for pixel in rng.integers(0, 256, (20, 3)):
        assert np.abs(to_srgb(cf.srgb_profile(), "RGB", pixel) - pixel).max() <= 1


def test_cmyk_profile_is_not_naive():
    icc = cf.cmyk_profile()
    r, g, b = to_srgb(icc, "CMYK", (0, 255, 255, 0))   # solid red ink (M+Y)
    assert g > 30 and b > 30 and r > g + 100
    for name in cf.PATCH_NAMES:
        shown = to_srgb(icc, "CMYK", cf.PATCH_CMYK[name])
        assert np.abs(shown - cf.PATCH_RGB[name]).max() > 30, name
    assert list(to_srgb(icc, "CMYK", (0, 0, 0, 0))) == [255, 255, 255]   # paper white
    assert to_srgb(icc, "CMYK", (0, 0, 0, 255)).max() <= 3                # full K
    mid = to_srgb(icc, "CMYK", (0, 0, 0, 128))
    assert mid.max() - mid.min() <= 1 and mid[0] < 127                    # neutral, darker than naive


def test_cmyk_profile_matches_its_numpy_model():
    rng = np.random.default_rng(1)
    ink = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    shown = np.asarray(ImageCms.profileToProfile(Image.fromarray(ink, "CMYK"), lcms(cf.cmyk_profile()), SRGB,
                                                 outputMode="RGB"), int)
    diff = np.abs(shown - cf.print_model_srgb(ink).astype(int))
    assert diff.max() <= 8 and diff.mean() < 1.5   # 9-point CLUT interpolation vs the exact model


def test_cmyk_profile_round_trips_through_b2a0():
    icc = cf.cmyk_profile()
    for rgb in [(180, 120, 110), (120, 160, 140), (90, 90, 150), (200, 200, 200), (60, 60, 60)]:
        im = Image.new("RGB", (1, 1), rgb)
        ink = ImageCms.profileToProfile(im, SRGB, lcms(icc), outputMode="CMYK").getpixel((0, 0))
        assert np.abs(to_srgb(icc, "CMYK", ink) - rgb).max() <= 4, (rgb, ink)


@pytest.mark.parametrize("with_icc", [False, True])
def test_cmyk_jpeg(with_icc):
    icc = cf.cmyk_profile() if with_icc else None
    card = cf.saturated_patches(mode="CMYK")
    data = cf.cmyk_jpeg(card, icc)
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "CMYK"
    assert im.info.get("adobe_transform") == 0
    assert im.info.get("icc_profile") == icc
    assert np.abs(np.asarray(im, int) - card).max() <= 3
    shown = cf.patch_means(cf.reference_srgb(data))
    for name in cf.PATCH_NAMES:
        naive = np.array(cf.PATCH_RGB[name])
        if with_icc:
            assert np.abs(shown[name] - cf.print_model_srgb(cf.PATCH_CMYK[name])).max() <= 3
            assert np.abs(shown[name] - naive).max() > 30
        else:
            assert np.abs(shown[name] - naive).max() <= 3


def test_cmyk_jpeg_from_rgb_separates_naively():
    rgb = cf.saturated_patches()
    im = Image.open(io.BytesIO(cf.cmyk_jpeg(rgb)))
    assert im.mode == "CMYK"
    inks = np.asarray(im, int)
    assert np.abs(inks[..., :3] - (255 - rgb.astype(int))).max() <= 3 and inks[..., 3].max() <= 3


def test_ycck_jpeg():
    icc = cf.cmyk_profile()
    rng = np.random.default_rng(2)
    ink = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
    data = cf.ycck_jpeg(ink, icc, quality=100)
    im = Image.open(io.BytesIO(data))
    assert im.mode == "CMYK" and im.info["adobe_transform"] == 2 and im.info["icc_profile"] == icc
    assert np.abs(np.asarray(im, int) - ink).max() <= 4
    sof = next(at for marker, at in cf._segments(data) if marker == 0xC0)
    assert data[sof + 7] == 4 and [data[sof + 8 + 3 * i] for i in range(4)] == [1, 2, 3, 4]
    card = cf.saturated_patches(mode="CMYK")
    plain = cf.patch_means(cf.reference_srgb(cf.cmyk_jpeg(card, icc)))
    ycck = cf.patch_means(cf.reference_srgb(cf.ycck_jpeg(card, icc)))
    for name in plain:
        assert np.abs(plain[name] - ycck[name]).max() <= 3, name


@pytest.mark.parametrize("encode,fmt", [(cf.rgb_jpeg, "JPEG"), (cf.rgb_png, "PNG")])
def test_rgb_images_embed_profiles(encode, fmt):
    card = cf.saturated_patches()
    for icc in (cf.display_p3_profile(), cf.adobe_rgb_profile()):
        data = encode(card, icc)
        im = Image.open(io.BytesIO(data))
        assert im.format == fmt and im.mode == "RGB" and im.info["icc_profile"] == icc
        shown = cf.patch_means(cf.reference_srgb(data))
        raw = cf.patch_means(card)
        assert shown["muted_red"][0] - raw["muted_red"][0] >= 10     # more saturated once managed
        assert np.abs(shown["red"] - raw["red"]).max() <= 3          # full red clips to sRGB red
    untagged = encode(card)
    assert "icc_profile" not in Image.open(io.BytesIO(untagged)).info
    assert np.abs(cf.reference_srgb(untagged).astype(int) - card).max() <= (0 if fmt == "PNG" else 8)


def test_saturated_patches():
    card = cf.saturated_patches()
    assert card.shape == (80, 192, 3) and card.dtype == np.uint8
    means = cf.patch_means(card)
    for name in cf.PATCH_NAMES:
        assert list(means[name]) == list(cf.PATCH_RGB[name])
        assert list(means["muted_" + name]) == list(cf.MUTED_RGB["muted_" + name])
    assert [means[f"grey{i}"][0] for i in range(8)] == list(cf.GREY_LEVELS)
    cmyk = cf.saturated_patches(16, mode="CMYK")
    assert cmyk.shape == (40, 96, 4)
    assert np.array_equal(cf.naive_cmyk_to_rgb(cmyk), cf.saturated_patches(16))
    assert set(cf.patch_centres(16)) == set(means)
