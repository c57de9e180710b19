"""Faults injected where they hurt: a gunicorn worker SIGKILLed in the middle of a transform (and of a
saveas), a wrapped app that raises, one that sends less than its Content-Length, one that hangs, and
the same through the reverse-proxy origin against a real upstream that lies or never answers.

Each fault must end, for every client, in a clean error or a correct image, and leave nothing corrupt
behind: no cache entry that decodes to something else, no half-written saveas object. Faults of the
disk tier itself are in tests/test_cache.py: a worker killed mid-write
(``test_a_worker_killed_mid_write_leaves_no_entry_that_is_served``) and a full disk
(``test_a_full_disk_degrades_to_serving_uncached``, ``test_a_full_disk_keeps_the_memory_tier_working``).
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.cache import ResultCache
from imgmiddleware.cli import build_app
from imgmiddleware.origins.proxy import ProxyApp
from imgmiddleware.process import parse, run

from .conftest import decode, fixture_bytes, get, oss_error, psnr, size_of
from .servers import child_pids, free_port, stop

JPEG = fixture_bytes("example.jpg")          # 400 x 267
CACHE = "x-imgmw-cache"
BUCKET = "photos"
W100 = "image/resize,w_100"


def expected(process: str, data: bytes = JPEG):
    """The pixels the engine makes for ``process`` on ``data``, computed here in the test process."""
    return decode(run(parse(process, Config()), data, Config()).body)


def assert_image(body: bytes, process: str, data: bytes = JPEG) -> None:
    """``body`` is the right image: same size as the reference and close to it (never bytes)."""
    want, got = expected(process, data), decode(body)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert psnr(got, want) >= 40


# ---------------------------------------------------------------------------------------------------
# A worker SIGKILLed under real gunicorn (deploy/gunicorn.conf.py, 2 workers)

# The app gunicorn loads in each worker: the embedded default (bucket app + middleware), with two
# test hooks driven through files: the first transform whose pipeline names width STALL_WIDTH (or
# SAVE_WIDTH) writes its worker's pid and stalls (it is killed there), and every poll of a lease held
# by another worker (cache.flight._alive) leaves the polling worker's pid. /__pid says which worker a
# kept-alive connection talks to.
FAULT_APP = textwrap.dedent(r'''
    import os, time
    from imgmiddleware import middleware
    from imgmiddleware.cache import flight as cache_module
    from imgmiddleware.cli import build_app
    from imgmiddleware.config import Config

    MARKS = os.environ["FAULT_MARKS"]

    def mark(name, value):
        path = os.path.join(MARKS, name)
        with open(path + ".tmp", "w") as fh:
            fh.write(str(value))
        os.replace(path + ".tmp", path)

    def first_time(name):
        try:
            os.close(os.open(os.path.join(MARKS, name + ".once"), os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False

    real_run = middleware.run

    def run(pipeline, body, *args, **kwargs):
        canonical = pipeline.canonical()
        for name in ("stall", "save"):
            if f"w_{os.environ['FAULT_' + name.upper() + '_WIDTH']}," in canonical + "," \
                    and first_time(name):
                mark(name, os.getpid())
                time.sleep(60)                     # SIGKILLed here
        return real_run(pipeline, body, *args, **kwargs)

    middleware.run = run
    real_alive = cache_module._alive

    def alive(pid):
        mark("follower", os.getpid())
        return real_alive(pid)

    cache_module._alive = alive
    inner = build_app(os.environ["FAULT_ROOT"], Config.load(os.environ["FAULT_CONFIG"]))

    def application(environ, start_response):
        if environ["PATH_INFO"] == "/__pid":
            body = str(os.getpid()).encode()
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return inner(environ, start_response)
''')


class Gunicorn:
    """gunicorn -c deploy/gunicorn.conf.py faultapp:application on a free loopback port; its output
    is drained into ``lines`` by a thread (a full pipe would block the server)."""

    def __init__(self, tmp: Path, stall_width: int, save_width: int) -> None:
        self.root, self.marks, self.cache_dir = tmp / "data", tmp / "marks", tmp / "cache"
        (self.root / BUCKET).mkdir(parents=True)
        self.marks.mkdir()
        (self.root / BUCKET / "example.jpg").write_bytes(JPEG)
        (tmp / "faultapp.py").write_text(FAULT_APP)
        config = tmp / "fault.toml"
        # cache_wait_seconds is long: a follower that answers 200 took over from the dead leader;
        # waiting out the leader would have ended in 503 SlowDown.
        config.write_text(f'cache_dir = "{self.cache_dir}"\ncache_wait_seconds = 60\n'
                          'default_acl = "public-read-write"\n')
        self.port = free_port()
        env = dict(os.environ, FAULT_MARKS=str(self.marks), FAULT_ROOT=str(self.root),
                   FAULT_CONFIG=str(config), FAULT_STALL_WIDTH=str(stall_width),
                   FAULT_SAVE_WIDTH=str(save_width), IMGMW_BIND=f"127.0.0.1:{self.port}",
                   IMGMW_WORKERS="2", IMGMW_THREADS="4")
        conf = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(conf), "faultapp:application"],
                                     cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def booted(self) -> int:
        return self.log().count("Booting worker with pid")

    def workers(self) -> set[int]:
        return child_pids(self.proc.pid)

    def answers(self) -> bool:
        try:
            conn = self.connection(5)
            try:
                return request(conn, "GET", "/__pid")[0] == 200
            finally:
                conn.close()
        except OSError:
            return False

    def connection(self, timeout: float = 90) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def connection_to(self, want=None, avoid=None) -> tuple[http.client.HTTPConnection, int]:
        """A kept-alive connection served by worker ``want`` (or by any worker but ``avoid``)."""
        for _ in range(200):
            conn = self.connection()
            status, _, body = request(conn, "GET", "/__pid")
            pid = int(body)
            if status == 200 and (pid == want if want is not None else pid != avoid):
                return conn, pid
            conn.close()
        pytest.fail(f"no connection reached the wanted worker ({want=}, {avoid=})")

    def wait_until(self, condition, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, self.log()
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def mark(self, name: str) -> int | None:
        path = self.marks / name
        return int(path.read_text()) if path.exists() else None

    def stop(self) -> None:
        stop(self.proc)
        self._drain.join(10)
        self.proc.stdout.close()

    def once(self, method: str, path: str, body: bytes | None = None):
        """One request on a new connection, closed after."""
        conn = self.connection()
        try:
            return request(conn, method, path, body)
        finally:
            conn.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    conn.request(method, path, body=body)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def in_thread(function, *args) -> tuple[threading.Thread, dict]:
    """Run ``function(*args)`` in a thread; its result or exception lands in the returned dict."""
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = function(*args)
        except BaseException as exc:     # the assertion is made by the test, on the main thread
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def gunicorn(tmp_path):
    server = Gunicorn(tmp_path, stall_width=333, save_width=334)
    try:
        server.wait_until(lambda: server.booted() >= 2 and len(server.workers()) == 2, "2 workers booting")
        server.wait_until(server.answers, "the app answering")
        yield server
    finally:
        server.stop()


def test_a_worker_killed_mid_transform_costs_its_own_request_only(gunicorn):
    """The leader of a key is SIGKILLed mid-transform while a follower in the other worker waits on
    its lease: the killed request's client sees its connection closed (never a torn 200), the
    follower takes over at once and gets the right image, gunicorn boots a replacement worker, the
    URL keeps working, and the only cache entry decodes to the right image."""
    process = "image/resize,w_333"
    url = f"/{BUCKET}/example.jpg?x-oss-process={process}"
    assert gunicorn.booted() == 2

    leader_conn, leader = gunicorn.connection_to(avoid=-1)
    leader_thread, leader_out = in_thread(request, leader_conn, "GET", url)
    gunicorn.wait_until(lambda: gunicorn.mark("stall") is not None, "the transform stalling")
    assert gunicorn.mark("stall") == leader

    follower_conn, follower = gunicorn.connection_to(avoid=leader)
    follower_thread, follower_out = in_thread(request, follower_conn, "GET", url)
    gunicorn.wait_until(lambda: gunicorn.mark("follower") == follower, "the follower polling the lease")

    os.kill(leader, signal.SIGKILL)
    leader_thread.join(60)
    follower_thread.join(60)
    leader_conn.close()
    follower_conn.close()
    assert not leader_thread.is_alive() and not follower_thread.is_alive()

    # the killed request: a closed connection, nothing that looks like an answer
    assert "result" not in leader_out, leader_out.get("result", ("", "", b""))[:2]
    assert isinstance(leader_out["error"], (ConnectionError, http.client.HTTPException)), leader_out
    # the follower: took over from the dead leader (waiting it out would have been a 503)
    status, headers, body = follower_out["result"]
    assert status == 200 and headers[CACHE] == "miss", (status, headers, body[:300])
    assert_image(body, process)

    # gunicorn replaced the killed worker; the other one kept running
    gunicorn.wait_until(lambda: gunicorn.booted() == 3 and len(gunicorn.workers()) == 2,
                        "a replacement worker")
    workers = gunicorn.workers()
    assert leader not in workers and follower in workers
    assert "WORKER TIMEOUT" not in gunicorn.log()

    # the URL works, from the cache, on both workers
    for _ in range(4):
        status, headers, body = gunicorn.once("GET", url)
        assert status == 200 and headers[CACHE] in ("hit", "revalidated")
        assert_image(body, process)

    # the disk tier holds one result, the right one, and no lease of the dead worker
    cache = ResultCache(0, str(gunicorn.cache_dir), 1 << 30)
    try:
        keys = [str(k) for k in cache._disk.iterkeys()]
        results = [k[2:] for k in keys if k.startswith("r:")]
        assert len(results) == 1 and not [k for k in keys if k.startswith("lease:")], keys
        entry = cache.get(results[0])
        assert entry is not None and entry.content_type == "image/jpeg"
        assert_image(entry.file.read(entry.length), process)
        entry.file.close()
    finally:
        cache.close()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_worker_killed_mid_saveas_stores_nothing(gunicorn):
    """POST ?x-oss-process with sys/saveas, its worker SIGKILLed while it transforms: the target
    object does not exist (not even in part), and the same POST afterwards stores the right image."""
    process = "image/resize,w_334"
    body = f"x-oss-process={process}|sys/saveas,o_{b64('out/small.jpg')}".encode()
    path = f"/{BUCKET}/example.jpg?x-oss-process"
    target = gunicorn.root / BUCKET / "out" / "small.jpg"

    conn, pid = gunicorn.connection_to(avoid=-1)
    thread, out = in_thread(request, conn, "POST", path, body)
    gunicorn.wait_until(lambda: gunicorn.mark("save") is not None, "the saveas transform stalling")
    os.kill(gunicorn.mark("save"), signal.SIGKILL)
    thread.join(60)
    conn.close()
    assert isinstance(out.get("error"), (ConnectionError, http.client.HTTPException)), out

    assert not target.exists()
    status, _, answer = gunicorn.once("GET", f"/{BUCKET}/out/small.jpg")
    assert status == 404 and b"<Code>NoSuchKey</Code>" in answer
    gunicorn.wait_until(lambda: gunicorn.booted() == 3 and len(gunicorn.workers()) == 2,
                        "a replacement worker")

    status, _, answer = gunicorn.once("POST", path, body)
    assert status == 200 and b'"status": "OK"' in answer, answer
    assert_image(target.read_bytes(), process)
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "small.jpg"]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------------
# Wrapped apps that fail: raise, tear their body, hang

class Faulty:
    """A WSGI object store with one switchable fault: ``mode`` is None (healthy), "raise" (the app
    raises before answering), "raise-body" (it raises half-way through its body), "torn" (it declares
    the full Content-Length and sends half), "hang" (its body blocks until ``release`` is set)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.mode: str | None = None
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.hanging = 0          # bodies that started hanging

    def __call__(self, environ, start_response):
        data = self.objects.get(environ["PATH_INFO"])
        if data is None:
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
            return [b"not found"]
        mode = self.mode if environ["PATH_INFO"] != "/fine.jpg" else None
        if mode == "raise":
            raise RuntimeError("the wrapped app failed")
        start_response("200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(len(data))),
                                  ("ETag", '"v1"')])
        return self.body(data, mode)

    def body(self, data: bytes, mode: str | None):
        half = len(data) // 2
        if mode == "raise-body":
            yield data[:half]
            raise OSError("the disk under the wrapped app failed")
        if mode == "torn":
            yield data[:half]
            return
        if mode == "hang":
            with self.lock:
                self.hanging += 1
            self.release.wait(60)
        yield data


