#!/usr/bin/env python3
"""Worker x thread layouts: whole-tree PSS and throughput of uncached transforms, per gunicorn layout.

Run ``python3 bench/layout_bench.py`` (about 6 minutes on a quiet 2-core machine, more when it has
to wait for quiet; ``--smoke``: 1 s runs, 1 round, 2 layouts, about 20 s). It needs wrk (installed
as bench/cache_bench.py does) and the corpus of bench/peers.py (bench/out/peers/root/corpus/ and
peers.json, made by ``python3 bench/peers.py``; ``--smoke`` falls back to peers.py's two generated
images when it is missing).

Each layout is a real ``gunicorn -c deploy/gunicorn.conf.py imgmiddleware.wsgi:application`` on
127.0.0.1 (IMGMW_WORKERS / IMGMW_THREADS, ``--max-requests 0``) with the config of peers.py's
uncached server (cache_memory_bytes 0, no cache_dir, quality 90) plus the layout's transform_slots,
serving the corpus's data root. deploy/gunicorn.conf.py never sizes OpenCV's thread pool (each
worker keeps OpenCV's default, one thread per core) while ``imgmiddleware serve`` sets
opencv_threads, 0 meaning cores // workers; here OPENCV_FOR_THREADS_NUM gives every layout serve's
figure, and one row keeps the gunicorn.conf.py behaviour. Workloads: ``resize,m_lfit,w_200,h_200``
over the corpus's baseline JPEGs, and over its PNGs (a wrk Lua list of paths, as peers.py).

For every round (``--rounds``, the layout order reversed every other round) and every layout and
workload, a fresh server: a warm-up of a few concurrent requests for the workload's smallest file,
1 s of rest, the idle tree's PSS (master + workers, /proc/PID/smaps_rollup), then ``wrk -t2 -c8``
for ``--duration`` s while peers.MemorySampler records the tree's peak PSS and RSS every 0.1 s;
then the server is stopped. Tables: req/s (median of the rounds; every round in brackets), p99
(median), peak tree PSS and RSS (largest over the rounds), idle tree PSS (median), the cores other
processes took meanwhile (cache_bench.CpuMeter) and wrk's errors (non-2xx are 503 SlowDown: a
request that waited transform_wait_seconds for a slot). Each run waits for a quiet machine first
(``--patience``), and is repeated (``--tries``) when others took more than ``--max-others`` cores.

PSS divides a shared page among every process mapping it, this script included (it imports
OpenCV and NumPy through peers.py): a fixed few MB, counted alike for every layout.
A measurement, not a test: nothing is asserted. Every server is stopped at the end, also on error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from cache_bench import CpuMeter, _children, ensure_wrk, free_port, run_wrk, wrk_version  # noqa: E402
from core_bench import cpu_model  # noqa: E402
from peers import (CONNECTIONS, LIST_LUA, PEER_QUALITY, WRK_THREADS, MemorySampler, Proc,  # noqa: E402
                   build_corpus, pss_kb, rss_kb, tree_pids, url_for)

PEERS_ROOT = HERE / "out" / "peers" / "root"
SIZE = 200
WORKLOADS = {"baseline JPEG fit 200": "jpeg-baseline", "PNG fit 200": "png"}
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Layout:
    workers: int
    threads: int
    slots: int                  # transform_slots per worker
    cv: int | None = None       # OpenCV threads per worker; None: left unset, as gunicorn.conf.py does

    @property
    def label(self) -> str:
        cv = f"OpenCV {self.cv}" if self.cv is not None else f"OpenCV unset ({CORES})"
        return f"{self.workers} x {self.threads}, slots {self.slots}, {cv}"


def serve_cv(workers: int) -> int:
    """OpenCV threads per worker as `imgmiddleware serve` picks them (opencv_threads = 0)."""
    return max(1, CORES // workers)


def layouts(smoke: bool) -> list[Layout]:
    """Today's default (2 workers x 4 threads, 2 slots each on 2 cores), the same with OpenCV's pool
    left as deploy/gunicorn.conf.py leaves it, 2 x 2, and one worker with 4 and 8 threads: with the
    default 2 slots, and with the slots raised to 4 so the machine still runs 4 transforms at once."""
    plan = [(2, 4, 2), (2, 2, 2), (1, 4, 2), (1, 4, 4), (1, 8, 2), (1, 8, 4)]
    if smoke:
        plan = [(2, 4, 2), (1, 4, 4)]
    found = [Layout(w, t, s, serve_cv(w)) for w, t, s in plan]
    if not smoke:
        found.insert(1, Layout(2, 4, 2, None))
    return found


def corpus_items(smoke: bool, tmp: Path) -> tuple[Path, list[dict]]:
    """(data root, peers.json's corpus entries); the corpus lives in the data root's bucket
    "corpus". Smoke mode without peers.py's corpus: its two generated images, in a temp root."""
    meta = PEERS_ROOT.parent / "peers.json"
    if meta.is_file() and (PEERS_ROOT / "corpus").is_dir():
        items = json.loads(meta.read_text()).get("corpus", [])
        items = [i for i in items if (PEERS_ROOT / "corpus" / i["name"]).is_file()]
        if all(any(i["kind"] == k for i in items) for k in WORKLOADS.values()):
            return PEERS_ROOT, items
    if not smoke:
        sys.exit(f"no corpus in {PEERS_ROOT.relative_to(ROOT)}: run python3 bench/peers.py first")
    root = tmp / "root"
    return root, build_corpus(root / "corpus", quick=True, smoke=True)


def start(layout: Layout, root: Path, work: Path) -> tuple[Proc, str]:
    port = free_port()
    tag = f"w{layout.workers}t{layout.threads}s{layout.slots}c{layout.cv or 'u'}"
    cfg = work / f"{tag}.toml"
    # peers.ours(False)'s config: no result cache, every request transforms.
    cfg.write_text(
        f'cache_memory_bytes = 0\ncache_dir = ""\n'
        f'workers = {layout.workers}\nthreads = {layout.threads}\ntransform_slots = {layout.slots}\n'
        f'max_requests = 0\nmax_requests_jitter = 0\nmax_source_bytes = 31457280\nstyles_file = ""\n'
        f'jpeg_quality = {PEER_QUALITY}\nwebp_quality = {PEER_QUALITY}\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMGMW_") and k != "OPENCV_FOR_THREADS_NUM"}
    env.update(IMGMW_CONFIG=str(cfg), IMGMW_ROOT=str(root), IMGMW_BIND=f"127.0.0.1:{port}",
               IMGMW_WORKERS=str(layout.workers), IMGMW_THREADS=str(layout.threads),
               PYTHONPATH=str(ROOT))
    if layout.cv is not None:
        env["OPENCV_FOR_THREADS_NUM"] = str(layout.cv)
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
           "--max-requests", "0", "imgmiddleware.wsgi:application"]
    base = f"http://127.0.0.1:{port}"
    proc = Proc(tag, cmd, base + "/corpus/", work / f"{tag}.log", work, env, workers=layout.workers)
    try:
        proc.start()
    except BaseException:
        stop(proc)
        raise
    return proc, base


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have."""
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda n, _: caught.append(n)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught and callable(old[caught[0]]):
            old[caught[0]](caught[0], None)


def stop(proc: Proc) -> None:
    """proc.stop() that Ctrl-C or SIGTERM cannot cut short."""
    with signals_deferred():
        proc.stop()


def stop_leftovers() -> None:
    """Any server still running: the children of this script that lead their own session (Proc
    starts gunicorn so), e.g. one whose Popen a signal interrupted before Proc knew its pid."""
    with signals_deferred():
        for pid in _children(os.getpid()):
            try:
                if os.getsid(pid) != pid:
                    continue
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
                    time.sleep(0.2)
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, ChildProcessError):
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def tree_now(proc: Proc) -> tuple[float, float, int]:
    """(PSS MB, RSS MB, threads) of the server's whole tree."""
    pids = tree_pids(proc.proc.pid)
    threads = 0
    for pid in pids:
        try:
            threads += int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text()
                                .splitlines() if line.startswith("Threads:")))
        except (OSError, StopIteration, ValueError):
            pass
    return sum(pss_kb(p) for p in pids) / 1024, sum(rss_kb(p) for p in pids) / 1024, threads


