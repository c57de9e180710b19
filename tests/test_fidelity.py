"""Image fidelity: EXIF orientations, grey, 16-bit, palette transparency, HEIC, BMP/TIFF round trips,
and what metadata the output keeps (spec §3.4: none; colours are converted to sRGB instead)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from imgmiddleware.imaging import heif
from imgmiddleware.imaging.probe import probe

from .conftest import decode, format_of, get, ok, psnr, size_of


def card(width: int = 120, height: int = 80) -> np.ndarray:
    """An RGB card no flip or turn maps onto itself: a red top-left block, a blue bar on the right."""
    rgb = np.full((height, width, 3), 230, np.uint8)
    rgb[:20, :30] = (220, 20, 20)
    rgb[:, -15:] = (20, 20, 220)
    rgb[-10:, :] = (20, 160, 20)
    return rgb


def pil_bytes(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


# --- EXIF orientation 1-8 ----------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(serve_file, orientation):
    im = Image.fromarray(card())
    exif = Image.Exif()
    exif[0x0112] = orientation
    client = serve_file("o.jpg", pil_bytes(im, "JPEG", quality=95, exif=exif.tobytes()))
    body = ok(get(client, "o.jpg", "image/format,png"))
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(pil_bytes(
        im, "JPEG", quality=95, exif=exif.tobytes())))).convert("RGB"))
    mine = cv2.cvtColor(decode(body), cv2.COLOR_BGR2RGB)
    assert mine.shape == reference.shape
    assert psnr(mine, reference) > 40
    # the output carries no EXIF at all, so no stale Orientation can turn it again
    assert not Image.open(io.BytesIO(body)).getexif()


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_auto_orient_0_keeps_the_stored_pixels(serve_file, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    client = serve_file("o.jpg", pil_bytes(Image.fromarray(card()), "JPEG", quality=95, exif=exif.tobytes()))
    assert size_of(ok(get(client, "o.jpg", "image/auto-orient,0/format,png"))) == (120, 80)
    assert size_of(ok(get(client, "o.jpg", "image/format,png"))) == (80, 120)


def png_with_trailing_exif(rgb: np.ndarray, exif: Image.Exif) -> bytes:
    """A PNG whose eXIf chunk comes after the pixel data, where some writers put it."""
    plain = pil_bytes(Image.fromarray(rgb), "PNG")
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    iend = plain.rindex(b"IEND") - 4
    return plain[:iend] + chunk + plain[iend:]


def test_png_exif_after_the_pixels_is_read_without_decoding_them(serve_file):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera maker"
    data = png_with_trailing_exif(card(), exif)
    client = serve_file("t.png", data)
    assert size_of(ok(get(client, "t.png", "image/resize,w_60"))) == (60, 90)
    info = json.loads(ok(get(client, "t.png", "image/info")))
    assert info["Orientation"]["value"] == "6" and info["Make"]["value"] == "Camera maker"
    # the probe reads headers only: a PNG whose pixel data is garbage still probes
    start = data.index(b"IDAT") + 4
    broken = data[:start] + bytes(64) + data[start + 64:]
    assert probe(broken).orientation == 6


# --- grey, 16-bit, palette ---------------------------------------------------------------------------

def test_grey_jpeg_stays_grey(serve_file):
    grey = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (64, 1))
    client = serve_file("g.jpg", cv2.imencode(".jpg", grey)[1].tobytes())
    for process, mode in (("image/resize,w_64", "L"), ("image/resize,w_64/format,png", "L"),
                          ("image/rotate,90/format,tiff", "L"), ("image/resize,w_64/format,webp", "RGB")):
        body = ok(get(client, "g.jpg", process))
        assert Image.open(io.BytesIO(body)).mode == mode, process
    # colour added by an action is kept: a red watermark makes the output colour
    body = ok(get(client, "g.jpg", "image/watermark,text_SGk,color_FF0000,size_40"))
    assert Image.open(io.BytesIO(body)).mode == "RGB"


def test_16_bit_png_and_tiff_keep_16_bits_through_geometry(serve_file):
    rgb16 = (np.random.default_rng(1).random((90, 120, 3)) * 65535).astype(np.uint16)
    rgb16[:, :, 2] = np.linspace(0, 65535, 120, dtype=np.uint16)[None, :]   # a 16-bit ramp
    client = serve_file("deep.png", cv2.imencode(".png", rgb16)[1].tobytes())
    client = serve_file("deep.tiff", cv2.imencode(".tiff", rgb16)[1].tobytes())
    for key, process in (("deep.png", "image/resize,w_60"), ("deep.png", "image/crop,w_50,h_40/rotate,90"),
                         ("deep.tiff", "image/resize,w_60"), ("deep.png", "image/resize,w_60/format,tiff")):
        out = decode(ok(get(client, key, process)))
        assert out.dtype == np.uint16, (key, process)
        # real 16-bit values: the low bytes carry information (8-bit data widened would not)
        assert len(np.unique(out & 0xFF)) > 64, (key, process)
    # 8-bit where the format or the action needs it, scaled from the top byte
    for process in ("image/resize,w_60/format,jpg", "image/blur,r_2,s_2", "image/resize,m_pad,w_200,h_200"):
        out = decode(ok(get(client, "deep.png", process)))
        assert out.dtype == np.uint8, process
    full = decode(ok(get(client, "deep.png", "image/format,jpg")))
    assert abs(float(full[:, :, 2].mean()) - float((rgb16[:, :, 2] >> 8).mean())) < 3


def test_16_bit_grey_png_stays_16_bit_grey(serve_file):
    grey16 = np.tile(np.linspace(0, 65535, 200).astype(np.uint16), (50, 1))
    client = serve_file("g16.png", cv2.imencode(".png", grey16)[1].tobytes())
    body = ok(get(client, "g16.png", "image/resize,w_100"))
    assert Image.open(io.BytesIO(body)).mode == "I;16"


def test_palette_png_keeps_its_transparency(serve_file):
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(0, (10, 10, 30, 20))          # index 0 = transparent
    client = serve_file("pal.png", pil_bytes(pal, "PNG", transparency=0))
    out = decode(ok(get(client, "pal.png", "image/resize,w_80,limit_0"), "image/png"))
    assert out.shape == (60, 80, 4)
    assert out[30, 40, 3] == 0 and out[2, 2, 3] == 255 and out[2, 2, 2] == 255
    flat = decode(ok(get(client, "pal.png", "image/resize,w_80,limit_0/format,jpg")))
    assert flat[30, 40].min() >= 250                                    # transparent -> white


# --- formats ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, pil_format, magic", [("bmp", "BMP", b"BM"), ("tiff", "TIFF", b"II")])
def test_bmp_and_tiff_round_trip(serve_file, fmt, pil_format, magic):
    rgb = card()
    client = serve_file(f"card.{fmt}", cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
    body = ok(get(client, f"card.{fmt}", "image/resize,w_60/rotate,180"))
    assert body[:2] == magic and format_of(body) == pil_format and size_of(body) == (60, 40)
    expected = cv2.rotate(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (60, 40),
                                     interpolation=cv2.INTER_AREA), cv2.ROTATE_180)
    assert psnr(decode(body), expected) > 45          # lossless formats: only resampling differs


def test_bmp_and_tiff_keep_alpha(serve_file):
    bgra = np.zeros((40, 60, 4), np.uint8)
    bgra[..., 2] = 255
    bgra[:, 30:, 3] = 255
    client = serve_file("a.png", cv2.imencode(".png", bgra)[1].tobytes())
    for fmt in ("bmp", "tiff"):
        out = decode(ok(get(client, "a.png", f"image/format,{fmt}")))
        assert out.shape[2] == 4 and out[5, 5, 3] == 0 and out[5, 50, 3] == 255, fmt


def heic_bytes(rgb: np.ndarray, **params) -> bytes:
    return pil_bytes(Image.fromarray(rgb), "HEIF", **params)


def test_heic_source_and_output(serve_file):
    rgb = card(160, 100)
    client = serve_file("p.heic", heic_bytes(rgb, quality=90))
    body = ok(get(client, "p.heic", "image/resize,w_80"), "image/heic")
    assert format_of(body) == "HEIF" and size_of(body) == (80, 50)
    jpg = ok(get(client, "p.heic", "image/resize,w_80/format,jpg"), "image/jpeg")
    expected = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (80, 50), interpolation=cv2.INTER_AREA)
    assert psnr(decode(jpg), expected) > 28
    info = get(client, "p.heic", "image/info").get_json()
    assert info["Format"] == {"value": "heic"} and info["ImageWidth"] == {"value": "160"}
    out = ok(get(client, "example.jpg", "image/resize,w_100/format,heic"), "image/heic")
    assert size_of(out) == (100, 67)


def test_heic_rotation_is_applied_once(serve_file):
    """libheif applies the file's rotation and resets EXIF Orientation: no double turn."""
    exif = Image.Exif()
    exif[0x0112] = 6
    client = serve_file("r.heic", heic_bytes(card(160, 100), exif=exif.tobytes()))
    assert size_of(ok(get(client, "r.heic", "image/format,png"))) == (100, 160)


