#!/usr/bin/env python3
"""What a request costs outside OpenCV (issue 19): the bundled bucket's GET, its 304, a cached hit and
an uncached thumbnail, in one process, for this tree and another revision in the same run.

    python3 bench/request_path_bench.py [--base REV] [--rounds 7] [--repeat 20]

Each tree runs in child processes of its own (``PYTHONPATH`` at a ``git worktree`` of REV for the
base; this checkout otherwise), alternating tree by tree and round by round so that background load
hits both alike. A child builds the app as ``imgmiddleware serve`` does (cli.build_app: the
middleware over the bundled bucket), uploads the files with PutObject (so their metadata is on the
file, as for anything an SDK uploaded), and measures the process CPU time per request of:

- ``GET object``: the bucket's GetObject, 200, body not read (what a subrequest for a source is);
- ``GET 304``: its conditional GET that a cached hit's revalidation makes;
- ``cached hit``: the middleware with its memory cache, the revalidation included;
- ``uncached fit 200``: ``resize,m_lfit,w_200,h_200`` with the cache off, OpenCV's work included.

Files: the baseline JPEGs of the peers corpus (bench/out/peers/, made by bench/peers.py) when it is
there, else the sample images of tests/fixtures/. Per kind and tree: the best and the median over
the rounds of the mean per request, in microseconds. A measurement, not a test: no time asserts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "out" / "peers"
KINDS = ("GET object", "GET 304", "cached hit", "uncached fit 200")
PROCESS = "image/resize,m_lfit,w_200,h_200"
BUCKET = "bench"


def corpus_files() -> tuple[list[Path], str]:
    listing = PEERS / "peers.json"
    if listing.is_file():
        items = json.loads(listing.read_text())["corpus"]
        files = [PEERS / "root" / "corpus" / i["name"] for i in items if i["kind"] == "jpeg-baseline"]
        if files and all(f.is_file() for f in files):
            return files, f"{len(files)} baseline JPEGs of the peers corpus"
    files = sorted((ROOT / "tests" / "fixtures").glob("*.jpg"))
    return files, f"{len(files)} sample JPEGs of tests/fixtures (no peers corpus here)"


# --- the child: one tree, one round ------------------------------------------------------------------

def environ(path: str, query: str = "", **headers) -> dict:
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
           "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1:8080",
           "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
           "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": True,
           "wsgi.multiprocess": True, "wsgi.run_once": False}
    env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return env


def call(app, env: dict, read: bool = True) -> tuple[str, dict]:
    got: dict = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, dict(headers)
    result = app(env, start_response)
    try:
        if read:
            for _ in result:
                pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return got["status"], got["headers"]


def child(files: list[str], repeat: int) -> dict:
    from imgmiddleware.cli import build_app
    from imgmiddleware.config import Config

    import cv2
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / BUCKET).mkdir()
        common = dict(default_acl="public-read-write", cache_dir="", styles_file="")
        cached = build_app(root, Config(cache_memory_bytes=64 << 20, **common))
        uncached = build_app(root, Config(cache_memory_bytes=0, **common))
        bucket = cached.app
        paths, etags = [], []
        for name in files:
            data = Path(name).read_bytes()
            path = f"/{BUCKET}/{Path(name).name}"
            put = environ(path, CONTENT_TYPE="image/jpeg")
            put.update(REQUEST_METHOD="PUT", CONTENT_LENGTH=str(len(data)), **{"wsgi.input": io.BytesIO(data)})
            status, headers = call(bucket, put)
            assert status.startswith("200"), status
            paths.append(path)
            etags.append(headers["ETag"])
        query = "x-oss-process=" + PROCESS
        requests = {
            "GET object": [(bucket, environ(p), False, "200") for p in paths],
            "GET 304": [(bucket, environ(p, If_None_Match=e), True, "304") for p, e in zip(paths, etags)],
            "cached hit": [(cached, environ(p, query), True, "200") for p in paths],
            "uncached fit 200": [(uncached, environ(p, query), True, "200") for p in paths],
        }
        out = {}
        for kind in KINDS:
            batch = requests[kind]
            for app, env, read, want in batch * 2:          # warm: caches filled, code paths hot
                status, _ = call(app, dict(env, **{"wsgi.input": io.BytesIO(b"")}), read)
                assert status.startswith(want), (kind, status)
            n = max(1, repeat if kind != "uncached fit 200" else repeat // 10)
            envs = [(app, dict(env, **{"wsgi.input": io.BytesIO(b"")}), read) for _ in range(n)
                    for app, env, read, _ in batch]
            started = time.process_time()
            for app, env, read in envs:
                call(app, env, read)
            out[kind] = (time.process_time() - started) / len(envs) * 1e6
        return out


# --- the parent --------------------------------------------------------------------------------------

def worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev],
                   check=True, capture_output=True)
    return into


def run_child(tree: Path, files: list[Path], repeat: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--repeat", str(repeat),
                          *map(str, files)], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="a git revision to measure beside this tree (a worktree of it)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=20, help="passes over the files per kind and round")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.files, args.repeat)))
        return 0
    files, described = corpus_files()
    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory() as scratch:
        if args.base:
            label = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                                   check=True, capture_output=True, text=True).stdout.strip()
            trees = {f"base {label}": worktree(args.base, Path(scratch) / "base"), **trees}
        try:
            results: dict[str, dict[str, list[float]]] = {t: {k: [] for k in KINDS} for t in trees}
            for rnd in range(args.rounds):
                for name, tree in (trees.items() if rnd % 2 == 0 else reversed(trees.items())):
                    for kind, us in run_child(tree, files, args.repeat).items():
                        results[name][kind].append(us)
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            if args.base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(Path(scratch) / "base")], capture_output=True)
    print(f"In one process, {described}; {args.rounds} rounds, trees alternating; CPU time per "
          f"request (process_time), best / median of the rounds, microseconds\n")
    names = list(trees)
    head = "| request | " + " | ".join(f"{n} best | {n} median" for n in names)
    if len(names) == 2:
        head += " | best, this tree / base |"
    print(head + ("" if len(names) == 2 else " |"))
    print("|---|" + "---:|" * (2 * len(names) + (1 if len(names) == 2 else 0)))
    for kind in KINDS:
        cells = []
        for n in names:
            v = results[n][kind]
            cells += [f"{min(v):.0f}", f"{statistics.median(v):.0f}"]
        row = f"| {kind} | " + " | ".join(cells)
        if len(names) == 2:
            row += f" | {min(results[names[1]][kind]) / min(results[names[0]][kind]):.2f}x"
        print(row + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
