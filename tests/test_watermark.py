"""watermark (spec §5.14) through the real middleware: placement, opacity, tiling, text, image marks.

Everything is judged by pixels: which pixels a watermark changed (compared with the same request
without it, PNG output so JPEG noise cannot blur the picture), where the box of changed pixels lies,
what colour the changed pixels have. Image marks are fetched through the wrapped app, so the key tests
wrap that app in a recorder to see every path it was asked for. Every watermark EC of §7 has a
bad-input case at the end, then the canonical (cache-key) form.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.imaging.fonts import DEFAULT_FONT, font_table_for
from imgmiddleware.imaging.text import text_mask

FONT_TABLE = font_table_for(Config())     # OSS font name -> the faces that draw it here


def direct_mask(text: str, font: str, size: int):
    """The text drawn directly by the renderer, as the watermark op draws it for font ``font``."""
    runs, missing = FONT_TABLE.runs(font, text)
    assert not missing
    return text_mask(runs, size)
from imgmiddleware.origins.static import static_app
from imgmiddleware.process import parse

from .conftest import FIXTURES, correlation, decode, get, ok, oss_error, psnr, save_image, size_of, source

# A missing mark's 404 body is closed unread (legal WSGI); werkzeug's lint flags the short read.
pytestmark = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")

RED = (0, 0, 255)        # BGR
GREY = 128
SEED = "image/watermark,text_SGVsbG8g5Zu-54mH5pyN5YqhIQ"    # §10 #6: "Hello 图片服务!"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def image_param(key: str, process: str | None = None) -> str:
    return "image_" + b64(key if process is None else f"{key}?x-oss-process={process}")


def solid(width: int, height: int, bgr=RED, alpha: int = 255) -> np.ndarray:
    img = np.empty((height, width, 4), np.uint8)
    img[:] = (*bgr, alpha)
    return img


# ---------------------------------------------------------------------------------------------------
# The bucket: plain bases and marks, and a secret one level above the served root.

@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("wm")
    root = top / "bucket"
    root.mkdir()
    for name in ("example.jpg", "example.gif"):
        shutil.copy(FIXTURES / name, root / name)
    save_image(root, "grey.png", np.full((150, 200, 3), GREY, np.uint8))     # 200x150 base
    save_image(root, "white.png", np.full((200, 400, 3), 255, np.uint8))     # 400x200 base
    save_image(root, "sq100.png", np.full((100, 100, 3), GREY, np.uint8))
    save_image(root, "sq200.png", np.full((200, 200, 3), GREY, np.uint8))
    save_image(root, "red.png", solid(30, 20))                               # opaque 30x20
    save_image(root, "red60.png", solid(60, 40))                             # opaque 60x40
    save_image(root, "square50.png", solid(50, 50))
    holed = solid(60, 40)
    holed[15:25, 20:40, 3] = 0                                               # a transparent hole
    save_image(root, "holed.png", holed)
    half = solid(60, 40)
    half[:, 30:, 3] = 128                                                    # right half: half alpha
    save_image(root, "half.png", half)
    save_image(root, "blue.png", solid(30, 20, (255, 0, 0)))
    save_image(root, "green.png", solid(30, 20, (0, 255, 0)))
    save_image(root, "yellow.png", solid(30, 20, (0, 255, 255)))
    save_image(root, "red.jpg", solid(30, 20)[:, :, :3])
    shutil.copy(FIXTURES / "example.gif", root / "mark.gif")
    (root / "notes.txt").write_text("this is not an image\n")
    save_image(top, "secret.png", solid(30, 20, (0, 255, 0)))               # outside the root
    return root


class Recorder:
    """Wraps the origin app and remembers (PATH_INFO, Authorization) of every request it gets."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, environ, start_response):
        self.seen.append((environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION")))
        return self.app(environ, start_response)

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


def make(root: Path, **overrides) -> tuple[Client, Recorder]:
    recorder = Recorder(LintMiddleware(static_app(root)))
    return Client(LintMiddleware(ImageMiddleware(recorder, **overrides))), recorder


@pytest.fixture
def client(bucket) -> Client:
    return make(bucket)[0]


def render(client: Client, key: str, process: str) -> np.ndarray:
    """``process`` on ``key`` as lossless PNG pixels."""
    return decode(ok(get(client, key, process + "/format,png"), "image/png"))


def plain(client: Client, key: str) -> np.ndarray:
    return render(client, key, "image/format,png")


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.any(a != b, axis=2)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the True pixels, ends exclusive."""
    ys, xs = np.nonzero(mask)
    assert xs.size, "nothing changed"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mark_box(client: Client, key: str, watermark: str) -> tuple[int, int, int, int]:
    return bbox(changed(plain(client, key), render(client, key, "image/watermark," + watermark)))


def red_pixels(img: np.ndarray) -> np.ndarray:
    return (img[:, :, 2] >= 250) & (img[:, :, 1] <= 5) & (img[:, :, 0] <= 5)


def ink(img: np.ndarray) -> np.ndarray:
    """Darkness (0..255) of black-on-white text: 255 minus the mean of B, G, R."""
    return 255 - img[:, :, :3].astype(np.float64).mean(axis=2)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


# ---------------------------------------------------------------------------------------------------
# §10 #6, the seed vector

def test_seed_vector_jpeg(client):
    body = ok(get(client, "example.jpg", SEED), "image/jpeg")
    assert size_of(body) == (400, 267)
    out = decode(body)
    # The same encoding without a watermark (rotate,0 is a no-op that still re-encodes).
    reference = decode(ok(get(client, "example.jpg", "image/rotate,0"), "image/jpeg"))
    # The default g_se puts the text in the bottom right; the top left is only re-encoded.
    assert psnr(out[:130, :200], reference[:130, :200]) > 50
    assert psnr(out[:130, :200], source("example.jpg")[:130, :200]) > 40
    assert psnr(out[200:, 100:], reference[200:, 100:]) < 30


def test_seed_vector_pixels_png(client):
    base = plain(client, "example.jpg")
    out = render(client, "example.jpg", SEED)
    assert out.shape == base.shape == (267, 400, 3)
    assert np.array_equal(out[:200, :200], base[:200, :200])        # top left untouched
    x0, y0, x1, y1 = bbox(changed(base, out))
    assert x0 > 200 - 120 and y0 > 267 // 2                          # the mark is bottom right ...
    assert x1 <= 400 - 10 and y1 <= 267 - 10                         # ... inside the default 10 px margins
    assert x1 >= 400 - 20 and y1 >= 267 - 20


# ---------------------------------------------------------------------------------------------------
# Placement: the nine-grid with x/y margins and voffset (base 200x150, mark 30x20, x_20, y_30)

W, H, MW, MH, X, Y = 200, 150, 30, 20, 20, 30
PLACES = {
    "nw": (X, Y),
    "north": ((W - MW) // 2, Y),
    "ne": (W - MW - X, Y),
    "west": (X, (H - MH) // 2),
    "center": ((W - MW) // 2, (H - MH) // 2),
    "east": (W - MW - X, (H - MH) // 2),
    "sw": (X, H - MH - Y),
    "south": ((W - MW) // 2, H - MH - Y),
    "se": (W - MW - X, H - MH - Y),
}


@pytest.mark.parametrize("g", list(PLACES))
def test_placement_on_the_nine_grid(client, g):
    base = plain(client, "grey.png")
    out = render(client, "grey.png", f"image/watermark,{image_param('red.png')},g_{g},x_{X},y_{Y}")
    left, top = PLACES[g]
    assert bbox(changed(base, out)) == (left, top, left + MW, top + MH)
    assert red_pixels(out).sum() == MW * MH


def test_se_margins_end_the_mark_at_w_minus_x(client):
    assert mark_box(client, "grey.png", f"{image_param('red.png')},g_se,x_7,y_3")[2:] == (W - 7, H - 3)


def test_defaults_are_se_with_10px_margins(client):
    assert mark_box(client, "grey.png", image_param("red.png")) == (W - MW - 10, H - MH - 10, W - 10, H - 10)


@pytest.mark.parametrize("g", ["west", "center", "east"])
@pytest.mark.parametrize("voffset", [25, -25])
def test_voffset_positive_moves_the_mark_down(client, g, voffset):
    left, top = PLACES[g]
    box = mark_box(client, "grey.png", f"{image_param('red.png')},g_{g},x_{X},voffset_{voffset}")
    assert box == (left, top + voffset, left + MW, top + voffset + MH)


@pytest.mark.parametrize("g", ["nw", "south"])
def test_voffset_is_ignored_off_the_middle_line(client, g):
    mark = f"{image_param('red.png')},g_{g},x_{X},y_{Y}"
    assert mark_box(client, "grey.png", mark + ",voffset_40") == mark_box(client, "grey.png", mark)


# ---------------------------------------------------------------------------------------------------
# t: opacity

def test_t0_changes_nothing(client):
    base = plain(client, "example.jpg")
    assert np.array_equal(render(client, "example.jpg", SEED + ",t_0"), base)
    grey = plain(client, "grey.png")
    assert np.array_equal(render(client, "grey.png", f"image/watermark,{image_param('red.png')},t_0"), grey)


def test_t50_changes_about_half_as_much_as_t100(client):
    base = plain(client, "grey.png")
    full = mean_abs_diff(render(client, "grey.png", f"image/watermark,{image_param('red.png')},t_100"), base)
    half = mean_abs_diff(render(client, "grey.png", f"image/watermark,{image_param('red.png')},t_50"), base)
    assert full > 0 and 0.4 < half / full < 0.6
    # Same for text.
    white = plain(client, "white.png")
    text = f"image/watermark,text_{b64('OSS watermark')},size_60"
    full = mean_abs_diff(render(client, "white.png", text), white)
    half = mean_abs_diff(render(client, "white.png", text + ",t_50"), white)
    assert full > 0 and 0.4 < half / full < 0.6


# ---------------------------------------------------------------------------------------------------
# fill: tiling

def test_fill_covers_the_whole_image(client):
    base = plain(client, "grey.png")
    out = render(client, "grey.png", f"image/watermark,{image_param('red.png')},fill_1")
    assert red_pixels(out).all()                                     # no gaps: every pixel is mark
    single = render(client, "grey.png", f"image/watermark,{image_param('red.png')}")
    assert red_pixels(single).sum() == MW * MH
    assert changed(base, out).all()


def test_fill_text_changes_every_row_and_column_band(client):
    base = plain(client, "example.jpg")
    out = render(client, "example.jpg", SEED + ",fill_1")
    single = bbox(changed(base, render(client, "example.jpg", SEED)))
    band_h, band_w = single[3] - single[1], single[2] - single[0]
    diff = changed(base, out)
    for top in range(0, 267, band_h):
        assert diff[top:top + band_h].any(), f"row band at y={top} has no watermark"
    for left in range(0, 400, band_w):
        assert diff[:, left:left + band_w].any(), f"column band at x={left} has no watermark"
    assert diff.mean() > 3 * changed(base, render(client, "example.jpg", SEED)).mean()


def runs(flags: np.ndarray) -> list[tuple[bool, int]]:
    """Run-length encoding of a 1-D boolean array."""
    out: list[tuple[bool, int]] = []
    for flag in flags.tolist():
        if out and out[-1][0] == flag:
            out[-1] = (flag, out[-1][1] + 1)
        else:
            out.append((flag, 1))
    return out


def test_fill_padx_leaves_unchanged_column_gaps(client):
    base = plain(client, "grey.png")
    out = render(client, "grey.png", f"image/watermark,{image_param('red.png')},fill_1,padx_50")
    columns = changed(base, out).any(axis=0)
    inner = runs(columns)[1:-1]                                      # whole tiles and whole gaps
    assert (True, MW) in inner and (False, 50) in inner
    gap = columns.tolist().index(False, columns.tolist().index(True))   # first gap column after a tile
    assert not changed(base, out)[:, gap + 25].any()                 # a column inside the gap
    assert columns[:gap].any() and columns[gap + 50:].any()          # tiles on both sides
    assert changed(base, out).any(axis=1).all()                      # pady_0: every row is hit


def test_fill_pady_leaves_unchanged_row_gaps(client):
    base = plain(client, "grey.png")
    out = render(client, "grey.png", f"image/watermark,{image_param('red.png')},fill_1,pady_25")
    rows = changed(base, out).any(axis=1)
    inner = runs(rows)[1:-1]
    assert (True, MH) in inner and (False, 25) in inner
    assert changed(base, out).any(axis=0).all()                      # padx_0: every column is hit


def test_fill_keeps_a_tile_on_the_anchor(client):
    out = render(client, "grey.png", f"image/watermark,{image_param('red.png')},fill_1,padx_50,pady_40,"
                                     f"g_nw,x_0,y_0")
    red = red_pixels(out)
    assert red[0:MH, 0:MW].all() and not red[0:MH, MW:MW + 50].any() and not red[MH:MH + 40, 0:MW].any()
    assert red[MH + 40:2 * MH + 40, MW + 50:2 * MW + 50].all()       # the next tile, diagonally


# ---------------------------------------------------------------------------------------------------
# Text

def text_on_white(client, text: str, extra: str = "") -> np.ndarray:
    return render(client, "white.png", f"image/watermark,text_{b64(text)},g_nw,x_0,y_0{extra}")


@pytest.mark.parametrize("color, channel", [("FF0000", 2), ("00FF00", 1), ("0000ff", 0)])
def test_text_colour(client, color, channel):
    white = plain(client, "white.png")
    out = text_on_white(client, "OSS", f",size_60,color_{color}")
    diff = changed(white, out)
    assert diff.sum() > 300
    # Over white, a pure colour keeps its own channel at 255 and takes the others down.
    assert (out[diff][:, channel] >= 250).all()
    others = [c for c in range(3) if c != channel]
    cores = out[diff][:, others].max(axis=1) <= 30                   # glyph cores: the pure colour
    assert cores.sum() > 150


def test_default_colour_is_black(client):
    out = text_on_white(client, "OSS", ",size_60")
    assert (out.max(axis=2) <= 30).sum() > 150


def test_bigger_size_gives_a_bigger_mark(client):
    white = plain(client, "white.png")
    small = bbox(changed(white, text_on_white(client, "Hello", ",size_20")))
    big = bbox(changed(white, text_on_white(client, "Hello", ",size_80")))
    small_w, small_h = small[2] - small[0], small[3] - small[1]
    big_w, big_h = big[2] - big[0], big[3] - big[1]
    assert 3 < big_w / small_w < 5 and 3 < big_h / small_h < 5


def test_default_size_is_40(client):
    white = plain(client, "white.png")
    assert bbox(changed(white, text_on_white(client, "Hello"))) == \
        bbox(changed(white, text_on_white(client, "Hello", ",size_40")))


def test_shadow_adds_dark_pixels_down_and_right(client):
    plain_red = text_on_white(client, "OSS", ",size_60,color_FF0000")
    shaded = text_on_white(client, "OSS", ",size_60,color_FF0000,shadow_100")
    half = text_on_white(client, "OSS", ",size_60,color_FF0000,shadow_50")
    # Red over white never lowers the red channel; only a (black) shadow does.
    assert (plain_red[:, :, 2] >= 250).all()
    dark = shaded[:, :, 2] < 100
    assert dark.sum() > 50
    glyph = red_pixels(shaded) | (shaded[:, :, 1] < 100) & (shaded[:, :, 2] >= 250)
    dy, dx = (np.argwhere(dark).mean(axis=0) - np.argwhere(glyph).mean(axis=0))
    assert dx > 0.5 and dy > 0.5                                      # offset down and right
    # shadow_ is its opacity: half the darkness at 50.
    assert 0.35 < (255 - half[:, :, 2].min()) / (255 - shaded[:, :, 2].min()) < 0.65


def test_rotate_turns_the_text_clockwise(client):
    white = plain(client, "white.png")
    flat = bbox(changed(white, text_on_white(client, "MMM....")))
    assert flat[2] - flat[0] > 2 * (flat[3] - flat[1])
    out = text_on_white(client, "MMM....", ",rotate_90")
    x0, y0, x1, y1 = bbox(changed(white, out))
    assert y1 - y0 > 2 * (x1 - x0)                                   # taller than wide now
    assert abs((y1 - y0) - (flat[2] - flat[0])) <= 4
    # Clockwise: the start of the line (the heavy MMM) goes to the top, the dots to the bottom.
    darkness = ink(out)[y0:y1, x0:x1]
    quarter = (y1 - y0) // 4
    assert darkness[:quarter].sum() > 3 * darkness[-quarter:].sum()
    out = text_on_white(client, "MMM....", ",rotate_270")
    x0, y0, x1, y1 = bbox(changed(white, out))
    darkness = ink(out)[y0:y1, x0:x1]
    assert darkness[-quarter:].sum() > 3 * darkness[:quarter].sum()


# The seven font values of §5.14, as written there.
FONT_VALUES = {
    "wqy-zenhei": "d3F5LXplbmhlaQ",
    "wqy-microhei": "d3F5LW1pY3JvaGVp",
    "fangzhengshusong": "ZmFuZ3poZW5nc2h1c29uZw",
    "fangzhengkaiti": "ZmFuZ3poZW5na2FpdGk",
    "fangzhengheiti": "ZmFuZ3poZW5naGVpdGk",
    "fangzhengfangsong": "ZmFuZ3poZW5nZmFuZ3Nvbmc",
    "droidsansfallback": "ZHJvaWRzYW5zZmFsbGJhY2s",
}


@pytest.mark.parametrize("font", list(FONT_VALUES))
def test_each_font_renders_latin_and_chinese(client, font):
    text = "Hello 图片"
    out = text_on_white(client, text, f",type_{FONT_VALUES[font]}")
    expected = direct_mask(text, font, 40)
    assert correlation(ink(out), expected) > 0.98
    assert (ink(out) > 200).sum() > 300


def test_fonts_are_not_all_the_same(client):
    text = "Hello World"
    zenhei = ink(text_on_white(client, text, f",type_{FONT_VALUES['wqy-zenhei']}"))
    kaiti = ink(text_on_white(client, text, f",type_{FONT_VALUES['fangzhengkaiti']}"))
    heiti = ink(text_on_white(client, text, f",type_{FONT_VALUES['fangzhengheiti']}"))
    assert correlation(zenhei, kaiti) < 0.9
    assert heiti.sum() > 1.15 * zenhei.sum()                          # Heiti is the bold one


@pytest.mark.parametrize("font", list(FONT_VALUES))
def test_chinese_text_is_real_glyphs_not_tofu(client, font):
    """What OpenCV 5.1 did without its built-in CJK face: '????' or empty boxes. Each font name
    must draw real, distinct glyphs for two different Chinese strings."""
    white = plain(client, "white.png")
    first, second = "图片服务", "水印文字"
    out1 = text_on_white(client, first, f",type_{FONT_VALUES[font]}")
    out2 = text_on_white(client, second, f",type_{FONT_VALUES[font]}")
    ink1, ink2 = ink(out1), ink(out2)
    # The mark is exactly the text rendered directly, at the top left, and nothing else changed.
    direct = direct_mask(first, font, 40)
    h, w = direct.shape
    assert correlation(ink1[:h, :w], direct) > 0.98
    assert not changed(white, out1)[h:, :].any() and not changed(white, out1)[:, w:].any()
    # Compared where the text is (the blank rest of the image would make any two marks look alike):
    text1, text2 = ink1[:h + 4, :w + 4], ink2[:h + 4, :w + 4]
    # Different characters give different shapes (placeholder boxes or '?' would all look alike) ...
    assert correlation(text1, text2) < 0.4
    # ... neither looks like four question marks in the same face ...
    face = FONT_TABLE.faces[font]
    questions = text_mask([(face, "????")], 40)
    assert correlation(text1, questions) < 0.3 and correlation(text2, questions) < 0.3
    # ... nor like the face's own empty box (.notdef), drawn for characters it has no glyph for.
    boxes = text_mask([(face, "\ue000\ue001\ue002\ue003")], 40)
    assert correlation(text1, boxes) < 0.3 and correlation(text2, boxes) < 0.3
    # Real CJK glyphs are dense with strokes: far more ink than four question marks.
    assert (ink1 > 128).sum() > 1.5 * (questions > 128).sum()


def test_text_limit_is_64_utf8_bytes(client):
    ok(get(client, "grey.png", f"image/watermark,text_{b64('a' * 64)}"), "image/png")
    ok(get(client, "grey.png", f"image/watermark,text_{b64('图' * 21)}"), "image/png")   # 63 bytes


# ---------------------------------------------------------------------------------------------------
# Image watermarks

def test_image_mark_with_a_transparent_hole(client):
    base = plain(client, "grey.png")
    out = render(client, "grey.png", f"image/watermark,{image_param('holed.png')},g_se")
    left, top = W - 60 - 10, H - 40 - 10
    expected = np.zeros((H, W), bool)
    expected[top:top + 40, left:left + 60] = True
    expected[top + 15:top + 25, left + 20:left + 40] = False         # the hole shows the base
    assert np.array_equal(changed(base, out), expected)
    assert np.array_equal(red_pixels(out), expected)


def test_jpeg_mark(client):
    out = render(client, "grey.png", f"image/watermark,{image_param('red.jpg')},g_nw,x_0,y_0")
    patch = out[:MH, :MW].astype(int)
    assert (patch[:, :, 2] > 230).all() and (patch[:, :, :2] < 30).all()


def test_t_multiplies_the_marks_own_alpha(client):
    base = plain(client, "grey.png").astype(int)
    region = (slice(0, 40), slice(0, 30)), (slice(0, 40), slice(30, 60))

    def shifts(t):
        out = render(client, "grey.png", f"image/watermark,{image_param('half.png')},g_nw,x_0,y_0,t_{t}")
        return [float(np.abs(out.astype(int)[r] - base[r]).mean()) for r in region]

    opaque, translucent = shifts(100)
    assert 0.4 < translucent / opaque < 0.6                          # its own alpha 128
    opaque50, translucent50 = shifts(50)
    assert 0.4 < opaque50 / opaque < 0.6                             # t_50 on alpha 255
    assert 0.2 < translucent50 / opaque < 0.3                        # t_50 on alpha 128: a quarter


@pytest.mark.parametrize("base_key, side", [("sq100.png", 10), ("sq200.png", 20)])
def test_nested_P_is_a_percentage_of_the_base(client, base_key, side):
    box = mark_box(client, base_key, f"{image_param('square50.png', 'image/resize,P_10')},g_nw,x_0,y_0")
    assert box == (0, 0, side, side)


def test_nested_P_fits_a_wide_mark_proportionally(client):
    # 60x40 into 10% of 100x100 -> 10x7 (6.67 rounds up); into 50% of 200x150 (100x75) -> 100x67.
    assert mark_box(client, "sq100.png", f"{image_param('red60.png', 'image/resize,P_10')},g_nw,x_0,y_0") \
        == (0, 0, 10, 7)
    assert mark_box(client, "grey.png", f"{image_param('red60.png', 'image/resize,P_50')},g_nw,x_0,y_0") \
        == (0, 0, 100, 67)


def test_nested_P_follows_the_base_as_it_is_at_that_point(client):
    process = f"image/resize,w_100/watermark,{image_param('square50.png', 'image/resize,P_20')},g_nw,x_0,y_0"
    reference = render(client, "sq200.png", "image/resize,w_100")
    assert bbox(changed(reference, render(client, "sq200.png", process))) == (0, 0, 20, 20)


@pytest.mark.parametrize("nested, size", [
    ("image/resize,w_20", (20, 13)),                  # 60x40 -> w 20, h 13.33 -> 13
    ("image/resize,m_fixed,w_25,h_35", (25, 35)),
    ("image/crop,w_30,h_25", (30, 25)),
    ("image/crop,x_50", (10, 40)),
    ("image/indexcrop,x_25,i_1", (25, 40)),
    ("image/indexcrop,y_15,i_2", (60, 10)),           # 40 = 15 + 15 + 10
    ("image/rotate,90", (40, 60)),
    ("image/resize,w_30/rotate,90", (20, 30)),
])
def test_nested_processing_changes_the_footprint(client, nested, size):
    box = mark_box(client, "grey.png", f"{image_param('red60.png', nested)},g_nw,x_0,y_0")
    assert box == (0, 0, *size)


def test_nested_rounded_corners_make_the_corners_transparent(client):
    base = plain(client, "grey.png")
    out = render(client, "grey.png",
                 f"image/watermark,{image_param('red60.png', 'image/rounded-corners,r_15')},g_nw,x_0,y_0")
    diff = changed(base, out)
    assert bbox(diff) == (0, 0, 60, 40)
    for y, x in ((0, 0), (0, 59), (39, 0), (39, 59), (2, 2)):
        assert not diff[y, x], (x, y)
    assert red_pixels(out)[15:25, :60].all() and red_pixels(out)[:40, 15:45].all()


def test_several_watermarks_in_one_pipeline(client):
    base = plain(client, "grey.png")
    process = (f"image/watermark,{image_param('red.png')},g_nw,x_0,y_0"
               f"/watermark,{image_param('blue.png')},g_se,x_0,y_0"
               f"/watermark,text_{b64('OSS')},g_center,size_30,color_FFFFFF")
    out = render(client, "grey.png", process)
    assert red_pixels(out)[:MH, :MW].all()                            # first mark
    assert (out[H - MH:, W - MW:] == (255, 0, 0)).all()               # second mark (blue)
    th, tw = direct_mask("OSS", DEFAULT_FONT, 30).shape
    tx, ty = (W - tw) // 2, (H - th) // 2
    assert (out[ty:ty + th, tx:tx + tw] == 255).all(axis=2).sum() > 50   # third mark (white text)
    expected = np.zeros((H, W), bool)                                 # and nothing else changed
    expected[:MH, :MW] = expected[H - MH:, W - MW:] = expected[ty:ty + th, tx:tx + tw] = True
    assert not (changed(base, out) & ~expected).any()


# --- text and image in one action: order, align, interval -------------------------------------------

def combined(client, extra: str) -> tuple[np.ndarray, np.ndarray]:
    """(red image pixels, dark text pixels) of red.png + 'AB' at size 60, at the top left of white.png."""
    out = render(client, "white.png",
                 f"image/watermark,{image_param('red.png')},text_{b64('AB')},size_60,g_nw,x_0,y_0{extra}")
    return red_pixels(out), out.max(axis=2) < 100


def test_order_0_puts_the_image_left_of_the_text(client):
    image, text = combined(client, "")
    assert bbox(image)[2] <= bbox(text)[0]
    assert combined(client, ",order_0")[0].sum() == image.sum()


def test_order_1_puts_the_text_left_of_the_image(client):
    image, text = combined(client, ",order_1")
    assert bbox(text)[2] <= bbox(image)[0]
    assert bbox(image)[2] > 60


def test_align_is_the_vertical_alignment_of_text_and_image(client):
    block_h = direct_mask("AB", DEFAULT_FONT, 60).shape[0]     # the text is the taller part
    assert block_h > MH
    tops = {align: bbox(combined(client, f",align_{align}")[0])[1] for align in (0, 1, 2)}
    assert tops == {0: 0, 1: (block_h - MH) // 2, 2: block_h - MH}
    assert bbox(combined(client, "")[0])[1] == block_h - MH         # default: bottom
    text_box = bbox(combined(client, ",align_0")[1])
    assert tops[0] <= text_box[1] and tops[2] + MH >= text_box[3]   # the image spans the text's height


def test_interval_is_the_gap_between_image_and_text(client):
    image0, text0 = combined(client, "")
    image50, text50 = combined(client, ",interval_50")
    assert bbox(image50) == bbox(image0)                              # the first part stays put ...
    assert bbox(text50)[0] - bbox(text0)[0] == 50                     # ... the second moves by the gap
    # Text first: now the image moves.
    moved, still = combined(client, ",order_1,interval_50")[0], combined(client, ",order_1")[0]
    assert bbox(moved)[0] - bbox(still)[0] == 50


# ---------------------------------------------------------------------------------------------------
# Watermark keys stay inside the bucket; marks are fetched with the request's headers, once each.

def test_keys_cannot_escape_the_root(bucket):
    secret = bucket.parent / "secret.png"
    assert secret.is_file()
    client, recorder = make(bucket)
    keys = ["../secret.png", "/etc/hostname", str(secret), "http://127.0.0.1:1/x.png", "a/../../x.png",
            "./../secret.png", "..\\secret.png", "red.png/../../secret.png", "%2e%2e/secret.png",
            "..%2Fsecret.png"]
    for key in keys:
        err = oss_error(get(client, "grey.png", f"image/watermark,{image_param(key)}"))
        assert (err["status"], err["Code"], err["EC"], err["header_ec"]) == \
            (400, "WatermarkError", "0040-00000025", "0040-00000025"), key
    root = bucket.resolve()
    for path in recorder.paths:
        assert path.startswith("/") and not path.startswith("//"), path
        assert ".." not in path.split("/"), path
        assert (root / path.lstrip("/")).resolve().is_relative_to(root), path
    assert recorder.paths.count("/grey.png") == len(keys)
    # Percent signs are literal in a key: '%2e%2e' is a directory name, never '..'.
    assert all((root / p.lstrip("/")).resolve() != secret.resolve() for p in recorder.paths)
    assert not any(p.endswith("/etc/hostname") for p in recorder.paths)


def test_marks_are_fetched_with_the_requests_headers(bucket):
    client, recorder = make(bucket)
    auth = "OSS ak:0dHkb3+smQt17Wzdqmf83UC4KuE="
    ok(get(client, "grey.png", f"image/watermark,{image_param('red.png')}", headers={"Authorization": auth}))
    assert recorder.seen == [("/grey.png", auth), ("/red.png", auth)]


def test_each_key_is_fetched_once(bucket):
    client, recorder = make(bucket)
    process = (f"image/watermark,{image_param('red.png')},g_nw,x_0,y_0"
               f"/watermark,{image_param('red.png')},g_se,x_0,y_0"
               f"/watermark,{image_param('red.png', 'image/resize,w_10')},g_center")
    out = render(client, "grey.png", process)
    assert red_pixels(out)[:MH, :MW].all() and red_pixels(out)[H - MH:, W - MW:].all()
    assert red_pixels(out).sum() == 2 * MW * MH + 10 * 7
    assert recorder.paths.count("/red.png") == 1


def test_at_most_three_distinct_image_marks(bucket):
    client, recorder = make(bucket)
    marks = ["red.png", "blue.png", "green.png", "yellow.png"]
    three = "/".join(f"watermark,{image_param(k)},g_nw,x_{i * 40},y_0" for i, k in enumerate(marks[:3]))
    ok(get(client, "grey.png", "image/" + three))
    err = oss_error(get(client, "grey.png", f"image/{three}/watermark,{image_param(marks[3])}"))
    assert (err["status"], err["Code"], err["EC"]) == (400, "WatermarkError", "0040-00000026")
    assert "/yellow.png" not in recorder.paths and "/red.png" in recorder.paths   # refused unread
    # The same key four times is one image.
    four = "/".join(f"watermark,{image_param('red.png')},g_nw,x_{i * 40},y_0" for i in range(4))
    assert red_pixels(render(client, "grey.png", "image/" + four)).sum() == 4 * MW * MH


# ---------------------------------------------------------------------------------------------------
# Every watermark EC of §7

IA, BR, MA, WE = "InvalidArgument", "BadRequest", "MissingArgument", "WatermarkError"

BAD = {
    "025-missing-object": (f"image/watermark,{image_param('panda.png')}", WE, "0040-00000025"),
    "025-missing-nested": (f"image/watermark,{image_param('panda.png', 'image/resize,P_30')}", WE,
                           "0040-00000025"),
    "027-gif": (f"image/watermark,{image_param('mark.gif')}", WE, "0040-00000027"),
    "027-text-file": (f"image/watermark,{image_param('notes.txt')}", WE, "0040-00000027"),
    "250-type-not-base64": (f"image/watermark,text_{b64('hi')},type_***", BR, "0040-00000250"),
    "251-type-arial": (f"image/watermark,text_{b64('hi')},type_{b64('arial')}", IA, "0040-00000251"),
    "251-type-case": (f"image/watermark,text_{b64('hi')},type_{b64('WQY-ZENHEI')}", IA, "0040-00000251"),
    "254-color-word": (f"image/watermark,text_{b64('hi')},color_red", IA, "0040-00000254"),
    "254-color-short": (f"image/watermark,text_{b64('hi')},color_FFF", IA, "0040-00000254"),
    "254-color-8": (f"image/watermark,text_{b64('hi')},color_FF0000FF", IA, "0040-00000254"),
    "255-shadow-101": (f"image/watermark,text_{b64('hi')},shadow_101", IA, "0040-00000255"),
    "255-shadow-neg": (f"image/watermark,text_{b64('hi')},shadow_-1", IA, "0040-00000255"),
    "256-size-0": (f"image/watermark,text_{b64('hi')},size_0", IA, "0040-00000256"),
    "256-size-1001": (f"image/watermark,text_{b64('hi')},size_1001", IA, "0040-00000256"),
    "257-text-not-base64": ("image/watermark,text_***", BR, "0040-00000257"),
    # Decodable but too long: OSS's page 259 (over 64 characters; 21 Chinese characters is the most).
    "259-text-65-bytes": (f"image/watermark,text_{b64('a' * 65)}", IA, "0040-00000259"),
    "259-text-22-chinese": (f"image/watermark,text_{b64('图' * 22)}", IA, "0040-00000259"),
    "258-text-no-value": ("image/watermark,text", MA, "0040-00000258"),
    "260-g": (f"image/watermark,text_{b64('hi')},g_middle", IA, "0040-00000260"),
    "260-g-case": (f"image/watermark,text_{b64('hi')},g_SE", IA, "0040-00000260"),
    "262-x-4097": (f"image/watermark,text_{b64('hi')},x_4097", IA, "0040-00000262"),
    "262-x-neg": (f"image/watermark,text_{b64('hi')},x_-1", IA, "0040-00000262"),
    "263-t-101": (f"image/watermark,text_{b64('hi')},t_101", IA, "0040-00000263"),
    "263-t-abc": (f"image/watermark,text_{b64('hi')},t_abc", IA, "0040-00000263"),
    "264-y-4097": (f"image/watermark,text_{b64('hi')},y_4097", IA, "0040-00000264"),
    "264-y-abc": (f"image/watermark,text_{b64('hi')},y_abc", IA, "0040-00000264"),
    "265-image-not-base64": ("image/watermark,image_***", BR, "0040-00000265"),
    "268-voffset-1001": (f"image/watermark,text_{b64('hi')},g_center,voffset_1001", IA, "0040-00000268"),
    "268-voffset--1001": (f"image/watermark,text_{b64('hi')},g_center,voffset_-1001", IA, "0040-00000268"),
    "270-interval-1001": (f"image/watermark,text_{b64('hi')},{image_param('red.png')},interval_1001", IA,
                          "0040-00000270"),
    "271-align-3": (f"image/watermark,text_{b64('hi')},{image_param('red.png')},align_3", IA,
                    "0040-00000271"),
    "272-rotate-361": (f"image/watermark,text_{b64('hi')},rotate_361", IA, "0040-00000272"),
    "272-rotate-neg": (f"image/watermark,text_{b64('hi')},rotate_-90", IA, "0040-00000272"),
    "274-fill-2": (f"image/watermark,text_{b64('hi')},fill_2", IA, "0040-00000274"),
    "276-padx-4097": (f"image/watermark,text_{b64('hi')},fill_1,padx_4097", IA, "0040-00000276"),
    "276-padx-neg": (f"image/watermark,text_{b64('hi')},fill_1,padx_-1", IA, "0040-00000276"),
    "277-pady-4097": (f"image/watermark,text_{b64('hi')},fill_1,pady_4097", IA, "0040-00000277"),
    "278-bare": ("image/watermark", MA, "0040-00000278"),
    "278-only-t": ("image/watermark,t_50", MA, "0040-00000278"),
    "278-empty-values-ignored": ("image/watermark,g_se,x_10,y_10,", MA, "0040-00000278"),
    "373-nested-watermark": (f"image/watermark,{image_param('red.png', 'image/watermark,text_aGk')}", IA,
                             "0040-00000373"),
    "373-nested-watermark-later": (
        f"image/watermark,{image_param('red.png', 'image/resize,w_10/watermark,text_aGk')}", IA,
        "0040-00000373"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_watermark_errors(bucket, case):
    process, code, ec = BAD[case]
    client, recorder = make(bucket)
    err = oss_error(get(client, "grey.png", process))
    assert (err["status"], err["Code"], err["EC"], err["header_ec"]) == (400, code, ec, ec)
    assert err["Message"]
    if code == BR:
        assert err["Message"] == "Input is not base64 decoding."
    if ec not in ("0040-00000025", "0040-00000027"):
        assert recorder.paths == []           # parameter errors are found before any I/O


def test_ec_table_is_fully_covered():
    """Every watermark EC of spec §7 has at least one case above."""
    ecs = {"025", "027", "250", "251", "254", "255", "256", "257", "258", "259", "260", "262", "263",
           "264", "265", "268", "270", "271", "272", "274", "276", "277", "278", "373"}
    assert {ec[-3:] for _, _, ec in BAD.values()} == ecs


# ---------------------------------------------------------------------------------------------------
# Canonical form (cache key)

def canonical(process: str) -> str:
    return parse(process, Config()).canonical()


def test_canonical_ignores_order_padding_and_alphabet():
    text = "Hello 图片服务!"
    padded = base64.urlsafe_b64encode(text.encode()).decode()
    standard = base64.standard_b64encode(text.encode()).decode()
    assert padded.endswith("=") and "-" in padded and "+" in standard
    forms = [
        f"image/watermark,text_{b64(text)},g_nw,t_50,size_30",
        f"image/watermark,size_30,t_50,g_nw,text_{padded}",
        f"image/watermark,t_50,text_{standard},size_30,g_nw,",
        f"image/watermark,text_{b64(text)},g_nw,t_50,size_30,x_10,y_10,color_000000",   # defaults spelt out
    ]
    assert len({canonical(p) for p in forms}) == 1
    key = "panda.png?x-oss-process=image/resize,P_30,m_lfit"
    key_padded = base64.urlsafe_b64encode(key.encode()).decode()
    assert canonical(f"image/watermark,image_{b64(key)},g_se,t_90") == \
        canonical(f"image/watermark,t_90,image_{key_padded}") == \
        canonical(f"image/watermark,image_{b64('panda.png?x-oss-process=image/resize,m_lfit,P_30')},t_90")


def test_canonical_differs_for_different_marks():
    hello, hellp = (canonical(f"image/watermark,text_{b64(t)}") for t in ("Hello", "Hellp"))
    assert hello != hellp
    p10 = canonical(f"image/watermark,{image_param('panda.png', 'image/resize,P_10')}")
    p20 = canonical(f"image/watermark,{image_param('panda.png', 'image/resize,P_20')}")
    bare = canonical(f"image/watermark,{image_param('panda.png')}")
    cropped = canonical(f"image/watermark,{image_param('panda.png', 'image/crop,w_10')}")
    assert len({p10, p20, bare, cropped}) == 4
    assert canonical(f"image/watermark,{image_param('panda.png')}") != \
        canonical(f"image/watermark,{image_param('koala.png')}")
    assert canonical(f"image/watermark,text_{b64('Hi')},type_{FONT_VALUES['fangzhengkaiti']}") != \
        canonical(f"image/watermark,text_{b64('Hi')}")


def test_nested_auto_orient_0_keeps_the_marks_stored_orientation(bucket, tmp_path):
    """f.jpg is stored 424x333 with EXIF Orientation 7: a mark is auto-oriented (333x424 shown)
    unless its own pipeline says auto-orient,0."""
    shutil.copy(FIXTURES / "f.jpg", bucket / "f.jpg")
    client = make(bucket)[0]
    oriented = mark_box(client, "grey.png",
                        image_param("f.jpg", "image/resize,w_100") + ",g_nw,x_0,y_0")
    stored = mark_box(client, "grey.png",
                      image_param("f.jpg", "image/resize,w_100/auto-orient,0") + ",g_nw,x_0,y_0")
    assert (oriented[2] - oriented[0], oriented[3] - oriented[1]) == (100, 127)
    assert (stored[2] - stored[0], stored[3] - stored[1]) == (100, 79)


def test_a_utf8_watermark_key_on_a_plain_folder(bucket):
    """Keys are UTF-8; WSGI carries them as latin-1 strings both ways (the static app, no buckets)."""
    shutil.copy(bucket / "red.png", bucket / "水印.png")
    client = make(bucket)[0]
    box = mark_box(client, "grey.png", image_param("水印.png") + ",g_nw,x_0,y_0")
    assert (box[2] - box[0], box[3] - box[1]) == (30, 20)
