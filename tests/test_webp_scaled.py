"""libwebp's scaled decode for a WebP shrunk on load at 1/4 and 1/8 (imaging/webp_scaled.py): the
size the planner expects, pixels nearer an area-averaged full decode than OpenCV's reduced decode,
the same OSS error for a damaged file, no full-size frame held, and OpenCV when libwebp is missing."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgmiddleware import Config
from imgmiddleware.imaging import webp_scaled
from imgmiddleware.imaging.decode import REDUCED_FLAGS, decode, reduced_size, reduces_natively
from imgmiddleware.imaging.probe import probe
from imgmiddleware.process import budget, parse
from imgmiddleware.process.plan import make_plan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from shrink_bench import ssim  # noqa: E402  (the measurement's own SSIM, so the figures compare)

from .conftest import FIXTURES, format_of, get, make_client, ok, oss_error, size_of


WIDTH, HEIGHT = 4241, 2833          # 12.0 MP, odd sides: reduced sizes round down


def photo(width: int, height: int) -> np.ndarray:
    """example.jpg enlarged, with fine noise so that it has a photo's detail at every scale."""
    img = cv2.resize(cv2.imread(str(FIXTURES / "example.jpg")), (width, height),
                     interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(19).integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("webp") / "big.webp"
    path.write_bytes(cv2.imencode(".webp", photo(WIDTH, HEIGHT), [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes())
    return path


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def reduce_of(data: bytes, process: str, config: Config | None = None) -> int:
    config = config or Config()
    return make_plan(parse(process, config), probe(data), len(data), config).reduce


def test_the_pinned_pillow_ships_a_usable_libwebp():
    """The lock's Pillow wheel carries libwebp; without it every WebP would silently go back to
    OpenCV's full-frame decode, so its absence is a failure here, not a skip."""
    assert webp_scaled.available()
    assert webp_scaled.scales(4) and webp_scaled.scales(8) and not webp_scaled.scales(2)


# Measured on this fixture: libwebp MAD 0.56 / 0.40, SSIM 0.9965 / 0.9972 at 1/4 / 1/8; OpenCV's
# reduced decode MAD 0.77 / 1.29, SSIM 0.987 / 0.985 (its 2-tap resize skips pixels).
@pytest.mark.parametrize("factor", [4, 8])
def test_scaled_decode_is_the_planned_size_and_an_area_average(big, factor):
    data = big.read_bytes()
    assert reduces_natively("webp", factor)
    img = decode(memoryview(data), "webp", factor)       # the engine passes bytes or a memoryview
    assert (img.shape[1], img.shape[0]) == reduced_size(WIDTH, HEIGHT, factor, "webp")
    assert img.shape[2] == 3 and img.dtype == np.uint8
    assert np.array_equal(img, decode(data, "webp", factor))
    ref = cv2.resize(decode(data, "webp", 1), img.shape[1::-1], interpolation=cv2.INTER_AREA)
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_FLAGS[factor])
    assert mad(img, ref) < 1.0 and ssim(img, ref) > 0.995
    assert mad(img, ref) < mad(opencv, ref) and ssim(img, ref) > ssim(opencv, ref)


def test_factor_2_and_full_decodes_stay_with_opencv(big):
    data = big.read_bytes()
    assert not reduces_natively("webp", 2) and not reduces_natively("webp", 1)
    assert webp_scaled.decode_scaled(data, 2) is None
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_FLAGS[2])
    assert np.array_equal(decode(data, "webp", 2), opencv)


def test_a_fit_200_thumbnail_of_a_large_webp(big):
    data = big.read_bytes()
    process = "image/resize,m_lfit,w_200,h_200"
    assert reduce_of(data, process) == 8
    body = ok(get(make_client(big.parent), big.name, process), "image/webp")
    assert format_of(body) == "WEBP" and size_of(body) == (200, 134)      # 4241 x 2833 fitted
    full = ok(get(make_client(big.parent, shrink_on_load=False), big.name, process), "image/webp")
    assert size_of(full) == size_of(body)


def cut_vp8(data: bytes, keep: float) -> bytes:
    """A simple lossy WebP whose VP8 payload stops at ``keep`` of its length, the RIFF and chunk sizes
    rewritten to match: it probes (Pillow refuses a WebP whose container is cut), it cannot decode."""
    assert data[12:16] == b"VP8 "
    n = int(struct.unpack_from("<I", data, 16)[0] * keep)
    payload = data[20:20 + n] + b"\0" * (n & 1)
    return b"RIFF" + struct.pack("<I", 12 + len(payload)) + b"WEBPVP8 " + struct.pack("<I", n) + payload


def test_a_damaged_webp_at_1_4_is_the_error_of_a_full_decode(big, tmp_path):
    name, process = "cut.webp", "image/resize,m_lfit,w_400,h_400"
    data = cut_vp8(big.read_bytes(), 0.6)
    (tmp_path / name).write_bytes(data)
    assert probe(data).width == WIDTH and reduce_of(data, process) == 4
    with pytest.raises(webp_scaled.WebPError):
        webp_scaled.decode_scaled(data, 4)
    errors = []
    for client in (make_client(tmp_path), make_client(tmp_path, shrink_on_load=False)):
        fields = oss_error(get(client, name, process))
        errors.append((fields["status"], fields["Code"], fields["EC"], fields["header_ec"]))
    assert errors[0] == errors[1] == (400, "BadRequest", "0040-00000010", "0040-00000010")


# One measurement in a fresh process: argv = [source, process or "decode"]; prints JSON. Warmed up
# on a small WebP first, the high-water mark reset (clear_refs 5) just before the work.
CHILD = r"""
import json, sys
from pathlib import Path
import cv2, numpy as np
from imgmiddleware.cli import tune_worker_malloc
from imgmiddleware.config import Config
from imgmiddleware.imaging import webp_scaled
from imgmiddleware.process.engine import inspect, run
from imgmiddleware.process.parser import parse
config = Config()
tune_worker_malloc(config)
cv2.setNumThreads(1)

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

small = cv2.imencode(".webp", np.full((96, 128, 3), 128, np.uint8))[1].tobytes()
webp_scaled.decode_scaled(small, 8)
run(parse("image/resize,w_8", config), small, config)
data = Path(sys.argv[1]).read_bytes()
pipeline = parse(sys.argv[2], config) if sys.argv[2] != "decode" else None
info = inspect(data, config) if pipeline else None
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
if pipeline is None:
    out = webp_scaled.decode_scaled(data, 8).nbytes
else:
    out = len(run(pipeline, data, config, info=info).body)
print(json.dumps({"grew": status("VmHWM") - before, "out": out}))
"""


def grew(source: Path, what: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), what], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])["grew"]


