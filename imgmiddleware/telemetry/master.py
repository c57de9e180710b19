"""What gunicorn's master does for telemetry: the instance's directory, a dead worker's files, and the
``metrics_bind`` listener.

- **The directory** (PROMETHEUS_MULTIPROC_DIR, also the readiness board of health.py) is one per
  instance: the one the environment names, emptied at start (stale files would add a previous run's
  counts), else a fresh temporary one, removed at exit. Workers inherit it through fork.
- **A dead worker** (``child_exit``): its live gauges go (prometheus_client's mark_process_dead) and
  its counters and histograms are folded into one archive file per kind, under an exclusive lock
  that scrapes share. Without folding, every restart (max_requests recycles workers every few
  thousand requests) would leave files behind that each scrape reads again for ever.
- **metrics_bind**: a scrape served by the master from the directory, so it never reaches a worker
  and still answers when every worker is busy. One thread with an HTTP server; gunicorn forks new
  workers from this process, so a fork waits until no scrape is being rendered (os.register_at_fork),
  as gunicorn's own control socket does, and the child closes the listener it inherited.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from . import health, metrics

log = logging.getLogger("imgmiddleware.telemetry")

FOLDED_KINDS = ("counter", "histogram", "summary")
ARCHIVE = "{kind}_archive.db"          # prometheus_client reads the kind from the name's first word


class Directory:
    """The instance's telemetry directory, prepared by the master before any worker exists."""

    def __init__(self, configured: str | None = None) -> None:
        configured = configured or os.environ.get(metrics.ENV_DIR)
        self.owned = not configured
        self.path = configured or tempfile.mkdtemp(prefix="imgmw-telemetry-")
        os.makedirs(self.path, exist_ok=True)
        if not self.owned:
            for name in os.listdir(self.path):
                if name.endswith(".db") or name.startswith(health.BOARD_PREFIX) or name == metrics.LOCK_FILE:
                    os.remove(os.path.join(self.path, name))
        os.environ[metrics.ENV_DIR] = self.path

    def worker_exited(self, pid: int) -> None:
        """gunicorn's child_exit: a worker is gone, whatever the way (exit, crash, SIGKILL)."""
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.path)
            with metrics._folding_lock(self.path, exclusive=True):
                fold(self.path, pid)
        except ImportError:           # metrics never enabled: nothing was written
            pass
        except Exception:
            log.exception("telemetry: the files of worker %s could not be folded", pid)
        health.Board(self.path).forget(pid)

    def remove(self) -> None:
        """At the master's exit: the directory, when it was ours."""
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def fold(path: str, pid: int) -> None:
    """Add a dead process's counters, histograms and summaries to the archive of their kind, then
    delete its files. The caller holds the exclusive lock."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    for kind in FOLDED_KINDS:
        dead = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = os.path.join(path, ARCHIVE.format(kind=kind))
        sources = [f for f in (archive, dead) if os.path.exists(f)]
        merged = MultiProcessCollector.merge(sources, accumulate=False)   # raw values, as stored
        staging = archive + ".new"                                         # not *.db: never scraped
        if os.path.exists(staging):
            os.remove(staging)
        out = MmapedDict(staging)
        try:
            for metric in merged:
                for sample in metric.samples:
                    names = sorted(sample.labels)
                    key = mmap_key(metric.name, sample.name, names, [sample.labels[n] for n in names],
                                   metric.documentation)
                    out.write_value(key, sample.value, 0.0)
        finally:
            out.close()
        os.replace(staging, archive)
        os.remove(dead)


# --- metrics_bind ------------------------------------------------------------------------------------

class _Quiet:
    """Held while a scrape is rendered; a fork waits for it, so no child inherits a lock taken."""
    lock = threading.Lock()
    servers: list = []


def _before_fork() -> None:
    _Quiet.lock.acquire()


def _after_fork_parent() -> None:
    _Quiet.lock.release()


def _after_fork_child() -> None:
    _Quiet.lock.release()
    for server in _Quiet.servers:
        try:
            server.socket.close()         # a worker has no business with the master's listener
        except OSError:
            pass
    _Quiet.servers.clear()



class _Handler(BaseHTTPRequestHandler):
    timeout = 5                            # a client that sends nothing is dropped
    server_version = "imgmiddleware"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/metrics"):
            self._answer(404, b"not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        with _Quiet.lock:
            try:
                body, content_type = metrics.render()
            except Exception:
                log.exception("telemetry: a scrape failed")
                body, content_type, status = b"scrape failed\n", "text/plain; charset=utf-8", 500
            else:
                status = 200
        self._answer(status, body, content_type)

    def do_HEAD(self) -> None:
        self._answer(200, b"", "text/plain; charset=utf-8")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        """Nothing to standard error: a fork could copy its lock taken (only metrics are logged)."""


class _Server(HTTPServer):
    allow_reuse_address = True

    def __init__(self, address, family) -> None:
        self.address_family = family
        super().__init__(address, _Handler)


def listen(bind: str) -> HTTPServer:
    """The metrics listener at ``bind`` (HOST:PORT), bound now: a bad or taken address is an error at
    start, before gunicorn runs. serve() calls it; start() serves it once gunicorn is ready."""
    from ..config import _host_port

    host, port = _host_port(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _Server((host, port), family)


def start(server: HTTPServer) -> threading.Thread:
    """Serve ``server`` in a thread of this process (gunicorn's master), fork-safe from now on."""
    if not _Quiet.servers:
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                            after_in_child=_after_fork_child)
    _Quiet.servers.append(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="imgmw-metrics", daemon=True)
    thread.start()
    return thread