def warm_up(base: str, path: str, layout: Layout) -> None:
    """A few concurrent requests, so that every worker (likely) and some threads have transformed."""
    def get(_):
        with urllib.request.urlopen(base + path, timeout=120) as r:
            if r.status != 200 or not r.read():
                raise RuntimeError(f"warm-up {path}: HTTP {r.status}")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(get, range(4 * layout.workers)))


def one_run(wrk: str, layout: Layout, kind: str, root: Path, items: list[dict], duration: float,
            work: Path) -> dict:
    names = [i["name"] for i in items if i["kind"] == kind]
    smallest = min((i for i in items if i["kind"] == kind), key=lambda i: i["w"] * i["h"])["name"]
    paths = [url_for("imgmiddleware", n, SIZE) for n in names]
    listfile = work / f"paths-{kind}.txt"
    listfile.write_text("\n".join(paths) + "\n")
    script = work / "list.lua"
    script.write_text(LIST_LUA)
    proc, base = start(layout, root, work)
    try:
        warm_up(base, url_for("imgmiddleware", smallest, SIZE), layout)
        time.sleep(1.0)
        idle_pss, idle_rss, threads = tree_now(proc)
        sampler, meter = MemorySampler(proc.proc.pid), CpuMeter(proc.proc.pid)
        sampler.start()
        meter.start()
        try:
            r = run_wrk(wrk, base + paths[0], WRK_THREADS, CONNECTIONS, duration, script, (listfile,))
        finally:
            server_cpu, others, split = meter.stop()
            _, peak_rss, peak_pss = sampler.finish()
        if proc.proc.poll() is not None:
            raise RuntimeError(f"server {proc.name} died: {proc.log.read_text(errors='replace')[-1500:]}")
    finally:
        stop(proc)
    return {"rps": r["rps"], "p99": r["p99"], "errors": r["errors"], "peak_pss": peak_pss,
            "peak_rss": peak_rss, "idle_pss": idle_pss, "idle_rss": idle_rss, "threads": threads,
            "others": others, "server_cpu": server_cpu, "split": split}


