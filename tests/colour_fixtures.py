"""Colour-management fixtures that the tests build themselves: ICC profiles, tagged images, references.

Every ICC profile here is written from scratch with ``struct`` and numpy (no third-party ICC file is
shipped, so there is no licence to track). Pillow and its LittleCMS binding are used only to encode
the images, to check the profiles and to compute what a colour-managed viewer would show.

* :func:`rgb_matrix_profile` writes an ICC v2.1 display ('mntr') RGB matrix/TRC profile, PCS XYZ;
  :func:`display_p3_profile` and :func:`adobe_rgb_profile` are two well-known spaces built with it.
* :func:`cmyk_profile` writes an ICC v2.1 output ('prtr') CMYK profile, PCS Lab, with lut16 A2B0 and
  B2A0 tables. Its A2B0 models a made-up print process (:func:`print_model_srgb` gives the same
  mapping in numpy) that is clearly not the naive ``R = 255 (1-C)(1-K)``: inks on paper are duller
  and slightly darker, so a product that ignores the profile gives visibly wrong colours.
* :func:`jpeg_bytes`, :func:`cmyk_jpeg`, :func:`ycck_jpeg`, :func:`rgb_jpeg`, :func:`rgb_png` encode
  images with (or without) an embedded profile.
* :func:`reference_srgb` is what a colour-managed viewer shows for encoded image bytes.
* :func:`saturated_patches` is a test card of six flat saturated patches and a grey ramp.

CMYK arrays here always hold *ink* values as Pillow's mode "CMYK" exposes them: 0 = no ink, 255 = full
ink. (Adobe-style JPEGs store the inverted values; Pillow inverts on both save and load.)
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms

__all__ = [
    "D50_WHITE", "D65_WHITE",
    "PATCH_NAMES", "PATCH_RGB", "PATCH_CMYK", "MUTED_RGB", "MUTED_CMYK", "GREY_LEVELS",
    "P3_D50_PRIMARIES", "ADOBE_RGB_D50_PRIMARIES", "ADOBE_RGB_GAMMA", "SRGB_D50_PRIMARIES",
    "rgb_matrix_profile", "display_p3_profile", "adobe_rgb_profile", "srgb_profile",
    "cmyk_profile", "print_model_srgb", "naive_cmyk_to_rgb",
    "jpeg_bytes", "cmyk_jpeg", "ycck_jpeg", "rgb_jpeg", "rgb_png",
    "reference_srgb", "saturated_patches", "patch_centres", "patch_means",
]

D50_WHITE = (0.9642, 1.0, 0.8249)   # ICC PCS illuminant (as encoded in s15Fixed16 by every profile)
D65_WHITE = (0.95047, 1.0, 1.08883)

# Bradford cone response matrix, and D65 -> D50 adaptation built from it.
_BRADFORD = np.array([
    [0.8951, 0.2664, -0.1614],
    [-0.7502, 1.7135, 0.0367],
    [0.0389, -0.0685, 1.0296],
])


def _bradford(src_white, dst_white) -> np.ndarray:
    s = _BRADFORD @ np.asarray(src_white, float)
    d = _BRADFORD @ np.asarray(dst_white, float)
    return np.linalg.inv(_BRADFORD) @ np.diag(d / s) @ _BRADFORD


# Linear sRGB (D65) -> XYZ (D65), IEC 61966-2-1.
_SRGB_TO_XYZ_D65 = np.array([
    [0.4124, 0.3576, 0.1805],
    [0.2126, 0.7152, 0.0722],
    [0.0193, 0.1192, 0.9505],
])
_D65_TO_D50 = _bradford(D65_WHITE, D50_WHITE)
_SRGB_TO_XYZ_D50 = _D65_TO_D50 @ _SRGB_TO_XYZ_D65
_XYZ_D50_TO_SRGB = np.linalg.inv(_SRGB_TO_XYZ_D50)

# D50-adapted primaries (the columns of the RGB -> PCS XYZ matrix) of the sRGB space, for reference.
SRGB_D50_PRIMARIES = tuple(tuple(float(v) for v in _SRGB_TO_XYZ_D50[:, i]) for i in range(3))

# ---------------------------------------------------------------------------------------------
# Transfer functions and Lab
# ---------------------------------------------------------------------------------------------


def srgb_decode(v):
    """sRGB-encoded 0..1 -> linear 0..1."""
    v = np.asarray(v, float)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v):
    """Linear 0..1 -> sRGB-encoded 0..1 (clipped to 0..1)."""
    v = np.clip(np.asarray(v, float), 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


_EPS = 216 / 24389
_KAPPA = 24389 / 27


def xyz_to_lab(xyz, white=D50_WHITE):
    """XYZ (..., 3) -> CIE Lab (..., 3) relative to ``white``."""
    r = np.asarray(xyz, float) / np.asarray(white, float)
    f = np.where(r > _EPS, np.cbrt(r), (_KAPPA * r + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_xyz(lab, white=D50_WHITE):
    """CIE Lab (..., 3) -> XYZ (..., 3) relative to ``white``."""
    lab = np.asarray(lab, float)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], -1)
    r = np.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA)
    return r * np.asarray(white, float)


# ---------------------------------------------------------------------------------------------
# ICC building blocks (big-endian throughout)
# ---------------------------------------------------------------------------------------------

_ICC_VERSION = 0x02100000  # 2.1.0
_FIXED_DATE = (2024, 1, 1, 0, 0, 0)  # deterministic bytes


def _s15f16(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _xyz_number(xyz) -> bytes:
    return b"".join(_s15f16(c) for c in xyz)


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + _xyz_number(xyz)


def _text_tag(text: str) -> bytes:
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


def _desc_tag(text: str) -> bytes:
    """textDescriptionType (ICC v2): ASCII part, empty Unicode part, empty ScriptCode part."""
    ascii_ = text.encode("ascii") + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_
            + struct.pack(">II", 0, 0)          # Unicode language code, Unicode count
            + struct.pack(">HB", 0, 0)          # ScriptCode code, ScriptCode count
            + b"\0" * 67)                       # Macintosh description (fixed 67 bytes)


def _curve_tag(trc) -> bytes:
    """curveType: a u8Fixed8 gamma for a number, a 1024-entry table for "srgb"."""
    if isinstance(trc, str):
        if trc.lower() != "srgb":
            raise ValueError(f"unknown TRC {trc!r}: use 'srgb' or a gamma number")
        table = np.round(srgb_decode(np.linspace(0, 1, 1024)) * 65535).astype(">u2")
        return b"curv" + b"\0" * 4 + struct.pack(">I", len(table)) + table.tobytes()
    gamma = int(round(float(trc) * 256))
    if not 0 < gamma < 65536:
        raise ValueError(f"gamma {trc} does not fit u8Fixed8")
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, gamma)


def _lut16_tag(in_tables: int, clut: np.ndarray, grid: int) -> bytes:
    """lut16Type ('mft2') with identity matrix, 2-entry linear in/out tables and ``clut``.

    ``clut`` is (grid ** n_in, n_out) uint16, first input channel varying slowest.
    """
    n_in, n_out = in_tables, clut.shape[1]
    assert clut.shape[0] == grid ** n_in
    identity = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    linear = np.array([0, 65535], ">u2").tobytes()
    return (b"mft2" + b"\0" * 4 + struct.pack(">BBBB", n_in, n_out, grid, 0)
            + b"".join(_s15f16(v) for v in identity)
            + struct.pack(">HH", 2, 2)
            + linear * n_in
            + np.ascontiguousarray(clut, ">u2").tobytes()
            + linear * n_out)


def _assemble(device_class: bytes, colour_space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """Header + tag table + 4-byte aligned tag data. Identical tag data is stored once and shared."""
    table_len = 4 + 12 * len(tags)
    offset = 128 + table_len
    data = bytearray()
    entries, seen = [], {}
    for sig, body in tags:
        if body not in seen:
            while (offset + len(data)) % 4:
                data += b"\0"
            seen[body] = offset + len(data)
            data += body
        entries.append(struct.pack(">4sII", sig, seen[body], len(body)))
    while len(data) % 4:
        data += b"\0"
    size = 128 + table_len + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", _ICC_VERSION)
              + device_class + colour_space + pcs
              + struct.pack(">6H", *_FIXED_DATE)
              + b"acsp" + b"\0" * 4                      # signature, primary platform (none)
              + struct.pack(">I", 0)                     # flags
              + b"\0" * 4 + b"\0" * 4 + b"\0" * 8        # manufacturer, model, attributes
              + struct.pack(">I", 0)                     # rendering intent: perceptual
              + _xyz_number(D50_WHITE)                   # PCS illuminant
              + b"\0" * 4                                # creator
              + b"\0" * 44)                              # profile ID (v4) + reserved
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + bytes(data)


_COPYRIGHT = "No copyright, test fixture"

# ---------------------------------------------------------------------------------------------
# RGB matrix/TRC profiles
# ---------------------------------------------------------------------------------------------


def rgb_matrix_profile(description: str, red_xyz, green_xyz, blue_xyz, white_xyz=D50_WHITE,
                       trc: str | float = "srgb") -> bytes:
    """An ICC v2.1 display ('mntr') RGB matrix/TRC profile with PCS XYZ.

    The colorants are the D50 (Bradford-adapted) primaries; ``trc`` is "srgb" (1024-entry table) or
    a gamma (stored as u8Fixed8, so it is rounded to 1/256).
    """
    curve = _curve_tag(trc)
    return _assemble(b"mntr", b"RGB ", b"XYZ ", [
        (b"desc", _desc_tag(description)),
        (b"cprt", _text_tag(_COPYRIGHT)),
        (b"wtpt", _xyz_tag(white_xyz)),
        (b"rXYZ", _xyz_tag(red_xyz)),
        (b"gXYZ", _xyz_tag(green_xyz)),
        (b"bXYZ", _xyz_tag(blue_xyz)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ])


P3_D50_PRIMARIES = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
ADOBE_RGB_D50_PRIMARIES = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))
ADOBE_RGB_GAMMA = 563 / 256  # 2.19921875


def display_p3_profile() -> bytes:
    """Display P3 (P3 primaries, D65 white, sRGB transfer curve)."""
    return rgb_matrix_profile("Display P3 (test fixture)", *P3_D50_PRIMARIES, trc="srgb")


def adobe_rgb_profile() -> bytes:
    """Adobe RGB (1998)-compatible (gamma 563/256)."""
    return rgb_matrix_profile("Adobe RGB (1998) compatible (test fixture)", *ADOBE_RGB_D50_PRIMARIES,
                              trc=ADOBE_RGB_GAMMA)


def srgb_profile() -> bytes:
    """sRGB written by this module (for tests that want an explicit sRGB tag in the file)."""
    return rgb_matrix_profile("sRGB IEC61966-2.1 (test fixture)", *SRGB_D50_PRIMARIES, trc="srgb")


# ---------------------------------------------------------------------------------------------
# CMYK print profile
# ---------------------------------------------------------------------------------------------

PRINT_DESATURATION = 0.30   # fraction of chroma lost toward luminance (linear light)
PRINT_DOT_GAIN = 1.10       # exponent on linear light: darkens mid-tones, keeps paper white and black
PRINT_GCR = 0.6             # fraction of grey replaced by K in the B2A0 separation


def naive_cmyk_to_rgb(cmyk) -> np.ndarray:
    """The naive conversion ``R = 255 (1-C)(1-K)`` etc., uint8 (..., 3) from ink values (..., 4)."""
    ink = np.asarray(cmyk, float) / 255
    rgb = (1 - ink[..., :3]) * (1 - ink[..., 3:4])
    return np.round(rgb * 255).astype(np.uint8)


def _print_linear_srgb(ink: np.ndarray) -> np.ndarray:
    """The print model: ink values 0..1 (..., 4) -> linear sRGB 0..1 (..., 3)."""
    naive = (1 - ink[..., :3]) * (1 - ink[..., 3:4])            # sRGB-encoded
    lin = srgb_decode(naive)
    lum = lin @ _SRGB_TO_XYZ_D65[1]
    lin = lum[..., None] + (1 - PRINT_DESATURATION) * (lin - lum[..., None])
    return np.clip(lin, 0, 1) ** PRINT_DOT_GAIN


def print_model_srgb(cmyk) -> np.ndarray:
    """What :func:`cmyk_profile`'s A2B0 means, as sRGB uint8 (..., 3) from ink values (..., 4).

    naive sRGB -> linear -> 30 % toward its luminance -> ``** 1.1`` (dot gain) -> sRGB.
    """
    ink = np.asarray(cmyk, float) / 255
    return np.round(srgb_encode(_print_linear_srgb(ink)) * 255).astype(np.uint8)


def _lab_to_v2_lut16(lab: np.ndarray) -> np.ndarray:
    """ICC v2 16-bit Lab: L 0..100 -> 0..0xFF00, a/b -128..127.996 -> 0..0xFFFF (0 at 0x8000)."""
    L = np.clip(lab[..., 0], 0, 100) * 652.80
    ab = (np.clip(lab[..., 1:], -128, 65535 / 256 - 128) + 128) * 256
    return np.round(np.concatenate([L[..., None], ab], -1)).astype(np.uint16)


def _v2_lut16_to_lab(enc: np.ndarray) -> np.ndarray:
    enc = np.asarray(enc, float)
    return np.stack([enc[..., 0] / 652.80, enc[..., 1] / 256 - 128, enc[..., 2] / 256 - 128], -1)


def _a2b0_clut(grid: int) -> np.ndarray:
    axis = np.linspace(0, 1, grid)
    ink = np.stack(np.meshgrid(axis, axis, axis, axis, indexing="ij"), -1).reshape(-1, 4)
    xyz = _print_linear_srgb(ink) @ _SRGB_TO_XYZ_D50.T
    return _lab_to_v2_lut16(xyz_to_lab(xyz))


def _b2a0_clut(grid: int) -> np.ndarray:
    """Inverse of the print model (exact inside its gamut), with partial grey component replacement."""
    axis = np.arange(grid) / (grid - 1) * 65535
    enc = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    lin = np.clip(lab_to_xyz(_v2_lut16_to_lab(enc)) @ _XYZ_D50_TO_SRGB.T, 0, 1)
    lin = lin ** (1 / PRINT_DOT_GAIN)
    lum = lin @ _SRGB_TO_XYZ_D65[1]
    lin = np.clip(lum[:, None] + (lin - lum[:, None]) / (1 - PRINT_DESATURATION), 0, 1)
    rgb = srgb_encode(lin)                                      # naive sRGB to reproduce
    k = PRINT_GCR * (1 - rgb.max(axis=1))
    cmy = 1 - rgb / (1 - k)[:, None]
    cmyk = np.clip(np.concatenate([cmy, k[:, None]], 1), 0, 1)
    return np.round(cmyk * 65535).astype(np.uint16)


def cmyk_profile(description: str = "Test CMYK print profile", a2b_grid: int = 9,
                 b2a_grid: int = 17) -> bytes:
    """An ICC v2.1 output ('prtr') CMYK profile, PCS Lab, with lut16 A2B0 (CMYK->Lab) and B2A0.

    Designed for Pillow mode "CMYK" ink values (0 = no ink). The A2B0 is :func:`print_model_srgb`
    in Lab D50 (sRGB's D65 Bradford-adapted), so paper white is L=100 and the inks are duller and
    darker than the naive formula. The B2A0 inverts it with 60 % grey component replacement.
    """
    return _assemble(b"prtr", b"CMYK", b"Lab ", [
        (b"desc", _desc_tag(description)),
        (b"cprt", _text_tag(_COPYRIGHT)),
        (b"wtpt", _xyz_tag(D50_WHITE)),
        (b"A2B0", _lut16_tag(4, _a2b0_clut(a2b_grid), a2b_grid)),
        (b"B2A0", _lut16_tag(3, _b2a0_clut(b2a_grid), b2a_grid)),
    ])


# ---------------------------------------------------------------------------------------------
# Encoded images
# ---------------------------------------------------------------------------------------------


def jpeg_bytes(pil_image: Image.Image, icc: bytes | None = None, quality: int = 95, **params) -> bytes:
    """``pil_image`` as a baseline JPEG, with ``icc`` embedded (APP2 ICC_PROFILE) when given."""
    buf = io.BytesIO()
    if icc is not None:
        params["icc_profile"] = icc
    pil_image.save(buf, "JPEG", quality=quality, **params)
    return buf.getvalue()


def _cmyk_image(array) -> Image.Image:
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"want an HxWx4 CMYK (or HxWx3 RGB) uint8 array, got {a.dtype} {a.shape}")
    if a.shape[2] == 3:
        return Image.fromarray(a, "RGB").convert("CMYK")   # Pillow's naive C=255-R, ..., K=0
    return Image.fromarray(a, "CMYK")


def cmyk_jpeg(rgb_or_cmyk_array, icc: bytes | None = None, quality: int = 95) -> bytes:
    """An Adobe CMYK JPEG (APP14 transform=0, inverted ink values as Photoshop writes them).

    An HxWx4 array is taken as ink values (0 = no ink); an HxWx3 array is RGB, separated with
    Pillow's naive C=255-R, M=255-G, Y=255-B, K=0. Pillow reopens it as mode "CMYK" with the same ink
    values (up to JPEG loss).
    """
    return jpeg_bytes(_cmyk_image(rgb_or_cmyk_array), icc, quality)


def _segments(data: bytes):
    """(marker, start of its length field) for each marker segment before the first SOS (inclusive)."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        yield marker, pos + 2
        if marker == 0xDA:
            return
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]


