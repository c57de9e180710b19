"""The result cache as an operator and a client see it: x-imgmw-cache, status, bytes, what the wrapped
app was asked for and how often a source body was read or a transform ran.

Two kinds of origin: werkzeug's static app over a writable copy of the fixtures (real ETags,
Last-Modified, 304s, wsgi.file_wrapper), and ``Store``, a tiny object store that counts every
subrequest and every body it hands out, so "the source was not read" is a number, not a hope.

Vocabulary of x-imgmw-cache: ``miss`` (computed here), ``hit`` (found under the source's current
validator, or made by another request while this one waited), ``revalidated`` (found through the
remembered validator and confirmed by a 304 of the app; the source body unread), ``bypass`` (not
cacheable or the cache is off). "Served from the cache" below means hit or revalidated.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from werkzeug.datastructures import Headers
from werkzeug.http import http_date, parse_date
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client
from werkzeug.wsgi import FileWrapper

import imgmiddleware
from imgmiddleware import Config, ImageMiddleware
from imgmiddleware import middleware as middleware_module
from imgmiddleware.cache import Entry, ResultCache, result_key
from imgmiddleware.origins.static import static_app
from imgmiddleware.process import parse

from .conftest import decode, fixture_bytes, get, make_client, ok, save_image, size_of

# Bodies closed unread (a revalidation answered 200 by an app ignoring conditionals, a source the
# cache made unnecessary, HEAD) are legal WSGI; werkzeug's lint flags the short read.
pytestmark = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")

CACHE = "x-imgmw-cache"
CACHED = ("hit", "revalidated")
JPEG = fixture_bytes("example.jpg")      # 400 x 267
OTHER = fixture_bytes("f.jpg")           # 333 x 424 (EXIF-oriented)
LAST_MODIFIED = "Sun, 12 Nov 2023 16:42:40 GMT"
W100 = "image/resize,w_100"


# ---------------------------------------------------------------------------------------------------
# Origins and clients

class Store:
    """An object store as a WSGI app: path -> (body, headers). Answers If-None-Match and
    If-Modified-Since with 304 (unless ``honour_conditionals`` is False); records every request and
    counts the bodies actually iterated."""

    def __init__(self, honour_conditionals: bool = True) -> None:
        self.objects: dict[str, tuple[bytes, list]] = {}
        self.honour = honour_conditionals
        self.requests: list[dict] = []
        self.reads = 0
        self.lock = threading.Lock()

    def put(self, path: str, body: bytes, etag: str | None = '"v1"',
            last_modified: str | None = LAST_MODIFIED, length: bool = True,
            content_type: str = "image/jpeg") -> None:
        headers = [("Content-Type", content_type)]
        if length:
            headers.append(("Content-Length", str(len(body))))
        if etag:
            headers.append(("ETag", etag))
        if last_modified:
            headers.append(("Last-Modified", last_modified))
        headers.append(("Cache-Control", "max-age=60"))
        self.objects[path] = (body, headers)

    def __call__(self, environ, start_response):
        with self.lock:
            self.requests.append(dict(environ))
        found = self.objects.get(environ["PATH_INFO"])
        if found is None:
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
            return [b"not found"]
        body, headers = found
        if self.honour and self._not_modified(environ, Headers(headers)):
            start_response("304 Not Modified",
                           [h for h in headers if h[0] in ("ETag", "Cache-Control")])
            return []
        start_response("200 OK", list(headers))
        return CountedBody(self, body)

    @staticmethod
    def _not_modified(environ, headers: Headers) -> bool:
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None:
            etag = headers.get("ETag")
            return etag is not None and etag in [t.strip() for t in if_none_match.split(",")]
        since, modified = environ.get("HTTP_IF_MODIFIED_SINCE"), headers.get("Last-Modified")
        if since and modified:
            since_d, modified_d = parse_date(since), parse_date(modified)
            return since_d is not None and modified_d is not None and modified_d <= since_d
        return False

    def conditional_requests(self) -> list[dict]:
        return [r for r in self.requests
                if "HTTP_IF_NONE_MATCH" in r or "HTTP_IF_MODIFIED_SINCE" in r]


class CountedBody:
    def __init__(self, store: Store, body: bytes) -> None:
        self.store, self.body = store, body

    def __iter__(self):
        with self.store.lock:
            self.store.reads += 1
        yield self.body

    def close(self) -> None:
        pass


def wrap(app, **overrides) -> tuple[Client, ImageMiddleware]:
    """(client, middleware) for LintMiddleware(ImageMiddleware(LintMiddleware(app)))."""
    mw = ImageMiddleware(LintMiddleware(app), **overrides)
    return Client(LintMiddleware(mw)), mw


def static(root: Path, **overrides) -> tuple[Client, ImageMiddleware]:
    return wrap(static_app(root), **overrides)


@pytest.fixture
def runs(monkeypatch) -> list:
    """Every run of the transform (the engine's ``run``), recorded."""
    calls: list = []
    real = middleware_module.run

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(middleware_module, "run", counted)
    return calls


def slow_runs(monkeypatch, delay: float = 0.2, fail_first: bool = False) -> list:
    """Like ``runs``, but each run takes ``delay`` seconds; the first one can raise instead."""
    calls: list = []
    lock = threading.Lock()
    real = middleware_module.run

    def slow(*args, **kwargs):
        with lock:
            calls.append(1)
            number = len(calls)
        time.sleep(delay)
        if fail_first and number == 1:
            raise RuntimeError("the leader's transform crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(middleware_module, "run", slow)
    return calls


def concurrently(app, count: int, path: str, process: str) -> list[tuple[int, str | None, bytes]]:
    """``count`` threads, released together by a barrier, each GETs path?x-oss-process=process."""
    barrier = threading.Barrier(count, timeout=30)
    results: list = [None] * count

    def worker(index: int) -> None:
        client = Client(LintMiddleware(app))
        barrier.wait()
        response = client.get(path, query_string={"x-oss-process": process})
        results[index] = (response.status_code, response.headers.get(CACHE), response.get_data())
        response.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results), "a request thread failed or hung"
    return results


def bump_mtime(path: Path, seconds: int = 100) -> None:
    """Move a file's mtime (and so the static app's ETag and Last-Modified) forward."""
    st = path.stat()
    os.utime(path, (st.st_atime + seconds, st.st_mtime + seconds))


# ---------------------------------------------------------------------------------------------------
# Hits, misses and what makes a result new

def test_miss_then_served_from_cache_with_identical_bytes_and_the_source_unread(runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    client, _ = wrap(store)

    first = get(client, "a.jpg", W100)
    body = ok(first, "image/jpeg")
    assert first.headers[CACHE] == "miss"
    assert size_of(body) == (100, 67)
    assert first.headers["ETag"] == '"v1"'            # the source's, as on OSS
    assert (store.reads, len(runs)) == (1, 1)
    # the answer that did the work says how long it took, in milliseconds (the viewer shows it)
    timing = dict(part.strip().split(";dur=") for part in first.headers["Server-Timing"].split(","))
    assert set(timing) == {"read", "wait", "transform"} and float(timing["transform"]) > 0

    for _ in range(3):
        again = get(client, "a.jpg", W100)
        assert again.headers[CACHE] == "revalidated"
        assert "Server-Timing" not in again.headers     # nothing was computed for it
        assert ok(again, "image/jpeg") == body
        assert again.headers["ETag"] == '"v1"'
        assert again.headers["Last-Modified"] == LAST_MODIFIED
    # every repeat asked the app one conditional question and got a 304: body never read again
    assert (store.reads, len(runs)) == (1, 1)
    assert len(store.conditional_requests()) == 3
    assert all(r["HTTP_IF_NONE_MATCH"] == '"v1"' for r in store.conditional_requests())


def test_the_static_app_repeat_is_served_from_the_disk_cache(image_dir, tmp_path, runs):
    client = make_client(image_dir, cache_dir=str(tmp_path / "c"))
    first = get(client, "example.jpg", "image/resize,w_150/format,png")
    body = ok(first, "image/png")
    assert first.headers[CACHE] == "miss"
    second = get(client, "example.jpg", "image/resize,w_150/format,png")
    assert second.headers[CACHE] in CACHED
    assert ok(second, "image/png") == body
    assert second.headers["ETag"] == first.headers["ETag"]
    assert len(runs) == 1
    assert any((tmp_path / "c").iterdir())             # the disk tier exists where configured


def test_an_app_that_ignores_conditionals_still_gets_its_body_left_unread(runs):
    store = Store(honour_conditionals=False)
    store.put("/a.jpg", JPEG)
    client, _ = wrap(store)
    body = ok(get(client, "a.jpg", W100))
    again = get(client, "a.jpg", W100)
    assert again.headers[CACHE] in CACHED
    assert ok(again) == body
    assert (store.reads, len(runs)) == (1, 1)          # 200 with the same ETag: closed unread


def test_a_changed_source_file_is_a_miss_with_the_new_pixels(image_dir, tmp_path, runs):
    client = make_client(image_dir, cache_dir=str(tmp_path / "c"))
    before = get(client, "example.jpg", "image/resize,w_200")
    assert size_of(ok(before)) == (200, 134)

    (image_dir / "example.jpg").write_bytes(OTHER)     # a different picture, 333 x 424 once oriented
    bump_mtime(image_dir / "example.jpg")              # and a new ETag for sure

    after = get(client, "example.jpg", "image/resize,w_200")
    assert after.headers[CACHE] == "miss"
    assert after.headers["ETag"] != before.headers["ETag"]
    assert size_of(ok(after)) == (200, 255)
    again = get(client, "example.jpg", "image/resize,w_200")
    assert again.headers[CACHE] in CACHED and size_of(ok(again)) == (200, 255)
    assert len(runs) == 2


def test_a_changed_etag_is_a_miss_never_a_stale_result(runs, tmp_path):
    store = Store()
    store.put("/a.jpg", JPEG, etag='"v1"')
    client, _ = wrap(store, cache_dir=str(tmp_path / "c"))
    assert size_of(ok(get(client, "a.jpg", W100))) == (100, 67)

    store.put("/a.jpg", OTHER, etag='"v2"')
    changed = get(client, "a.jpg", W100)
    assert changed.headers[CACHE] == "miss"
    assert changed.headers["ETag"] == '"v2"'
    assert size_of(ok(changed)) == (100, 127)
    assert store.reads == 2

    # another worker on the same disk tier, whose memo still says "v1", does not serve v1 either
    other, _ = wrap(store, cache_dir=str(tmp_path / "c"))
    store.put("/a.jpg", JPEG, etag='"v3"')
    third = get(other, "a.jpg", W100)
    assert third.headers[CACHE] == "miss" and size_of(ok(third)) == (100, 67)
    assert len(runs) == 3


def test_a_source_without_etag_is_cached_by_last_modified_and_length(runs):
    store = Store()
    store.put("/a.jpg", JPEG, etag=None)
    client, _ = wrap(store)
    first = get(client, "a.jpg", W100)
    body = ok(first)
    assert first.headers[CACHE] == "miss" and "ETag" not in first.headers
    second = get(client, "a.jpg", W100)
    assert second.headers[CACHE] in CACHED and ok(second) == body
    assert (store.reads, len(runs)) == (1, 1)
    assert store.conditional_requests()[-1]["HTTP_IF_MODIFIED_SINCE"] == LAST_MODIFIED

    # a newer Last-Modified is a new version
    store.put("/a.jpg", OTHER, etag=None, last_modified="Mon, 13 Nov 2023 10:00:00 GMT")
    third = get(client, "a.jpg", W100)
    assert third.headers[CACHE] == "miss" and size_of(ok(third)) == (100, 127)


@pytest.mark.parametrize("last_modified, length", [(None, True), (LAST_MODIFIED, False), (None, False)],
                         ids=["length-only", "last-modified-only", "neither"])
def test_a_source_with_no_validator_is_never_cached(runs, tmp_path, last_modified, length):
    store = Store()
    store.put("/a.jpg", JPEG, etag=None, last_modified=last_modified, length=length)
    client, mw = wrap(store, cache_dir=str(tmp_path / "c"))
    bodies = set()
    for _ in range(3):
        response = get(client, "a.jpg", W100)
        assert response.headers[CACHE] == "bypass"
        bodies.add(ok(response))
    assert len(bodies) == 1
    assert (store.reads, len(runs)) == (3, 3)
    stats = mw.cache.stats()
    assert stats.memory_entries == 0 and stats.disk_entries == 0


def test_spellings_with_one_canonical_form_share_one_entry(image_dir, tmp_path, runs):
    client, mw = static(image_dir, cache_dir=str(tmp_path / "c"))
    short = get(client, "example.jpg", "image/resize,w_100")
    assert short.headers[CACHE] == "miss"
    long = get(client, "example.jpg", "image/resize,m_lfit,w_100,limit_1")
    assert long.headers[CACHE] in CACHED
    assert ok(long) == ok(short)
    assert len(runs) == 1
    stats = mw.cache.stats()
    assert stats.memory_entries == 1 and stats.disk_entries == 1
    # and a different meaning is a different entry
    assert get(client, "example.jpg", "image/resize,w_101").headers[CACHE] == "miss"


def test_output_settings_are_part_of_the_key(image_dir, tmp_path, runs):
    cache_dir = str(tmp_path / "c")
    fine, _ = static(image_dir, cache_dir=cache_dir, jpeg_quality=95)
    coarse, _ = static(image_dir, cache_dir=cache_dir, jpeg_quality=30)
    high = get(fine, "example.jpg", "image/resize,w_300")
    low = get(coarse, "example.jpg", "image/resize,w_300")
    assert high.headers[CACHE] == "miss" and low.headers[CACHE] == "miss"
    assert len(ok(low)) < len(ok(high))
    # a third worker with the first one's settings finds the first one's result
    again, _ = static(image_dir, cache_dir=cache_dir, jpeg_quality=95)
    third = get(again, "example.jpg", "image/resize,w_300")
    assert third.headers[CACHE] in CACHED and ok(third) == ok(high)
    assert len(runs) == 2


def test_a_new_engine_version_does_not_reuse_old_results(image_dir, tmp_path, runs, monkeypatch):
    cache_dir = str(tmp_path / "c")
    client, _ = static(image_dir, cache_dir=cache_dir)
    assert get(client, "example.jpg", W100).headers[CACHE] == "miss"
    monkeypatch.setattr(imgmiddleware, "__version__", "999.0.0")   # an upgrade, same cache_dir
    upgraded, _ = static(image_dir, cache_dir=cache_dir)
    assert get(upgraded, "example.jpg", W100).headers[CACHE] == "miss"
    assert len(runs) == 2


def mark_colour(body: bytes) -> tuple[int, int, int]:
    """Mean BGR of the pixels a watermark changed on the plain grey base."""
    pixels = decode(body)[:, :, :3].astype(int)
    changed = np.any(pixels != 128, axis=2)
    assert changed.sum() > 100, "no watermark visible"
    return tuple(int(round(c)) for c in pixels[changed].mean(axis=0))


def test_a_changed_watermark_image_recomputes_the_cached_result(tmp_path, runs):
    root = tmp_path / "bucket"
    root.mkdir()
    save_image(root, "grey.png", np.full((150, 200, 3), 128, np.uint8))
    save_image(root, "mark.png", np.full((20, 30, 3), (0, 0, 255), np.uint8))          # red
    process = "image/watermark,image_" + base64.urlsafe_b64encode(b"mark.png").decode().rstrip("=")
    client, _ = static(root, cache_dir=str(tmp_path / "c"))

    red = get(client, "grey.png", process)
    assert red.headers[CACHE] == "miss"
    assert mark_colour(ok(red, "image/png")) == (0, 0, 255)
    assert get(client, "grey.png", process).headers[CACHE] in CACHED

    save_image(root, "mark.png", np.full((20, 30, 3), (255, 0, 0), np.uint8))          # now blue
    bump_mtime(root / "mark.png")
    blue = get(client, "grey.png", process)
    assert blue.headers[CACHE] == "miss"
    assert mark_colour(ok(blue, "image/png")) == (255, 0, 0)
    again = get(client, "grey.png", process)
    assert again.headers[CACHE] in CACHED and ok(again) == ok(blue)
    assert len(runs) == 2


# ---------------------------------------------------------------------------------------------------
# Tiers, instances and modes

def recording_wrapper():
    used: list = []

    class Recorder(FileWrapper):
        def __init__(self, file, buffer_size: int = 8192) -> None:
            used.append(file)
            super().__init__(file, buffer_size)

    return Recorder, used


def test_the_disk_tier_survives_a_restart_and_is_streamed_through_file_wrapper(tmp_path, runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    cache_dir = str(tmp_path / "c")
    first_worker, _ = wrap(store, cache_dir=cache_dir)
    body = ok(get(first_worker, "a.jpg", "image/resize,w_300"))

    # a second gunicorn worker, or a restart; no outer lint here: it replaces wsgi.file_wrapper
    restarted = Client(ImageMiddleware(LintMiddleware(store), cache_dir=cache_dir))
    wrapper, used = recording_wrapper()
    response = get(restarted, "a.jpg", "image/resize,w_300",
                   environ_overrides={"wsgi.file_wrapper": wrapper})
    assert response.headers[CACHE] in CACHED
    assert ok(response) == body
    assert len(used) == 1                              # the disk file went out through the server's wrapper
    assert (store.reads, len(runs)) == (1, 1)


def test_head_on_a_cached_entry_answers_the_headers_without_work(tmp_path, runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    cache_dir = str(tmp_path / "c")
    client, _ = wrap(store, cache_dir=cache_dir)
    got = get(client, "a.jpg", W100)
    body = ok(got)
    for head_client in (client, wrap(store, cache_dir=cache_dir)[0]):   # memory tier, then disk tier
        head = get(head_client, "a.jpg", W100, method="HEAD")
        assert head.status_code == 200 and head.get_data() == b""
        assert head.headers[CACHE] in CACHED
        for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified"):
            assert head.headers[name] == got.headers[name]
        assert head.headers["Content-Length"] == str(len(body))
    assert (store.reads, len(runs)) == (1, 1)


def test_memory_only_mode_caches_in_process_and_writes_nothing(tmp_path, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store()
    store.put("/a.jpg", JPEG)
    client, mw = wrap(store, cache_dir="")
    body = ok(get(client, "a.jpg", W100))
    again = get(client, "a.jpg", W100)
    assert again.headers[CACHE] in CACHED and ok(again) == body
    assert (store.reads, len(runs)) == (1, 1)
    stats = mw.cache.stats()
    assert stats.memory_entries == 1 and stats.disk_entries == 0
    assert list(tmp_path.iterdir()) == []
    fresh, _ = wrap(store, cache_dir="")               # nothing survives the process
    assert get(fresh, "a.jpg", W100).headers[CACHE] == "miss"


def test_cache_off_is_always_bypass(runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    client, mw = wrap(store, cache_memory_bytes=0, cache_dir="")
    for _ in range(3):
        response = get(client, "a.jpg", W100)
        assert response.headers[CACHE] == "bypass"
        assert size_of(ok(response)) == (100, 67)
    assert (store.reads, len(runs)) == (3, 3)
    assert not store.conditional_requests()
    stats = mw.cache.stats()
    assert (stats.memory_entries, stats.disk_entries) == (0, 0)


def test_stats_report_entries_and_bytes_and_clear_empties_both_tiers(image_dir, tmp_path, runs):
    client, mw = static(image_dir, cache_dir=str(tmp_path / "c"))
    sizes = [len(ok(get(client, "example.jpg", f"image/resize,w_{w}"))) for w in (120, 240)]
    stats = mw.cache.stats()
    assert stats.memory_entries == 2 and stats.disk_entries == 2
    assert stats.memory_bytes >= sum(sizes) and stats.disk_bytes >= sum(sizes)

    mw.cache.clear()
    stats = mw.cache.stats()
    assert (stats.memory_entries, stats.memory_bytes, stats.disk_entries) == (0, 0, 0)
    assert get(client, "example.jpg", "image/resize,w_120").headers[CACHE] == "miss"
    assert len(runs) == 3


# ---------------------------------------------------------------------------------------------------
# Single-flight

@pytest.mark.parametrize("disk", [False, True], ids=["memory", "disk"])
def test_twenty_concurrent_requests_run_the_transform_once(monkeypatch, tmp_path, disk):
    calls = slow_runs(monkeypatch)
    store = Store()
    store.put("/a.jpg", JPEG)
    mw = ImageMiddleware(LintMiddleware(store), cache_dir=str(tmp_path / "c") if disk else "")
    results = concurrently(mw, 20, "/a.jpg", "image/resize,w_180")
    assert [status for status, _, _ in results] == [200] * 20
    assert len({body for _, _, body in results}) == 1
    assert size_of(results[0][2]) == (180, 120)
    assert len(calls) == 1
    assert store.reads == 1                            # the followers' source bodies stayed unread
    states = [state for _, state, _ in results]
    assert states.count("miss") == 1
    assert all(state in CACHED for state in states if state != "miss")


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "disk"])
def test_a_failing_leader_does_not_fail_its_followers(monkeypatch, tmp_path, disk):
    calls = slow_runs(monkeypatch, fail_first=True)
    store = Store()
    store.put("/a.jpg", JPEG)
    mw = ImageMiddleware(LintMiddleware(store), cache_dir=str(tmp_path / "c") if disk else "")
    results = concurrently(mw, 20, "/a.jpg", "image/resize,w_180")
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 19 + [500]             # only the crashed leader's own request failed
    assert len({body for status, _, body in results if status == 200}) == 1
    assert len(calls) == 2                             # one follower took over, once
    # and the result it made is cached for everyone after
    after = get(Client(LintMiddleware(mw)), "a.jpg", "image/resize,w_180")
    assert after.headers[CACHE] in CACHED and len(calls) == 2


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "disk"])
def test_single_flight_does_not_recompute_a_result_already_stored(tmp_path, disk):
    """A request that looked before the leader stored and asks after it finished (the window
    between the middleware's get() and single_flight()) must get the stored result."""
    cache = ResultCache(1 << 20, str(tmp_path / "c") if disk else "", 1 << 24)
    computed: list = []

    def compute() -> Entry:
        computed.append(1)
        return Entry("image/jpeg", [], [("/a", "", '"v1"')], body=b"result", length=6)

    first, here = cache.single_flight("k", compute)
    assert here and first.body == b"result"
    second, here = cache.single_flight("k", compute)
    assert not here and len(computed) == 1
    cache.close()


PROCESS_WORKER = textwrap.dedent(r'''
    import hashlib, json, os, sys, threading, time
    from werkzeug.test import Client
    from imgmiddleware import ImageMiddleware, middleware
    from imgmiddleware.origins.static import static_app

    root, cache_dir, counter, ready, go = sys.argv[1:6]
    real = middleware.run

    def counted(*args, **kwargs):
        with open(counter, "a") as fh:          # O_APPEND: one line per computation, any process
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return real(*args, **kwargs)

    middleware.run = counted
    app = ImageMiddleware(static_app(root), cache_dir=cache_dir)
    results = []

    def worker():
        response = Client(app).get("/example.jpg", query_string={"x-oss-process": "image/resize,w_222"})
        body = response.get_data()
        results.append([response.status_code, response.headers.get("x-imgmw-cache"),
                        hashlib.sha256(body).hexdigest(), len(body)])
        response.close()

    open(ready, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.002)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    print(json.dumps(results))
''')


def test_single_flight_across_processes_sharing_the_disk_tier(image_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(PROCESS_WORKER)
    counter, go, cache_dir = tmp_path / "computations", tmp_path / "go", tmp_path / "c"
    readies = [tmp_path / f"ready{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, str(script), str(image_dir), str(cache_dir), str(counter),
                               str(ready), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for ready in readies]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), outputs
    results = [r for out, _ in outputs for r in json.loads(out)]
    assert len(results) == 12
    assert all(status == 200 for status, _, _, _ in results)
    assert len({digest for _, _, digest, _ in results}) == 1
    assert len(counter.read_text().split()) == 1       # one computation on the whole machine
    states = [state for _, state, _, _ in results]
    assert states.count("miss") == 1 and all(s in CACHED for s in states if s != "miss")


# ---------------------------------------------------------------------------------------------------
# Storage failures

CRASH_WORKER = textwrap.dedent(r'''
    import os, sys, time
    import diskcache.core
    from werkzeug.test import Client
    from imgmiddleware import ImageMiddleware
    from imgmiddleware.origins.static import static_app

    root, cache_dir, ready = sys.argv[1:4]

    def stalled_write(self, full_path, iterator, mode, encoding=None):
        """diskcache writes an entry's file before its row: stop half-way through the file."""
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        with open(full_path, mode) as fh:
            chunk = next(iterator)
            fh.write(chunk[: len(chunk) // 2])
            fh.flush()
            with open(ready + ".tmp", "w") as flag:
                flag.write(f"{full_path}\n{len(chunk)}")
            os.replace(ready + ".tmp", ready)
            time.sleep(30)      # SIGKILLed here; ends by itself if nobody does
        os._exit(3)

    diskcache.core.Disk._write = stalled_write
    app = ImageMiddleware(static_app(root), cache_dir=cache_dir, cache_memory_bytes=0,
                          cache_wait_seconds=1)
    Client(app).get("/nodejs-1024x768.png", query_string={"x-oss-process": "image/format,bmp"})
    os._exit(4)
''')


def test_a_worker_killed_mid_write_leaves_no_entry_that_is_served(image_dir, tmp_path, runs):
    script, ready, cache_dir = tmp_path / "crash.py", tmp_path / "ready", tmp_path / "c"
    script.write_text(CRASH_WORKER)
    proc = subprocess.Popen([sys.executable, str(script), str(image_dir), str(cache_dir), str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never started writing"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial, blob_size = ready.read_text().split("\n")
    assert 0 < Path(partial).stat().st_size < int(blob_size)   # it really died mid-write

    # the dead worker's key, as the middleware computes it
    etag = get(make_client(image_dir), "nodejs-1024x768.png").headers["ETag"]
    identity = "\n".join(("localhost", "", "/nodejs-1024x768.png", ""))
    key = result_key(identity, etag, parse("image/format,bmp", Config()).canonical(),
                     Config().output_fingerprint())
    cache = ResultCache(0, str(cache_dir), 1 << 30)
    assert cache.get(key) is None
    assert cache.stats().disk_entries == 0
    cache.close()

    client = make_client(image_dir, cache_dir=str(cache_dir))
    fresh = get(client, "nodejs-1024x768.png", "image/format,bmp")
    assert fresh.headers[CACHE] == "miss"
    body = ok(fresh, "image/bmp")
    assert decode(body).shape[:2] == (768, 1024)
    assert 0 < int(blob_size) - len(body) < 2048        # what the dead worker was writing: this + its header
    again = get(make_client(image_dir, cache_dir=str(cache_dir)), "nodejs-1024x768.png", "image/format,bmp")
    assert again.headers[CACHE] in CACHED and ok(again) == body
    assert len(runs) == 1                              # this process computed it once


DISK_ERRORS = [OSError(errno.ENOSPC, "No space left on device"),
               sqlite3.OperationalError("database or disk is full")]


@pytest.mark.parametrize("error", DISK_ERRORS, ids=["ENOSPC", "sqlite-full"])
def test_a_full_disk_degrades_to_serving_uncached(image_dir, tmp_path, runs, monkeypatch, caplog, error):
    client, mw = static(image_dir, cache_dir=str(tmp_path / "c"), cache_memory_bytes=0)

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(mw.cache._disk, "set", full)
    monkeypatch.setattr(mw.cache._disk, "add", full)
    caplog.set_level(logging.WARNING, logger="imgmiddleware.cache")
    bodies = set()
    for _ in range(3):
        response = get(client, "example.jpg", W100)
        assert response.headers[CACHE] in ("miss", "bypass")
        assert size_of(ok(response, "image/jpeg")) == (100, 67)
        bodies.add(response.get_data())
    assert len(bodies) == 1 and len(runs) == 3
    warnings = [r for r in caplog.records if r.name == "imgmiddleware.cache" and r.levelno == logging.WARNING]
    assert warnings and str(error) in warnings[0].getMessage()
    assert mw.cache.stats().disk_entries == 0


def test_a_full_disk_keeps_the_memory_tier_working(image_dir, tmp_path, runs, monkeypatch):
    client, mw = static(image_dir, cache_dir=str(tmp_path / "c"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mw.cache._disk, "set", full)
    body = ok(get(client, "example.jpg", W100))
    again = get(client, "example.jpg", W100)
    assert again.headers[CACHE] in CACHED and ok(again) == body
    assert len(runs) == 1


def test_an_unreadable_disk_tier_degrades_to_computing(image_dir, tmp_path, runs, monkeypatch, caplog):
    cache_dir = str(tmp_path / "c")
    ok(get(make_client(image_dir, cache_dir=cache_dir), "example.jpg", W100))
    client, mw = static(image_dir, cache_dir=cache_dir, cache_memory_bytes=0)

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(mw.cache._disk, "get", broken)
    response = get(client, "example.jpg", W100)
    assert response.headers[CACHE] in ("miss", "bypass")
    assert size_of(ok(response)) == (100, 67)
    assert "disk I/O error" in caplog.text


def test_a_cache_dir_replaced_by_a_file_after_startup_degrades(image_dir, tmp_path, runs, caplog):
    cache_dir = tmp_path / "c"
    client, mw = static(image_dir, cache_dir=str(cache_dir), cache_memory_bytes=0)
    assert get(client, "example.jpg", W100).headers[CACHE] == "miss"

    for path in sorted(cache_dir.rglob("*"), reverse=True):   # the directory goes away ...
        path.rmdir() if path.is_dir() else path.unlink()
    cache_dir.rmdir()
    cache_dir.write_text("not a directory")                    # ... and a file takes its place

    results = []

    def in_a_new_thread():                  # a thread of its own opens a new database connection
        other = Client(LintMiddleware(mw))
        for process in (W100, "image/resize,w_110"):
            response = other.get("/example.jpg", query_string={"x-oss-process": process})
            results.append((response.status_code, response.headers.get(CACHE), response.get_data()))
            response.close()

    thread = threading.Thread(target=in_a_new_thread, daemon=True)
    thread.start()
    thread.join(60)
    for process in (W100, "image/resize,w_120"):           # and the old connection's thread
        response = get(client, "example.jpg", process)
        results.append((response.status_code, response.headers.get(CACHE), ok(response)))
    assert len(results) == 4
    assert all(status == 200 and state in ("miss", "bypass") for status, state, _ in results)
    assert [size_of(body)[0] for _, _, body in results] == [100, 110, 100, 120]
    assert "result cache disk tier unavailable" in caplog.text


# ---------------------------------------------------------------------------------------------------
# Byte bounds

def test_the_memory_tier_stays_within_its_byte_bound(image_dir, runs):
    limit = 50_000
    client, mw = static(image_dir, cache_memory_bytes=limit, cache_dir="")
    written = 0
    for width in range(100, 400, 10):
        written += len(ok(get(client, "example.jpg", f"image/resize,w_{width}")))
        assert mw.cache.stats().memory_bytes <= limit
    assert written > 4 * limit                                 # the bound had work to do
    stats = mw.cache.stats()
    assert 0 < stats.memory_entries < 30
    # least recently used goes first: the newest result is still there, the oldest is not
    assert get(client, "example.jpg", "image/resize,w_390").headers[CACHE] in CACHED
    assert get(client, "example.jpg", "image/resize,w_100").headers[CACHE] == "miss"
    # a result larger than the whole bound is served, and not kept
    big = get(client, "nodejs-1024x768.png", "image/format,png")
    assert len(ok(big)) > limit and mw.cache.stats().memory_bytes <= limit


def test_the_disk_tier_stays_near_its_byte_bound(image_dir, tmp_path, runs):
    """diskcache culls after each insert once its volume (entries + database pages) reaches the
    limit, ten least-recently-used entries at a time; so after any write the volume exceeds the
    limit by at most the entry just written."""
    limit = 100_000     # thumbnails at OSS's quality 82 with optimized tables: ~285 KB in all
    client, mw = static(image_dir, cache_memory_bytes=0, cache_dir=str(tmp_path / "c"),
                        cache_disk_bytes=limit)
    written, largest = 0, 0
    for width in range(100, 400, 10):
        size = len(ok(get(client, "example.jpg", f"image/resize,w_{width}")))
        written, largest = written + size, max(largest, size)
        assert mw.cache.stats().disk_bytes <= limit + largest
    assert written > 2 * limit
    stats = mw.cache.stats()
    assert 0 < stats.disk_entries < 30
    newest = get(static(image_dir, cache_memory_bytes=0, cache_dir=str(tmp_path / "c"),
                        cache_disk_bytes=limit)[0], "example.jpg", "image/resize,w_390")
    assert newest.headers[CACHE] in CACHED


# ---------------------------------------------------------------------------------------------------
# HTTP: conditionals, Cache-Control

def test_a_matching_if_none_match_is_answered_304_before_any_work(runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    client, _ = wrap(store)
    response = get(client, "a.jpg", W100, headers={"If-None-Match": '"v1"'})
    assert response.status_code == 304
    assert response.get_data() == b""
    assert response.headers["ETag"] == '"v1"'
    assert (store.reads, len(runs), len(store.requests)) == (0, 0, 1)


def test_a_matching_if_none_match_through_the_static_app_repeats_its_etag(image_dir, runs):
    client = make_client(image_dir)
    etag = get(client, "example.jpg", W100).headers["ETag"]
    response = get(client, "example.jpg", W100, headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.get_data() == b""
    assert response.headers["ETag"] == etag           # werkzeug spells it "Etag"; we still repeat it
    assert len(runs) == 1


def test_a_different_if_none_match_gets_the_result(runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    client, _ = wrap(store)
    first = get(client, "a.jpg", W100, headers={"If-None-Match": '"old"'})
    assert first.status_code == 200 and size_of(ok(first)) == (100, 67)
    second = get(client, "a.jpg", W100, headers={"If-None-Match": '"old"'})
    assert second.status_code == 200 and second.headers[CACHE] in CACHED
    assert ok(second) == ok(first)
    assert (store.reads, len(runs)) == (1, 1)          # the cached answer left the source unread


@pytest.mark.parametrize("since, status", [(time.time() + 86_400, 304), (0, 200)],
                         ids=["future", "1970"])
def test_if_modified_since(image_dir, runs, since, status):
    client = make_client(image_dir)
    response = get(client, "example.jpg", W100, headers={"If-Modified-Since": http_date(since)})
    assert response.status_code == status
    if status == 304:
        assert response.get_data() == b"" and len(runs) == 0
    else:
        assert size_of(ok(response)) == (100, 67) and len(runs) == 1


def test_errors_carry_no_store_and_are_not_cached(runs):
    store = Store()
    store.put("/a.jpg", JPEG)
    store.put("/broken.jpg", b"this is not a jpeg at all" * 10)
    client, _ = wrap(store)
    bad_request = get(client, "a.jpg", "image/resize,w_abc")
    assert bad_request.status_code == 400
    assert bad_request.headers.getlist("Cache-Control") == ["no-store"]
    assert CACHE not in bad_request.headers
    for _ in range(2):
        broken = get(client, "broken.jpg", W100)
        assert 400 <= broken.status_code < 600
        assert broken.headers.getlist("Cache-Control") == ["no-store"]
        assert broken.headers.get(CACHE) is None
    assert store.reads == 2                             # the error was not cached either


def test_the_error_cache_control_is_configurable():
    store = Store()
    store.put("/a.jpg", JPEG)
    client, _ = wrap(store, cache_control_errors="max-age=5")
    response = get(client, "a.jpg", "image/resize,w_abc")
    assert response.status_code == 400
    assert response.headers.getlist("Cache-Control") == ["max-age=5"]


def test_configured_cache_control_replaces_the_sources_on_200_and_304(image_dir, tmp_path):
    client = make_client(image_dir, cache_dir=str(tmp_path / "c"), cache_control="public, max-age=600")
    miss = get(client, "example.jpg", W100)
    cached = get(client, "example.jpg", W100)
    not_modified = get(client, "example.jpg", W100, headers={"If-None-Match": miss.headers["ETag"]})
    assert (miss.headers[CACHE], cached.headers[CACHE], not_modified.status_code) == ("miss", "revalidated", 304)
    for response in (miss, cached, not_modified):
        assert response.headers.getlist("Cache-Control") == ["public, max-age=600"]

    default = make_client(image_dir)                   # unset: the source's own
    assert get(default, "example.jpg", W100).headers.getlist("Cache-Control") == ["max-age=3600, public"]


# ---------------------------------------------------------------------------------------------------
# Accept-negotiated output

AVIF_FIRST = "image/avif,image/webp,*/*"


def is_avif(body: bytes) -> bool:
    return body[4:8] == b"ftyp" and body[8:12] in (b"avif", b"avis")


def is_webp(body: bytes) -> bool:
    return body[:4] == b"RIFF" and body[8:12] == b"WEBP"


def test_auto_format_is_off_by_default(image_dir):
    response = get(make_client(image_dir), "example.jpg", W100, headers={"Accept": AVIF_FIRST})
    ok(response, "image/jpeg")
    assert "Vary" not in response.headers


@pytest.mark.parametrize("accept, content_type, check", [
    (AVIF_FIRST, "image/avif", is_avif),
    ("image/webp,*/*;q=0.8", "image/webp", is_webp),
    ("image/webp", "image/webp", is_webp),
    ("*/*", "image/jpeg", lambda b: b[:2] == b"\xff\xd8"),
    (None, "image/jpeg", lambda b: b[:2] == b"\xff\xd8"),
    ("image/avif;q=0,image/webp", "image/webp", is_webp),
])
def test_auto_format_follows_accept(image_dir, tmp_path, accept, content_type, check):
    client = make_client(image_dir, cache_dir=str(tmp_path / "c"), auto_format="avif,webp")
    headers = {"Accept": accept} if accept else {}
    response = get(client, "example.jpg", W100, headers=headers)
    body = ok(response, content_type)
    assert check(body)
    assert size_of(body) == (100, 67)
    assert response.headers.getlist("Vary") == ["Accept"]


def test_an_explicit_format_wins_over_accept(image_dir):
    client = make_client(image_dir, auto_format="avif,webp")
    response = get(client, "example.jpg", "image/resize,w_100/format,png", headers={"Accept": AVIF_FIRST})
    body = ok(response, "image/png")
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    assert response.headers.getlist("Vary") == ["Accept"]


def test_an_animated_gif_negotiates_to_animated_webp(image_dir):
    client = make_client(image_dir, auto_format="avif,webp")
    response = get(client, "example.gif", "image/resize,w_200", headers={"Accept": AVIF_FIRST})
    body = ok(response, "image/webp")
    ok_, animation = cv2.imdecodeanimation(np.frombuffer(body, np.uint8))
    assert ok_ and len(animation.frames) == 3
    assert animation.frames[0].shape[:2] == (120, 200)


def test_each_accept_gets_its_own_cached_result(image_dir, tmp_path, runs):
    client = make_client(image_dir, cache_dir=str(tmp_path / "c"), auto_format="avif,webp")
    seen: dict[str, bytes] = {}
    for accept, content_type, check, state in [
        (AVIF_FIRST, "image/avif", is_avif, "miss"),
        ("image/webp", "image/webp", is_webp, "miss"),
        (AVIF_FIRST, "image/avif", is_avif, CACHED),
        ("image/webp", "image/webp", is_webp, CACHED),
        ("*/*", "image/jpeg", lambda b: b[:2] == b"\xff\xd8", "miss"),
        (AVIF_FIRST, "image/avif", is_avif, CACHED),
    ]:
        response = get(client, "example.jpg", W100, headers={"Accept": accept})
        body = ok(response, content_type)
        assert check(body), (accept, body[:16])        # an AVIF client never gets WebP bytes
        assert response.headers[CACHE] in (state if isinstance(state, tuple) else (state,))
        assert seen.setdefault(content_type, body) == body
        assert response.headers.getlist("Vary") == ["Accept"]
    assert len(runs) == 3


def test_vary_accept_is_on_every_answer_of_a_negotiating_route(image_dir, tmp_path):
    client = make_client(image_dir, cache_dir=str(tmp_path / "c"), auto_format="avif,webp")
    miss = get(client, "example.jpg", W100, headers={"Accept": AVIF_FIRST})
    cached = get(client, "example.jpg", W100, headers={"Accept": AVIF_FIRST})
    not_modified = get(client, "example.jpg", W100,
                       headers={"Accept": AVIF_FIRST, "If-None-Match": miss.headers["ETag"]})
    error = get(client, "example.jpg", "image/resize,w_abc", headers={"Accept": AVIF_FIRST})
    assert (miss.status_code, cached.status_code, not_modified.status_code, error.status_code) == \
        (200, 200, 304, 400)
    for response in (miss, cached, not_modified, error):
        assert response.headers.getlist("Vary") == ["Accept"]


def test_a_watermark_object_without_any_validator_is_never_reused_stale(runs):
    """The mark has neither ETag nor Last-Modified: nothing can prove a result made with it is
    current, so a changed mark must show, whatever the cache holds."""
    store = Store()
    store.put("/grey.png", cv2.imencode(".png", np.full((150, 200, 3), 128, np.uint8))[1].tobytes(),
              content_type="image/png")
    red = cv2.imencode(".png", np.full((20, 30, 3), (0, 0, 255), np.uint8))[1].tobytes()
    blue = cv2.imencode(".png", np.full((20, 30, 3), (255, 0, 0), np.uint8))[1].tobytes()
    store.put("/mark.png", red, etag=None, last_modified=None, content_type="image/png")
    process = "image/watermark,image_" + base64.urlsafe_b64encode(b"mark.png").decode().rstrip("=")
    client, _ = wrap(store)
    assert mark_colour(ok(get(client, "grey.png", process))) == (0, 0, 255)
    store.put("/mark.png", blue, etag=None, last_modified=None, content_type="image/png")
    again = get(client, "grey.png", process)
    assert again.headers[CACHE] not in CACHED
    assert mark_colour(ok(again)) == (255, 0, 0)
    assert len(runs) == 2


def test_a_lease_left_by_a_killed_leader_is_taken_over_at_once(tmp_path, monkeypatch):
    """A worker killed while leading leaves its lease behind; the next one sees its pid is gone and
    leads instead of waiting out cache_wait_seconds."""
    import subprocess
    import sys

    import imgmiddleware.cache.flight as cache_module
    from imgmiddleware.cache import Entry, ResultCache

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    cache = ResultCache(0, str(tmp_path / "c"), 10**8, wait_seconds=30)
    cache._disk.add("lease:k", dead_pid, expire=30)
    sleeps = []
    monkeypatch.setattr(cache_module.time, "sleep", lambda s: sleeps.append(s))
    entry, computed = cache.single_flight(
        "k", lambda: Entry("image/jpeg", [], [("/a", "", '"1"')], body=b"x", length=1))
    assert computed and entry.body == b"x"
    assert len(sleeps) == 0                      # no polling for a leader that no longer exists
    assert cache.get("k").length == 1
