"""Back-pressure: more concurrent transforms than slots -> some wait, the rest get 503 SlowDown with
Retry-After; none is lost or hangs; huge images cannot take every slot; cache hits need no slot."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from imgmiddleware.process import engine

from .conftest import get, make_client, oss_error, save_image

pytestmark = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")


@pytest.fixture
def slow_run(monkeypatch):
    """Every transform takes 0.4 s once admitted to a slot, and we count how many ran at once."""
    real_work = engine._work
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def work(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            time.sleep(0.4)
            return real_work(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(engine, "_work", work)
    return state


def burst(client, processes: list[tuple[str, str]]) -> list:
    results: list = [None] * len(processes)
    barrier = threading.Barrier(len(processes))

    def one(i, key, process):
        barrier.wait()
        results[i] = get(client, key, process)

    threads = [threading.Thread(target=one, args=(i, k, p)) for i, (k, p) in enumerate(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a request hung"
    return results


def test_more_requests_than_slots_get_503_with_retry_after(slow_run):
    client = make_client(transform_slots=2, transform_wait_seconds=0.1, retry_after_seconds=3,
                         cache_memory_bytes=0)
    responses = burst(client, [("example.jpg", f"image/resize,w_{100 + i}") for i in range(8)])
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1
    assert set(statuses) <= {200, 503}                       # nothing else: none lost
    assert slow_run["peak"] <= 2                             # never more transforms than slots
    for response in responses:
        if response.status_code == 503:
            error = oss_error(response)
            assert error["Code"] == "SlowDown"
            assert response.headers["Retry-After"] == "3"
            assert response.headers["Cache-Control"] == "no-store"


def test_a_short_queue_absorbs_a_burst(slow_run):
    client = make_client(transform_slots=2, transform_wait_seconds=5, cache_memory_bytes=0)
    responses = burst(client, [("example.jpg", f"image/resize,w_{100 + i}") for i in range(4)])
    assert [r.status_code for r in responses] == [200] * 4    # they waited for a slot instead
    assert slow_run["peak"] <= 2


def test_huge_images_cannot_starve_small_ones(slow_run, image_dir):
    big = np.full((1000, 1000, 3), 128, np.uint8)            # 1 MP counts as "large" below
    save_image(image_dir, "big.png", big)
    client = make_client(image_dir, transform_slots=2, large_transform_slots=1,
                         large_image_pixels=500_000, transform_wait_seconds=0.1, cache_memory_bytes=0)
    responses = burst(client, [("big.png", "image/resize,w_100"), ("big.png", "image/resize,w_101"),
                               ("big.png", "image/resize,w_102"), ("example.jpg", "image/resize,w_100")])
    big_statuses = sorted(r.status_code for r in responses[:3])
    assert big_statuses == [200, 503, 503]                   # one large slot
    assert responses[3].status_code == 200                   # the small one still got through


def test_cache_hits_need_no_slot(slow_run):
    client = make_client(transform_slots=1, transform_wait_seconds=0.05)
    assert get(client, "example.jpg", "image/resize,w_100").status_code == 200
    responses = burst(client, [("example.jpg", "image/resize,w_100")] * 6)
    assert [r.status_code for r in responses] == [200] * 6
    assert all(r.headers["x-imgmw-cache"] in ("hit", "revalidated") for r in responses)


def test_transforms_are_admitted_by_their_estimated_memory_too(slow_run):
    """Slots to spare, but two 1600 px enlargements (each ~12 MB by its estimate) do not fit in a
    worker budget of 20 MB together: one runs, the other waits, then gets 503 SlowDown."""
    process = "image/resize,w_1600,limit_0"
    tight = make_client(transform_slots=4, transform_wait_seconds=0.1, cache_memory_bytes=0,
                        worker_transform_bytes=20 * 2**20)
    statuses = sorted(r.status_code for r in burst(tight, [("example.jpg", process)] * 2))
    assert statuses == [200, 503]
    assert slow_run["peak"] == 1
    assert tight.application.app.throttle.reserved_bytes == 0         # given back, both ways
    roomy = make_client(transform_slots=4, transform_wait_seconds=0.1, cache_memory_bytes=0)
    assert [r.status_code for r in burst(roomy, [("example.jpg", process)] * 2)] == [200, 200]


def test_a_waiting_transform_goes_ahead_when_memory_is_given_back(slow_run):
    client = make_client(transform_slots=4, transform_wait_seconds=5, cache_memory_bytes=0,
                         worker_transform_bytes=20 * 2**20)
    responses = burst(client, [("example.jpg", "image/resize,w_1600,limit_0")] * 3)
    assert [r.status_code for r in responses] == [200] * 3
    assert slow_run["peak"] == 1
