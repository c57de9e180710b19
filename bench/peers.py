#!/usr/bin/env python3
"""Peer benchmark: imgmiddleware against thumbor, nginx image_filter, pyvips and the bare OpenCV floor.

    python3 bench/peers.py [--quick] [--duration S] [--rounds N]

One command: installs the peers (thumbor from PyPI in bench/.venv-thumbor; pyvips + matplotlib in
bench/.venv-bench; nginx, its image_filter module and wrk from Debian), builds a corpus of real
photographs from Debian wallpaper packages (bench/.cache/), runs every workload with wrk on
loopback at fixed concurrency for a fixed time, alternating the servers over rounds, and writes
docs/BENCHMARKS.md and docs/benchmarks.png (bench/out/peers.json has the raw figures).
``--smoke`` runs only imgmiddleware and the in-process floor on two generated images (the test
suite uses it). A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cache_bench import ensure_wrk, free_port, run_wrk, wrk_version  # noqa: E402
from core_bench import CACHE, _download, _run, cpu_model  # noqa: E402
from listeners import wait_until_accepting  # noqa: E402

THUMBOR_VENV = HERE / ".venv-thumbor"
BENCH_VENV = HERE / ".venv-bench"
OUT = HERE / "out"
SIZES = (200, 512)
WORKERS = 2          # processes per server (gunicorn workers, thumbor --processes, nginx workers)
THREADS = 4          # gunicorn threads per worker; thumbor ENGINE_THREADPOOL_SIZE
CONNECTIONS = 8
PEER_QUALITY = 90    # JPEG/WebP quality every server is given (OSS's own default is 82)
WRK_THREADS = 2
HTTP_FLOOR = "OpenCV floor over HTTP"   # bench/http_floor.py, loaded on baseline JPEGs only
MARGIN_1 = "imgmiddleware (margin 1)"   # shrink_on_load_margin 1, loaded on progressive JPEGs only
DIAGNOSTIC = {HTTP_FLOOR: "jpeg-baseline", MARGIN_1: "jpeg-progressive"}
PACKAGES = ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "mate-backgrounds",
            "plasma-workspace-wallpapers")
MIN_MP, MAX_MP, MAX_BYTES = 2.0, 24.0, 18_000_000
# Wallpapers that are artwork, renders or logos rather than photographs, found by looking at every
# file of the packages above: flat colour and hard edges compress and scale unlike photos.
ARTWORK = ("umang_by_Abhishek_Mudgal", "Fossa_by_Jasper_Roks", "Infinite-Sea_by_Aury88",
           "Painting-Colors_by__herobrine7gamer", "greentock_by_Peter_Nerlich", "/GreenTraditional.",
           "/wallpapers/Autumn/", "/wallpapers/Flow/", "/wallpapers/Honeywave/",
           "/wallpapers/PastelHills/", "/wallpapers/SafeLanding/", "/wallpapers/Shell/",
           "/wallpapers/Volna/")

LIST_LUA = r"""
local paths = {}
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  local id = tonumber(tostring(wrk.thread):match("0x(%x+)") or "0", 16) or 0
  i = id % #paths
end
function request()
  i = i % #paths + 1
  return wrk.format(nil, paths[i])