def _adobe_transform(data: bytes) -> int | None:
    for marker, at in _segments(data):
        if marker == 0xEE and data[at + 2:at + 7] == b"Adobe":
            return data[at + 13]
    return None


def ycck_jpeg(cmyk_array, icc: bytes | None = None, quality: int = 95) -> bytes:
    """An Adobe YCCK JPEG (APP14 transform=2, component ids 1..4) of HxWx4 ink values.

    Pillow cannot encode YCCK, so the YCCK planes are computed here the way libjpeg's
    ``cmyk_ycck_convert`` does (YCbCr of 255-C', 255-M', 255-Y' where C' = 255-ink is the Adobe
    stored value, K' = 255-ink K stored as is), encoded by Pillow as if they were CMYK, and the
    header is then relabelled: APP14 transform 0 -> 2 and SOF/SOS component ids C,M,Y,K -> 1,2,3,4.
    Entropy-coded data is untouched, so any libjpeg decodes it through its YCCK->CMYK path; Pillow
    reopens it as mode "CMYK" with ``info["adobe_transform"] == 2``.
    """
    ink = np.asarray(cmyk_array)
    if ink.dtype != np.uint8 or ink.ndim != 3 or ink.shape[2] != 4:
        raise ValueError(f"want an HxWx4 uint8 CMYK array, got {ink.dtype} {ink.shape}")
    rgb = ink[..., :3].astype(float)        # 255 - (255 - ink): libjpeg's R = MAXJSAMPLE - stored C
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    cb = -0.168735892 * rgb[..., 0] - 0.331264108 * rgb[..., 1] + 0.5 * rgb[..., 2] + 128
    cr = 0.5 * rgb[..., 0] - 0.418687589 * rgb[..., 1] - 0.081312411 * rgb[..., 2] + 128
    stored = np.stack([y, cb, cr], -1)
    stored = np.clip(np.round(stored), 0, 255).astype(np.uint8)
    # Pillow writes mode CMYK inverted (rawmode "CMYK;I"): hand it 255 - wanted stored value.
    # K's stored value is 255 - ink, so Pillow gets the ink itself.
    pixels = np.concatenate([255 - stored, ink[..., 3:4]], -1)
    data = bytearray(jpeg_bytes(Image.fromarray(pixels, "CMYK"), icc, quality, subsampling=0))
    relabelled = {"adobe": False, "sof": False, "sos": False}
    for marker, at in _segments(bytes(data)):
        if marker == 0xEE and data[at + 2:at + 7] == b"Adobe":
            assert data[at + 13] == 0
            data[at + 13] = 2
            relabelled["adobe"] = True
        elif marker in (0xC0, 0xC1, 0xC2):
            n = data[at + 7]
            assert n == 4
            for i in range(n):
                data[at + 8 + 3 * i] = i + 1
            relabelled["sof"] = True
        elif marker == 0xDA:
            n = data[at + 2]
            for i in range(n):
                data[at + 3 + 2 * i] = i + 1
            relabelled["sos"] = True
    assert all(relabelled.values()), relabelled
    return bytes(data)


