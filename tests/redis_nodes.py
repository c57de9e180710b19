"""Helpers for the shared-tier tests (tests/test_shared_cache.py, tests/test_redis_faults.py): an
object store that counts what it is asked, in-process middleware instances standing for nodes (each
with its own memory and disk tiers, all on one Redis), and the engine's own answer to compare pixels
with. Fixtures stay in the test modules; this module only has plain helpers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.process import parse, run

from .conftest import decode, fixture_bytes, psnr

CACHE = "x-imgmw-cache"
JPEG = fixture_bytes("example.jpg")      # 400 x 267
OTHER = fixture_bytes("f.jpg")           # 333 x 424 once oriented


class Origin:
    """path -> (body, ETag): answers GET, and If-None-Match with 304; records every request and
    counts the bodies it sent (a full GET), so "the origin was only asked to revalidate" is a number."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        for path, body in (objects or {}).items():
            self.put(path, body)

    def put(self, path: str, body: bytes, etag: str = '"v1"') -> None:
        self.objects[path] = (body, etag)

    def __call__(self, environ, start_response):
        with self.lock:
            self.requests.append({k: v for k, v in environ.items() if k.isupper()})
        found = self.objects.get(environ["PATH_INFO"])
        if found is None:
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return []
        body, etag = found
        if environ.get("HTTP_IF_NONE_MATCH") == etag:
            start_response("304 Not Modified", [("ETag", etag)])
            return []
        start_response("200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(len(body))),
                                  ("ETag", etag)])
        return [body]

    def full_gets(self) -> int:
        return sum(1 for r in self.requests if "HTTP_IF_NONE_MATCH" not in r)

    def conditional_gets(self) -> int:
        return sum(1 for r in self.requests if "HTTP_IF_NONE_MATCH" in r)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()


def node(origin, tmp: Path, name: str, redis_url: str = "", **overrides) -> ImageMiddleware:
    """One node: its own memory and disk tiers (tmp/name), the shared tier at ``redis_url``."""
    return ImageMiddleware(origin, cache_dir=str(tmp / name), cache_redis_url=redis_url, **overrides)


def fetch(mw: ImageMiddleware, path: str, process: str, **kwargs) -> tuple[int, str | None, bytes, dict]:
    """(status, x-imgmw-cache, body, headers) of one GET through ``mw``."""
    # use_cookies=False: a Cookie header goes through as sent (the test client would use its jar)
    response = Client(mw, use_cookies=False).get(path, query_string={"x-oss-process": process}, **kwargs)
    try:
        return response.status_code, response.headers.get(CACHE), response.get_data(), dict(response.headers)
    finally:
        response.close()


def expected(process: str, data: bytes = JPEG) -> np.ndarray:
    """The pixels the engine makes for ``process`` on ``data``, computed here without any cache."""
    return decode(run(parse(process, Config()), data, Config()).body)


def assert_image(body: bytes, process: str, data: bytes = JPEG) -> None:
    """``body`` is the right image: the reference's dimensions and its pixels (PSNR >= 40 dB)."""
    want, got = expected(process, data), decode(body)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert psnr(got, want) >= 40


def concurrently(calls: list) -> list:
    """Run each zero-argument callable in its own thread, released together; their results in order."""
    barrier = threading.Barrier(len(calls), timeout=30)
    results: list = [None] * len(calls)

    def worker(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results), "a request thread failed or hung"
    return results
