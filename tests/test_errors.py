"""Every error of the core actions (spec §7 EC table; watermark ECs are in test_watermark.py, plus
0017-00000288), as a client sees it: status, XML Code / Message / EC / RequestId, x-oss-ec and
x-oss-request-id headers, Content-Type. Also HEAD errors, corrupt sources and "errors before any I/O".

The ECs of issue 18 come from OSS's EC pages (help.aliyun.com, oss/user-guide/0040-000002xx): a
second value on a single-value action (203), format, auto-orient, bright and sharpen without a value
(207, 214, 245, 279), auto-orient and bright out of range (215, 246), watermark order (269), the
rotation limit (006) and indexcrop's y_0 (230, where y_abc is 224). OSS's pages give no message text;
where the spec or a real answer does, the table asserts it.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from typing import NamedTuple

import pytest
from PIL import Image

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.errors import OssError
from imgmiddleware.ops import ACTIONS
from imgmiddleware.origins.static import static_app
from imgmiddleware.process.parser import parse
from werkzeug.test import Client

from .conftest import FIXTURES, closed, fixture_bytes, get, make_client, size_of

# Every core EC of §7: all 0040-* except the watermark ones (025, 027, 250-278, 373: see
# test_watermark.py), 031 (source protection) and 0040-00000601 (style read), plus 0017-00000288.
IN_SCOPE_ECS = {
    "0040-00000005", "0040-00000006", "0040-00000007", "0040-00000009",
    "0040-00000010", "0040-00000011", "0040-00000012", "0040-00000013", "0040-00000014",
    "0040-00000017", "0040-00000018", "0040-00000019", "0040-00000020", "0040-00000021",
    "0040-00000026", "0040-00000209", "0040-00000211", "0040-00000258", "0040-00000259",
    "0040-00000203", "0040-00000206", "0040-00000207", "0040-00000214", "0040-00000215",
    "0040-00000245", "0040-00000246", "0040-00000269", "0040-00000279", "0040-00000212", "0040-00000213", "0040-00000216", "0040-00000217",
    "0040-00000224", "0040-00000225", "0040-00000226", "0040-00000229", "0040-00000230",
    "0040-00000233", "0040-00000237", "0040-00000241", "0040-00000242",
    "0040-00000280", "0040-00000281", "0040-00000282",
    "0040-00000307", "0040-00000308", "0040-00000309", "0040-00000310",
    "0040-00000311", "0040-00000312", "0040-00000314", "0040-00000315", "0040-00000317",
    "0040-00000318", "0040-00000319", "0040-00000321", "0040-00000322",
    "0017-00000288",
}


def invalid(value: str, key: str) -> str:
    """OSS's wording for a rejected parameter value (spec §7)."""
    return f"The value: {value} of parameter: {key} is invalid."


class Case(NamedTuple):
    process: str
    status: int
    code: str
    ec: str | None
    message: str | None = None       # exact text where the spec gives it; else only "non-empty"
    key: str = "example.jpg"
    overrides: dict = {}


IA, BR, MA = "InvalidArgument", "BadRequest", "MissingArgument"