def rgb_jpeg(rgb_array, icc: bytes | None = None, quality: int = 95) -> bytes:
    """An RGB (YCbCr, 4:4:4) JPEG of an HxWx3 uint8 array with ``icc`` embedded."""
    return jpeg_bytes(Image.fromarray(np.asarray(rgb_array, np.uint8), "RGB"), icc, quality, subsampling=0)


def rgb_png(rgb_array, icc: bytes | None = None) -> bytes:
    """An RGB PNG of an HxWx3 uint8 array with ``icc`` embedded (iCCP chunk)."""
    buf = io.BytesIO()
    params = {} if icc is None else {"icc_profile": icc}
    Image.fromarray(np.asarray(rgb_array, np.uint8), "RGB").save(buf, "PNG", **params)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------

_SRGB = None


def reference_srgb(image_bytes: bytes) -> np.ndarray:
    """HxWx3 uint8 sRGB: what a colour-managed viewer shows for ``image_bytes``.

    With an embedded profile: LittleCMS, perceptual intent, to LittleCMS's built-in sRGB.
    Without: Pillow's ``convert("RGB")`` (for CMYK that is the naive formula).
    """
    global _SRGB
    im = Image.open(io.BytesIO(image_bytes))
    im.load()
    icc = im.info.get("icc_profile")
    if im.mode in ("P", "PA", "RGBA", "RGBX", "I;16", "I", "F", "LA", "La", "RGBa"):
        im = im.convert("L" if im.mode in ("LA", "La", "I;16", "I", "F") else "RGB")   # alpha is ignored
    if icc:
        if _SRGB is None:
            _SRGB = ImageCms.createProfile("sRGB")
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
    else:
        out = im.convert("RGB")
    return np.asarray(out, np.uint8)


