"""Budgets for work and memory (issue 15): what one request may cost, measured where it is spent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from imgmiddleware.ops.report import HUE_WINDOW_DEGREES, average_hue

from .conftest import get, make_client, oss_error

# In a fresh process: an 8000 x 8000 colour image (192 MB, within every source limit), then
# average-hue on it; the peak resident size it adds on top of the image itself.
AVERAGE_HUE_PEAK = textwrap.dedent("""
    import json, resource
    import numpy as np
    from imgmiddleware.ops.report import average_hue

    img = np.empty((8000, 8000, 3), np.uint8)
    img[:, :] = (40, 160, 90)
    img[:4000, :, 2] = 200                      # two hues, so the "near the mean" pass selects
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = average_hue(img, {}, None)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_kb": after - before, "answer": answer}))
""")


def test_average_hue_of_a_64_megapixel_image_needs_only_a_few_megabytes():
    """It took about 30 bytes a pixel (1.8 GB here, 4.6 GB at 13000 x 13000); strips keep it within
    32 MB of the image itself."""
    done = subprocess.run([sys.executable, "-c", AVERAGE_HUE_PEAK], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["grew_kb"] < 32 * 1024, out
    assert out["answer"]["RGB"].startswith("0x")


def reference_average_hue(img: np.ndarray) -> str:
    """The algorithm on the whole image at once, in float64, as the FAQ describes it."""
    bgr = img[:, :, :3]
    hue = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV_FULL)[:, :, 0].astype(np.float64) * (2 * np.pi / 256)
    mean_hue = np.arctan2(np.sin(hue).sum(), np.cos(hue).sum())
    near = np.abs(np.angle(np.exp(1j * (hue - mean_hue)))) <= np.deg2rad(HUE_WINDOW_DEGREES)
    pixels = bgr[near] if near.any() else bgr.reshape(-1, 3)
    b, g, r = (int(v + 0.5) for v in pixels.astype(np.float64).mean(axis=0))
    return f"0x{r:02x}{g:02x}{b:02x}"


def test_average_hue_in_strips_equals_the_whole_image_pass(monkeypatch):
    import imgmiddleware.ops.report as report

    monkeypatch.setattr(report, "HUE_STRIP_PIXELS", 997)      # many uneven strips
    rng = np.random.default_rng(7)
    for shape in ((1, 1, 3), (37, 53, 3), (300, 211, 4)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        assert average_hue(img, {}, None)["RGB"] == reference_average_hue(img)


# --- the cost of a whole pipeline, before any work -------------------------------------------------

def b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def tiny_png(tmp_path, name="tiny.png"):
    """A 4 x 4 PNG of under 100 bytes: the attack needs no big source."""
    path = tmp_path / name
    path.write_bytes(cv2.imencode(".png", np.full((4, 4, 3), 200, np.uint8))[1].tobytes())
    return path


LONG_BLUR = "image/resize,w_4096,h_4096,limit_0,m_fixed/" + "blur,r_50,s_50/" * 269 + "format,jpg"
TILED_MARKS = ("image/resize,w_4096,h_4096,limit_0,m_fixed/"
               + f"watermark,text_{b64('OSS 水印')},fill_1/" * 101 + "format,jpg")


def estimate_of(process: str, source: bytes, config=None):
    from imgmiddleware import Config
    from imgmiddleware.process import parse
    from imgmiddleware.process.budget import estimate
    from imgmiddleware.process.engine import inspect
    from imgmiddleware.process.plan import make_plan

    config = config or Config()
    info = inspect(source, config)
    return estimate(make_plan(parse(process, config, styles={}), info, len(source), config), info)


def test_the_attacks_of_issue_15_are_priced_far_above_the_budget(tmp_path):
    from imgmiddleware import Config

    source = tiny_png(tmp_path).read_bytes()
    budget = Config().max_transform_ms
    assert estimate_of(LONG_BLUR, source).ms > 10 * budget        # 269 blurs of 16.8 MP: ~260 s
    assert estimate_of(TILED_MARKS, source).ms > 2 * budget       # 101 tiled layers: ~50 s


def test_everyday_pipelines_are_priced_well_inside_the_budget():
    from imgmiddleware import Config

    from .conftest import fixture_bytes

    budget = Config().max_transform_ms
    for name in ("example.jpg", "example.gif", "nodejs-1024x768.png"):
        for process in ("image/resize,w_100", "image/rotate,45/format,webp", "image/blur,r_50,s_50",
                        f"image/watermark,text_{b64('水印')},fill_1/format,png", "image/format,avif"):
            cost = estimate_of(process, fixture_bytes(name))
            assert 0 < cost.ms < budget / 20, (name, process, cost)
            assert 0 < cost.peak_bytes < 64 * 2**20, (name, process, cost)


def test_the_estimate_follows_the_size_through_the_steps():
    from .conftest import fixture_bytes

    jpeg = fixture_bytes("example.jpg")                  # 400 x 267
    small = estimate_of("image/resize,w_100/blur,r_50,s_50", jpeg)
    large = estimate_of("image/resize,w_1600,limit_0/blur,r_50,s_50", jpeg)
    from imgmiddleware.process.budget import FIXED_BYTES

    pixels = [cost.peak_bytes - FIXED_BYTES for cost in (small, large)]   # what scales with the image
    assert large.ms > 100 * small.ms / 2 and pixels[1] > 100 * pixels[0] / 10
    # A blur after a 10 x 10 crop costs what a blur of 100 pixels costs, not of 106,800.
    blur_after_crop = (estimate_of("image/crop,w_10,h_10/blur,r_50,s_50", jpeg).ms
                       - estimate_of("image/crop,w_10,h_10", jpeg).ms)
    blur_of_all = estimate_of("image/blur,r_50,s_50", jpeg).ms - estimate_of("image/format,jpg", jpeg).ms
    assert 0 < blur_after_crop < blur_of_all / 500


# --- through the middleware: refused before any work, stopped at the deadline ----------------------

@pytest.fixture
def work_spy(monkeypatch):
    """Counts transforms that got past the budget into decoding and steps."""
    from imgmiddleware.process import engine

    calls = {"work": 0}
    real_work = engine._work

    def work(*args, **kwargs):
        calls["work"] += 1
        return real_work(*args, **kwargs)

    monkeypatch.setattr(engine, "_work", work)
    return calls


@pytest.mark.parametrize("process", [LONG_BLUR, TILED_MARKS], ids=["269-blurs", "101-tiled-marks"])
def test_an_attack_over_the_work_budget_is_refused_before_any_work(tmp_path, work_spy, process):
    tiny_png(tmp_path)
    client = make_client(tmp_path)
    answer = get(client, "tiny.png", process)
    error = oss_error(answer)
    assert (error["status"], error["Code"], error["EC"]) == (400, "InvalidArgument", "0017-00000288")
    assert "s of work, above this server's budget of 20.0 s" in error["Message"]
    assert work_spy["work"] == 0


def test_a_pipeline_over_the_memory_budget_is_refused_before_any_work(work_spy):
    client = make_client(max_transform_bytes=8 * 2**20)
    error = oss_error(get(client, "example.jpg", "image/resize,w_4000,limit_0"))   # 4000 x 2670
    assert (error["status"], error["Code"], error["EC"]) == (400, "InvalidArgument", "0017-00000288")
    assert "MB of pixels, above this server's budget of 8 MB" in error["Message"]
    assert work_spy["work"] == 0
    assert get(client, "example.jpg", "image/resize,w_400").status_code == 200


def test_work_past_the_deadline_stops_between_steps(monkeypatch):
    """Within budget but slow here: the steps after the deadline never run, the answer is 503
    ProcessTimeout, and the slot and its memory are free again at once."""
    import imgmiddleware.ops.effects as effects

    ran = []
    real_blur = effects.apply_blur

    def slow_blur(img, args, ctx):
        ran.append(args["r"])
        time.sleep(0.2)
        return real_blur(img, args, ctx)

    object.__setattr__(effects.BLUR, "apply", slow_blur)      # ActionSpec is frozen: put it back below
    try:
        client = make_client(transform_deadline_seconds=0.5, retry_after_seconds=2, cache_memory_bytes=0)
        started = time.monotonic()
        answer = get(client, "example.jpg", "image/" + "/".join(f"blur,r_{i}" for i in range(1, 21)))
        elapsed = time.monotonic() - started
        error = oss_error(answer)
        assert (error["status"], error["Code"]) == (503, "ProcessTimeout")
        assert answer.headers["Retry-After"] == "2"
        assert 1 <= len(ran) <= 4 and elapsed < 2.5, (ran, elapsed)   # of 20 steps, 0.2 s each
        middleware = client.application.app
        assert middleware.throttle.reserved_bytes == 0
    finally:
        object.__setattr__(effects.BLUR, "apply", real_blur)
    assert get(client, "example.jpg", "image/blur,r_3").status_code == 200


def test_each_frame_of_an_animation_checks_the_deadline(monkeypatch):
    from imgmiddleware.process import engine

    frames = []
    real_execute = engine.execute

    def slow_execute(img, plan):
        frames.append(1)
        time.sleep(0.15)
        return real_execute(img, plan)

    monkeypatch.setattr(engine, "execute", slow_execute)
    client = make_client(transform_deadline_seconds=0.2, cache_memory_bytes=0)
    error = oss_error(get(client, "example.gif", "image/resize,w_100"))
    assert (error["status"], error["Code"]) == (503, "ProcessTimeout")
    assert 1 <= len(frames) < 3, len(frames)             # the GIF has 3 frames: the last never ran


# --- on real gunicorn ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_attacks_leave_gunicorn_workers_idle(tmp_path):
    """Issue 15's attacks, four at once each, in the x-oss-process header as found: every one is
    answered 400 at once, and the workers spend almost no CPU on them (they had kept both cores
    busy for minutes)."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    from .servers import child_pids, free_port, start_serve, stop, wait_for

    (tmp_path / "data" / "bucket").mkdir(parents=True)
    tiny_png(tmp_path / "data" / "bucket")
    port = free_port()
    proc = start_serve(["--root", str(tmp_path / "data"), "--bind", f"127.0.0.1:{port}",
                        "--workers", "2", "--threads", "4"], cwd=tmp_path)
    try:
        wait_for(f"http://127.0.0.1:{port}/bucket/tiny.png", proc)
        workers = child_pids(proc.pid)
        before = sum(cpu_seconds(pid) for pid in workers)

        def attack(process: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/bucket/tiny.png", headers={"x-oss-process": process})
                answer = conn.getresponse()
                return answer.status, answer.read()
            finally:
                conn.close()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(attack, [LONG_BLUR] * 4 + [TILED_MARKS] * 4))
        assert [status for status, _ in answers] == [400] * 8
        assert all(b"<EC>0017-00000288</EC>" in body for _, body in answers)
        spent = sum(cpu_seconds(pid) for pid in workers) - before
        assert spent < 2.0, f"the workers spent {spent:.1f} s of CPU on refused requests"
        assert child_pids(proc.pid) == workers                 # no worker died or was replaced
    finally:
        stop(proc)


