"""Fonts of text watermarks (imgmiddleware/imaging/fonts.py): every OSS font name is drawn by a real
font file, Chinese is drawn as real glyphs on a machine with only what pip installs, and a missing
font is loud and refused, never '????' or empty boxes (issue 14).

The Debian font packages are installed by conftest.py before any test resolves fonts."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgmiddleware import Config
from imgmiddleware.imaging import fonts
from imgmiddleware.imaging.fonts import CJK_PROBE, FONT_NAMES, font_table_for, resolve
from imgmiddleware.imaging.text import text_mask

from .conftest import FIXTURES, correlation, make_client

# What each OSS name is drawn with once the Debian packages are there (docs/COMPATIBILITY.md).
EXPECTED_FAMILIES = {
    "wqy-zenhei": ("WenQuanYi Zen Hei", "Regular"),
    "wqy-microhei": ("WenQuanYi Micro Hei", "Regular"),
    "droidsansfallback": ("Droid Sans Fallback", "Regular"),
    "fangzhengshusong": ("Noto Serif CJK SC", "Regular"),
    "fangzhengkaiti": ("AR PL UKai CN", "Book"),
    "fangzhengheiti": ("Noto Sans CJK SC", "Bold"),
    "fangzhengfangsong": ("AR PL UMing CN", "Light"),
}
FIRST, SECOND = "图片服务", "水印文字"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def ink_of(png: bytes) -> np.ndarray:
    """Darkness (0..255) of black text on a white image."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return 255 - img.astype(np.float64).mean(axis=2)


def assert_real_glyphs(ink1: np.ndarray, ink2: np.ndarray, face) -> None:
    """Two different Chinese strings drew different shapes, neither like '????' nor like the face's
    empty box (.notdef) for characters it lacks."""
    questions = text_mask([(face, "????")], 40).astype(np.float64)
    boxes = text_mask([(face, "\ue000\ue001\ue002\ue003")], 40).astype(np.float64)
    h, w = max(questions.shape[0], boxes.shape[0]) + 8, 4 * 40 + 8
    text1, text2 = ink1[:h, :w], ink2[:h, :w]
    assert (text1 > 128).sum() > 200 and (text2 > 128).sum() > 200, "no text was drawn"
    assert correlation(text1, text2) < 0.4, "two different strings drew alike shapes"
    for drawn in (text1, text2):
        assert correlation(drawn, questions) < 0.3, "the text looks like '????'"
        assert correlation(drawn, boxes) < 0.3, "the text looks like empty boxes"


# --- the Debian faces ------------------------------------------------------------------------------

def test_every_oss_name_is_drawn_by_its_own_real_face():
    table = font_table_for(Config())
    for name, (family, style) in EXPECTED_FAMILIES.items():
        face = table.faces[name]
        assert face is not None, f"{name} maps to nothing"
        assert (face.family, face.style) == (family, style), f"{name} -> {face}"
        assert Path(face.path).is_file()
    assert len({(f.path, f.index) for f in table.faces.values()}) == 7, "two names share a face"
    assert not table.substitutes


def test_every_face_has_the_common_chinese_characters():
    table = font_table_for(Config())
    for name in FONT_NAMES:
        assert table.coverage(table.faces[name]).missing(CJK_PROBE) == [], name


def test_latin_in_droid_sans_fallback_comes_from_a_face_that_has_it():
    """Droid Sans Fallback has no Latin letters: they fall back, per character, to Noto Sans CJK."""
    table = font_table_for(Config())
    runs, missing = table.runs("droidsansfallback", "OSS 图片")
    assert missing == []
    assert [(face.family, text) for face, text in runs] == [("Noto Sans CJK SC", "OSS "),
                                                           ("Droid Sans Fallback", "图片")]


# --- the pip-only path -----------------------------------------------------------------------------

def test_without_system_fonts_every_name_is_served_by_the_packaged_noto_sans_cjk():
    table = resolve(search_system=False)
    packaged = fonts.packaged_font_dirs()
    assert packaged, "noto-cjk-sans-otc (an install requirement) is not installed"
    for name in FONT_NAMES:
        face = table.faces[name]
        assert face is not None and face.family == "Noto Sans CJK SC", f"{name} -> {face}"
        assert Path(face.path).parent == packaged[0]
    assert set(table.substitutes) == set(FONT_NAMES)
    lines = [line for _, line in table.report()]
    assert any(line.startswith("fonts: fangzhengkaiti -> ") and "AR PL UKai CN" in line
               and "fonts-arphic-ukai" in line for line in lines), lines