def faulty_client(**overrides) -> tuple[Client, Faulty, ImageMiddleware]:
    app = Faulty({"/a.jpg": JPEG, "/fine.jpg": JPEG})
    mw = ImageMiddleware(app, **overrides)
    return Client(mw), app, mw


@pytest.mark.parametrize("mode", ["raise", "raise-body"])
def test_a_wrapped_app_that_raises_is_a_500_internal_error_and_nothing_is_cached(mode, caplog):
    """An exception of the wrapped app on the image request's subrequest is the server's failure:
    500 InternalError as OSS XML (no-store), logged with its request id; the next request, the app
    healthy again, is computed afresh."""
    client, app, _ = faulty_client()
    app.mode = mode
    with caplog.at_level(logging.ERROR, logger="imgmiddleware"):
        response = get(client, "a.jpg", W100)
    fields = oss_error(response)
    assert (fields["status"], fields["Code"]) == (500, "InternalError")
    assert response.headers["Cache-Control"] == "no-store"
    assert fields["RequestId"] in caplog.text and "failed" in caplog.text
    app.mode = None
    again = get(client, "a.jpg", W100)
    assert again.status_code == 200 and again.headers[CACHE] == "miss"
    assert_image(again.get_data(), W100)


def test_an_exception_of_a_plain_request_stays_the_apps_own():
    """A request without x-oss-process is the wrapped app's own business: its exception reaches the
    WSGI server (which logs it and answers 500 itself), unchanged."""
    client, app, _ = faulty_client()
    app.mode = "raise"
    with pytest.raises(RuntimeError, match="the wrapped app failed"):
        client.get("/a.jpg")


