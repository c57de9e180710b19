"""The DC-only rewrite of progressive JPEGs (imaging/jpeg_scans.py) must never change a pixel of a
1/8-scale decode: every case compares OpenCV's IMREAD_REDUCED_COLOR_8 decode of the original with
the same decode of the rewrite, over writers (Pillow, OpenCV, cjpeg and jpegtran with custom scan
scripts), subsamplings, sizes and qualities. Streams it must not touch come back as ``None``."""

from __future__ import annotations

import functools
import io
import os
import random
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from PIL import Image

from imgmiddleware.imaging import decode as decode_module
from imgmiddleware.imaging import jpeg_scans
from imgmiddleware.imaging.decode import DecodeError
from imgmiddleware.imaging.jpeg_scans import _EOB_DHT, dc_only_stream, eob_runs, idct_size

from .conftest import FIXTURES, decode, get, make_client, ok, size_of

FLAGS = cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION
SIZES = [(1, 1), (7, 9), (17, 33), (64, 48), (250, 167), (640, 480), (1001, 667)]
QUALITIES = (30, 75, 95)
# Luma/chroma sampling factors, as cjpeg's -sample takes them.
SAMPLINGS = {"444": "1x1", "422": "2x1", "420": "2x2", "440": "1x2", "411": "4x1", "grey": None}
CV_SAMPLING = {name: getattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_" + name)
               for name in ("444", "422", "420", "440", "411")}

# Scan scripts in cjpeg/jpegtran's -scans syntax ("components: Ss-Se, Ah, Al;"), for 3 components;
# _grey() turns one into its single-component form.
SCRIPTS = {
    # successive approximation on DC and on every AC band, three refinement passes
    "approximation": """
        0,1,2: 0-0, 0, 2;  0: 1-5, 0, 2;  1: 1-63, 0, 2;  2: 1-63, 0, 2;  0: 6-63, 0, 2;
        0,1,2: 0-0, 2, 1;  0: 1-63, 2, 1;  1: 1-63, 2, 1;  2: 1-63, 2, 1;
        0,1,2: 0-0, 1, 0;  0: 1-63, 1, 0;  1: 1-63, 1, 0;  2: 1-63, 1, 0;""",
    # one DC scan per component, spectral selection only, bands in an odd order
    "spectral": """
        0: 0-0, 0, 0;  2: 0-0, 0, 0;  1: 0-0, 0, 0;  0: 1-2, 0, 0;  2: 1-63, 0, 0;
        1: 1-10, 0, 0;  0: 3-63, 0, 0;  1: 11-63, 0, 0;""",
    # AC never refined to full precision: the decoder block-smooths the original
    "unfinished": """
        0,1,2: 0-0, 0, 0;  0: 1-63, 0, 1;  1: 1-63, 0, 1;  2: 1-63, 0, 1;""",
    # chroma never gets any AC, so the decoder interpolates its DC, in both streams
    "no chroma AC": """
        0,1,2: 0-0, 0, 1;  0: 1-63, 0, 0;  0,1,2: 0-0, 1, 0;""",
}


def _grey(script: str) -> str:
    scans = [s.strip().replace("0,1,2:", "0:") for s in script.split(";") if s.strip()]
    return ";\n".join(s for s in scans if s.startswith("0:")) + ";\n"


