#!/usr/bin/env python3
"""Slow clients: gunicorn's gthread worker against imgmiddleware's event-loop worker, in one run.

Run ``python3 bench/slow_client_bench.py`` (about a minute; ``--smoke`` for a few seconds). It needs
``wrk`` (installed as bench/cache_bench.py does when missing).

The same app (``imgmiddleware.wsgi:application`` on a temp data root holding the example bucket) is
served by ``gunicorn -c deploy/gunicorn.conf.py`` twice, 2 workers x 4 threads, ``max_requests`` 0:
once with ``-k gthread`` (what `serve` ran before issue 15), once with the worker deploy/ names
(``imgmiddleware.server.worker.EventLoopWorker``). For each:

1. throughput, ``wrk -t2 -c8``, ``--rounds`` runs of ``--duration`` seconds after 1 s of warm-up, the
   best one counted (a run where one worker got every connection is slower whatever the worker): a
   cached transform (``resize,w_100`` of example.jpg, a memory hit) and a plain GET of example.jpg;
2. under attack: ``--tricklers`` connections (half send a head, half a PUT body, one byte every
   0.3 s, reconnecting whenever cut off) while plain GETs are made one after another for
   ``--attack`` seconds; the GETs' latency (p50, p99, max) and how many failed (a 10 s client
   timeout).

A measurement, not a test: nothing is asserted. Both servers are stopped at the end, also on error.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from cache_bench import ensure_wrk  # noqa: E402
from listeners import wait_until_accepting  # noqa: E402

WORKERS = {"gthread": "gthread", "event loop": "imgmiddleware.server.worker.EventLoopWorker"}
HIT = "/examplebucket/example.jpg?x-oss-process=image/resize,w_100"
PLAIN = "/examplebucket/example.jpg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(worker: str, data: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGMW_")}
    env.update(IMGMW_ROOT=str(data), IMGMW_BIND=f"127.0.0.1:{port}", IMGMW_WORKERS="2",
               IMGMW_THREADS="4", PYTHONPATH=str(ROOT))
    log = open(work / f"{worker.replace('.', '_')}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                             "-k", worker, "--max-requests", "0", "imgmiddleware.wsgi:application"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + PLAIN, timeout=2).read()
            wait_until_accepting(proc.pid, port, 2, max(1.0, deadline - time.monotonic()))
            return proc, base
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"gunicorn -k {worker} exited: {(work / log.name).read_text()[-2000:]}")
            time.sleep(0.2)
    raise SystemExit(f"gunicorn -k {worker} did not answer within 60 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rate(wrk: str, url: str, seconds: float, rounds: int) -> list[float]:
    """Requests per second of each round (after 1 s of warm-up), best first. The best round is the
    figure: a round where the kernel handed all of wrk's connections to one worker runs at a
    fraction of the rate, whichever worker class (docs/BENCHMARKS.md)."""
    subprocess.run([wrk, "-t2", "-c8", "-d1s", url], capture_output=True)
    rates = []
    for _ in range(rounds):
        out = subprocess.run([wrk, "-t2", "-c8", f"-d{seconds:g}s", url], capture_output=True, text=True).stdout
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        rates.append(float(found.group(1)) if found else 0.0)
    return sorted(rates, reverse=True)


def trickle(port: int, prefix: bytes, payload: bytes, stopped: threading.Event) -> None:
    while not stopped.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(prefix)
                for byte in payload:
                    if stopped.is_set():
                        return
                    sock.sendall(bytes([byte]))
                    time.sleep(0.3)
        except OSError:
            time.sleep(0.1)


def under_attack(base: str, tricklers: int, seconds: float) -> dict:
    port = int(base.rsplit(":", 1)[1])
    head = (b"", b"GET " + PLAIN.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 300 + b"\r\n\r\n")
    body = (b"PUT /examplebucket/slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", b"b" * 100000)
    stopped = threading.Event()
    threads = [threading.Thread(target=trickle, args=(port, *(head if i % 2 else body), stopped), daemon=True)
               for i in range(tricklers)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    latencies, failed = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            urllib.request.urlopen(base + PLAIN, timeout=10).read()
            latencies.append(time.monotonic() - started)
        except OSError:
            failed += 1
    stopped.set()
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"gets": len(latencies), "failed": failed, "p50": pick(0.5), "p99": pick(0.99),
            "max": latencies[-1] * 1000 if latencies else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs of each URL; the best counts")
    parser.add_argument("--attack", type=float, default=15.0, help="seconds of GETs under attack")
    parser.add_argument("--tricklers", type=int, default=12)
    parser.add_argument("--smoke", action="store_true", help="1 s runs, 3 s of attack")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.attack, args.rounds = 1.0, 3.0, 1
    wrk = ensure_wrk()
    from imgmiddleware.cli import seed_example_bucket

    rows = []
    with tempfile.TemporaryDirectory(prefix="imgmw-slow-") as tmp:
        work = Path(tmp)
        data = work / "data"
        seed_example_bucket(str(data))
        for label, worker in WORKERS.items():
            proc, base = start(worker, data, work)
            try:
                urllib.request.urlopen(base + HIT).read()          # the hit is in memory from now on
                hit = rate(wrk, base + HIT, args.duration, args.rounds)
                plain = rate(wrk, base + PLAIN, args.duration, args.rounds)
                attack = under_attack(base, args.tricklers, args.attack)
            finally:
                stop(proc)
            rows.append((label, hit, plain, attack))
    print(f"\n2 workers x 4 threads, wrk -t2 -c8, best of {args.rounds} x {args.duration:g} s (every round in "
          f"brackets); then {args.tricklers} tricklers "
          f"(a byte every 0.3 s) for {args.attack:g} s while plain GETs are made one after another\n")
    print("| worker | cached hit req/s | plain GET req/s | GETs under attack | failed | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, hit, plain, a in rows:
        rounds = lambda r: f"{r[0]:.0f} ({', '.join(f'{x:.0f}' for x in r)})"  # noqa: E731
        print(f"| {label} | {rounds(hit)} | {rounds(plain)} | {a['gets']} | {a['failed']} | {a['p50']:.1f} | "
              f"{a['p99']:.1f} | {a['max']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
