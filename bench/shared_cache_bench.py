#!/usr/bin/env python3
"""Shared cache benchmark (issue 16): what a cache hit costs against a remote origin with validator
trust off (validator_trust_seconds = 0: one conditional GET to the origin per hit) and on, with and
without the Redis tier; what a node's first request for a result another node made costs; and how
many times a set of variants is computed by several nodes with and without the shared tier.

Run ``python3 bench/shared_cache_bench.py`` (about a minute; ``--help`` for the options). It needs
redis-server: when missing it runs ``apt-get install -y redis-server`` (root only), and it starts its
own on a free loopback port (no persistence, 256 MB, allkeys-lru), stopped at the end.

The origin stands for a remote bucket: a threaded HTTP/1.1 server on 127.0.0.1 that sleeps
``--latency`` ms (30) before every answer, serves one synthetic 2400x1600 JPEG with an ETag and
answers If-None-Match with 304; it counts full and conditional GETs. A node is what ``imgmiddleware
serve --upstream`` runs in a worker: ``cli.build_app`` with ``upstream`` set (the reverse-proxy origin:
real HTTP, pooled connections), its own memory and disk tiers in a temp dir, and Redis when the row
says so.

Hits: one node, ``--variants`` results (resize widths) made once, then ``--threads`` threads call the
node as a WSGI app (werkzeug EnvironBuilder environ, body read) for ``--duration`` seconds, cycling
through them: hits per second and each request's latency (p50, p99).
Cold node: a second node's first request for each of those results: computing it (no Redis) or taking
it from Redis (through the shared memo: one conditional GET, no source body).
Cross-node: ``--nodes`` nodes, each sent every variant by its own ``--threads`` threads at once, in its
own order: how often a result was computed (the nodes' counters), and what the origin was asked.
A measurement, not a test: no time asserts.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from imgmiddleware.cli import build_app  # noqa: E402
from imgmiddleware.config import Config  # noqa: E402

OBJECT = "/photo.jpg"
TRUST = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo() -> bytes:
    """A deterministic 2400x1600 JPEG with photo-like detail (gradients, noise, shapes)."""
    rng = np.random.default_rng(16)
    y, x = np.mgrid[0:1600, 0:2400].astype(np.float32)
    img = np.stack([(x / 2400) * 255, (y / 1600) * 255, ((x + y) / 4000) * 255], axis=2)
    img += rng.normal(0, 18, img.shape)
    for _ in range(40):
        cv2.circle(img, (int(rng.integers(0, 2400)), int(rng.integers(0, 1600))),
                   int(rng.integers(20, 300)), [float(c) for c in rng.integers(0, 255, 3)], -1)
    return cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


class Origin:
    """The remote-like origin: sleeps, then 200 or 304; counts what it was asked."""

    def __init__(self, body: bytes, latency: float) -> None:
        self.body, self.etag, self.latency = body, '"photo-v1"', latency
        self.counts = {"full": 0, "conditional": 0}
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                time.sleep(origin.latency)
                if self.path.split("?")[0] != OBJECT:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conditional = self.headers.get("If-None-Match") == origin.etag
                with origin.lock:
                    origin.counts["conditional" if conditional else "full"] += 1
                self.send_response(304 if conditional else 200)
                self.send_header("ETag", origin.etag)
                if conditional:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(origin.body)))
                self.end_headers()
                try:
                    self.wfile.write(origin.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # a node that found the result cached meanwhile closed the body unread

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256          # the stdlib's 5 drops connects of a burst of nodes

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.counts = {"full": 0, "conditional": 0}

    def stop(self) -> None:
        self.server.shutdown()


class Redis:
    def __init__(self, workdir: Path) -> None:
        server = shutil.which("redis-server") or ensure_redis()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(workdir), "--maxmemory", "256mb",
                                      "--maxmemory-policy", "allkeys-lru"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
        self.version = self.client.info("server")["redis_version"]

    def flush(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(15)


def ensure_redis() -> str:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        sys.exit("redis-server is missing: install it (Debian: apt-get install -y redis-server) and run again.")
    print("installing redis-server: apt-get install -y redis-server", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:
            sys.exit("apt-get install redis-server failed")
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def make_node(origin: Origin, tmp: Path, name: str, redis_url: str, trust: float):
    config = Config(upstream=origin.url, cache_dir=str(tmp / name), cache_redis_url=redis_url,
                    validator_trust_seconds=trust, upstream_pool_size=32)
    return build_app("", config)


def call(app, process: str) -> tuple[str, int]:
    """One GET through the node as a WSGI app, body read: (x-imgmw-cache, status)."""
    environ = EnvironBuilder(path=OBJECT, query_string="x-oss-process=" + process,
                             headers={"Host": "images.example"}).get_environ()
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = int(status.split()[0])
        seen["cache"] = dict(headers).get("x-imgmw-cache", "")

    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        if hasattr(body, "close"):
            body.close()
    return seen["cache"], seen["status"]


def variants(count: int) -> list[str]:
    return [f"image/resize,w_{200 + 8 * i}" for i in range(count)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def hits(app, processes: list[str], threads: int, duration: float) -> tuple[float, list[float], set]:
    """T threads for ``duration`` s over warmed results: (hits/s, latencies in ms, cache states)."""
    latencies: list[float] = []
    states: set = set()
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        mine, seen = [], set()
        barrier.wait()
        n = index
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            state, status = call(app, processes[n % len(processes)])
            mine.append((time.perf_counter() - started) * 1000)
            seen.add(state if status == 200 else f"status {status}")
            n += 1
        with lock:
            latencies.extend(mine)
            states.update(seen)

    begun = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(latencies) / (time.perf_counter() - begun), latencies, states


def bench_hits(origin: Origin, redis: Redis, tmp: Path, args) -> list[str]:
    processes = variants(args.variants)
    rows = ["| validator_trust_seconds | Redis tier | hits/s | p50 ms | p99 ms | origin GETs per hit | served as |",
            "|---:|---|---:|---:|---:|---:|---|"]
    for trust in (0.0, TRUST):
        for shared in (False, True):
            redis.flush()
            app = make_node(origin, tmp, f"hits-{trust}-{shared}", redis.url if shared else "", trust)
            for process in processes:                      # made once (and, with trust, confirmed now)
                call(app, process)
            origin.reset()
            rate, latencies, states = hits(app, processes, args.threads, args.duration)
            asked = (origin.counts["full"] + origin.counts["conditional"]) / max(len(latencies), 1)
            rows.append(f"| {trust:g} | {'on' if shared else 'off'} | {rate:.0f} | "
                        f"{statistics.median(latencies):.2f} | {pct(latencies, 99):.2f} | {asked:.2f} | "
                        f"{', '.join(sorted(states))} |")
            app.cache.close()
    return rows


def bench_cold(origin: Origin, redis: Redis, tmp: Path, args) -> list[str]:
    """Node B's first request for each result node A made."""
    processes = variants(args.variants)
    rows = ["| Redis tier | validator_trust_seconds | first request on node B: p50 ms | p99 ms | computed on B | origin: full / conditional GETs |",
            "|---|---:|---:|---:|---:|---|"]
    for shared, trust in ((False, 0.0), (True, 0.0), (True, TRUST)):
        redis.flush()
        url = redis.url if shared else ""
        a = make_node(origin, tmp, f"cold-a-{shared}-{trust}", url, trust)
        for process in processes:
            call(a, process)
        b = make_node(origin, tmp, f"cold-b-{shared}-{trust}", url, trust)
        origin.reset()
        latencies = []
        for process in processes:
            started = time.perf_counter()
            call(b, process)
            latencies.append((time.perf_counter() - started) * 1000)
        rows.append(f"| {'on' if shared else 'off'} | {trust:g} | {statistics.median(latencies):.1f} | "
                    f"{pct(latencies, 99):.1f} | {b.cache.counters['computed']} | "
                    f"{origin.counts['full']} / {origin.counts['conditional']} |")
        a.cache.close()
        b.cache.close()
    return rows