@functools.cache
def photo(width: int, height: int) -> np.ndarray:
    """Photo-like BGR pixels: a crop of a fixture photo, or one scaled up with a little film grain
    so that the large sizes still have texture in every frequency band."""
    source = cv2.imread(str(FIXTURES / ("example.jpg" if width >= height else "f.jpg")))
    sh, sw = source.shape[:2]
    if width <= sw and height <= sh:
        return np.ascontiguousarray(source[(sh - height) // 3:(sh - height) // 3 + height,
                                           (sw - width) // 2:(sw - width) // 2 + width])
    big = cv2.resize(source, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    grain = np.random.default_rng(width * height).normal(0, 4, big.shape).astype(np.int16)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


def pixels(width: int, height: int, sampling: str) -> np.ndarray:
    img = photo(width, height)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if sampling == "grey" else img


def debian_tool(name: str) -> str:
    """cjpeg/jpegtran from Debian's libjpeg-turbo-progs, installed when missing (CI runs as
    root), like nginx in tests/servers.py."""
    found = shutil.which(name)
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "libjpeg-turbo-progs"]
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        result = subprocess.run(install, env=env, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail("could not install libjpeg-turbo-progs: " + result.stderr[-2000:])
    found = shutil.which(name)
    assert found, f"libjpeg-turbo-progs was installed but {name} is not on the PATH"
    return found


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict:
    """Paths of cjpeg and jpegtran, and the scan-script files (colour and grey) they read."""
    work = tmp_path_factory.mktemp("scripts")
    scripts = {}
    for name, text in SCRIPTS.items():
        for kind, body in (("colour", text), ("grey", _grey(text))):
            path = work / f"{name.replace(' ', '_')}-{kind}.txt"
            path.write_text(body)
            scripts[name, kind] = str(path)
    return {"cjpeg": debian_tool("cjpeg"), "jpegtran": debian_tool("jpegtran"), "scripts": scripts,
            "work": work}


def run_tool(argv: list[str], data: bytes) -> bytes:
    result = subprocess.run(argv, input=data, check=False, capture_output=True)
    assert result.returncode == 0, (argv, result.stderr[-500:])
    return result.stdout


def netpbm(img: np.ndarray) -> bytes:
    ok_, buf = cv2.imencode(".pgm" if img.ndim == 2 else ".ppm", img)
    assert ok_
    return buf.tobytes()


def pillow_progressive(img: np.ndarray, quality: int, sampling: str) -> bytes:
    mode_img = Image.fromarray(img if img.ndim == 2 else img[:, :, ::-1])
    out = io.BytesIO()
    extra = {} if sampling == "grey" else {"subsampling": {"444": 0, "422": 1, "420": 2}[sampling]}
    mode_img.save(out, "JPEG", quality=quality, progressive=True, **extra)
    return out.getvalue()


def opencv_jpeg(img: np.ndarray, quality: int, sampling: str, progressive: bool = True) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    if sampling != "grey":
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, CV_SAMPLING[sampling]]
    ok_, buf = cv2.imencode(".jpg", img, params)
    assert ok_
    return buf.tobytes()


def cjpeg(tools, img, quality, sampling, *options: str) -> bytes:
    argv = [tools["cjpeg"], "-quality", str(quality), *options]
    if sampling != "grey":
        argv += ["-sample", SAMPLINGS[sampling]]
    return run_tool(argv, netpbm(img))


def cjpeg_script(tools, img, quality, sampling, script) -> bytes:
    kind = "grey" if sampling == "grey" else "colour"
    return cjpeg(tools, img, quality, sampling, "-scans", tools["scripts"][script, kind])


def jpegtran_script(tools, img, quality, sampling, script) -> bytes:
    """A baseline OpenCV JPEG losslessly re-scanned with a custom script (same coefficients)."""
    kind = "grey" if sampling == "grey" else "colour"
    return run_tool([tools["jpegtran"], "-copy", "all", "-scans", tools["scripts"][script, kind]],
                    opencv_jpeg(img, quality, sampling, progressive=False))


def reduced(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), FLAGS)


def assert_exact(data: bytes, label) -> bytes:
    """The rewrite of ``data``, after checking it decodes to exactly the same pixels; tiny images
    are rewritten too (``only_if_smaller=False``), though the middleware would keep them as they
    are when the synthetic scan's table costs more than the AC scans dropped."""
    assert data[:2] == b"\xff\xd8" and b"\xff\xc2" in data, label
    rewritten = dc_only_stream(data, only_if_smaller=False)
    assert rewritten is not None, (label, "progressive JPEG not rewritten")
    if len(rewritten) > len(data):
        assert dc_only_stream(data) is None and len(data) < 1200, label
    else:
        assert dc_only_stream(data) == rewritten, label
    expected, got = reduced(data), reduced(rewritten)
    assert expected is not None, label
    assert got is not None and got.shape == expected.shape, label
    assert np.array_equal(expected, got), (label, int(np.abs(expected.astype(int) - got).max()))
    return rewritten


WRITERS = [("pillow", s) for s in ("444", "422", "420", "grey")] + \
          [("opencv", s) for s in SAMPLINGS] + \
          [(f"{tool} {script}", s) for tool in ("cjpeg", "jpegtran") for script in SCRIPTS
           for s in SAMPLINGS]


@pytest.mark.parametrize("writer,sampling", WRITERS, ids=[f"{w}-{s}" for w, s in WRITERS])
def test_rewrite_is_pixel_exact(writer, sampling, tools):
    for width, height in SIZES:
        img = pixels(width, height, sampling)
        for quality in QUALITIES:
            if writer == "pillow":
                data = pillow_progressive(img, quality, sampling)
            elif writer == "opencv":
                data = opencv_jpeg(img, quality, sampling)
            else:
                tool, script = writer.split(" ", 1)
                make = cjpeg_script if tool == "cjpeg" else jpegtran_script
                data = make(tools, img, quality, sampling, script)
            assert_exact(data, (writer, sampling, width, height, quality))


def test_real_scan_scripts_shrink_a_lot():
    """On a photo-sized image the rewrite keeps a fraction of the bytes, for the common writers."""
    img = photo(1001, 667)
    for data in (pillow_progressive(img, 90, "422"), opencv_jpeg(img, 90, "444")):
        rewritten = assert_exact(data, "large")
        assert len(rewritten) < len(data) * 0.5


def test_chroma_of_420_keeps_its_ac_scans():
    """4:2:0 chroma decodes with a 2x2 IDCT at 1/8, which reads AC: its scans stay, and forcing
    them out would change pixels (so the size rule is not merely conservative)."""
    data = pillow_progressive(photo(640, 480), 75, "420")
    rewritten = assert_exact(data, "420")
    assert rewritten.count(b"\xff\xda") > 3        # chroma AC scans still there
    forced = _with_idct_size(lambda *_: 1, data)
    assert forced is not None and len(forced) < len(rewritten)
    assert not np.array_equal(reduced(data), reduced(forced))


def _with_idct_size(rule, data: bytes) -> bytes | None:
    original = jpeg_scans.idct_size
    jpeg_scans.idct_size = rule
    try:
        return dc_only_stream(data)
    finally:
        jpeg_scans.idct_size = original


def test_synthetic_end_of_band_scan_is_what_keeps_pixels_exact():
    """Without the appended all-EOB scan the decoder block-smooths the trimmed components."""
    data = pillow_progressive(photo(640, 480), 75, "444")
    rewritten = assert_exact(data, "444")
    without = rewritten[:rewritten.rindex(_EOB_DHT)] + b"\xff\xd9"
    assert not np.array_equal(reduced(data), reduced(without))


@pytest.mark.parametrize("sampling,expected", [
    ((1, 1, 1, 1), 1), ((1, 1, 2, 1), 1), ((1, 1, 2, 2), 2), ((1, 1, 1, 2), 1), ((1, 1, 4, 1), 1),
    ((2, 2, 2, 2), 1), ((1, 1, 4, 4), 4), ((2, 2, 4, 4), 2), ((1, 1, 3, 3), 1)])
def test_idct_size_follows_libjpeg(sampling, expected):
    assert idct_size(*sampling) == expected


@pytest.mark.parametrize("blocks", [1, 2, 3, 255, 256, 32767, 32768, 100000, 1 << 20])
def test_eob_runs_decode_back_to_the_block_count(blocks):
    """Read the bits back with the synthetic table: runs of 2**r + r extra bits, 1-padded."""
    data = eob_runs(blocks)
    assert b"\xff" not in data.replace(b"\xff\x00", b"")
    bits = "".join(f"{b:08b}" for b in data.replace(b"\xff\x00", b"\xff"))
    total, at = 0, 0
    while total < blocks:
        r = int(bits[at:at + 4], 2)
        assert r <= 14
        extra = int(bits[at + 4:at + 4 + r] or "0", 2)
        total += (1 << r) + extra
        at += 4 + r
    assert total == blocks
    assert set(bits[at:]) <= {"1"} and len(bits) - at < 8


def test_headers_and_metadata_are_kept_byte_for_byte():
    im = Image.fromarray(photo(640, 480)[:, :, ::-1])
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    im.save(out, "JPEG", quality=80, progressive=True, exif=exif.tobytes(),
            icc_profile=b"\x00" * 100 + b"fake icc payload")
    data = out.getvalue()
    rewritten = assert_exact(data, "exif")
    first_scan = data.index(b"\xff\xda")
    assert rewritten[:first_scan] == data[:first_scan]
    assert Image.open(io.BytesIO(rewritten)).getexif()[0x0112] == 6


def test_zero_restart_interval_is_no_restart_interval():
    data = pillow_progressive(photo(640, 480), 75, "422")
    with_dri = data[:2] + b"\xff\xdd\x00\x04\x00\x00" + data[2:]
    assert assert_exact(with_dri, "DRI 0") is not None


def assert_left_alone(data: bytes) -> None:
    """No rewrite, and the middleware's decode is exactly OpenCV's decode of the same bytes."""
    assert dc_only_stream(data) is None
    expected = reduced(data)
    if expected is None:
        with pytest.raises(DecodeError):
            decode_module.decode(data, "jpg", 8)
    else:
        assert np.array_equal(decode_module.decode(data, "jpg", 8), decode_module.to_bgr(expected))


@pytest.mark.parametrize("sampling", ["420", "grey"])
def test_baseline_is_left_alone(sampling):
    img = pixels(640, 480, sampling)
    assert_left_alone(opencv_jpeg(img, 75, sampling, progressive=False))
    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=75)
    assert_left_alone(out.getvalue())


