"""A bounded load test on the loopback: `imgmiddleware serve` (real gunicorn, 2 event-loop workers, the
way users start it) under 8 kept-alive connections for a fixed time and a fixed request budget,
with a mixed stream: cached hits, transforms that miss (distinct widths), bad process strings,
missing objects and plain GETs of the originals.

What must hold: every answer is the expected one (the right image, by its decoded size and by
similarity to the engine's own result; or the right OSS error status and Code), no connection
error, no worker killed or restarted (gunicorn's log and the workers' pids), and the RSS of the
whole server (master + workers) grows by less than a stated bound between the end of the warm-up
and the end of the run.

503 SlowDown is the back-pressure answer a worker gives when a transform waited
transform_wait_seconds (2 s) for a slot. Here a transform takes milliseconds, so it only appears
when the machine itself stalls; it is counted, must be well-formed (Code SlowDown, Retry-After,
no-store) and stay a small minority (below 5%), and it is reported. The figures of a run are printed
(pytest -s) and recorded in docs/SECURITY.md.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from imgmiddleware import Config
from imgmiddleware.process import parse, run

from .conftest import FIXTURES, psnr
from .servers import child_pids, free_port, start_serve, stop, wait_for

BUCKET = "photos"
CONNECTIONS = 8
WARMUP_SECONDS = 3.0
DURATION_SECONDS = 15.0
MAX_REQUESTS = 8000                 # the budget of the measured run, whichever comes first
CACHE_MEMORY = 16 * 1024 * 1024     # per worker
# RSS growth of master + 2 workers after the warm-up. Each worker's memory tier may fill up to
# CACHE_MEMORY with results made during the run; on top of that each worker gets 48 MB for its
# allocator (glibc arenas of 4 request threads, OpenCV buffers, SQLite's page cache).
RSS_GROWTH_BOUND_MB = 2 * (CACHE_MEMORY / 2**20 + 48)

SOURCES = {"example.jpg": (400, 267), "nodejs-1024x768.png": (1024, 768)}
HITS = ["example.jpg?x-oss-process=image/resize,w_100",
        "example.jpg?x-oss-process=image/resize,m_fill,w_80,h_80/format,png",
        "nodejs-1024x768.png?x-oss-process=image/resize,w_200/format,jpg",
        "nodejs-1024x768.png?x-oss-process=image/crop,w_300,h_200,g_center/blur,r_3,s_2/format,webp"]
# (path and query, status, Code, EC[, request headers])
ERRORS = [("example.jpg?x-oss-process=image/resize,w_0", 400, "InvalidArgument", "0040-00000312"),
          ("example.jpg?x-oss-process=image/resize,w_20000", 400, "InvalidArgument", "0040-00000312"),
          ("example.jpg?x-oss-process=image/blur,r_51", 400, "InvalidArgument", "0040-00000241"),
          # longer than max_process_length (4096): in the x-oss-process header, since gunicorn refuses
          # a request line over 4094 bytes itself (414), before the app sees it
          ("example.jpg", 400, "InvalidArgument", "0017-00000288",
           {"x-oss-process": "image/resize,w_100" + "/rotate,90" * 500}),
          ("missing.jpg?x-oss-process=image/resize,w_100", 404, "NoSuchKey", None),
          ("missing.png", 404, "NoSuchKey", None)]


def reference(url: str) -> np.ndarray:
    name, process = url.split("?x-oss-process=")
    result = run(parse(process, Config()), (FIXTURES / name).read_bytes(), Config())
    return cv2.imdecode(np.frombuffer(result.body, np.uint8), cv2.IMREAD_UNCHANGED)


class Mix:
    """The request stream: request i is a cached hit, a miss, an error or a plain GET by i % 10."""

    def __init__(self) -> None:
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.references = {url: reference(url) for url in HITS}
        self.originals = {name: (FIXTURES / name).read_bytes() for name in SOURCES}

    def next(self):
        with self.lock:
            i = next(self.numbers)
        slot = i % 10
        if slot < 4:
            return "hit", HITS[i % len(HITS)]
        if slot < 7:
            # distinct (source, width, quality) for every miss of the run: 2 x ~600 widths x 10 q
            name = "example.jpg" if i % 2 else "nodejs-1024x768.png"
            width, height = SOURCES[name]
            n = i // 2
            w = 20 + n % (min(width, 640) - 20)
            q = 80 + (n // 640) % 10
            return "miss", f"{name}?x-oss-process=image/resize,w_{w}/quality,q_{q}/format,jpg"
        if slot < 9:
            return "error", ERRORS[i % len(ERRORS)]
        return "plain", list(SOURCES)[i % 2]

    def check(self, kind: str, what, status: int, headers: dict, body: bytes) -> str | None:
        """None when the answer is the expected one; else what is wrong with it."""
        if status == 503:
            code = ET.fromstring(body).findtext("Code") if body.startswith(b"<?xml") else None
            if code == "SlowDown" and headers.get("Retry-After") and headers.get("Cache-Control") == "no-store":
                return "slowdown"
            return f"malformed 503: {headers} {body[:200]!r}"
        if kind == "error":
            _, want_status, want_code, want_ec = what[:4]
            if status != want_status or headers.get("Content-Type") != "application/xml":
                return f"{what[0][:80]}: {status} {body[:200]!r}"
            root = ET.fromstring(body)
            if root.findtext("Code") != want_code or (want_ec and root.findtext("EC") != want_ec):
                return f"{what[0][:80]}: {status} {body[:300]!r}"
            return None
        if status != 200 or int(headers.get("Content-Length", -1)) != len(body):
            return f"{kind} {what[:80]}: {status} {headers} {body[:200]!r}"
        if kind == "plain":
            return None if body == self.originals[what] else f"plain {what}: other bytes"
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            return f"{kind} {what[:80]}: undecodable body"
        if kind == "hit":
            want = self.references[what]
            if image.shape != want.shape or psnr(image, want) < 40:
                return f"hit {what}: {image.shape} against {want.shape}"
            return None
        name, process = what.split("?x-oss-process=")
        width, height = SOURCES[name]
        w = int(process.split("w_")[1].split("/")[0])
        if image.shape[1] != w or abs(image.shape[0] - height * w / width) > 1:
            return f"miss {what}: {image.shape[1]}x{image.shape[0]}"
        return None


def tree_pids(master: int) -> list[int]:
    return [master, *sorted(child_pids(master))]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Drain:
    """The server's output, read by a thread so that a full pipe never blocks it."""

    def __init__(self, proc) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "".join(self.lines)