def busy_cores(seconds: float = 2.0) -> float:
    """Cores the rest of the machine used over the next ``seconds`` (no server of ours runs then)."""
    meter = CpuMeter(None)
    meter.start()
    time.sleep(seconds)
    return meter.stop()[1]


def wait_quiet(limit: float, patience: float) -> None:
    """Until other processes use less than ``limit`` cores (2 s windows), ``patience`` s at most."""
    deadline = time.monotonic() + patience
    busy = busy_cores()
    while busy >= limit and time.monotonic() < deadline:
        print(f"  waiting for a quiet machine: others use {busy:.2f} cores", flush=True)
        time.sleep(8)
        busy = busy_cores()


def measured(wrk: str, layout: Layout, kind: str, root: Path, items: list[dict], args, work: Path) -> dict:
    """one_run() once the machine is quiet; again (``--tries`` in all) when other processes took
    more than ``--max-others`` cores meanwhile. The least disturbed try counts."""
    tries = []
    for _ in range(max(1, args.tries)):
        wait_quiet(args.max_others / 2, args.patience)
        tries.append(one_run(wrk, layout, kind, root, items, args.duration, work))
        if tries[-1]["others"] <= args.max_others or len(tries) >= args.tries:
            break
        print(f"  disturbed: others used {tries[-1]['others']:.2f} cores; again", flush=True)
    best = min(tries, key=lambda t: t["others"])
    best["tries"] = len(tries)
    return best


