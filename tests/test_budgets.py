"""Budgets for work and memory (issue 15): what one request may cost, measured where it is spent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np

from imgmiddleware.ops.report import HUE_WINDOW_DEGREES, average_hue

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