def test_restart_intervals_and_arithmetic_coding_are_left_alone(tools):
    img = photo(640, 480)
    restarts = cjpeg(tools, img, 75, "422", "-progressive", "-restart", "1")
    assert b"\xff\xdd" in restarts and b"\xff\xd0" in restarts
    assert_left_alone(restarts)
    arithmetic = cjpeg(tools, img, 75, "422", "-progressive", "-arithmetic")
    assert b"\xff\xca" in arithmetic     # SOF10: progressive, arithmetic-coded
    assert_left_alone(arithmetic)


def test_truncated_and_garbage_streams_are_left_alone():
    data = pillow_progressive(photo(640, 480), 75, "422")
    for cut in (len(data) - 2, len(data) // 2, len(data) // 10, 300, 20, 3):
        assert_left_alone(data[:cut])
    noise = bytes(random.Random(8).randrange(256) for _ in range(4000))
    for blob in (b"\xff\xd8", b"\xff\xd8\xff", b"\xff\xd8" + noise, b"not a jpeg at all"):
        assert_left_alone(blob)
    assert dc_only_stream(b"") is None      # (OpenCV refuses an empty buffer outright)


def test_unusual_progressions_fall_back(tools):
    img = photo(640, 480)
    # 12-bit precision (SOF2's first byte): not handled here
    data = pillow_progressive(img, 75, "422")
    sof = data.index(b"\xff\xc2")
    assert dc_only_stream(data[:sof + 4] + b"\x0c" + data[sof + 5:]) is None
    # chroma AC that never covers coefficient 1: the decoder would interpolate its DC
    script = tools["work"] / "late-ac.txt"
    script.write_text("0,1,2: 0-0, 0, 0; 0: 1-63, 0, 0; 1: 10-63, 0, 0; 2: 1-63, 0, 0;")
    assert_left_alone(cjpeg(tools, img, 75, "444", "-scans", str(script)))


def test_mutated_streams_never_raise():
    """Flipped, inserted and cut bytes: always None or a stream no longer than the input."""
    data = pillow_progressive(photo(200, 150), 80, "422")
    rng = random.Random(1)
    for _ in range(1500):
        b = bytearray(data)
        kind = rng.randrange(3)
        at = rng.randrange(len(b))
        if kind == 0:
            b[at] = rng.randrange(256)
        elif kind == 1:
            del b[at:]
        else:
            b[at:at] = bytes([0xFF, rng.randrange(256)])
        out = dc_only_stream(bytes(b))
        assert out is None or len(out) <= len(b)
    assert dc_only_stream(memoryview(data)) == dc_only_stream(data)


def test_middleware_resize_uses_the_rewrite_and_gives_the_same_image(tmp_path, monkeypatch):
    """resize,w_100 on a 1601x1067 progressive source decodes at 1/8 (201x134 still leaves the
    default 2x margin): the response is byte-identical with the rewrite and without it."""
    (tmp_path / "p.jpg").write_bytes(pillow_progressive(photo(1601, 1067), 85, "422"))
    calls = []
    real = jpeg_scans.dc_only_stream

    def spy(data):
        calls.append(real(data))
        return calls[-1]

    monkeypatch.setattr(jpeg_scans, "dc_only_stream", spy)
    fast = ok(get(make_client(tmp_path), "p.jpg", "image/resize,w_100"), "image/jpeg")
    assert len(calls) == 1 and calls[0] is not None
    monkeypatch.setattr(jpeg_scans, "dc_only_stream", lambda data: None)
    slow = ok(get(make_client(tmp_path), "p.jpg", "image/resize,w_100"), "image/jpeg")
    assert size_of(fast) == size_of(slow) == (100, 67)
    assert np.array_equal(decode(fast), decode(slow))
    assert fast == slow
