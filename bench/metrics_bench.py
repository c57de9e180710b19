"""What operations cost on the hot path (issue 17): cached hits per second over real HTTP
(`imgmiddleware serve`, two workers, wrk) with Prometheus metrics and the access log on (the defaults),
each alone, and neither (`serve --metrics off`, access_log = "").

A cached hit is the cheapest request the server answers (a memory-tier hit revalidated with a stat of
the object), so a fixed cost per request shows most there: counting it (two mmap writes under
prometheus_client's lock, a histogram) and logging it (one JSON line, one write to a file). The
variants run in turns, `--rounds` times each, and the median of each is reported, so a drift of the
machine meets all of them alike. Prints a Markdown table for docs/BENCHMARKS.md; asserts no time.

    python3 bench/metrics_bench.py [--duration 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_bench import ensure_wrk, free_port, pkg_version, run_wrk, wrk_version  # noqa: E402
from listeners import wait_until_accepting  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "imgmiddleware" / "samples" / "example.jpg"
PATH = "/examplebucket/example.jpg?x-oss-process=image/resize,w_200"
VARIANTS = (
    ("metrics on, access log on (defaults)", "on", True),
    ("metrics on, access log off", "on", False),
    ("metrics off, access log on", "off", True),
    ("metrics off, access log off", "off", False),
)


class Server:
    def __init__(self, work: Path, metrics: str, log: bool, workers: int, threads: int) -> None:
        self.work = work
        self.port = free_port()
        self.workers = workers
        config = work / f"{metrics}-{log}.toml"
        access = f'"{work / "access.log"}"' if log else '""'
        # max_requests = 0: no worker recycled mid-run (its restart would be measured, not metrics).
        config.write_text(f"access_log = {access}\ncache_dir = \"{work / 'cache'}\"\nmax_requests = 0\n")
        exe = shutil.which("imgmiddleware")
        base = [exe] if exe else [sys.executable, "-m", "imgmiddleware.cli"]
        self.cmd = base + ["--config", str(config), "serve", "--root", str(work / "data"), "--bind",
                           f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", str(threads),
                           "--metrics", metrics]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def __enter__(self) -> "Server":
        self._out = open(self.work / "server.log", "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=self.work, start_new_session=True)
        try:
            return self._wait()
        except BaseException:
            self.__exit__()
            raise

    def _wait(self) -> "Server":
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + PATH, timeout=2) as response:
                    if response.status == 200:          # and then once every worker accepts
                        wait_until_accepting(self.proc.pid, self.port, self.workers,
                                             max(1.0, deadline - time.monotonic()))
                        return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the server exited: see " + str(self.work / "server.log"))
                time.sleep(0.2)
        raise RuntimeError("the server did not answer within 60 s")

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is not None:
            self._out.close()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)      # the group this script started
            self.proc.wait(timeout=5)
        self._out.close()


def cache_state(url: str) -> str:
    with urllib.request.urlopen(url + PATH, timeout=10) as response:
        response.read()
        return response.headers.get("x-imgmw-cache", "")


FINISH = r"""
import json, os, sys, tempfile, time
from imgmiddleware import Config
from imgmiddleware.telemetry import Telemetry
metrics, log = sys.argv[1] == "on", sys.argv[2] == "on"
work = tempfile.mkdtemp()
config = Config(metrics=metrics, access_log=os.path.join(work, "a.log") if log else "")
telemetry = Telemetry(None, config)
headers = [(b"Content-Type", b"image/jpeg"), (b"Content-Length", b"2504"),
           (b"x-oss-request-id", b"1D3989417051F99DC4BAB5FF"), (b"x-imgmw-cache", b"revalidated"),
           (b"ETag", b'"5B3C1A2B"'), (b"Last-Modified", b"Tue, 01 Dec 2026 10:00:00 GMT")]
environ = {"PATH_INFO": "/examplebucket/example.jpg", "REQUEST_METHOD": "GET"}
facts = {"kind": "processed", "bucket": "examplebucket", "key": "example.jpg",
         "process": "image/resize,color_ffffff,limit_1,m_lfit,w_200"}
n = 20000
for _ in range(2):
    start = time.perf_counter()
    for _ in range(n):
        telemetry.finish(environ, facts, "GET", 200, headers, 0, 2504, time.time(), 0.0012, "127.0.0.1")
    took = time.perf_counter() - start
print(json.dumps(took / n * 1e6))
"""


def finish_cost(metrics: str, log: str) -> float:
    """Microseconds of CPU one Telemetry.finish() takes in a worker-like process (multiprocess files)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", FINISH, metrics, log], capture_output=True, text=True,
                             env=env, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of untimed load first (2)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each variant, in turns (3)")
    ap.add_argument("--connections", "-c", type=int, default=16)
    ap.add_argument("--wrk-threads", "-t", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args(argv)
    wrk = ensure_wrk()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"imgmiddleware {pkg_version('imgmiddleware')}, prometheus_client {pkg_version('prometheus_client')}, "
          f"gunicorn {pkg_version('gunicorn')}; {wrk_version(wrk)} -t{args.wrk_threads} -c{args.connections} "
          f"-d{args.duration:g}s; serve --workers {args.workers} --threads {args.threads}", flush=True)
    runs: dict[str, list] = {label: [] for label, _, _ in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="imgmw-metrics-bench-") as tmp:
        work = Path(tmp)
        (work / "data" / "examplebucket").mkdir(parents=True)
        shutil.copy(SAMPLE, work / "data" / "examplebucket" / "example.jpg")
        for round_ in range(args.rounds):
            for label, metrics, log in VARIANTS:
                with Server(work, metrics, log, args.workers, args.threads) as server:
                    cache_state(server.url)                  # made, then a hit from here on
                    state = cache_state(server.url)
                    if args.warmup:
                        run_wrk(wrk, server.url + PATH, args.wrk_threads, args.connections, args.warmup)
                    result = run_wrk(wrk, server.url + PATH, args.wrk_threads, args.connections,
                                     args.duration)
                    result["state"] = state
                    runs[label].append(result)
                    print(f"  round {round_ + 1}: {label}: {result['rps']:,.0f} req/s, p50 "
                          f"{result['p50']:.2f} ms, p99 {result['p99']:.2f} ms ({state}; errors "
                          f"{result['errors']})", flush=True)
    print("\nper request, in one process (Telemetry.finish, 20,000 calls; metrics in multiprocess files):")
    print("\n| variant | µs per request |")
    print("|---|---:|")
    for label, metrics, log in VARIANTS:
        print(f"| {label} | {finish_cost(metrics, 'on' if log else 'off'):.1f} |", flush=True)
    floor = statistics.median(r["rps"] for r in runs[VARIANTS[-1][0]])
    print("\n| variant | cached hits/s (median) | runs | p50 ms | p99 ms | vs both off |")
    print("|---|---:|---|---:|---:|---:|")
    for label, _, _ in VARIANTS:
        rps = statistics.median(r["rps"] for r in runs[label])
        p50 = statistics.median(r["p50"] for r in runs[label])
        p99 = statistics.median(r["p99"] for r in runs[label])
        each = ", ".join(f"{r['rps']:,.0f}" for r in runs[label])
        print(f"| {label} | {rps:,.0f} | {each} | {p50:.2f} | {p99:.2f} | {100 * (rps / floor - 1):+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