# ---------------------------------------------------------------------------------------------
# Test card
# ---------------------------------------------------------------------------------------------

PATCH_NAMES = ("red", "green", "blue", "cyan", "magenta", "yellow")
PATCH_RGB = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0),
}
# The same hues as solid inks (two-ink overprints for red, green, blue): naive rendering == PATCH_RGB.
PATCH_CMYK = {name: tuple(255 - v for v in rgb) + (0,) for name, rgb in PATCH_RGB.items()}
# Mid-saturated versions (192 for full, 64 for none). Fully saturated patches of a wide-gamut space
# clip to the same sRGB primaries whether or not a product honours the profile; these do not.
MUTED_RGB = {"muted_" + name: tuple(192 if v else 64 for v in rgb) for name, rgb in PATCH_RGB.items()}
MUTED_CMYK = {name: tuple(255 - v for v in rgb) + (0,) for name, rgb in MUTED_RGB.items()}
GREY_LEVELS = tuple(int(v) for v in np.round(np.linspace(0, 255, 8)))   # 0, 36, 73, ..., 255


def saturated_patches(patch: int = 32, mode: str = "RGB") -> np.ndarray:
    """A test card, shape (patch * 5 // 2, patch * 6, 3 or 4), uint8.

    Row 1 (patch high): six flat patches red, green, blue, cyan, magenta, yellow at full value of
    the source space. Row 2 (patch high): the same hues mid-saturated (:data:`MUTED_RGB`, e.g.
    muted_red = (192, 64, 64)). Row 3 (patch // 2 high): an 8-step grey ramp :data:`GREY_LEVELS`,
    black on the left. ``mode`` "RGB" gives HxWx3; "CMYK" gives HxWx4 ink values whose naive
    rendering ``R = 255 (1-C)(1-K)`` is the RGB card: solid inks (red = M+Y), muted inks
    (muted_red = (63, 191, 191, 0)) and a K-only ramp (255 - grey). Read it back with
    :func:`patch_means` (or :func:`patch_centres`).
    """
    if mode not in ("RGB", "CMYK"):
        raise ValueError("mode must be 'RGB' or 'CMYK'")
    n = 3 if mode == "RGB" else 4
    full, muted = (PATCH_RGB, MUTED_RGB) if mode == "RGB" else (PATCH_CMYK, MUTED_CMYK)
    card = np.zeros((patch * 5 // 2, patch * 6, n), np.uint8)
    for i, name in enumerate(PATCH_NAMES):
        card[:patch, i * patch:(i + 1) * patch] = full[name]
        card[patch:2 * patch, i * patch:(i + 1) * patch] = muted["muted_" + name]
    for (x0, x1), v in zip(_ramp_columns(patch), GREY_LEVELS):
        if mode == "RGB":
            card[2 * patch:, x0:x1] = v
        else:
            card[2 * patch:, x0:x1, 3] = 255 - v
    return card


def _ramp_columns(patch: int) -> list[tuple[int, int]]:
    w, steps = patch * 6, len(GREY_LEVELS)
    edges = [round(i * w / steps) for i in range(steps + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _patch_boxes(patch: int) -> dict[str, tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every named region of the card."""
    boxes = {}
    for i, name in enumerate(PATCH_NAMES):
        boxes[name] = (0, patch, i * patch, (i + 1) * patch)
        boxes["muted_" + name] = (patch, 2 * patch, i * patch, (i + 1) * patch)
    for i, (x0, x1) in enumerate(_ramp_columns(patch)):
        boxes[f"grey{i}"] = (2 * patch, patch * 5 // 2, x0, x1)
    return boxes


def patch_centres(patch: int = 32) -> dict[str, tuple[int, int]]:
    """(y, x) of the centre of each named region: the six hues, "muted_<hue>", "grey0".."grey7"."""
    return {name: ((y0 + y1) // 2, (x0 + x1) // 2) for name, (y0, y1, x0, x1) in _patch_boxes(patch).items()}


def patch_means(image: np.ndarray, patch: int = 32) -> dict[str, np.ndarray]:
    """Mean colour (float, per channel) of the middle half of each named region of a decoded card.

    Only the middle half (each way) is averaged, to skip JPEG ringing at the borders. The image must
    be at the card's size (decode it, or scale it back, before measuring).
    """
    img = np.asarray(image, float)
    if img.ndim == 2:
        img = img[..., None]
    out = {}
    for name, (y0, y1, x0, x1) in _patch_boxes(patch).items():
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        region = img[y0 + dy:y1 - dy, x0 + dx:x1 - dx]
        out[name] = region.reshape(-1, img.shape[2]).mean(0)
    return out
