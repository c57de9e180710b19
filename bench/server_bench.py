#!/usr/bin/env python3
"""gunicorn's HTTP parsers under the event-loop worker (issue 19): its pure-Python parser against
gunicorn_h1c, its C parser, on small answers where the server's own work shows.

    python3 bench/server_bench.py [--rounds 3] [--duration 5]

Two servers run at once, ``gunicorn -c deploy/gunicorn.conf.py imgmiddleware.wsgi:application`` with
one worker of 4 threads over the bundled bucket (a temporary data root holding tests/fixtures'
example.jpg), one with ``--http-parser python`` and one with ``--http-parser fast``; everything else
is the same code. For each kind of request, wrk (``-t1 -c4``) loads one server, then the other, in an
order that alternates round by round, and the server tree's CPU time (user + system, /proc) is
divided by the answers: the health path (answered on the event loop), a 404 NoSuchKey (the
middleware and the bucket, through the worker's threads), a cached hit of a fit-200 thumbnail (its
revalidation included) and the object itself (22 KB). Medians over the rounds. A measurement, not a
test: no time asserts. gunicorn_h1c is not a dependency of ours (this measurement is why): when this
interpreter lacks it, the servers run from bench/.venv-h1c (this interpreter's packages and
gunicorn_h1c H1C_VERSION, made once), so that nothing here changes what the suite runs with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from cache_bench import ensure_wrk, free_port, run_wrk  # noqa: E402
from peers import tree_cpu_s  # noqa: E402

H1C_VERSION = "0.6.10"
PARSERS = {"Python parser": "python", "gunicorn_h1c": "fast"}
KINDS = {"health (event loop)": "/_healthz", "404 NoSuchKey": "/bench/nope.jpg",
         "cached hit, fit 200": "/bench/example.jpg?x-oss-process=image/resize,m_lfit,w_200,h_200",
         "object, 22 KB": "/bench/example.jpg"}


def python_with_h1c() -> str:
    """An interpreter with gunicorn_h1c: this one, else bench/.venv-h1c built on this one's packages."""
    if subprocess.run([sys.executable, "-c", "import gunicorn_h1c"], capture_output=True).returncode == 0:
        return sys.executable
    venv = HERE / ".venv-h1c"
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import gunicorn_h1c, imgmiddleware"],
                                             capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"gunicorn_h1c=={H1C_VERSION}"], check=True)
    return str(python)


def start(python: str, parser: str, root: Path, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = work / "imgmiddleware.toml"
    config.write_text(f'cache_dir = "{work / f"cache-{parser}"}"\nstyles_file = ""\n')
    env = dict(os.environ, IMGMW_ROOT=str(root), IMGMW_CONFIG=str(config))
    proc = subprocess.Popen([python, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                             "-w", "1", "--threads", "4", "--max-requests", "0", "-b", f"127.0.0.1:{port}",
                             "--http-parser", parser, "imgmiddleware.wsgi:application"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(work / f"gunicorn-{parser}.log", "w"), start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{KINDS['cached hit, fit 200']}", timeout=5).read()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / f"gunicorn-{parser}.log").read_text()[-2000:])
            time.sleep(0.2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    args = ap.parse_args(argv)
    python = python_with_h1c()
    wrk = ensure_wrk()
    results = {(p, k): [] for p in PARSERS for k in KINDS}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "root" / "bench").mkdir(parents=True)
        shutil.copy(ROOT / "tests" / "fixtures" / "example.jpg", work / "root" / "bench" / "example.jpg")
        servers = {}
        try:
            for name, parser in PARSERS.items():
                servers[name] = start(python, parser, work / "root", work)
            for rnd in range(args.rounds):
                for kind, path in KINDS.items():
                    for name in (list(PARSERS) if rnd % 2 == 0 else list(PARSERS)[::-1]):
                        proc, port = servers[name]
                        before = tree_cpu_s(proc.pid)
                        run = run_wrk(wrk, f"http://127.0.0.1:{port}{path}", 1, 4, args.duration)
                        if run["errors"] not in ("-", f"non-2xx {run['requests']}"):
                            raise RuntimeError(f"{name} {kind}: {run['errors']}")
                        cpu = (tree_cpu_s(proc.pid) - before) * 1e6 / max(1, run["requests"])
                        results[name, kind].append((run["rps"], cpu))
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for proc, _ in servers.values():
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    names = list(PARSERS)
    print(f"One worker x 4 threads each, both servers up at once, wrk -t1 -c4 -d{args.duration:g}s a "
          f"load, {args.rounds} rounds, medians; server CPU = the tree's user + system time per answer\n")
    print("| request | " + " | ".join(f"{n} req/s | {n} CPU us" for n in names) + " | CPU, h1c / Python |")
    print("|---|" + "---:|" * (2 * len(names) + 1))
    for kind in KINDS:
        cells, cpus = [], []
        for name in names:
            runs = results[name, kind]
            cpus.append(statistics.median(c for _, c in runs))
            cells += [f"{statistics.median(r for r, _ in runs):.0f}", f"{cpus[-1]:.0f}"]
        print(f"| {kind} | " + " | ".join(cells) + f" | {cpus[1] / cpus[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