# --- the memory bombs of issue 15, in a worker-like process ----------------------------------------

BOMB_RUN = textwrap.dedent("""
    import json, resource, sys
    from werkzeug.test import Client
    from imgmiddleware import Config, ImageMiddleware
    from imgmiddleware.origins.static import static_app

    def hwm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    client = Client(ImageMiddleware(static_app(sys.argv[1]), Config(cache_memory_bytes=0)))
    warm = client.get("/warm.png", query_string={"x-oss-process": "image/resize,w_8"})
    assert warm.status_code == 200, warm.status_code
    before = hwm_kb()
    answer = client.get("/" + sys.argv[2], query_string={"x-oss-process": sys.argv[3]})
    print(json.dumps({"status": answer.status_code, "type": answer.headers.get("Content-Type"),
                      "grew_mb": (hwm_kb() - before) / 1024, "bytes": len(answer.get_data())}))
""")


def run_bomb(folder, name: str, process: str) -> dict:
    cv2.imwrite(str(folder / "warm.png"), np.full((16, 16, 3), 128, np.uint8))
    done = subprocess.run([sys.executable, "-c", BOMB_RUN, str(folder), name, process],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_solid_169_megapixel_png_costs_its_decode_not_30_bytes_a_pixel(tmp_path):
    """A 13000 x 13000 solid PNG (under 1 MB) with average-hue took a worker to 5.1 GB. Now the
    decode is the cost: OpenCV's decoder holds twice the 484 MB image while it converts, so the
    bound is that and 100 MB; and the estimate the budgets see is not below what it measured."""
    cv2.imwrite(str(tmp_path / "solid.png"), np.zeros((13000, 13000, 3), np.uint8))
    source = (tmp_path / "solid.png").read_bytes()
    assert len(source) < 1 << 20
    out = run_bomb(tmp_path, "solid.png", "image/average-hue")
    assert out["status"] == 200 and out["type"] == "application/json", out
    assert out["grew_mb"] < 2 * 484 + 100, out
    assert estimate_of("image/average-hue", source).peak_bytes / 2**20 >= 0.9 * out["grew_mb"]


def test_a_ten_page_group4_tiff_costs_one_page(tmp_path):
    """10 pages of 5000 x 5000 in a 17 KB group-4 TIFF reached 2.1 GB with format,webp, all pages
    decoded as an animation. Only the first page is an image now: one page's pixels (75 MB as BGR)
    and its encode, bound 300 MB."""
    from PIL import Image

    page = Image.new("1", (5000, 5000), 1)
    page.paste(0, (1000, 1000, 4000, 4000))
    page.save(tmp_path / "pages.tif", compression="group4", save_all=True, append_images=[page] * 9)
    assert (tmp_path / "pages.tif").stat().st_size < 100_000
    out = run_bomb(tmp_path, "pages.tif", "image/format,webp")
    assert out["status"] == 200 and out["type"] == "image/webp", out
    assert out["grew_mb"] < 300, out
    source = (tmp_path / "pages.tif").read_bytes()
    assert estimate_of("image/format,webp", source).peak_bytes / 2**20 >= 0.9 * out["grew_mb"]


@pytest.mark.parametrize("name, params", [
    ("progressive.jpg", [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ("photo.webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
])
def test_a_reduced_decode_is_priced_at_what_it_holds_at_full_size(tmp_path, name, params):
    """A 200 px thumbnail of a 12 MP progressive JPEG or WebP decodes at 1/8, but libjpeg holds the
    whole image's coefficients (3 bytes a pixel at 4:2:0) and OpenCV decoded a WebP whole before it
    shrank it: 35 MB, which the estimate priced at 1 MB, so the slots admitted far more than
    worker_transform_bytes. The estimate now covers what was measured (bench/transform_memory_bench.py).
    A WebP at 1/8 is libwebp's scaled decode now (imaging/webp_scaled.py), which holds no full-size
    frame: what remains is the source, which Pillow's probe holds three times (11 MB, 3.1 MB source)."""
    from imgmiddleware.imaging.decode import reduces_natively

    rng = np.random.default_rng(19)
    y, x = np.mgrid[0:3000, 0:4000]
    pixels = np.dstack([(x / 9) % 256, (y / 7) % 256, (x + y) / 13 % 256]).astype(np.uint8)
    pixels = cv2.add(pixels, rng.integers(0, 24, pixels.shape, dtype=np.uint8))
    ok, data = cv2.imencode("." + name.rsplit(".", 1)[1], pixels, params)
    assert ok
    (tmp_path / name).write_bytes(data.tobytes())
    out = run_bomb(tmp_path, name, "image/resize,m_lfit,w_200,h_200")
    if name.endswith(".webp") and reduces_natively("webp", 8):
        assert out["status"] == 200 and out["grew_mb"] < 20, out      # no full-size frame
    else:
        assert out["status"] == 200 and out["grew_mb"] > 25, out      # the full-size part is real
    assert estimate_of("image/resize,m_lfit,w_200,h_200", data.tobytes()).peak_bytes / 2**20 >= out["grew_mb"]


def test_a_16_bit_png_written_with_8_bits_is_priced_at_its_conversion(tmp_path):
    """A 16-bit RGB PNG opens in Pillow as plain RGB; decoding it whole and converting it to 8 bits
    holds about 5 times the 8-bit image, which the estimate priced at 2.1 times. The probe reads the
    bit depth from IHDR now, and the estimate covers what a worker-like process measures."""
    rng = np.random.default_rng(16)
    deep = rng.integers(0, 65535, (1200, 1800, 3), dtype=np.uint16)     # 13 MB as PNG, under 20 MB
    ok, data = cv2.imencode(".png", deep, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    (tmp_path / "deep.png").write_bytes(data.tobytes())
    out = run_bomb(tmp_path, "deep.png", "image/format,jpg")
    assert out["status"] == 200 and out["type"] == "image/jpeg", out
    assert estimate_of("image/format,jpg", data.tobytes()).peak_bytes / 2**20 >= out["grew_mb"]