def drive(port: int, mix: Mix, seconds: float, budget: int, tally: Counter, problems: list) -> int:
    """CONNECTIONS threads, each on one kept-alive connection, until ``seconds`` or ``budget``
    requests; returns how many were sent."""
    deadline = time.monotonic() + seconds
    sent = itertools.count()
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < deadline and next(sent) < budget:
                kind, what = mix.next()
                path = f"/{BUCKET}/" + (what[0] if kind == "error" else what)
                headers = what[4] if kind == "error" and len(what) > 4 else {}
                try:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        tally["connection error"] += 1
                        problems.append(f"{kind} {path[:80]}: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    continue
                verdict = mix.check(kind, what, response.status, dict(response.getheaders()), body)
                with lock:
                    if verdict is None:
                        tally[f"{kind} {response.status}"] += 1
                    elif verdict == "slowdown":
                        tally["503 SlowDown"] += 1
                    else:
                        tally["unexpected"] += 1
                        problems.append(verdict)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    return sum(tally.values())


def test_mixed_load_on_real_gunicorn(tmp_path):
    root = tmp_path / "data"
    (root / BUCKET).mkdir(parents=True)
    for name in SOURCES:
        (root / BUCKET / name).write_bytes((FIXTURES / name).read_bytes())
    config = tmp_path / "load.toml"
    # max_requests = 0: no planned recycling during the run, so any new worker is a failure.
    config.write_text(f'cache_dir = "{tmp_path / "cache"}"\ncache_memory_bytes = {CACHE_MEMORY}\n'
                      "max_requests = 0\n")
    port = free_port()
    proc = start_serve(["--root", str(root), "--bind", f"127.0.0.1:{port}", "--workers", "2",
                        "--threads", "4"], config=config)
    drain = Drain(proc)
    try:
        wait_for(f"http://127.0.0.1:{port}/{BUCKET}/example.jpg", proc)
        mix = Mix()
        warm_tally, warm_problems = Counter(), []
        drive(port, mix, WARMUP_SECONDS, MAX_REQUESTS, warm_tally, warm_problems)
        assert warm_problems == [], warm_problems[:5]

        pids = tree_pids(proc.pid)
        assert len(pids) == 3, pids                    # the master and 2 workers
        booted = drain.text().count("Booting worker")
        before = rss_mb(pids)
        peak = [before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                peak.append(rss_mb(pids))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tally, problems = Counter(), []
        started = time.monotonic()
        total = drive(port, mix, DURATION_SECONDS, MAX_REQUESTS, tally, problems)
        elapsed = time.monotonic() - started
        sampling.set()
        sampler.join(5)
        after = rss_mb(pids)
        final_pids = tree_pids(proc.pid)
        log = drain.text()

        print(f"\nload: {total} requests in {elapsed:.1f} s ({total / elapsed:.0f}/s) on {CONNECTIONS} "
              f"connections; {dict(sorted(tally.items()))}")
        print(f"RSS master + 2 workers: {before:.1f} MB after warm-up, {after:.1f} MB at the end, "
              f"peak {max(peak):.1f} MB (bound on growth {RSS_GROWTH_BOUND_MB:.0f} MB)")

        assert problems == [], problems[:10]
        assert tally["unexpected"] == 0 and tally["connection error"] == 0
        for kind in ("hit 200", "miss 200", "error 400", "error 404", "plain 200"):
            assert tally[kind] > 0, (kind, tally)
        assert tally["503 SlowDown"] < 0.05 * total, tally
        assert final_pids == pids, (pids, final_pids)  # no worker died or was replaced
        assert log.count("Booting worker") == booted == 2, log[-3000:]
        assert "WORKER TIMEOUT" not in log, log[-3000:]
        assert after - before < RSS_GROWTH_BOUND_MB, (before, after)
    finally:
        stop(proc)
        drain.thread.join(10)
        proc.stdout.close()