def test_a_scaled_decode_holds_no_full_frame_and_the_budget_covers_it(big):
    """Measured (12 MP): the 1/8 decode grows the peak by ~1 MB (its 1.1 MB output and libwebp's
    rows) and the whole fit-200 request by about as much, where OpenCV's reduced decode held the
    36 MB full frame; the estimate the slots admit by is 9 MB (the source, 3 times, and 4 MB)."""
    data = big.read_bytes()
    full_frame = WIDTH * HEIGHT * 3
    process = "image/resize,m_lfit,w_200,h_200"
    config = Config()
    info = probe(data)
    estimate = budget.estimate(make_plan(parse(process, config), info, len(data), config), info)
    decode_peak = max(grew(big, "decode") for _ in range(2))
    request_peak = max(grew(big, process) for _ in range(2))
    assert decode_peak < full_frame / 4 and request_peak < full_frame / 4, (decode_peak, request_peak)
    assert estimate.peak_bytes >= max(decode_peak, request_peak)
    assert estimate.peak_bytes < full_frame        # no longer priced at OpenCV's full decode


def test_without_libwebp_opencv_decodes_and_the_budget_counts_its_full_frame(big, monkeypatch):
    data = big.read_bytes()
    process = "image/resize,m_lfit,w_200,h_200"
    config = Config()
    info = probe(data)

    def peak() -> int:
        return budget.estimate(make_plan(parse(process, config), info, len(data), config), info).peak_bytes

    scaled_peak = peak()
    monkeypatch.setattr(webp_scaled, "available", lambda: False)
    assert not reduces_natively("webp", 8) and webp_scaled.decode_scaled(data, 8) is not None
    for factor in (4, 8):
        img = decode(data, "webp", factor)
        assert (img.shape[1], img.shape[0]) == reduced_size(WIDTH, HEIGHT, factor, "webp")
        assert np.array_equal(img, cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_FLAGS[factor]))
    assert peak() > scaled_peak + WIDTH * HEIGHT * 3     # FULL_FRAME_REDUCED again


def test_a_library_that_is_not_there_is_unavailable(monkeypatch):
    monkeypatch.setattr(webp_scaled, "_LIB", [])
    monkeypatch.setattr(webp_scaled, "_candidates", lambda: ["libwebp-that-is-not-there.so"])
    assert not webp_scaled.available() and not webp_scaled.scales(8)
    assert webp_scaled.decode_scaled(b"RIFF", 8) is None


def test_a_lossless_webp_is_probed_as_such_and_priced_at_its_argb_frame():
    """libwebp decodes a VP8L image whole (4-byte ARGB) before scaling it: still the planned size,
    but the budget counts that frame."""
    pixels = photo(1601, 1201)
    data = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()   # lossless
    info = probe(data)
    lossy = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    assert info.lossless and not probe(lossy).lossless
    img = decode(data, "webp", 8)
    assert (img.shape[1], img.shape[0]) == reduced_size(1601, 1201, 8, "webp")
    assert mad(img, cv2.resize(pixels, img.shape[1::-1], interpolation=cv2.INTER_AREA)) < 1.0
    config = Config()
    plan = make_plan(parse("image/resize,m_lfit,w_100,h_100", config), info, len(data), config)
    assert plan.reduce == 8
    assert budget.estimate(plan, info).peak_bytes >= 1.4 * 1601 * 1201 * 3