end
"""


# --- installing ------------------------------------------------------------------------------------

def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def apt_install(*pkgs) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs]
    if sh(cmd, env=env).returncode == 0:
        return True
    sh(["apt-get", "update", "-q"], env=env)
    return sh(cmd, env=env).returncode == 0


def venv(path: Path, *pkgs) -> tuple[Path | None, str]:
    py = path / "bin" / "python"
    if not py.exists() and sh([sys.executable, "-m", "venv", str(path)]).returncode != 0:
        return None, "python3 -m venv failed"
    r = sh([str(py), "-m", "pip", "install", "-q", *pkgs])
    if r.returncode != 0:
        return None, r.stderr.strip()[-400:]
    return py, ""


def install_peers(notes: list[str]) -> dict:
    peers = {}
    py, err = venv(THUMBOR_VENV, "thumbor")
    if py:
        ver = sh([str(THUMBOR_VENV / "bin" / "thumbor"), "--version"]).stdout.strip()
        peers["thumbor"] = ver
    else:
        notes.append(f"thumbor could not be installed (pip install thumbor in {THUMBOR_VENV}): {err}")
    py, err = venv(BENCH_VENV, "pyvips", "pyvips-binary", "matplotlib", "numpy")
    if py:
        peers["pyvips"] = sh([str(py), "-c", "import pyvips; print(pyvips.__version__, "
                              "pyvips.version(0), pyvips.version(1), pyvips.version(2))"]).stdout.strip()
    else:
        notes.append(f"pyvips/matplotlib could not be installed in {BENCH_VENV}: {err}")
    if not Path("/usr/lib/nginx/modules/ngx_http_image_filter_module.so").exists():
        apt_install("nginx", "libnginx-mod-http-image-filter")
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        if Path("/usr/lib/nginx/modules/ngx_http_image_filter_module.so").exists():
            peers["nginx"] = sh(["/usr/sbin/nginx", "-v"]).stderr.strip()
        else:
            notes.append("nginx image_filter module missing (apt-get install libnginx-mod-http-image-filter failed)")
    return peers


# --- corpus ----------------------------------------------------------------------------------------

def build_corpus(dest: Path, quick: bool, smoke: bool) -> list[dict]:
    """Real photographs from Debian wallpaper packages; PNG and WebP sources converted from some of
    them by Pillow. Each entry records where it came from."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        old.unlink()
    if smoke:
        rng = np.random.default_rng(1)
        items = []
        for n, (fmt, ext) in enumerate((("JPEG", "jpg"), ("PNG", "png"))):
            y, x = np.mgrid[0:600, 0:800]
            img = np.dstack([(x * 255 // 800), (y * 255 // 600), ((x + y) * 255 // 1400)]).astype(np.uint8)
            img = np.clip(img + rng.integers(0, 8, img.shape), 0, 255).astype(np.uint8)
            path = dest / f"smoke{n}.{ext}"
            Image.fromarray(img).save(path, fmt)
            items.append({"name": path.name, "kind": "jpeg-baseline" if ext == "jpg" else "png",
                          "source": "generated gradient (smoke mode)", "w": 800, "h": 600})
        return items
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found, seen = [], set()
    for package in PACKAGES:
        deb = _download(package, debs)
        if deb is None:
            continue
        tree = CACHE / package
        if not tree.is_dir():
            _run(["dpkg-deb", "-x", str(deb), str(tree)], CACHE)
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], CACHE).stdout.strip()
        for path in sorted(tree.rglob("*")):
            if path.suffix.lower() not in (".jpg", ".jpeg") or "screenshot" in path.name:
                continue
            if "/abstract/" in str(path) or any(a in str(path) for a in ARTWORK):
                continue          # mate's abstract/ and the ARTWORK list are not photographs
            if path.stat().st_size > MAX_BYTES:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            with Image.open(path) as im:
                mp_ = im.width * im.height / 1e6
                if im.format != "JPEG" or not MIN_MP <= mp_ <= MAX_MP:
                    continue
                progressive = bool(im.info.get("progressive") or im.info.get("progression"))
                found.append((package, version, path, tree, im.width, im.height, progressive))
    items = []
    limit = 6 if quick else 1000
    counts = {"jpeg-baseline": 0, "jpeg-progressive": 0}
    for package, version, path, tree, w, h, progressive in found:
        kind = "jpeg-progressive" if progressive else "jpeg-baseline"
        if counts[kind] >= limit:
            continue
        counts[kind] += 1
        name = f"{len(items):02d}_{path.name}".replace(" ", "_")
        shutil.copyfile(path, dest / name)
        items.append({"name": name, "kind": kind, "w": w, "h": h,
                      "source": f"Debian {package} {version}: /{path.relative_to(tree)}"})
    # PNG and WebP: real photos (every 3rd JPEG, up to 8 / 3 quick), longest side 3000, by Pillow.
    jpegs = [i for i in items if i["kind"].startswith("jpeg")]
    conv = jpegs[::3][: (3 if quick else 8)]
    for fmt, ext, kw in (("PNG", "png", {"compress_level": 6}), ("WEBP", "webp", {"quality": 90})):
        for item in conv:
            with Image.open(dest / item["name"]) as im:
                im = im.convert("RGB")
                im.thumbnail((3000, 3000), Image.LANCZOS)
                name = Path(item["name"]).stem + "." + ext
                im.save(dest / name, fmt, **kw)
                items.append({"name": name, "kind": ext, "w": im.width, "h": im.height,
                              "source": f"{item['source']}, converted by Pillow to {fmt} "
                                        f"{im.width}x{im.height}"})
    return items


# --- servers ---------------------------------------------------------------------------------------

class Proc:
    """A server in its own process group; start() returns once ``ready`` answers and each of its
    ``workers`` processes accepts connections (listeners.py)."""

    def __init__(self, name: str, cmd: list[str], ready: str, log: Path, cwd: Path, env=None,
                 workers: int = WORKERS):
        self.name, self.cmd, self.ready, self.log, self.cwd, self.env = name, cmd, ready, log, cwd, env
        self.workers = workers
        self.proc = None

    def start(self, timeout=60.0):
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._fh, stderr=subprocess.STDOUT, cwd=self.cwd,
                                     env=self.env, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-1500:]}")
            try:
                with urllib.request.urlopen(self.ready, timeout=5) as r:
                    r.read()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} not ready: {self.log.read_text(errors='replace')[-1500:]}")
        port = urllib.parse.urlsplit(self.ready).port
        wait_until_accepting(self.proc.pid, port, self.workers, max(1.0, end - time.monotonic()))

    def stop(self):
        """The whole process group, not only its leader: thumbor's forked processes outlive a
        terminated parent, and would sit in memory (and on the CPU) through every later load."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break                      # the group is gone
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.5)                # let the rest of the group act on the signal
        self._fh.close()
        self.proc = None


def ours(root: Path, work: Path, cached: bool, margin: float | None = None) -> tuple[Proc, str]:
    """imgmiddleware serve as deployed (cached) or computing every answer; ``margin`` overrides
    shrink_on_load_margin (OSS's bytes need the default, 2; 1 is the operator's speed setting)."""
    port = free_port()
    label = "cached" if cached else ("uncached" if margin is None else f"margin-{margin:g}")
    cfg = work / f"imgmw-{label}.toml"
    cfg.write_text(
        (f'shrink_on_load_margin = {margin}\n' if margin is not None else '') +
        f'cache_memory_bytes = {64 * 1024 * 1024 if cached else 0}\n'
        f'cache_dir = "{work / "imgmw-cache" if cached else ""}"\n'
        f'workers = {WORKERS}\nthreads = {THREADS}\nmax_requests = 0\nmax_requests_jitter = 0\n'
        f'max_source_bytes = 31457280\nstyles_file = ""\n'
        f'jpeg_quality = {PEER_QUALITY}\nwebp_quality = {PEER_QUALITY}\n')
    exe = shutil.which("imgmiddleware")
    base = [exe] if exe else [sys.executable, "-m", "imgmiddleware.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGMW_")}
    p = Proc("imgmiddleware" + (" (cached)" if cached else "" if margin is None else f" (margin {margin:g})"),
             base + ["--config", str(cfg), "serve", "--root", str(root), "--bind", f"127.0.0.1:{port}",
                     "--workers", str(WORKERS), "--threads", str(THREADS)],
             f"http://127.0.0.1:{port}/corpus/", work / f"{cfg.stem}.log", ROOT, env)
    return p, f"http://127.0.0.1:{port}"


def thumbor(root: Path, work: Path) -> tuple[Proc, str]:
    port = free_port()
    cfg = work / "thumbor.conf"
    cfg.write_text(f"""LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = '{root}'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