CASES = {
    # --- §10 #19 - #27, exactly ---
    "v19-resize-m": Case("image/resize,w_100,m_abc", 400, IA, "0040-00000311", invalid("abc", "m")),
    "v20-resize-w0": Case("image/resize,w_0", 400, IA, "0040-00000312", invalid("0", "w")),
    "v20-resize-p0": Case("image/resize,p_0", 400, IA, "0040-00000317", invalid("0", "p")),
    "v20-resize-s0": Case("image/resize,s_0", 400, IA, "0040-00000315", invalid("0", "s")),
    "v20-resize-limit3": Case("image/resize,w_100,limit_3", 400, IA, "0040-00000319", invalid("3", "limit")),
    "v20-resize-color8": Case("image/resize,m_pad,w_100,h_100,color_AABBCCDD", 400, IA, "0040-00000318",
                              invalid("AABBCCDD", "color")),
    "v21-resize-bare": Case("image/resize", 400, MA, "0040-00000322"),
    "v21-resize-w0h0": Case("image/resize,w_0,h_0", 400, IA, "0040-00000321"),
    "v22-resize-5000": Case("image/resize,m_fixed,w_5000,h_5000", 400, IA, "0040-00000007"),
    "v23-rotate-400": Case("image/rotate,400", 400, IA, "0040-00000217", invalid("400", "rotate")),
    "v23-rotate-bare": Case("image/rotate", 400, MA, "0040-00000216"),
    "v24-slim": Case("image/slim,1", 400, IA, "0040-00000213"),
    "v24-image-empty": Case("image/", 400, IA, "0040-00000212"),
    "v25-format-dng": Case("image/format,dng", 400, IA, "0040-00000206", invalid("dng", "format")),
    "v26-indexcrop-x0": Case("image/indexcrop,x_0,i_0", 400, IA, "0040-00000230", invalid("0", "x")),
    "v27-sharpen-10": Case("image/sharpen,10", 400, IA, "0040-00000280", invalid("10", "sharpen")),
    "v27-interlace-2": Case("image/interlace,2", 400, IA, "0040-00000282", invalid("2", "interlace")),
    "v27-quality-Q200": Case("image/quality,Q_200", 400, IA, "0040-00000308", invalid("200", "Q")),

    # --- resize 311-319, 321, 322, 007 ---
    "resize-m-case": Case("image/resize,w_100,m_LFIT", 400, IA, "0040-00000311", invalid("LFIT", "m")),
    "resize-w-big": Case("image/resize,w_16385", 400, IA, "0040-00000312", invalid("16385", "w")),
    "resize-w-abc": Case("image/resize,w_abc", 400, IA, "0040-00000312", invalid("abc", "w")),
    "resize-h-neg": Case("image/resize,h_-1", 400, IA, "0040-00000313", invalid("-1", "h")),   # [INF] 313
    "resize-l0": Case("image/resize,l_0", 400, IA, "0040-00000314", invalid("0", "l")),
    "resize-l-big": Case("image/resize,l_16385", 400, IA, "0040-00000314", invalid("16385", "l")),
    "resize-s-abc": Case("image/resize,s_abc", 400, IA, "0040-00000315", invalid("abc", "s")),
    "resize-p-big": Case("image/resize,p_1001", 400, IA, "0040-00000317", invalid("1001", "p")),
    "resize-color-short": Case("image/resize,m_pad,w_10,h_10,color_fff", 400, IA, "0040-00000318",
                               invalid("fff", "color")),
    "resize-color-hash": Case("image/resize,m_pad,w_10,h_10,color_#ff0000", 400, IA, "0040-00000318",
                              invalid("#ff0000", "color")),
    "resize-limit-neg": Case("image/resize,w_100,limit_-1", 400, IA, "0040-00000319", invalid("-1", "limit")),
    "resize-mode-only": Case("image/resize,m_fixed", 400, MA, "0040-00000322"),
    "resize-box-too-big": Case("image/resize,w_16384,h_16384", 400, IA, "0040-00000007"),
    "resize-ls-too-big": Case("image/resize,m_fixed,l_5000,s_5000", 400, IA, "0040-00000007"),
    # Only the image's own aspect makes this too big (16384 x 10937): found at plan time, before decoding.
    "resize-w-enlarged-too-big": Case("image/resize,w_16384,limit_0", 400, IA, "0040-00000007"),

    # --- rotate ---
    "rotate-abc": Case("image/rotate,abc", 400, IA, "0040-00000217", invalid("abc", "rotate")),
    "rotate-neg": Case("image/rotate,-90", 400, IA, "0040-00000217", invalid("-90", "rotate")),

    # --- crop 225/226 (227/228 by sequence [INF]) and the out-of-image start ---
    "crop-w-abc": Case("image/crop,w_abc,h_100", 400, IA, "0040-00000225", invalid("abc", "w")),
    "crop-w-neg": Case("image/crop,w_-1", 400, IA, "0040-00000225", invalid("-1", "w")),
    "crop-h-abc": Case("image/crop,w_100,h_abc", 400, IA, "0040-00000226", invalid("abc", "h")),
    "crop-h-neg": Case("image/crop,h_-10", 400, IA, "0040-00000226", invalid("-10", "h")),
    "crop-x-neg": Case("image/crop,x_-1", 400, IA, "0040-00000227", invalid("-1", "x")),
    "crop-y-abc": Case("image/crop,y_abc", 400, IA, "0040-00000228", invalid("abc", "y")),
    "crop-x-outside": Case("image/crop,x_400,y_0", 400, BR, None, "Advance cut's position is out of image."),
    "crop-y-outside": Case("image/crop,w_10,h_10,y_267", 400, BR, None,
                           "Advance cut's position is out of image."),
    "crop-after-resize-outside": Case("image/resize,w_100/crop,x_100", 400, BR, None,
                                      "Advance cut's position is out of image."),

    # --- indexcrop 224 / 229 / 230 ---
    "indexcrop-y-abc": Case("image/indexcrop,y_abc", 400, IA, "0040-00000224", invalid("abc", "y")),
    "indexcrop-i-abc": Case("image/indexcrop,x_100,i_abc", 400, IA, "0040-00000229", invalid("abc", "i")),
    "indexcrop-i-neg": Case("image/indexcrop,y_100,i_-1", 400, IA, "0040-00000229", invalid("-1", "i")),
    "indexcrop-x-abc": Case("image/indexcrop,x_abc", 400, IA, "0040-00000230", invalid("abc", "x")),
    "indexcrop-no-axis": Case("image/indexcrop,i_1", 400, IA, "0040-00000230"),

    # --- circle 233, rounded-corners 237 ---
    "circle-r0": Case("image/circle,r_0", 400, IA, "0040-00000233", invalid("0", "r")),
    "circle-r-big": Case("image/circle,r_4097", 400, IA, "0040-00000233", invalid("4097", "r")),
    "circle-bare": Case("image/circle", 400, MA, "0040-00000233"),
    "rounded-r0": Case("image/rounded-corners,r_0", 400, IA, "0040-00000237", invalid("0", "r")),
    "rounded-r-abc": Case("image/rounded-corners,r_abc", 400, IA, "0040-00000237", invalid("abc", "r")),
    "rounded-r-big": Case("image/rounded-corners,r_4097", 400, IA, "0040-00000237", invalid("4097", "r")),

    # --- blur 241 / 242 ---
    "blur-r0": Case("image/blur,r_0,s_2", 400, IA, "0040-00000241", invalid("0", "r")),
    "blur-r-big": Case("image/blur,r_51,s_2", 400, IA, "0040-00000241", invalid("51", "r")),
    "blur-s0": Case("image/blur,r_3,s_0", 400, IA, "0040-00000242", invalid("0", "s")),
    "blur-s-big": Case("image/blur,r_3,s_51", 400, IA, "0040-00000242", invalid("51", "s")),

    # --- sharpen 280, interlace 281 / 282 ---
    "sharpen-400": Case("image/sharpen,400", 400, IA, "0040-00000280", invalid("400", "sharpen")),
    "sharpen-49": Case("image/sharpen,49", 400, IA, "0040-00000280", invalid("49", "sharpen")),
    "interlace-bare": Case("image/interlace", 400, MA, "0040-00000281"),
    "interlace-abc": Case("image/interlace,abc", 400, IA, "0040-00000282", invalid("abc", "interlace")),

    # --- quality 307-310 ---
    "quality-bare": Case("image/quality", 400, MA, "0040-00000307"),
    "quality-Q0": Case("image/quality,Q_0", 400, IA, "0040-00000308", invalid("0", "Q")),
    "quality-q200": Case("image/quality,q_200", 400, IA, "0040-00000309", invalid("200", "q")),
    "quality-q0": Case("image/quality,q_0", 400, IA, "0040-00000309", invalid("0", "q")),
    "quality-200": Case("image/quality,200", 400, IA, "0040-00000310", invalid("200", "quality")),
    "quality-abc": Case("image/quality,abc", 400, IA, "0040-00000310", invalid("abc", "quality")),

    # --- format 206 ---
    "format-jpeg": Case("image/format,jpeg", 400, IA, "0040-00000206", invalid("jpeg", "format")),
    "format-upper": Case("image/format,PNG", 400, IA, "0040-00000206", invalid("PNG", "format")),
    "format-bare": Case("image/format", 400, MA, "0040-00000207"),
    "format-bare-comma": Case("image/format,", 400, MA, "0040-00000207"),

    # --- issue 18: OSS's EC pages for a second value (203) and for auto-orient, bright, sharpen ---
    "many-rotate": Case("image/rotate,90,200,300", 400, IA, "0040-00000203", invalid("90,200,300", "rotate")),
    "many-auto-orient": Case("image/auto-orient,1,2", 400, IA, "0040-00000203", invalid("1,2", "auto-orient")),
    "many-bright": Case("image/bright,23,32", 400, IA, "0040-00000203", invalid("23,32", "bright")),
    "many-sharpen": Case("image/sharpen,xx,22", 400, IA, "0040-00000203", invalid("xx,22", "sharpen")),
    "many-interlace": Case("image/interlace,xx,22", 400, IA, "0040-00000203", invalid("xx,22", "interlace")),
    "many-rotate-later": Case("image/resize,w_100/rotate,90,90", 400, IA, "0040-00000203"),
    "auto-orient-bare": Case("image/resize,w_100/auto-orient", 400, MA, "0040-00000214"),
    "auto-orient-abc": Case("image/resize,w_100/auto-orient,abc", 400, IA, "0040-00000215",
                            invalid("abc", "auto-orient")),
    "auto-orient-10": Case("image/resize,w_100/auto-orient,10", 400, IA, "0040-00000215",
                           invalid("10", "auto-orient")),
    "bright-bare": Case("image/bright", 400, MA, "0040-00000245"),
    "bright-abc": Case("image/bright,abc", 400, IA, "0040-00000246", invalid("abc", "bright")),
    "bright-200": Case("image/bright,200", 400, IA, "0040-00000246", invalid("200", "bright")),
    "bright-low": Case("image/bright,-101", 400, IA, "0040-00000246", invalid("-101", "bright")),
    "sharpen-bare": Case("image/sharpen", 400, MA, "0040-00000279"),
    "watermark-order-2": Case("image/watermark,text_SGVsbG8gV29ybGQ,image_ZXhhbXBsZS5qcGc,order_2", 400, IA,
                              "0040-00000269", invalid("2", "order")),
    "indexcrop-y0": Case("image/indexcrop,y_0", 400, IA, "0040-00000230", invalid("0", "y")),
    # The rotation limit: OSS's words (a real answer), its EC page 0040-00000006.
    "rotate-over-limit": Case("image/rotate,90", 400, BR, "0040-00000006",
                              "Picture exceed the maximum allowable rotation range.",
                              overrides={"max_rotate_side": 300}),
    "auto-orient-over-limit": Case("image/resize,w_100", 400, BR, "0040-00000006",
                                   "Picture exceed the maximum allowable rotation range.",
                                   key="f.jpg", overrides={"max_rotate_side": 300}),

    # --- ECs from OSS's pages found late in issue 18 (decision 185) ---
    "crop-gravity": Case("image/crop,w_100,h_100,g_fac", 400, IA, "0040-00000209", invalid("fac", "g")),
    "too-many-pipes": Case("|".join(f"image/resize,w_{w}" for w in (100, 90, 80, 70, 60, 50))
                           + "|image/format,webp", 400, "TooManyPipe", "0040-00000211"),
    "watermark-text-no-value": Case("image/watermark,text", 400, MA, "0040-00000258"),
    "watermark-text-empty": Case("image/watermark,text_", 400, MA, "0040-00000258"),
    "watermark-text-too-long": Case("image/watermark,text_" + "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY3ODkw"
                                    * 6 + "Cg", 400, IA, "0040-00000259"),
    "watermark-four-images": Case("image/" + "/".join(
        f"watermark,image_{key}" for key in ("cDEucG5n", "cDIucG5n", "cDMucG5n", "cDQucG5n")),
        400, "WatermarkError", "0040-00000026"),

    # --- the language: 212 / 213 / 0017-00000288, styles, saveas ---
    "image-slashes": Case("image//", 400, IA, "0040-00000212"),
    "action-case": Case("image/Resize,w_100", 400, IA, "0040-00000213"),
    "action-later": Case("image/resize,w_100/gray", 400, IA, "0040-00000213"),
    "too-long": Case("image/resize,w_100", 400, IA, "0017-00000288", overrides={"max_process_length": 17}),
    "too-long-default": Case("image/" + "/".join(["rotate,90"] * 500), 400, IA, "0017-00000288"),
    "style-missing": Case("style/nosuch", 404, "NoSuchStyle", None),
    "saveas-in-get": Case("image/resize,w_100|sys/saveas,o_ZGVzdC5qcGc", 400, IA, None),

    # --- the source: unsupported / corrupt (005), too large (009) ---
    "source-text-as-jpg": Case("image/resize,w_100", 400, BR, "0040-00000005", key="text.jpg"),
    "source-text-info": Case("image/info", 400, BR, "0040-00000005", key="text.jpg"),
    "source-truncated-resize": Case("image/resize,w_100", 400, BR, "0040-00000005", key="truncated.jpg"),
    "source-truncated-png": Case("image/format,png", 400, BR, "0040-00000005", key="truncated.jpg"),
    "source-truncated-rotate": Case("image/rotate,90", 400, BR, "0040-00000005", key="truncated.jpg"),
    "source-header-only": Case("image/resize,w_100", 400, BR, "0040-00000005", key="header-only.jpg"),
    "source-empty": Case("image/resize,w_100", 400, BR, "0040-00000005", key="empty.jpg"),
    "source-bytes": Case("image/resize,w_100", 400, "ImageTooLarge", "0040-00000009",
                         overrides={"max_source_bytes": 20_000}),
    # Sizes (process/limits.py, from OSS's EC pages): with a resize, 009 (its page's example) ...
    "source-side": Case("image/resize,w_100", 400, "ImageTooLarge", "0040-00000009",
                        overrides={"max_source_side": 399}),
    "source-pixels-resize": Case("image/resize,w_100", 400, "ImageTooLarge", "0040-00000009",
                                 overrides={"max_source_pixels": 400 * 267 - 1}),
    # ... without one, the decoder's: 012 for pixels, a side by format (JPEG 019, BMP 017, HEIC 013,
    # others 012) ...
    "source-pixels": Case("image/info", 400, "ImageTooLarge", "0040-00000012",
                          overrides={"max_source_pixels": 400 * 267 - 1}),
    "source-pixels-format": Case("image/format,png", 400, "ImageTooLarge", "0040-00000012",
                                 overrides={"max_source_pixels": 400 * 267 - 1}),
    "source-side-jpeg": Case("image/format,png", 400, "ImageTooLarge", "0040-00000019",
                             overrides={"max_source_side": 399}),
    "source-side-bmp": Case("image/rotate,90", 400, "ImageTooLarge", "0040-00000017",
                            key="example.bmp", overrides={"max_source_side": 399}),
    "source-side-heic": Case("image/format,jpg", 400, "ImageTooLarge", "0040-00000013",
                             key="example.heic", overrides={"max_source_side": 399}),
    "source-side-png": Case("image/format,jpg", 400, "ImageTooLarge", "0040-00000012",
                            key="example.png", overrides={"max_source_side": 399}),
    # ... and decoders with their own, lower side limit, with a resize or not: TIFF 16,384, AVIF 10,000.
    "tiff-side": Case("image/resize,w_100", 400, "ImageTooLarge", "0040-00000018", key="wide.tif"),
    "avif-side": Case("image/format,jpg", 400, "ImageTooLarge", "0040-00000014", key="wide.avif"),
    # Outputs an encoder cannot write: WebP over 16,383 px a side, AVIF over 4,096 x 2,304.
    "webp-output-side": Case("image/format,webp", 400, "ImageTooLarge", "0040-00000011",
                             key="wide.png"),
    "avif-output-size": Case("image/resize,w_4096,limit_0/format,avif", 400, "ImageTooLarge", "0040-00000014"),
    "avif-output-portrait": Case("image/rotate,90/resize,h_4097,limit_0/format,avif", 400, "ImageTooLarge",
                                 "0040-00000014"),
    # A damaged WebP, HEIC or AVIF: the format's own decode EC.
    "source-damaged-webp": Case("image/resize,w_100", 400, BR, "0040-00000010", key="damaged.webp"),
    "source-damaged-heic": Case("image/resize,w_100", 400, BR, "0040-00000020", key="damaged.heic"),
    "source-damaged-avif": Case("image/format,jpg", 400, BR, "0040-00000021", key="damaged.avif"),
}


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """example.jpg plus sources that are not images or are broken."""
    root = tmp_path_factory.mktemp("bucket")
    jpeg = fixture_bytes("example.jpg")
    (root / "example.jpg").write_bytes(jpeg)
    (root / "f.jpg").write_bytes(fixture_bytes("f.jpg"))          # EXIF Orientation 7
    (root / "text.jpg").write_bytes(b"This is a text file that was renamed to .jpg.\n" * 20)
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "header-only.jpg").write_bytes(jpeg[:1000])      # headers parse, no scan data
    (root / "empty.jpg").write_bytes(b"")
    photo = Image.open(io.BytesIO(jpeg))
    for name, fmt in (("example.png", "PNG"), ("example.bmp", "BMP"), ("example.heic", "HEIF"),
                      ("damaged.webp", "WEBP"), ("damaged.heic", "HEIF"), ("damaged.avif", "AVIF")):
        out = io.BytesIO()
        photo.save(out, fmt)
        body = out.getvalue()
        (root / name).write_bytes(body[: len(body) // 2] if name.startswith("damaged") else body)
    strip = Image.new("L", (16_385, 2), 128)                # one pixel over TIFF's and WebP's sides
    strip.save(root / "wide.tif", "TIFF")
    strip.save(root / "wide.png", "PNG")
    Image.new("RGB", (10_001, 2), (90, 120, 150)).save(root / "wide.avif", "AVIF")
    return root


def xml_fields(response) -> dict[str, str]:
    root = ET.fromstring(response.data)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def assert_oss_error(response, status: int, code: str, ec: str | None, message: str | None) -> dict:
    assert response.status_code == status, response.data
    assert response.headers["Content-Type"] == "application/xml"
    assert response.headers["Content-Length"] == str(len(response.data))
    fields = xml_fields(response)
    assert fields["Code"] == code
    if message is None:
        assert fields["Message"].strip()
    else:
        assert fields["Message"] == message
    request_id = response.headers["x-oss-request-id"]
    assert fields["RequestId"] == request_id
    assert len(request_id) == 24 and request_id.isalnum()
    if ec is None:
        assert "EC" not in fields
        assert "x-oss-ec" not in response.headers
    else:
        assert fields["EC"] == ec
        assert response.headers["x-oss-ec"] == ec
        assert fields["RecommendDoc"].endswith(ec)
    return fields


# A source refused for its size is never read; the linter around the wrapped app notices the unread body.
@pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes sent")
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_error_answer(bucket, case: Case):
    client = make_client(bucket, **case.overrides)
    response = get(client, case.key, case.process)
    assert_oss_error(response, case.status, case.code, case.ec, case.message)


def test_table_covers_every_in_scope_ec():
    covered = {case.ec for case in CASES.values()}
    assert IN_SCOPE_ECS <= covered, sorted(IN_SCOPE_ECS - covered)


def test_every_ec_declared_by_an_action_is_reachable():
    """Each parameter EC in the action tables comes back for a garbage value of that parameter."""
    checked = 0
    for name, spec in ACTIONS.items():
        params = [(p, f"image/{name},{p.key}_x!") for p in spec.params]
        if spec.positional is not None:
            params.append((spec.positional, f"image/{name},x!"))
        for param, process in params:
            if param.ec is None:
                continue
            with pytest.raises(OssError) as info:
                parse(process, Config())
            assert (info.value.status, info.value.ec) == (400, param.ec), process
            checked += 1
        if spec.required and spec.missing_ec:
            with pytest.raises(OssError) as info:
                parse(f"image/{name}", Config())
            assert info.value.ec == spec.missing_ec, name
    assert checked >= 25


@pytest.mark.parametrize("process", ["image/contrast,10,20", "image/format,png,jpg", "image/quality,90,80",
                                     "image/resize,w_100/contrast,-10,abc"])
def test_extra_values_outside_ec_203s_list_are_ignored(client, process):
    """OSS's page for 0040-00000203 names auto-orient, rotate, bright, sharpen and interlace; the
    other single-value actions keep their first value (docs/COMPATIBILITY.md decision 140)."""
    assert get(client, "example.jpg", process).status_code == 200


def test_many_values_are_counted_before_the_value_is_read():
    """interlace,xx,22 is 203, not 282: the page's own example."""
    for name, spec in ACTIONS.items():
        if spec.many_values_ec:
            with pytest.raises(OssError) as info:
                parse(f"image/{name},x!,y!", Config())
            assert info.value.ec == spec.many_values_ec == "0040-00000203", name
    assert sorted(n for n, s in ACTIONS.items() if s.many_values_ec) == \
        ["auto-orient", "bright", "interlace", "rotate", "sharpen"]


def test_jpeg_alias_is_accepted_only_behind_the_flag():
    client = make_client(accept_jpeg_alias=True)
    response = get(client, "example.jpg", "image/format,jpeg")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"


def test_each_error_has_its_own_request_id(client):
    first = get(client, "example.jpg", "image/rotate,400")
    second = get(client, "example.jpg", "image/rotate,400")
    assert first.headers["x-oss-request-id"] != second.headers["x-oss-request-id"]


def test_host_id_is_the_request_host(client):
    response = get(client, "example.jpg", "image/rotate,400", headers={"Host": "bucket.example.com"})
    assert xml_fields(response)["HostId"] == "bucket.example.com"


# --- HEAD -------------------------------------------------------------------------------------------

HEAD_CASES = ["v23-rotate-400", "v24-slim", "style-missing", "source-truncated-resize", "too-long",
              "crop-x-outside"]


@pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes sent")
@pytest.mark.parametrize("name", HEAD_CASES)
def test_head_error_has_the_get_status_and_headers_and_no_body(bucket, name):
    case = CASES[name]
    client = make_client(bucket, **case.overrides)
    got = get(client, case.key, case.process)
    head = get(client, case.key, case.process, method="HEAD")
    assert head.status_code == got.status_code == case.status
    assert head.data == b""
    assert got.data != b""
    ignore = {"x-oss-request-id"}
    as_dict = lambda r: {k.lower(): v for k, v in r.headers.items() if k.lower() not in ignore}  # noqa: E731
    assert as_dict(head) == as_dict(got)
    assert head.headers["Content-Type"] == "application/xml"
    assert head.headers.get("x-oss-ec") == case.ec
    assert head.headers["x-oss-request-id"]


# --- errors happen before any I/O ---------------------------------------------------------------------

class CountingApp:
    """A wrapped app that records whether it was asked for anything."""

    def __init__(self, root=FIXTURES) -> None:
        self.app = static_app(root)
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.app(environ, start_response)


@pytest.mark.parametrize("name", ["v23-rotate-400", "v21-resize-bare", "v24-slim", "v24-image-empty",
                                  "v22-resize-5000", "crop-w-abc", "too-long-default", "saveas-in-get"])
def test_bad_process_string_on_a_missing_object_is_400_not_404(name):
    case = CASES[name]
    wrapped = CountingApp()
    client = Client(ImageMiddleware(wrapped, **case.overrides))
    response = get(client, "no/such/object.jpg", case.process)
    assert_oss_error(response, 400, case.code, case.ec, case.message)
    assert wrapped.calls == 0       # the object was never asked for


def test_missing_style_on_a_missing_object_is_no_such_style():
    wrapped = CountingApp()
    response = get(Client(ImageMiddleware(wrapped)), "no-such.jpg", "style/nosuch")
    assert (response.status_code, xml_fields(response)["Code"]) == (404, "NoSuchStyle")
    assert wrapped.calls == 0


@pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes sent")   # the HEAD
def test_valid_process_string_on_a_missing_object_is_no_such_key(client):
    """OSS's EC page 0040-00000024: processing a missing object is NoSuchKey with IMG's own EC, where
    a plain GET of it keeps 0026-00000001 (both from the app's one answer)."""
    response = get(client, "no-such.jpg", "image/resize,w_100")
    fields = assert_oss_error(response, 404, "NoSuchKey", "0040-00000024", "The specified key does not exist.")
    assert fields["Key"] == "no-such.jpg"
    plain = assert_oss_error(get(client, "no-such.jpg"), 404, "NoSuchKey", "0026-00000001",
                             "The specified key does not exist.")
    assert plain["Key"] == "no-such.jpg"
    head = get(client, "no-such.jpg", "image/resize,w_100", method="HEAD")
    assert (head.status_code, head.headers["x-oss-ec"], head.data) == (404, "0040-00000024", b"")


def test_bad_process_string_does_not_read_the_source(client):
    # The same object answers normally once the string is fixed: the error was the string's alone.
    assert get(client, "example.jpg", "image/rotate,400").status_code == 400
    ok = get(client, "example.jpg", "image/rotate,90")
    assert ok.status_code == 200
    assert size_of(ok.data) == (267, 400)


def test_corrupt_sources_never_answer_500(bucket):
    client = make_client(bucket)
    for key in ("text.jpg", "truncated.jpg", "header-only.jpg", "empty.jpg"):
        for process in ("image/resize,w_100", "image/crop,w_10,h_10", "image/circle,r_50",
                        "image/blur,r_3,s_2", "image/average-hue", "image/format,webp"):
            response = closed(client.get("/" + key, query_string={"x-oss-process": process}))
            assert response.status_code == 400, (key, process, response.status_code)
            assert xml_fields(response)["Code"] == "BadRequest"
            assert response.headers["x-oss-ec"] == "0040-00000005"


@pytest.mark.parametrize("key, process, size", [
    ("example.jpg", "image/resize,m_fixed,w_4096,h_2304,limit_0/format,avif", (4096, 2304)),
    ("example.jpg", "image/resize,m_fixed,w_2304,h_4096,limit_0/format,avif", (2304, 4096)),
    ("wide.png", "image/crop,w_16383,h_2/format,webp", (16383, 2)),
])
def test_encoder_limits_let_the_largest_output_through(bucket, key, process, size):
    """The output limits are the encoders' own bounds, inclusive: at the bound the image comes out."""
    response = get(make_client(bucket), key, process)
    assert response.status_code == 200, response.data
    assert size_of(response.data) == size


@pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes sent")
@pytest.mark.parametrize("key, process, ec", [
    ("example.jpg", "image/info", "0040-00000012"),
    ("example.jpg", "image/resize,w_100", "0040-00000009"),
    ("example.jpg", "image/resize,w_100/format,png", "0040-00000009"),
    ("wide.tif", "image/info", "0040-00000018"),
])
def test_which_size_ec_depends_on_the_pipeline_not_the_order(bucket, key, process, ec):
    """A resize anywhere in the pipeline gives a source over the limits the resize EC (009); a
    decoder's own lower limit (TIFF, AVIF) gives its EC even to image/info."""
    client = make_client(bucket, max_source_pixels=400 * 267 - 1)
    assert_oss_error(get(client, key, process), 400, "ImageTooLarge", ec, None)