def test_a_torn_body_is_a_502_never_a_processed_or_cached_image():
    """The app declares 21,839 bytes and sends half. The object is not corrupt, its transfer is: 502
    BadGateway (a 5xx, which SDKs retry), not the decoder's 400 for a corrupt image, and nothing is
    cached; healthy again, the next request computes the real image."""
    client, app, mw = faulty_client()
    app.mode = "torn"
    for _ in range(2):
        fields = oss_error(get(client, "a.jpg", W100))
        assert (fields["status"], fields["Code"]) == (502, "BadGateway"), fields
    assert mw.cache.stats().memory_entries == 0
    app.mode = None
    again = get(client, "a.jpg", W100)
    assert again.status_code == 200 and again.headers[CACHE] == "miss"
    assert_image(again.get_data(), W100)


def test_a_torn_source_of_a_saveas_stores_nothing(tmp_path):
    """The bundled bucket behind a wrapper that tears the body of one object: the saveas POST gets
    502 BadGateway and its target is never written."""
    root = tmp_path / "data"
    (root / BUCKET).mkdir(parents=True)
    (root / BUCKET / "example.jpg").write_bytes(JPEG)
    config = Config(default_acl="public-read-write")
    mw = build_app(str(root), config)
    bucket = mw.app
    torn = {"on": True}

    def tearing(environ, start_response):
        if environ["REQUEST_METHOD"] != "GET" or not torn["on"]:
            return bucket(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["args"] = (status, headers)
            return lambda data: None

        answer = bucket(environ, capture)
        try:
            data = b"".join(answer)
        finally:
            getattr(answer, "close", lambda: None)()
        start_response(*captured["args"])
        return [data[: len(data) // 2]]

    mw.app = tearing
    client = Client(mw)
    body = f"x-oss-process={W100}|sys/saveas,o_{b64('out/t.jpg')}".encode()
    response = client.post(f"/{BUCKET}/example.jpg?x-oss-process", data=body)
    fields = oss_error(response)
    assert (fields["status"], fields["Code"]) == (502, "BadGateway")
    assert not (root / BUCKET / "out").exists()
    torn["on"] = False
    response = client.post(f"/{BUCKET}/example.jpg?x-oss-process", data=body)
    assert response.status_code == 200, response.get_data()
    assert_image((root / BUCKET / "out" / "t.jpg").read_bytes(), W100)


def test_a_hanging_app_holds_up_one_key_for_cache_wait_seconds_at_most():
    """The wrapped app's body hangs for one key. The request leading it hangs with it (no WSGI
    middleware can interrupt a synchronous call); a request for the same key waits at most
    cache_wait_seconds, then one of the waiters leads instead and the others get 503 SlowDown with
    Retry-After, never an endless wait. Other keys are served all along."""
    client, app, mw = faulty_client(cache_wait_seconds=2, cache_memory_bytes=1 << 24)
    app.mode = "hang"
    try:
        first, first_out = in_thread(get, Client(mw), "a.jpg", W100)
        deadline = time.monotonic() + 30
        while app.hanging < 1:
            assert time.monotonic() < deadline, "the first request never reached the app's body"
            time.sleep(0.01)
        waiters = [in_thread(get, Client(mw), "a.jpg", W100) for _ in range(2)]
        other = get(client, "fine.jpg", W100)                # another key, meanwhile
        assert other.status_code == 200
        assert_image(other.get_data(), W100)
        for thread, _ in waiters:
            thread.join(5)
        finished = [out for thread, out in waiters if not thread.is_alive()]
        assert len(finished) == 1, "exactly one waiter got an answer; the other took over the key"
        busy = finished[0]["result"]
        fields = oss_error(busy)
        assert (fields["status"], fields["Code"]) == (503, "SlowDown")
        assert busy.headers["Retry-After"] == "1" and busy.headers["Cache-Control"] == "no-store"
        assert app.hanging == 2            # the first leader and the one that took over: no pile-up
    finally:
        app.release.set()
    first.join(30)
    for thread, _ in waiters:
        thread.join(30)
    for out in [first_out] + [out for _, out in waiters]:
        response = out["result"]
        if response.status_code != 503:
            assert response.status_code == 200
            assert_image(response.get_data(), W100)
    app.mode = None
    again = get(client, "a.jpg", W100)
    assert again.status_code == 200 and again.headers[CACHE] in ("hit", "revalidated")
    assert_image(again.get_data(), W100)


# ---------------------------------------------------------------------------------------------------
# The reverse-proxy origin against a real upstream that lies or stalls

class Upstream:
    """A raw HTTP/1.1 server on a free loopback port, one thread per connection. ``mode``:
    "ok" answers the object; "torn" declares its full Content-Length, sends half and closes;
    "silent" accepts and never answers; "stall" sends the headers and half the body, then nothing."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.mode = "ok"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                mode = self.mode
                if mode == "silent":
                    self.stopping.wait(60)
                    return
                headers = (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(self.data)}"
                           '\r\nETag: "up1"\r\n\r\n').encode()
                if head.startswith(b"HEAD "):
                    conn.sendall(headers)
                    continue
                if mode == "ok":
                    conn.sendall(headers + self.data)
                    continue
                conn.sendall(headers + self.data[: len(self.data) // 2])
                if mode == "stall":
                    self.stopping.wait(60)
                return                                  # "torn": close early
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        for conn in self.connections:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def upstream():
    server = Upstream(JPEG)
    yield server
    server.close()


def proxy_client(upstream: Upstream) -> tuple[Client, ImageMiddleware]:
    proxy = ProxyApp(f"http://127.0.0.1:{upstream.port}", connect_timeout=2, read_timeout=0.5)
    mw = ImageMiddleware(proxy)
    return Client(mw), mw


@pytest.mark.parametrize("mode, status, code", [("torn", 502, "BadGateway"), ("silent", 504, "GatewayTimeout"),
                                                ("stall", 504, "GatewayTimeout")])
def test_a_lying_or_stalled_upstream_is_a_clean_gateway_error(upstream, mode, status, code):
    """Through the urllib3 proxy origin: an upstream that closes before its Content-Length is a 502,
    one that never answers, or stops half-way through the body, a 504 after upstream_read_timeout.
    Nothing is cached; once the upstream is well again the same URL gets the right image."""
    client, mw = proxy_client(upstream)
    upstream.mode = mode
    fields = oss_error(get(client, "a.jpg", W100))
    assert (fields["status"], fields["Code"]) == (status, code), fields
    assert mw.cache.stats().memory_entries == 0
    upstream.mode = "ok"
    again = get(client, "a.jpg", W100)
    assert again.status_code == 200 and again.headers[CACHE] == "miss"
    assert_image(again.get_data(), W100)
    assert size_of(again.get_data()) == (100, 67)


def test_a_torn_upstream_through_real_gunicorn(upstream, tmp_path):
    """`imgmiddleware serve --upstream` (what users run) in front of the lying upstream: 502 with an
    OSS body over real HTTP, then the right image once the upstream is fixed."""
    from .servers import start_serve, wait_for

    config = tmp_path / "proxy.toml"
    config.write_text("upstream_read_timeout = 1.0\n")
    port = free_port()
    proc = start_serve(["--upstream", f"http://127.0.0.1:{upstream.port}", "--bind", f"127.0.0.1:{port}",
                        "--workers", "1"], config=config)
    try:
        wait_for(f"http://127.0.0.1:{port}/a.jpg", proc)
        upstream.mode = "torn"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        status, headers, body = request(conn, "GET", f"/a.jpg?x-oss-process={W100}")
        assert status == 502 and b"<Code>BadGateway</Code>" in body
        upstream.mode = "ok"
        status, headers, body = request(conn, "GET", f"/a.jpg?x-oss-process={W100}")
        conn.close()
        assert status == 200
        assert_image(body, W100)
    finally:
        stop(proc)
        proc.stdout.close()