QUALITY = {PEER_QUALITY}
WEBP_QUALITY = {PEER_QUALITY}
PNG_COMPRESSION_LEVEL = 6
ENGINE_THREADPOOL_SIZE = {THREADS}
MAX_SOURCE_SIZE = 0
""")
    p = Proc("thumbor", [str(THUMBOR_VENV / "bin" / "thumbor"), "-i", "127.0.0.1", "-p", str(port),
                         "-c", str(cfg), "-l", "warning", "--processes", str(WORKERS)],
             f"http://127.0.0.1:{port}/healthcheck", work / "thumbor.log", work)
    return p, f"http://127.0.0.1:{port}"


def nginx(root: Path, work: Path) -> tuple[Proc, str]:
    port = free_port()
    (work / "nginx").mkdir(exist_ok=True)
    n = work / "nginx"
    conf = n / "nginx.conf"
    conf.write_text(f"""load_module /usr/lib/nginx/modules/ngx_http_image_filter_module.so;
daemon off; master_process on; worker_processes {WORKERS};
pid {n}/nginx.pid; error_log {n}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {n}/body; proxy_temp_path {n}/proxy; fastcgi_temp_path {n}/fcgi;
  uwsgi_temp_path {n}/uwsgi; scgi_temp_path {n}/scgi;
  types {{ image/jpeg jpg jpeg; image/png png; image/webp webp; }}
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/fit(\\d+)/(.+)$ {{
      set $s $1;
      alias {root}/$2;
      image_filter resize $s $s;
      image_filter_buffer 32M;
      image_filter_jpeg_quality {PEER_QUALITY};
      image_filter_webp_quality {PEER_QUALITY};
    }}
    location / {{ root {root}; }}
  }}
}}
""")
    p = Proc("nginx", ["/usr/sbin/nginx", "-p", str(n), "-c", str(conf)], f"http://127.0.0.1:{port}/",
             n / "stdout.log", work)
    return p, f"http://127.0.0.1:{port}"


def floor_http(root: Path, work: Path) -> tuple[Proc, str]:
    """bench/http_floor.py under gunicorn's gthread worker, laid out as ours (2 x 4): the floor's
    work behind the thinnest Python HTTP serving, to split the floor gap into HTTP and the rest."""
    port = free_port()
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    env = {**os.environ, "IMGMW_FLOOR_ROOT": str(root)}
    p = Proc(HTTP_FLOOR, [gunicorn, "-k", "gthread", "-w", str(WORKERS), "--threads", str(THREADS),
                          "-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "--log-level", "warning",
                          "http_floor:application"],
             f"http://127.0.0.1:{port}/", work / "http-floor.log", HERE, env)
    return p, f"http://127.0.0.1:{port}"


def url_for(server: str, name: str, size: int | None) -> str:
    if size is None:
        return f"/corpus/{name}"
    if server.startswith("imgmiddleware"):
        return f"/corpus/{name}?x-oss-process=image/resize,m_lfit,w_{size},h_{size}"
    if server == "thumbor":
        return f"/unsafe/fit-in/{size}x{size}/corpus/{name}"
    if server in ("nginx", HTTP_FLOOR):
        return f"/fit{size}/corpus/{name}"
    raise ValueError(server)


# --- measuring -------------------------------------------------------------------------------------

def tree_pids(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for e in Path("/proc").iterdir():
        if e.name.isdigit():
            try:
                ppid = int((e / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(e.name))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the live processes of a tree have used so far."""
    ticks = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])          # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_kb(pid: int, name: str, field: str) -> int:
    """A kB figure of /proc/PID/<name> (``field:`` ... kB), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    return _proc_kb(pid, "status", "VmRSS")


def pss_kb(pid: int) -> int:
    """Proportional set size: each shared page divided among the processes that map it, so a tree's
    sum counts shared libraries and copy-on-write pages once (RSS counts them in every process)."""
    return _proc_kb(pid, "smaps_rollup", "Pss")


class MemorySampler(threading.Thread):
    """Peaks of a server's tree while it is under load, every 0.1 s: the largest worker's RSS, the
    tree's RSS and the tree's PSS."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop_ev, self.tree, self.worker, self.pss = pid, threading.Event(), 0, 0, 0

    def run(self):
        while not self.stop_ev.is_set():
            pids = tree_pids(self.pid)
            sizes = {p: rss_kb(p) for p in pids}
            self.tree = max(self.tree, sum(sizes.values()))
            workers = [v for p, v in sizes.items() if p != self.pid] or [sizes.get(self.pid, 0)]
            self.worker = max(self.worker, max(workers))
            self.pss = max(self.pss, sum(pss_kb(p) for p in pids))
            self.stop_ev.wait(0.1)

    def finish(self):
        self.stop_ev.set()
        self.join()
        return self.worker / 1024, self.tree / 1024, self.pss / 1024


