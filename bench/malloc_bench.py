#!/usr/bin/env python3
"""glibc malloc settings for a worker: throughput against resident memory, on real photos.

    python3 bench/malloc_bench.py [--duration S] [--rounds N] [--corpus DIR]

Each setting runs in a fresh process shaped like one gunicorn worker of `imgmiddleware serve`: 4
threads taking requests, 2 transform slots (Config.threads, Config.transform_slots), each request
one uncached `resize,m_lfit,w_200,h_200` through the engine on a source already in memory, cycling
over one kind of source of the corpus at a time (progressive JPEG, baseline JPEG, PNG, WebP;
bench/peers.py builds it), read from the file for each request as the server does. Settings
take effect through imgmiddleware.memory.tune_malloc before any thread starts, as in the server.
Settings alternate within each round; each kind's table gives the median rate over rounds, the
largest peak RSS (VmHWM), the resident set at the end, and minor page faults per request.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE / "out" / "peers" / "root" / "corpus"
MB = 1024 * 1024

SETTINGS = {
    "glibc defaults": {},
    "arena_max 2": {"arena_max": 2},
    "mmap 32M, trim 256M": {"mmap_threshold": 32 * MB, "trim_threshold": 256 * MB},
    "mmap 32M, trim 256M, arena_max 2": {"mmap_threshold": 32 * MB, "trim_threshold": 256 * MB,
                                         "arena_max": 2},
    "mmap 32M, trim 64M, arena_max 2": {"mmap_threshold": 32 * MB, "trim_threshold": 64 * MB,
                                        "arena_max": 2},
    "mmap 64M, trim 256M, arena_max 2": {"mmap_threshold": 64 * MB, "trim_threshold": 256 * MB,
                                         "arena_max": 2},
    "mmap 4M, arena_max 2": {"mmap_threshold": 4 * MB, "arena_max": 2},
}


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(settings: dict, duration: float, files: list[str]) -> None:
    from imgmiddleware.memory import tune_malloc
    applied = tune_malloc(**settings)
    import cv2
    from imgmiddleware.config import Config
    from imgmiddleware.process import engine, parser
    cv2.setNumThreads(1)
    config = Config()
    pipeline = parser.parse("image/resize,m_lfit,w_200,h_200", config)
    sources = [Path(f) for f in files]
    slots = threading.Semaphore(config.transform_slots)
    done, lock = [0], threading.Lock()
    baseline_rss = status_kb("VmRSS")
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    stop = time.monotonic() + duration

    def worker(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            with slots:
                engine.run(pipeline, sources[i % len(sources)].read_bytes(), config)
            i += 1
            with lock:
                done[0] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n * 7,)) for n in range(config.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    print(json.dumps({"applied": applied, "rate": done[0] / elapsed, "requests": done[0],
                      "hwm_mb": status_kb("VmHWM") / 1024, "rss_mb": status_kb("VmRSS") / 1024,
                      "base_mb": baseline_rss / 1024, "faults_per_request": faults / max(1, done[0])}))


KINDS = {
    "progressive JPEG": lambda p, progressive: p.suffix == ".jpg" and progressive,
    "baseline JPEG": lambda p, progressive: p.suffix == ".jpg" and not progressive,
    "PNG": lambda p, progressive: p.suffix == ".png",
    "WebP": lambda p, progressive: p.suffix == ".webp",
}


def corpus_by_kind(corpus: Path) -> dict[str, list[str]]:
    from PIL import Image
    files: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for path in sorted(corpus.iterdir()):
        if path.suffix not in (".jpg", ".png", ".webp"):
            continue
        with Image.open(path) as im:
            progressive = bool(im.info.get("progressive") or im.info.get("progression"))
        for kind, belongs in KINDS.items():
            if belongs(path, progressive):
                files[kind].append(str(path))
    return {kind: paths for kind, paths in files.items() if paths}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(json.loads(args.child), args.duration, args.files)
        return 0
    corpus = Path(args.corpus)
    kinds = corpus_by_kind(corpus) if corpus.is_dir() else {}
    if not kinds:
        print(f"no corpus in {corpus}: run bench/peers.py first (or pass --corpus)", file=sys.stderr)
        return 1
    print(f"{sum(map(len, kinds.values()))} sources, {args.rounds} rounds of {args.duration:g} s per "
          f"setting and kind", flush=True)
    for kind, files in kinds.items():
        runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
        for round_ in range(args.rounds):
            names = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
            for name in names:
                out = subprocess.run([sys.executable, __file__, "--duration", str(args.duration),
                                      "--child", json.dumps(SETTINGS[name]), *files],
                                     capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = statistics.median(r["rate"] for r in runs["glibc defaults"])
        print(f"\n{kind} ({len(files)} files)\n")
        print("| setting | req/s | x defaults | peak RSS MB | RSS at end MB | page faults / request |")
        print("|---|---|---|---|---|---|")
        for name, results in runs.items():
            rate = statistics.median(r["rate"] for r in results)
            print(f"| {name} | {rate:.1f} | {rate / base:.2f} | {max(r['hwm_mb'] for r in results):.0f} | "
                  f"{max(r['rss_mb'] for r in results):.0f} | "
                  f"{statistics.median(r['faults_per_request'] for r in results):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
