"""Hostile source files, generated (never stored): each entry is name -> (bytes, expectation).

expectation: "4xx" (an OSS XML error with a 4xx status) or "ok" (legitimately decodable: a correct
200 image), or "ok-or-4xx" where both are fine (a truncated JPEG that libjpeg still decodes).
Used by tests/test_hostile.py, in-process and in a memory-measuring subprocess.
"""

from __future__ import annotations

import io
import random
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


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Pixels that do not compress away, so a cut through the body lands in the middle of the data."""
    data = random.Random(seed).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, data).convert(mode)


def dds_with_fourcc(fourcc: bytes, width: int = 8, height: int = 8) -> bytes:
    """A DDS whose pixel format is the FourCC ``fourcc``: one Pillow does not decode (b"ABCD", or
    b"DX10" with DXGI format 0) makes Image.open raise NotImplementedError."""
    flags = 0x1 | 0x2 | 0x4 | 0x1000                      # CAPS | HEIGHT | WIDTH | PIXELFORMAT
    pixel_format = struct.pack("<II4s5I", 32, 0x4, fourcc, 0, 0, 0, 0, 0)   # DDPF_FOURCC
    header = (struct.pack("<7I", 124, flags, height, width, 0, 0, 0) + b"\0" * 44 + pixel_format
              + struct.pack("<5I", 0x1000, 0, 0, 0, 0))
    dx10 = struct.pack("<5I", 0, 3, 0, 1, 0) if fourcc == b"DX10" else b""
    return b"DDS " + header + dx10 + b"\0" * (width * height * 4)


def multipage_tiff(sizes: list[tuple[int, int]], colours: list[tuple[int, int, int]] | None = None,
                   **kw) -> bytes:
    """A TIFF with one page a size, each page one flat colour (page 0 red unless told)."""
    colours = colours or [(220, 20, 20), (20, 220, 20), (20, 20, 220), (200, 200, 0)]
    pages = [Image.new("RGB", size, colours[i % len(colours)]) for i, size in enumerate(sizes)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:], **kw)


def tiff_ifds(data: bytes) -> list[int]:
    """Offsets of the IFDs of a little-endian TIFF, in order."""
    offsets, offset = [], struct.unpack_from("<I", data, 4)[0]
    while offset and offset not in offsets:
        offsets.append(offset)
        count = struct.unpack_from("<H", data, offset)[0]
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * count)[0]
    return offsets


def tiff_patched(data: bytes, tag: int, value: int, page: int = 0) -> bytes:
    """``data`` with the value of ``tag`` (a SHORT or LONG held in the entry) of page ``page`` set."""
    out = bytearray(data)
    ifd = tiff_ifds(data)[page]
    for i in range(struct.unpack_from("<H", out, ifd)[0]):
        entry = ifd + 2 + 12 * i
        kind, kind_type = struct.unpack_from("<HH", out, entry)
        if kind == tag:
            struct.pack_into("<H" if kind_type == 3 else "<I", out, entry + 8, value)
            return bytes(out)
    raise KeyError(tag)


WIDTH, HEIGHT, COMPRESSION, STRIP_OFFSETS = 256, 257, 259, 273


def tiff_with_huge_later_page(side: int = 50_000) -> bytes:
    """Two 40x30 pages, the second relabelled side x side: OpenCV's multi-page decoder raised
    cv2.error on it (its own pixel cap), which was a 500 while TIFF pages counted as frames."""
    data = multipage_tiff([(40, 30), (40, 30)])
    return tiff_patched(tiff_patched(data, WIDTH, side, page=1), HEIGHT, side, page=1)


def tiff_declaring(width: int, height: int) -> bytes:
    """An uncompressed 40x30 TIFF relabelled width x height: a valid header, a strip far too short."""
    data = multipage_tiff([(40, 30)])
    return tiff_patched(tiff_patched(data, WIDTH, width), HEIGHT, height)


def truncated_body(fmt: str, keep: float = 0.5, **kw) -> bytes:
    """A noisy 96x64 image in ``fmt``, cut at ``keep`` of its length: the header is whole."""
    data = _save(_noise((96, 64)), fmt, **kw)
    return data[:int(len(data) * keep)]


def garbled_headers() -> dict[str, bytes]:
    """Truncated and garbled headers of PNG, GIF, TIFF, WebP, BMP and ICO: each is unreadable."""
    png = _save(_noise((32, 24)), "PNG")
    gif = _save(_noise((32, 24), "P"), "GIF")
    tiff = _save(_noise((32, 24)), "TIFF")
    webp = _save(_noise((32, 24)), "WEBP")
    bmp = _save(_noise((32, 24)), "BMP")
    ico = _save(_noise((32, 32)), "ICO", sizes=[(32, 32)])
    bad_crc = bytearray(png)
    bad_crc[29:33] = b"\0\0\0\0"                        # IHDR's CRC
    bad_depth = bytearray(png)
    bad_depth[24] = 7                                    # IHDR bit depth 7
    ifd_past_end = bytearray(tiff)
    struct.pack_into("<I", ifd_past_end, 4, 0x7FFFFFF0)
    bmp_bpp = bytearray(bmp)
    struct.pack_into("<H", bmp_bpp, 28, 13)              # 13 bits a pixel
    bmp_header = bytearray(bmp)
    struct.pack_into("<I", bmp_header, 14, 0x7FFFFFF0)   # a DIB header of 2 GB
    webp_chunk = bytearray(webp)
    struct.pack_into("<I", webp_chunk, 16, 0x7FFFFFF0)   # the VP8 chunk claims 2 GB
    ico_entry = bytearray(ico)
    struct.pack_into("<I", ico_entry, 18, 0x7FFFFFF0)    # the image's offset, past the end
    return {
        "png-cut-in-ihdr": png[:20],
        "png-ihdr-bad-crc": bytes(bad_crc),
        "png-bit-depth-7": bytes(bad_depth),
        "gif-cut-in-screen": gif[:9],
        "gif-no-image": gif[:13],
        "tiff-cut-in-ifd": tiff[:12] if tiff_ifds(tiff)[0] < 12 else tiff[:tiff_ifds(tiff)[0] + 7],
        "tiff-ifd-past-end": bytes(ifd_past_end),
        "webp-cut-in-vp8": webp[:24],
        "webp-chunk-2gb": bytes(webp_chunk),
        "bmp-13-bits": bytes(bmp_bpp),
        "bmp-header-2gb": bytes(bmp_header),
        "bmp-cut-in-header": bmp[:20],
        "ico-offset-past-end": bytes(ico_entry),
        "ico-cut-in-directory": ico[:10],
    }


def odd_files() -> dict[str, tuple[bytes, str]]:
    """The third-party-corpus cases of tests/test_odd_files.py that are small to decode, for the
    hostile matrix too: unsupported DDS, garbled headers, multi-page TIFFs, decoder failures."""
    extension = {"png": "png", "gif": "gif", "tiff": "tif", "webp": "webp", "bmp": "bmp", "ico": "ico"}
    # A whole header with a body the decoder fails on: image/info (the header alone) answers, every
    # process that decodes gets a 400 (asserted strictly in tests/test_odd_files.py).
    one_page = multipage_tiff([(40, 30)])
    files = {
        "dds-fourcc-abcd.dds": (dds_with_fourcc(b"ABCD"), "4xx"),
        "dds-dx10-unknown.dds": (dds_with_fourcc(b"DX10"), "4xx"),
        "multipage-same.tif": (multipage_tiff([(64, 48), (64, 48), (64, 48)]), "ok"),
        "multipage-sizes.tif": (multipage_tiff([(64, 48), (120, 30), (16, 16)]), "ok"),
        "multipage-huge-page2.tif": (tiff_with_huge_later_page(), "ok"),
        "tiff-compression-12345.tif": (tiff_patched(one_page, COMPRESSION, 12345), "ok-or-4xx"),
        "tiff-strips-past-end.tif": (tiff_patched(one_page, STRIP_OFFSETS, 10**7), "ok-or-4xx"),
        "tiff-short-strip.tif": (tiff_declaring(400, 300), "ok-or-4xx"),
        "body-cut.jpg": (truncated_body("JPEG", 0.3), "ok-or-4xx"),
        "body-cut.png": (truncated_body("PNG", 0.5), "ok-or-4xx"),
        "body-cut.webp": (truncated_body("WEBP", 0.5), "4xx"),
        "body-cut.gif": (truncated_body("GIF", 0.5), "ok-or-4xx"),
    }
    for name, data in garbled_headers().items():
        files[f"{name}.{extension[name.split('-')[0]]}"] = (data, "4xx")
    return files


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
        **odd_files(),
    }


def write_all(directory: Path) -> dict[str, str]:
    expectations = {}
    for name, (data, expect) in generate().items():
        (directory / name).write_bytes(data)
        expectations[name] = expect
    return expectations