def bench_nodes(origin: Origin, redis: Redis, tmp: Path, args) -> list[str]:
    processes = variants(args.cross_variants)
    rows = ["| Redis tier | nodes | variants | computed (sum over nodes) | origin full GETs | origin conditional GETs | wall s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for shared in (False, True):
        redis.flush()
        nodes = [make_node(origin, tmp, f"x-{shared}-{i}", redis.url if shared else "", 0.0)
                 for i in range(args.nodes)]
        origin.reset()
        calls = []
        for index, app in enumerate(nodes):
            order = processes[:]
            random.Random(index).shuffle(order)
            for t in range(args.threads):
                calls.append((app, order[t::args.threads] + order))   # each thread sees every variant
        barrier = threading.Barrier(len(calls))
        statuses = []

        def worker(app, todo):
            barrier.wait()
            for process in todo:
                statuses.append(call(app, process)[1])

        started = time.perf_counter()
        pool = [threading.Thread(target=worker, args=c) for c in calls]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - started
        computed = sum(app.cache.counters["computed"] for app in nodes)
        bad = [s for s in statuses if s != 200]
        rows.append(f"| {'on' if shared else 'off'} | {args.nodes} | {len(processes)} | {computed} | "
                    f"{origin.counts['full']} | {origin.counts['conditional']} | {wall:.1f} |"
                    + (f" {len(bad)} non-200!" if bad else ""))
        for app in nodes:
            app.cache.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=30.0, help="origin delay per answer, ms (30)")
    ap.add_argument("--threads", type=int, default=8, help="client threads per node (8)")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per hit row (4)")
    ap.add_argument("--variants", type=int, default=12, help="results in the hit and cold rows (12)")
    ap.add_argument("--nodes", type=int, default=3, help="nodes in the cross-node rows (3)")
    ap.add_argument("--cross-variants", type=int, default=24, dest="cross_variants",
                    help="variants in the cross-node rows (24)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="imgmw-shared-bench-"))
    origin = Origin(photo(), args.latency / 1000)
    redis = Redis(tmp)
    try:
        import redis as redis_py
        print(f"origin: 127.0.0.1, {args.latency:g} ms per answer, a {len(origin.body) // 1024} KB 2400x1600 "
              f"JPEG; Redis {redis.version} on loopback (redis-py {redis_py.__version__}); "
              f"{os.cpu_count()} cores; {args.threads} client threads per node", flush=True)
        print()
        print(f"Hits: one node, {args.variants} results made, then {args.threads} threads for "
              f"{args.duration:g} s each row")
        print()
        print("\n".join(bench_hits(origin, redis, tmp, args)), flush=True)
        print()
        print(f"Cold node: node B's first request for each of {args.variants} results node A made")
        print()
        print("\n".join(bench_cold(origin, redis, tmp, args)), flush=True)
        print()
        print(f"Cross-node: {args.nodes} nodes x {args.threads} threads, every variant sent to every node "
              "at once (validator_trust_seconds 0)")
        print()
        print("\n".join(bench_nodes(origin, redis, tmp, args)), flush=True)
    finally:
        redis.stop()
        origin.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