def progress(r: dict) -> str:
    return (f"{r['rps']:.1f} req/s, p99 {r['p99']:.0f} ms, PSS idle {r['idle_pss']:.0f} / peak "
            f"{r['peak_pss']:.0f} MB, {r['threads']} threads in the tree, server {r['server_cpu']:.2f} "
            f"cores (workers {'/'.join(f'{c:.2f}' for c in r['split'])}), others {r['others']:.2f}, "
            f"errors {r['errors']}"
            + (f", after {r['tries']} tries" if r["tries"] > 1 else ""))


def table(name: str, rows: dict[Layout, list[dict]]) -> str:
    out = [f"\n**{name}**\n",
           "| layout | req/s (median) | p99 ms | peak tree PSS MB | idle tree PSS MB | peak tree RSS MB "
           "| others (cores) | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for layout, runs in rows.items():
        rps = [r["rps"] for r in runs]
        errors = "; ".join(sorted({r["errors"] for r in runs if r["errors"] != "-"})) or "-"
        out.append(f"| {layout.label} | {statistics.median(rps):.1f} ({', '.join(f'{x:.1f}' for x in rps)}) "
                   f"| {statistics.median(r['p99'] for r in runs):.0f} "
                   f"| {max(r['peak_pss'] for r in runs):.0f} "
                   f"| {statistics.median(r['idle_pss'] for r in runs):.0f} "
                   f"| {max(r['peak_rss'] for r in runs):.0f} "
                   f"| {max(r['others'] for r in runs):.2f} | {errors} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of each wrk run (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, the order reversed every other one")
    ap.add_argument("--smoke", action="store_true", help="1 s runs, 1 round, 2 layouts")
    ap.add_argument("--max-others", type=float, default=0.2,
                    help="cores other processes may take during a run before it is repeated")
    ap.add_argument("--tries", type=int, default=3, help="runs of a disturbed measurement, at most")
    ap.add_argument("--patience", type=float, default=300.0,
                    help="seconds to wait for a quiet machine before each run, at most")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds, args.tries, args.patience = 1.0, 1, 1, 0.0
    # SIGTERM ends the script through the finally blocks below, which stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    wrk = ensure_wrk()
    plan = layouts(args.smoke)
    started = time.monotonic()
    results: dict[str, dict[Layout, list[dict]]] = {w: {lay: [] for lay in plan} for w in WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="imgmw-layout-") as tmp:
        work = Path(tmp)
        root, items = corpus_items(args.smoke, work)
        try:
            for rnd in range(args.rounds):
                order = plan if rnd % 2 == 0 else plan[::-1]
                workloads = list(WORKLOADS.items())
                for layout in order:
                    for wl, kind in (workloads if rnd % 2 == 0 else workloads[::-1]):
                        r = measured(wrk, layout, kind, root, items, args, work)
                        results[wl][layout].append(r)
                        print(f"round {rnd + 1}/{args.rounds} {layout.label}, {wl}: {progress(r)}",
                              flush=True)
        finally:
            stop_leftovers()
    elapsed = time.monotonic() - started
    import cv2
    import gunicorn
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), "0")
    counts = {wl: sum(i["kind"] == kind for i in items) for wl, kind in WORKLOADS.items()}
    print(f"\n{platform.node()}: {CORES} cores, {cpu_model()}, {int(mem) / 1024 ** 2:.1f} GB, "
          f"{platform.system()} {platform.machine()}; Python {platform.python_version()}, "
          f"OpenCV {cv2.__version__}, gunicorn {gunicorn.__version__}, {wrk_version(wrk).split(' [')[0]}; "
          f"wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{args.duration:g}s x {args.rounds} round(s), "
          f"no result cache; files: " + ", ".join(f"{wl} {n}" for wl, n in counts.items())
          + f"; {elapsed:.0f} s")
    for wl in WORKLOADS:
        print(table(wl, results[wl]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
