"""Animated GIF and WebP: resize, crop and watermark keep every frame and its timing (spec §2);
every other action, a percentage resize and a still output format give the first frame."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from imgmiddleware.imaging.pixels import flatten_on

from .conftest import FIXTURES, get, make_client, ok, oss_error, psnr


def frames_of(body: bytes):
    ok_, animation = cv2.imdecodeanimation(np.frombuffer(body, np.uint8))
    assert ok_
    return animation


def seen(frame: np.ndarray) -> np.ndarray:
    """A frame as a viewer sees it: composited on white (colour under alpha 0 means nothing)."""
    return flatten_on(frame) if frame.shape[2] == 4 else frame


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


SOURCE = frames_of((FIXTURES / "example.gif").read_bytes())   # 3 frames, 500x300, 50 ms, loop 0


@pytest.fixture
def animated_webp(image_dir):
    """A 4-frame animated WebP whose frames differ (a square moving right), 120 ms each, 3 loops."""
    animation = cv2.Animation()
    frames = []
    for i in range(4):
        frame = np.full((120, 160, 4), 255, np.uint8)
        frame[40:80, 10 + 30 * i:50 + 30 * i] = (0, 0, 255, 255)
        frames.append(frame)
    animation.frames = frames
    animation.durations = [120] * 4
    animation.loop_count = 3
    ok_, buf = cv2.imencodeanimation(".webp", animation, [cv2.IMWRITE_WEBP_QUALITY, 100])
    assert ok_
    (image_dir / "moving.webp").write_bytes(buf.tobytes())
    return image_dir


@pytest.mark.parametrize("process, size", [
    ("image/resize,w_100", (100, 60)),
    ("image/resize,m_fill,w_100,h_100", (100, 100)),
    ("image/crop,w_200,h_100,g_center", (200, 100)),
    (f"image/watermark,text_{b64('动图 GIF')},size_30", (500, 300)),
    ("image/resize,w_250/crop,w_100,h_100/watermark,text_SGk", (100, 100)),
])
def test_gif_keeps_every_frame_and_its_timing(client, process, size):
    body = ok(get(client, "example.gif", process), "image/gif")
    out = frames_of(body)
    assert len(out.frames) == len(SOURCE.frames) == 3
    assert list(out.durations) == list(SOURCE.durations)
    assert out.loop_count == SOURCE.loop_count
    assert all((f.shape[1], f.shape[0]) == size for f in out.frames)


def test_each_output_frame_is_its_own_source_frame_resized(client):
    out = [seen(f) for f in frames_of(ok(get(client, "example.gif", "image/resize,w_250"))).frames]
    expected = [seen(cv2.resize(f, (250, 150), interpolation=cv2.INTER_AREA)) for f in SOURCE.frames]
    for i, mine in enumerate(out):
        own = psnr(mine, expected[i])
        assert own > 22                                   # its own frame, up to GIF palette noise
        for j, other in enumerate(expected):
            if j != i:
                assert own > psnr(mine, other) + 3        # and clearly not another frame


def test_watermark_lands_on_every_frame(client):
    out = frames_of(ok(get(client, "example.gif", f"image/watermark,text_{b64('水印')},g_nw,x_0,y_0,size_60,color_FF0000")))
    for mine, source in zip(out.frames, SOURCE.frames):
        mine, source = seen(mine).astype(int), seen(source).astype(int)
        red = (mine[:60, :120, 2] > 180) & (mine[:60, :120, 1] < 90) & (mine[:60, :120, 0] < 90)
        assert red.sum() > 200                                  # the red text is on this frame
        assert np.abs(mine[-60:, -120:] - source[-60:, -120:]).mean() < 8   # far corner: palette noise


@pytest.mark.parametrize("process", [
    "image/rotate,90", "image/resize,p_50", "image/blur,r_3,s_2", "image/circle,r_100",
    "image/resize,w_100/format,png", "image/resize,w_100/format,jpg",
])
def test_other_actions_and_still_formats_give_the_first_frame(client, process):
    body = ok(get(client, "example.gif", process))
    assert len(frames_of(body).frames) == 1


def test_gif_is_never_enlarged(client):
    out = frames_of(ok(get(client, "example.gif", "image/resize,w_1000,limit_0")))
    assert (out.frames[0].shape[1], out.frames[0].shape[0]) == (500, 300) and len(out.frames) == 3


def test_gif_to_animated_webp(client):
    body = ok(get(client, "example.gif", "image/resize,w_200/format,webp"), "image/webp")
    out = frames_of(body)
    assert len(out.frames) == 3 and list(out.durations) == [50, 50, 50]


def test_animated_webp_keeps_frames_timing_and_loops(animated_webp):
    client = make_client(animated_webp)
    out = frames_of(ok(get(client, "moving.webp", "image/resize,w_80"), "image/webp"))
    assert len(out.frames) == 4 and list(out.durations) == [120] * 4 and out.loop_count == 3
    # the red square moves right frame by frame: its centre of mass grows in x
    centres = [np.nonzero((f[:, :, 2] > 200) & (f[:, :, 1] < 80))[1].mean() for f in out.frames]
    assert centres == sorted(centres) and centres[-1] - centres[0] > 30


def test_frame_and_pixel_limits_count_frames(image_dir):
    error = oss_error(get(make_client(image_dir, max_frames=2), "example.gif", "image/resize,w_100"))
    assert (error["status"], error["EC"]) == (400, "0040-00000009")
    # 500x300x3 = 450,000 px: over a 400,000 budget only because the frames are counted
    error = oss_error(get(make_client(image_dir, max_source_pixels=400_000), "example.gif", "image/resize,w_100"))
    assert error["EC"] == "0040-00000009"
    assert get(make_client(image_dir, max_source_pixels=450_000), "example.gif", "image/resize,w_100").status_code == 200


def test_info_reports_the_frame_count(client):
    info = get(client, "example.gif", "image/info").get_json()
    assert info["FrameCount"] == {"value": "3"} and info["Format"] == {"value": "gif"}


def test_a_still_gif_result_keeps_transparency(client):
    """circle on a GIF gives its first frame, still a GIF, with transparent corners (not white)."""
    body = ok(get(client, "example.gif", "image/circle,r_100"), "image/gif")
    frame = frames_of(body).frames[0]
    assert frame.shape[:2] == (201, 201)
    assert frame[0, 0, 3] == 0 and frame[100, 100, 3] == 255