def test_without_the_heif_extra_heic_is_a_clear_400(tmp_path):
    """In a process where pillow-heif cannot be imported: the error names the extra."""
    heic = tmp_path / "p.heic"
    heic.write_bytes(heic_bytes(card()))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["pillow_heif"] = None          # as if the extra were not installed
        from imgmiddleware import Config, OssError
        from imgmiddleware.process import parse, run
        for process, data in (("image/resize,w_10", open({str(heic)!r}, "rb").read()),
                              ("image/format,heic", open({str(heic)!r}, "rb").read())):
            try:
                run(parse(process, Config()), data, Config())
            except OssError as err:
                print(err.status, err.code, err.ec, err.message)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("400 BadRequest 0040-00000005") and "'heif' extra" in lines[0]
    assert lines[1].startswith("400 InvalidArgument 0040-00000206") and "'heif' extra" in lines[1]


def test_the_extra_is_installed_for_the_suite():
    assert heif.AVAILABLE, "the test extra installs pillow-heif so HEIC is tested, not skipped"


# --- metadata -----------------------------------------------------------------------------------------

def test_output_keeps_no_metadata(serve_file):
    im = Image.fromarray(card())
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0112] = 1
    client = serve_file("m.jpg", pil_bytes(im, "JPEG", quality=95, exif=exif.tobytes(),
                                       icc_profile=ImageOpsProfile.srgb()))
    for process in ("image/resize,w_60", "image/resize,w_60/format,png", "image/resize,w_60/format,webp"):
        out = Image.open(io.BytesIO(ok(get(client, "m.jpg", process))))
        assert not out.getexif(), process
        assert "icc_profile" not in out.info, process


class ImageOpsProfile:
    @staticmethod
    def srgb() -> bytes:
        from PIL import ImageCms
        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