def idle_rss(procs: dict, bases: dict, items: list[dict]) -> dict[str, float]:
    """Each server's whole tree (MB) after one small thumbnail, before any load: the part of the
    peak that is code and libraries rather than images."""
    # the smallest baseline JPEG: a big or progressive one would leave image buffers behind in the
    # heap, counted as "idle" here and carried into the first workload's peak
    jpegs = [i for i in items if i["kind"] == "jpeg-baseline"] or items
    first = min(jpegs, key=lambda i: i["w"] * i["h"])["name"]
    sizes = {}
    for name, proc in procs.items():
        fetch(bases[name] + url_for(name, first, 200))
        time.sleep(0.5)
        pids = tree_pids(proc.proc.pid)
        sizes[name] = (sum(rss_kb(p) for p in pids) / 1024, sum(pss_kb(p) for p in pids) / 1024)
    return sizes


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


@functools.lru_cache(maxsize=256)
def reference(src: Path, width: int, height: int) -> np.ndarray:
    """Full decode of the source, INTER_AREA to the output's size: what a perfect thumbnail is."""
    full = cv2.imread(str(src), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the luma (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)."""
    x, y = (cv2.cvtColor(i, cv2.COLOR_BGR2GRAY).astype(np.float64) for i in (a, b))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda m: cv2.GaussianBlur(m, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def quality_vs_reference(src: Path, out: bytes) -> tuple[float, float]:
    """(SSIM, PSNR dB) of an output against the reference at its size."""
    img = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
    ref = reference(src, img.shape[1], img.shape[0])
    return ssim(ref, img), float(cv2.PSNR(ref, img))


def verify(servers: dict, names: list[str], size: int, corpus: Path) -> dict:
    """Each server's output for every URL: dimensions compared with imgmiddleware's, bytes, SSIM, PSNR."""
    res = {s: {"bytes": [], "ssim": [], "psnr": [], "dims": []} for s in servers}
    mismatch = []
    for name in names:
        for s, base in servers.items():
            body = fetch(base + url_for(s, name, size))
            img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            res[s]["dims"].append((img.shape[1], img.shape[0]))
            res[s]["bytes"].append(len(body))
            quality = quality_vs_reference(corpus / name, body)
            res[s]["ssim"].append(quality[0])
            res[s]["psnr"].append(quality[1])
        ref = res["imgmiddleware"]["dims"][-1]
        for s in servers:
            d = res[s]["dims"][-1]
            dev = max(abs(d[0] - ref[0]), abs(d[1] - ref[1]))
            if dev:
                mismatch.append(f"{s} {name} fit {size}: {d[0]}x{d[1]} vs {ref[0]}x{ref[1]}")
            if dev > 1:
                raise RuntimeError(f"output sizes differ by more than 1 px: {mismatch[-1]}")
    return {s: {"bytes": statistics.fmean(v["bytes"]), "ssim": statistics.fmean(v["ssim"]),
                "psnr": statistics.fmean(v["psnr"])} for s, v in res.items()} | {"_mismatch": mismatch}


def load(wrk: str, server: Proc, base: str, paths: list[str], duration: float, work: Path) -> dict:
    listfile = work / f"paths-{server.name.replace(' ', '_')}.txt"
    listfile.write_text("\n".join(paths) + "\n")
    script = work / "list.lua"
    script.write_text(LIST_LUA)
    sampler = MemorySampler(server.proc.pid)
    sampler.start()
    server_cpu, client = tree_cpu_s(server.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run_wrk(wrk, base + paths[0], WRK_THREADS, CONNECTIONS, duration, script, (listfile,))
    server_cpu = tree_cpu_s(server.proc.pid) - server_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker, tree, pss = sampler.finish()
    r.pop("text", None)
    r["rss_worker"], r["rss_tree"], r["pss_tree"] = worker, tree, pss
    # where the 2 cores went: the server's CPU per answer, and the load generator's share of the cores
    r["cpu_ms"] = server_cpu * 1000 / r["requests"] if r.get("requests") else float("nan")
    r["client_cores"] = (after.ru_utime + after.ru_stime - client.ru_utime - client.ru_stime) / max(1, round(duration))
    return r


def inproc(engine: str, size: int, files: list[Path], duration: float, outdir: Path) -> dict | None:
    py = sys.executable if engine == "floor" else str(BENCH_VENV / "bin" / "python")
    if not Path(py).exists():
        return None
    shutil.rmtree(outdir, ignore_errors=True)
    r = sh([py, str(HERE / "inproc.py"), engine, str(size), str(duration), str(WORKERS), str(outdir),
            *map(str, files)], timeout=duration + 300)
    if r.returncode != 0:
        print(f"  {engine} failed: {r.stderr[-500:]}", flush=True)
        return None
    res = json.loads(r.stdout.strip().splitlines()[-1])
    outs = sorted(outdir.iterdir(), key=lambda p: int(p.stem))
    res["bytes"] = statistics.fmean(p.stat().st_size for p in outs)
    quality = [quality_vs_reference(f, o.read_bytes()) for f, o in zip(files, outs)]
    res["ssim"] = statistics.fmean(q[0] for q in quality)
    res["psnr"] = statistics.fmean(q[1] for q in quality)
    return res


def zipf_paths(server: str, names: list[str], n: int = 4000) -> list[str]:
    rng = random.Random(7)
    urls = [(name, size) for name in names for size in SIZES]
    rng.shuffle(urls)
    weights = [1 / (k + 1) for k in range(len(urls))]
    return [url_for(server, *u) for u in rng.choices(urls, weights, k=n)]


# --- main ------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few files, 3 s per load, 1 round")
    ap.add_argument("--smoke", action="store_true",
                    help="imgmiddleware + OpenCV floor only, two generated images (for the tests)")
    ap.add_argument("--duration", type=float, help="seconds per load (default 10; quick 3)")
    ap.add_argument("--rounds", type=int, help="A/B rounds (default 3; quick 1)")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    ap.add_argument("--chart", type=Path, default=ROOT / "docs" / "benchmarks.png")
    ap.add_argument("--work", type=Path, default=OUT / "peers")
    args = ap.parse_args(argv)
    quick = args.quick or args.smoke
    duration = args.duration or (3.0 if quick else 10.0)
    rounds = args.rounds or (1 if quick else 3)
    t_start = time.monotonic()
    notes: list[str] = []
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = work / "root"
    corpus = root / "corpus"

    wrk = ensure_wrk()
    peers = {} if args.smoke else install_peers(notes)
    print(f"peers: {peers or 'none (smoke)'}", flush=True)
    items = build_corpus(corpus, quick, args.smoke)
    print(f"corpus: {len(items)} files", flush=True)

    procs: dict[str, Proc] = {}
    bases: dict[str, str] = {}
    for name, (p, base) in (("imgmiddleware", ours(root, work, False)),
                            ("imgmiddleware (cached)", ours(root, work, True))):
        procs[name], bases[name] = p, base
    if "thumbor" in peers:
        procs["thumbor"], bases["thumbor"] = thumbor(root, work)
    if "nginx" in peers:
        procs["nginx"], bases["nginx"] = nginx(root, work)
    procs[HTTP_FLOOR], bases[HTTP_FLOOR] = floor_http(root, work)
    procs[MARGIN_1], bases[MARGIN_1] = ours(root, work, False, margin=1.0)
    results: dict = {"workloads": {}, "notes": notes, "peers": peers, "corpus": items}
    try:
        for name, p in list(procs.items()):
            try:
                p.start()
            except RuntimeError as e:
                notes.append(f"{name} did not start: {str(e)[-600:]}")
                procs.pop(name)
                bases.pop(name)
        http = [s for s in procs if s != "imgmiddleware (cached)" and s not in DIAGNOSTIC]
        results["idle_rss"] = idle_rss({s: procs[s] for s in http}, bases, items)
        kinds = [k for k in ("jpeg-baseline", "jpeg-progressive", "png", "webp")
                 if any(i["kind"] == k for i in items)]
        for kind in kinds:
            names = [i["name"] for i in items if i["kind"] == kind]
            for size in (SIZES[:1] if args.smoke else SIZES):
                wl = f"{kind} fit {size}"
                loaded = http + [s for s, k in DIAGNOSTIC.items() if k == kind and s in procs]
                print(f"{wl}: verifying {len(names)} URLs on {', '.join(loaded)}", flush=True)
                entry = {"kind": kind, "size": size, "servers": {}, "files": len(names)}
                ver = verify({s: bases[s] for s in loaded}, names, size, corpus)
                entry["mismatch"] = ver.pop("_mismatch")
                for s in loaded:
                    entry["servers"][s] = {**ver[s], "runs": []}
                for r in range(rounds):
                    order = loaded if r % 2 == 0 else loaded[::-1]
                    for s in order:
                        paths = [url_for(s, n, size) for n in names]
                        entry["servers"][s]["runs"].append(load(wrk, procs[s], bases[s], paths, duration, work))
                for engine, label in (("floor", "OpenCV floor"), ("vips", "pyvips")):
                    if engine == "vips" and "pyvips" not in peers:
                        continue
                    res = inproc(engine, size, [corpus / n for n in names], duration, work / f"out-{engine}")
                    if res:
                        entry["servers"][label] = {"bytes": res["bytes"], "ssim": res["ssim"], "psnr": res["psnr"],
                                                   "runs": [{"rps": res["ops"], "p50": res["p50"],
                                                             "p99": res["p99"], "errors": "-",
                                                             "cpu_ms": res["mean"], "client_cores": 0.0,
                                                             "rss_worker": float("nan"),
                                                             "rss_tree": float("nan"),
                                                             "pss_tree": float("nan")}]}
                results["workloads"][wl] = entry
                print(f"  {summarise(entry)}", flush=True)
        # cached hit vs the raw object, on imgmiddleware's cached server; thumbor recomputes.
        first = next(i["name"] for i in items if i["kind"].startswith("jpeg"))
        cached = {"kind": "cached", "size": 200, "servers": {}, "files": 1, "mismatch": []}
        fetch(bases["imgmiddleware (cached)"] + url_for("imgmiddleware", first, 200))
        pairs = [("imgmiddleware (cached)", url_for("imgmiddleware", first, 200)),
                 ("raw object", f"/corpus/{first}")]
        if "thumbor" in bases:
            pairs.append(("thumbor", url_for("thumbor", first, 200)))
        for r in range(rounds):
            for label, path in (pairs if r % 2 == 0 else pairs[::-1]):
                s = "thumbor" if label == "thumbor" else "imgmiddleware (cached)"
                cached["servers"].setdefault(label, {"runs": []})["runs"].append(
                    load(wrk, procs[s], bases[s], [path], duration, work))
        results["workloads"]["cached hit fit 200"] = cached
        print(f"  {summarise(cached)}", flush=True)
        # mixed stream: Zipf over (file, size), imgmiddleware with its cache as deployed.
        names = [i["name"] for i in items]
        mixed = {"kind": "mixed", "size": 0, "servers": {}, "files": len(names), "mismatch": []}
        mix_servers = ["imgmiddleware (cached)"] + [s for s in http if s != "imgmiddleware"]
        for r in range(rounds):
            for s in (mix_servers if r % 2 == 0 else mix_servers[::-1]):
                key = "imgmiddleware" if s == "imgmiddleware (cached)" else s
                mixed["servers"].setdefault(key, {"runs": []})["runs"].append(
                    load(wrk, procs[s], bases[s], zipf_paths(key, names), duration, work))
        results["workloads"]["mixed Zipf"] = mixed
        print(f"  {summarise(mixed)}", flush=True)
    finally:
        for p in procs.values():
            p.stop()
    if not args.smoke:
        # the loads' results first: layout_bench.py reads the corpus's kinds from this file
        (work / "peers.json").write_text(json.dumps(results, indent=1, default=str))
        results["extras"] = run_extras(corpus, quick)
    results["meta"] = {
        "mode": "smoke" if args.smoke else ("quick" if args.quick else "full"),
        "argv": "".join(" " + a for a in (argv if argv is not None else sys.argv[1:])
                        if not a.startswith("/")),
        "duration": duration, "rounds": rounds, "elapsed_s": time.monotonic() - t_start,
        "machine": f"{os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.machine()}",
        "python": platform.python_version(), "cv2": cv2.__version__, "wrk": wrk_version(wrk),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": f"wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{int(duration)}s, loopback",
    }
    (work / "peers.json").write_text(json.dumps(results, indent=1, default=str))
    from report import write_report
    write_report(results, args.report, args.chart, None if args.smoke else BENCH_VENV / "bin" / "python",
                 work / "peers.json")
    print(f"wrote {args.report} in {time.monotonic() - t_start:.0f} s", flush=True)
    return 0


# request_path_bench's "before": the last revision before issue 19's work on the request path.
REQUEST_PATH_BASE = "f2cf9e8"


def run_extras(corpus: Path, quick: bool) -> dict[str, str]:
    """The benchmarks behind the engine's choices, run on the same machine after the loads: the
    progressive-JPEG rewrite on every progressive wallpaper, glibc malloc settings for a worker on
    the corpus, the text renderers on the font files, the shared cache tier against a remote-like
    origin, WebP shrink-on-load, WebP encoder effort on large outputs, PNG decoders, the memory of
    one transform per source kind, slow clients
    against both gunicorn workers, worker x thread layouts for memory, what metrics and the access log
    cost, a request's cost outside OpenCV, and gunicorn's two HTTP parsers. Their tables go into the
    report as they print them."""
    extras = {}
    for name, cmd in (
            ("progressive", [sys.executable, str(HERE / "progressive_bench.py"), str(CACHE)]
             + (["--runs", "3"] if quick else [])),
            ("malloc", [sys.executable, str(HERE / "malloc_bench.py"), "--corpus", str(corpus)]
             + (["--duration", "2", "--rounds", "1"] if quick else ["--duration", "8", "--rounds", "2"])),
            ("text", [sys.executable, str(HERE / "text_bench.py")] + (["--runs", "5"] if quick else [])),
            ("shared", [sys.executable, str(HERE / "shared_cache_bench.py")]
             + (["--duration", "1"] if quick else [])),
            ("shrink", [sys.executable, str(HERE / "shrink_bench.py")]
             + (["--iterations", "3"] if quick else [])),
            ("large", [sys.executable, str(HERE / "large_output_bench.py")]
             + (["--rounds", "1", "--grain", "0", "--no-mid", "--methods", "0,2,4"] if quick else [])),
            ("png", [sys.executable, str(HERE / "png_decode_bench.py")]
             + (["--rounds", "2"] if quick else [])),
            ("memory", [sys.executable, str(HERE / "transform_memory_bench.py")]
             + (["--megapixels", "4", "--repeat", "1"] if quick else [])),
            ("slow", [sys.executable, str(HERE / "slow_client_bench.py")] + (["--smoke"] if quick else [])),
            ("layout", [sys.executable, str(HERE / "layout_bench.py")] + (["--smoke"] if quick else [])),
            ("operations", [sys.executable, str(HERE / "metrics_bench.py")]
             + (["--duration", "2", "--rounds", "1"] if quick else [])),
            ("requests", [sys.executable, str(HERE / "request_path_bench.py"), "--base", REQUEST_PATH_BASE]
             + (["--rounds", "1", "--repeat", "3"] if quick else [])),
            ("parser", [sys.executable, str(HERE / "server_bench.py")]
             + (["--rounds", "1", "--duration", "2"] if quick else ["--rounds", "5", "--duration", "6"]))):
        print(f"{name} benchmark ...", flush=True)
        r = sh(cmd, timeout=3600)
        extras[name] = r.stdout if r.returncode == 0 else f"failed: {r.stderr[-1000:]}"
    return extras


def med(runs: list[dict], key: str) -> float:
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return statistics.median(vals) if vals else float("nan")


def summarise(entry: dict) -> str:
    return "; ".join(f"{s} {med(v['runs'], 'rps'):.1f}/s" for s, v in entry["servers"].items())


if __name__ == "__main__":
    sys.exit(main())
