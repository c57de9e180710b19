"""Hostile source files, generated (never stored): each entry is name -> (bytes, expectation).

expectation: "4xx" (an OSS XML error with a 4xx status) or "ok" (legitimately decodable: a correct
200 image), or "ok-or-4xx" where both are fine (a truncated JPEG that libjpeg still decodes).
Used by tests/test_hostile.py, in-process and in a memory-measuring subprocess.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR says width x height (8-bit RGB), with a tiny valid-CRC IDAT: a header bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG with its SOF frame header patched to width x height."""
    data = bytearray(_jpeg(Image.new("RGB", (16, 16), (200, 10, 10))))
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xC3:
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF")


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def many_frame_gif(frames: int) -> bytes:
    ims = [Image.new("P", (4, 4), i % 2) for i in range(frames)]
    for im in ims:
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    buf = io.BytesIO()
    ims[0].save(buf, "GIF", save_all=True, append_images=ims[1:], duration=10, loop=0, optimize=False)
    return buf.getvalue()


def corrupt_exif_jpeg() -> bytes:
    """APP1 Exif whose IFD offset points far outside the segment and whose entry count is huge."""
    tiff = b"MM\x00*" + struct.pack(">I", 0x7FFFFFF0) + struct.pack(">H", 0xFFFF) + b"\x01\x12" * 20
    app1 = b"Exif\x00\x00" + tiff
    jpeg = _jpeg(Image.new("RGB", (64, 48), (10, 120, 200)))
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def huge_icc_jpeg(size: int = 4 * 1024 * 1024) -> bytes:
    """A JPEG carrying a 4 MB (garbage) ICC profile, split over APP2 segments as the standard says."""
    return _jpeg(Image.new("RGB", (64, 48), (10, 120, 200)), icc_profile=b"\x00" * 128 + b"x" * size)


def generate() -> dict[str, tuple[bytes, str]]:
    example = (FIXTURES / "example.jpg").read_bytes()
    png = (FIXTURES / "nodejs-1024x768.png").read_bytes()
    return {
        "zero.jpg": (b"", "4xx"),
        "zero.png": (b"", "4xx"),
        "truncated-header.jpg": (example[:120], "4xx"),
        "truncated-half.jpg": (example[:len(example) // 2], "ok-or-4xx"),
        "truncated-header.png": (png[:40], "4xx"),
        "truncated-idat.png": (png[:len(png) // 3], "ok-or-4xx"),
        "wrong-magic.png": (b"\x89PNX\r\n\x1a\n" + png[8:], "4xx"),
        "wrong-magic.jpg": (b"\xff\xd9\xff\xe0" + example[4:], "4xx"),
        "random.jpg": (bytes(range(256)) * 64, "4xx"),
        "declares-65535.png": (png_declaring(65535, 65535), "4xx"),
        "declares-65535.jpg": (jpeg_declaring(65535, 65535), "4xx"),
        "declares-29000.png": (png_declaring(29000, 29000), "4xx"),   # sides allowed, pixels not
        "frames-3000.gif": (many_frame_gif(3000), "4xx"),
        "one-by-20000.png": (_png(Image.new("RGB", (1, 20000), (0, 128, 255))), "ok"),
        "corrupt-exif.jpg": (corrupt_exif_jpeg(), "ok-or-4xx"),
        "huge-icc.jpg": (huge_icc_jpeg(), "ok-or-4xx"),
        "svg-as.jpg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
                       b'height="10"><script>alert(1)</script></svg>', "4xx"),
        "svg-as.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"/>', "4xx"),
        "html-as.jpg": (b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", "4xx"),
        "html-as.png": (b"<html>" + b"A" * 10000 + b"</html>", "4xx"),
    }


def write_all(directory: Path) -> dict[str, str]:
    expectations = {}
    for name, (data, expect) in generate().items():
        (directory / name).write_bytes(data)
        expectations[name] = expect
    return expectations