def test_a_pip_only_machine_draws_real_chinese_glyphs(tmp_path):
    """The README's first command on a machine without the Debian font packages: the system font
    folders are hidden (an empty tmpfs over each, in a mount namespace of this process's own), and
    `imgmiddleware process` still draws two Chinese strings as real, different glyphs."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare is needed to hide the system fonts"
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "white.png").write_bytes(cv2.imencode(".png", np.full((120, 400, 3), 255, np.uint8))[1])
    hidden = [d for d in ("/usr/share/fonts", "/usr/local/share/fonts") if os.path.isdir(d)]
    outputs = []
    for index, text in enumerate((FIRST, SECOND)):
        process = f"image/watermark,text_{b64(text)},g_nw,x_0,y_0"
        out = tmp_path / f"out{index}.png"
        mounts = " && ".join(f"mount -t tmpfs none {d}" for d in hidden)
        script = (f"{mounts} && find {' '.join(hidden)} -type f | grep -c . ; "
                  f"{sys.executable} -m imgmiddleware.cli process {tmp_path / 'white.png'} '{process}' {out}")
        env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home), XDG_DATA_DIRS=str(home))
        done = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[0] == "0", "the system font folders were not hidden"
        outputs.append(out.read_bytes())
    face = resolve(search_system=False).faces["wqy-zenhei"]
    ink1, ink2 = ink_of(outputs[0]), ink_of(outputs[1])
    direct = text_mask([(face, FIRST)], 40)
    assert correlation(ink1[:direct.shape[0], :direct.shape[1]], direct) > 0.98
    assert_real_glyphs(ink1, ink2, face)


# --- nothing found, or a face without Chinese ------------------------------------------------------

@pytest.fixture
def no_fonts_anywhere(monkeypatch):
    """A machine with no font file at all: neither system fonts nor the packaged Noto Sans CJK."""
    monkeypatch.setattr(fonts, "system_font_dirs", lambda: [])
    monkeypatch.setattr(fonts, "packaged_font_dirs", lambda: [])
    monkeypatch.setattr(fonts, "_tables", {})


def test_no_font_anywhere_is_loud_at_startup_and_refused_per_request(no_fonts_anywhere, caplog):
    with caplog.at_level(logging.INFO, logger="imgmiddleware.fonts"):
        client = make_client(FIXTURES)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == len(FONT_NAMES)
    assert all("NO FONT FILE" in line for line in errors), errors
    answer = client.get(f"/example.jpg?x-oss-process=image/watermark,text_{b64(FIRST)}")
    assert answer.status_code == 400
    body = answer.get_data(as_text=True)
    assert "<Code>InvalidArgument</Code>" in body and "<EC>0040-00000257</EC>" in body
    assert "U+56FE" in body                                                   # 图
    answer.close()


def test_a_face_without_chinese_is_named_at_startup_and_chinese_still_draws(caplog):
    latin = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    assert latin.is_file(), "fonts-dejavu-core is installed by conftest.py"
    with caplog.at_level(logging.INFO, logger="imgmiddleware.fonts"):
        table = font_table_for(Config(fonts={"wqy-zenhei": str(latin)}))
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("DejaVuSans.ttf" in line and "HAS NO CHINESE GLYPHS" in line for line in loud), loud
    runs, missing = table.runs("wqy-zenhei", "OSS 图片")
    assert missing == []
    assert [face.family for face, _ in runs] == ["DejaVu Sans", "Noto Sans CJK SC"]


# --- configuration ---------------------------------------------------------------------------------

def test_a_per_name_override_picks_a_face_of_a_collection():
    zenhei = font_table_for(Config()).faces["wqy-zenhei"].path
    table = resolve(overrides={"fangzhengkaiti": f"{zenhei}#1"})
    assert table.faces["fangzhengkaiti"].family == "WenQuanYi Zen Hei Mono"
    assert table.faces["fangzhengkaiti"].index == 1
    assert "fangzhengkaiti" in table.overridden


def test_bad_overrides_are_config_errors(tmp_path):
    zenhei = font_table_for(Config()).faces["wqy-zenhei"].path
    with pytest.raises(ValueError, match="no font file"):
        resolve(overrides={"wqy-zenhei": str(tmp_path / "missing.ttf")})
    with pytest.raises(ValueError, match="has 3 faces, no #7"):
        resolve(overrides={"wqy-zenhei": f"{zenhei}#7"})
    with pytest.raises(ValueError, match="unknown font names comic-sans"):
        Config(fonts={"comic-sans": zenhei})


def test_font_dirs_are_searched_before_the_system_folders(tmp_path):
    system = font_table_for(Config()).faces["fangzhengkaiti"]
    (tmp_path / "mine").mkdir()
    os.symlink(system.path, tmp_path / "mine" / Path(system.path).name)
    table = resolve(font_dirs=(str(tmp_path),))
    assert table.faces["fangzhengkaiti"].path == str(tmp_path / "mine" / Path(system.path).name)
    assert Config.load(None, {"IMGMW_FONT_DIRS": f"{tmp_path}{os.pathsep}/x"}).font_dirs == (str(tmp_path), "/x")


def test_the_font_table_is_part_of_the_result_cache_key():
    """A font installed or overridden later must not be hidden by results cached before it."""
    serif = font_table_for(Config()).faces["fangzhengshusong"]
    plain = make_client(FIXTURES)
    other = make_client(FIXTURES, Config(fonts={"wqy-zenhei": f"{serif.path}#{serif.index}"}))
    assert plain.application.app.fingerprint != other.application.app.fingerprint
    process = f"/example.jpg?x-oss-process=image/watermark,text_{b64('OSS 水印')},size_60"
    first, second = plain.get(process), other.get(process)
    assert first.status_code == second.status_code == 200
    assert first.data != second.data
    first.close()
    second.close()


def test_font_paths_in_a_config_file_are_relative_to_it(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "imgmiddleware.toml"
    path.write_text('font_dirs = ["fonts"]\n[fonts]\nwqy-zenhei = "fonts/zenhei.ttc#1"\n')
    config = Config.load(path)
    assert config.font_dirs == (str(tmp_path / "conf" / "fonts"),)
    assert config.fonts == {"wqy-zenhei": str(tmp_path / "conf" / "fonts" / "zenhei.ttc#1")}
