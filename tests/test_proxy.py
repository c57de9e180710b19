"""The reverse-proxy origin (imgmiddleware.origins.proxy.ProxyApp).

(a) In process: ImageMiddleware(ProxyApp(upstream)) in front of a small HTTP/1.1 origin running in a
    thread (keep-alive, ETag / Last-Modified / Cache-Control, 304, 206, PUT, a stalling endpoint)
    that records every request it gets, and a second "evil" server that must never get any.
(b) Real components: nginx serving the fixtures with deploy/nginx-origin.conf, and
    `imgmiddleware serve --upstream` (gunicorn) in front of it, over real HTTP.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client, create_environ, run_wsgi_app

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.origins.proxy import ProxyApp

from .conftest import FIXTURES, closed, format_of, oss_error, size_of
from .servers import free_port, start_nginx, start_serve, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
CACHE_CONTROL = "public, max-age=600"
READ_TIMEOUT = 0.5


# --- (a) an origin in a thread --------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str                 # the request target exactly as it arrived
    headers: dict[str, str]     # lower-case names
    port: int                   # the client's port: one per connection
    body: bytes = b""
    status: int = 0
    complete: bool = True       # the whole announced body arrived


@dataclass
class Origin:
    """What the origin serves and what it saw."""
    root: Path
    seen: list[Seen] = field(default_factory=list)
    stored: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    evil: bool = False

    def since(self, mark: int) -> list[Seen]:
        return self.seen[mark:]


class OriginHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (unlike werkzeug's development server, which closes every connection),
    so the proxy's pooling is visible in the client ports."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body go out in separate writes

    def log_message(self, *args):   # quiet
        pass

    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):
        self.handle_any("HEAD")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method: str):
        origin = self.server.origin
        headers = {k.lower(): v for k, v in self.headers.items()}
        body, complete = self.read_body(headers)
        seen = Seen(method, self.path, headers, self.client_address[1], body, complete=complete)
        origin.seen.append(seen)
        self.served = getattr(self, "served", 0) + 1
        if origin.evil:
            return self.answer(seen, 200, {"Content-Type": "text/plain"}, b"evil")
        path = self.path.split("?", 1)[0]
        if not complete:
            self.close_connection = True
            return self.answer(seen, 400, {"Content-Type": "text/plain"}, b"torn body")
        if path.startswith("/flaky/") and self.served > 1:
            # a kept-alive connection the origin drops, as idle timeouts do, without an answer
            self.close_connection = True
            seen.status = -1
            return
        if method == "PUT":
            origin.stored[path] = (headers.get("content-type", ""), body)
            etag = '"' + hashlib.md5(body).hexdigest().upper() + '"'
            return self.answer(seen, 200, {"ETag": etag, "Content-Length": "0"}, b"")
        if method not in ("GET", "HEAD"):
            return self.answer(seen, 405, {"Content-Type": "text/plain"}, b"no")
        if path == "/hop":
            return self.answer(seen, 200, {"Connection": "X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5",
                                           "X-Kept": "yes", "Content-Type": "text/plain"}, b"hop")
        if path == "/gz.txt":
            plain = b"hello proxy " * 200
            if "gzip" in headers.get("accept-encoding", ""):
                return self.answer(seen, 200, {"Content-Encoding": "gzip", "Content-Type": "text/plain"},
                                   gzip.compress(plain))
            return self.answer(seen, 200, {"Content-Type": "text/plain"}, plain)
        if path.startswith("/slow/"):
            origin.release.wait(10)          # far past the proxy's read timeout
            path = path[len("/slow"):]
        stall_body = path.startswith("/slowbody/")
        if stall_body:
            path = path[len("/slowbody"):]
        key = urllib.parse.unquote_to_bytes(path.removeprefix("/flaky")).decode("utf-8")
        file = origin.root / key.lstrip("/")
        if ".." in key or not file.is_file():
            return self.answer(seen, 404, {"Content-Type": "text/plain"}, b"not here")
        data = file.read_bytes()
        st = file.stat()
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        meta = {"ETag": etag, "Last-Modified": formatdate(st.st_mtime, usegmt=True),
                "Cache-Control": CACHE_CONTROL, "Content-Type": _type(file.name), "Accept-Ranges": "bytes"}
        if headers.get("if-none-match") == etag:
            return self.answer(seen, 304, {"ETag": etag, "Cache-Control": CACHE_CONTROL}, b"")
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("range", ""))
        if match:
            first, last = int(match[1]), min(int(match[2]), len(data) - 1)
            meta["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return self.answer(seen, 206, meta, data[first:last + 1])
        if stall_body:
            seen.status = 200
            self.send_response(200)
            for name, value in dict(meta, **{"Content-Length": str(len(data))}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data[:1000])
            self.wfile.flush()
            origin.release.wait(10)
            self.close_connection = True
            return
        return self.answer(seen, 200, meta, data)

    def read_body(self, headers) -> tuple[bytes, bool]:
        if "content-length" in headers:
            length = int(headers["content-length"])
            body = self.rfile.read(length)
            return body, len(body) == length
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks), True
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b"", True

    def answer(self, seen: Seen, status: int, headers: dict[str, str], body: bytes):
        seen.status = status
        self.send_response(status)
        if status != 304 and "Content-Length" not in headers:
            headers = dict(headers, **{"Content-Length": str(len(body))})
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status != 304:
            self.wfile.write(body)


def _type(name: str) -> str:
    return {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif"}.get(name.rsplit(".", 1)[-1],
                                                                           "application/octet-stream")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass        # a proxy that hung up on a stalled or unread answer: expected here


@pytest.fixture(scope="module")
def origins(tmp_path_factory):
    """(origin, its base URL, evil, its port), each a threaded HTTP/1.1 server on a free port."""
    root = tmp_path_factory.mktemp("origin")
    for path in FIXTURES.iterdir():
        shutil.copy(path, root / path.name)
    shutil.copy(FIXTURES / "example.jpg", root / "图片 1%?#.jpg")   # a key that needs encoding
    servers = []
    for evil in (False, True):
        origin = Origin(root, evil=evil)
        server = QuietServer(("127.0.0.1", 0), OriginHandler)
        server.origin = origin
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, origin))
    (good, origin), (bad, evil) = servers
    yield origin, f"http://127.0.0.1:{good.server_port}", evil, bad.server_port
    for server, origin in servers:
        origin.release.set()
        server.shutdown()
        server.server_close()


# LintMiddleware counts the body bytes of a HEAD (none) against its Content-Length, and of a body cut
# short by a stalled upstream: both expected here.
LINT_LENGTH = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")


def client_for(app, **config) -> Client:
    return Client(LintMiddleware(ImageMiddleware(LintMiddleware(app), Config(**config))))


@pytest.fixture
def proxy(origins):
    origin, url, _, _ = origins
    app = ProxyApp(url, connect_timeout=1.0, read_timeout=READ_TIMEOUT, pool_size=4)
    yield app
    app.close()


@pytest.fixture
def client(proxy):
    return client_for(proxy)


def get(client: Client, path: str, process: str | None = None, **kwargs):
    query = {} if process is None else {"x-oss-process": process}
    return closed(client.get(path, query_string=query, **kwargs))


# --- GET through the proxy --------------------------------------------------------------------------


def test_processed_images_through_the_proxy(client, origins):
    origin, url, _, _ = origins
    mark = len(origin.seen)
    response = get(client, "/example.jpg", "image/resize,w_100")
    assert response.status_code == 200, response.get_data()[:300]
    assert response.headers["Content-Type"] == "image/jpeg"
    assert size_of(response.get_data()) == (100, 67)
    response = get(client, "/nodejs-1024x768.png", "image/resize,w_200/format,webp")
    assert response.status_code == 200
    assert format_of(response.get_data()) == "WEBP" and size_of(response.get_data()) == (200, 150)
    # the origin got plain GETs for the objects, on its own Host, without x-oss-process
    seen = origin.since(mark)
    assert [(s.method, s.target) for s in seen] == [("GET", "/example.jpg"), ("GET", "/nodejs-1024x768.png")]
    assert {s.headers["host"] for s in seen} == {url.removeprefix("http://")}


@LINT_LENGTH
def test_validators_and_cache_control_pass_through(client, origins):
    origin, _, _, _ = origins
    st = (origin.root / "example.jpg").stat()
    etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    processed = get(client, "/example.jpg", "image/resize,w_120")
    plain = get(client, "/example.jpg")
    for response in (processed, plain):
        assert response.status_code == 200
        assert response.headers["ETag"] == etag
        assert response.headers["Last-Modified"] == formatdate(st.st_mtime, usegmt=True)
        assert response.headers["Cache-Control"] == CACHE_CONTROL
    assert plain.get_data() == (FIXTURES / "example.jpg").read_bytes()
    assert plain.headers["Content-Length"] == str(st.st_size)
    head = closed(client.head("/example.jpg"))
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Length"] == str(st.st_size) and head.headers["ETag"] == etag
    # the WSGI server in front sets its own Date and Server: the origin's are not passed on
    assert "Date" not in plain.headers and "Server" not in plain.headers


def test_a_missing_object_passes_through_as_404(client):
    for process in (None, "image/resize,w_100"):
        response = get(client, "/nope.jpg", process)
        assert response.status_code == 404 and response.get_data() == b"not here"


def test_range_is_forwarded(client, origins):
    origin, _, _, _ = origins
    mark = len(origin.seen)
    response = get(client, "/example.jpg", headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.get_data() == (FIXTURES / "example.jpg").read_bytes()[:100]
    assert response.headers["Content-Range"] == f"bytes 0-99/{(FIXTURES / 'example.jpg').stat().st_size}"
    assert origin.since(mark)[-1].headers["range"] == "bytes=0-99"
    # a processed request fetches the whole source: the middleware drops Range from its subrequest
    mark = len(origin.seen)
    response = get(client, "/example.jpg", "image/resize,w_100", headers={"Range": "bytes=0-99"})
    assert response.status_code == 200 and size_of(response.get_data()) == (100, 67)
    assert "range" not in origin.since(mark)[-1].headers


def test_the_result_cache_revalidates_through_the_proxy(proxy, origins):
    origin, _, _, _ = origins
    client = client_for(proxy, cache_memory_bytes=16 << 20)
    first = get(client, "/f.jpg", "image/resize,w_90")
    assert first.status_code == 200 and first.headers["x-imgmw-cache"] == "miss"
    mark = len(origin.seen)
    second = get(client, "/f.jpg", "image/resize,w_90")
    assert second.status_code == 200 and second.headers["x-imgmw-cache"] == "revalidated"
    assert second.get_data() == first.get_data()
    [seen] = origin.since(mark)
    assert seen.headers["if-none-match"] == first.headers["ETag"] and seen.status == 304
    # the client's own conditional request: the origin's 304 is the answer
    third = get(client, "/f.jpg", "image/resize,w_90", headers={"If-None-Match": first.headers["ETag"]})
    assert third.status_code == 304 and third.headers["ETag"] == first.headers["ETag"]


def test_connections_are_pooled_and_an_unread_body_is_not_reused(proxy, origins):
    origin, _, _, _ = origins
    client = Client(proxy)
    mark = len(origin.seen)
    for _ in range(3):
        plain = get(client, "/example.jpg")
        assert plain.status_code == 200
    assert closed(client.head("/example.jpg")).status_code == 200
    assert get(client, "/example.jpg", headers={"If-None-Match": plain.headers["ETag"]}).status_code == 304
    assert get(client, "/example.jpg").get_data() == (FIXTURES / "example.jpg").read_bytes()
    assert len({s.port for s in origin.since(mark)}) == 1            # one kept-alive connection
    # a body left unread closes its connection: the next answer is not its leftover bytes
    response = client.get("/nodejs-1024x768.png")
    assert next(iter(response.response))[:4] == b"\x89PNG"
    response.close()
    again = get(client, "/example.jpg")
    assert again.get_data() == (FIXTURES / "example.jpg").read_bytes()
    assert origin.since(mark)[-1].port != origin.since(mark)[-2].port


# --- request and response headers ------------------------------------------------------------------


def test_only_end_to_end_request_headers_are_forwarded(client, origins):
    origin, url, _, evil_port = origins
    mark = len(origin.seen)
    sent = {"Authorization": "OSS ak:sig", "If-Match": '"x"', "Accept": "image/webp", "User-Agent": "ua/1",
            "x-oss-meta-a": "1", "x-oss-date": "d", "Connection": "close, X-Secret", "X-Secret": "s",
            "Proxy-Authorization": "Basic eA==", "TE": "trailers", "Cookie": "session=1",
            "X-Forwarded-For": "10.0.0.1", "Host": f"127.0.0.1:{evil_port}"}
    get(client, "/example.jpg", headers=sent)
    got = origin.since(mark)[-1].headers
    assert got["host"] == url.removeprefix("http://")
    for name in ("authorization", "if-match", "accept", "user-agent", "x-oss-meta-a", "x-oss-date"):
        assert got[name] == {k.lower(): v for k, v in sent.items()}[name]
    for name in ("x-secret", "proxy-authorization", "te", "cookie", "x-forwarded-for"):
        assert name not in got
    assert got.get("connection", "keep-alive").lower() == "keep-alive"
    assert "gzip" not in got.get("accept-encoding", "")     # nothing the client did not ask for


def test_content_encoding_passes_through_undecoded(client):
    plain = get(client, "/gz.txt")
    assert plain.get_data() == b"hello proxy " * 200 and "Content-Encoding" not in plain.headers
    packed = get(client, "/gz.txt", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.get_data()) == b"hello proxy " * 200
    assert packed.headers["Content-Length"] == str(len(packed.get_data()))


def test_hop_by_hop_response_headers_are_dropped(client):
    response = get(client, "/hop")
    assert response.get_data() == b"hop" and response.headers["X-Kept"] == "yes"
    for name in ("Connection", "Keep-Alive", "X-Hop"):
        assert name not in response.headers


# --- PUT ---------------------------------------------------------------------------------------------


def test_saveas_through_the_proxy_puts_the_processed_bytes(client, origins):
    origin, url, _, _ = origins
    key = base64.urlsafe_b64encode(b"out/small.jpg").decode()
    mark = len(origin.seen)
    response = closed(client.post("/example.jpg", query_string="x-oss-process",
                                  data=f"x-oss-process=image/resize,w_100|sys/saveas,o_{key}".encode()))
    assert response.status_code == 200, response.get_data()
    answer = json.loads(response.get_data())
    content_type, stored = origin.stored["/out/small.jpg"]
    assert answer == {"bucket": "", "fileSize": len(stored), "object": "out/small.jpg", "status": "OK"}
    assert content_type == "image/jpeg" and size_of(stored) == (100, 67)
    get_source, put = origin.since(mark)
    assert (get_source.method, get_source.target) == ("GET", "/example.jpg")
    assert (put.method, put.target) == ("PUT", "/out/small.jpg")
    assert put.headers["content-length"] == str(len(stored))
    assert put.headers["host"] == url.removeprefix("http://")


class CountingInput(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size=-1):
        self.reads.append(size)
        return super().read(size)


def test_put_bodies_are_streamed_in_blocks(proxy, origins):
    origin, _, _, _ = origins
    data = os.urandom(300_000)
    for chunked in (False, True):
        stream = CountingInput(data)
        env = create_environ("/up/blob.bin", method="PUT", headers={"x-oss-meta-who": "me",
                                                                    "Cache-Control": "no-cache"})
        env.update({"wsgi.input": stream, "CONTENT_TYPE": "application/octet-stream"})
        if chunked:
            env.pop("CONTENT_LENGTH", None)
            env["wsgi.input_terminated"] = True
        else:
            env["CONTENT_LENGTH"] = str(len(data))
        mark = len(origin.seen)
        body, status, headers = run_wsgi_app(proxy, env)
        b"".join(body)
        body.close()
        assert status.startswith("200"), status
        [seen] = origin.since(mark)
        assert seen.body == data and origin.stored["/up/blob.bin"] == ("application/octet-stream", data)
        assert seen.headers["x-oss-meta-who"] == "me" and seen.headers["cache-control"] == "no-cache"
        assert ("transfer-encoding" in seen.headers) == chunked
        # read in blocks of at most 64 KiB, never all at once
        assert len(stream.reads) >= 5 and all(0 < size <= 64 * 1024 for size in stream.reads)


def test_a_short_put_body_is_refused_and_nothing_is_stored(proxy, origins):
    origin, _, _, _ = origins
    env = create_environ("/up/torn.bin", method="PUT")
    env.update({"wsgi.input": io.BytesIO(b"x" * 1000), "CONTENT_LENGTH": "5000"})
    body, status, headers = run_wsgi_app(proxy, env)
    data = b"".join(body)
    assert status.startswith("400") and ET.fromstring(data).findtext("Code") == "IncompleteBody"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not any(s.target == "/up/torn.bin" for s in origin.seen):
        time.sleep(0.02)
    assert "/up/torn.bin" not in origin.stored


def test_get_is_retried_once_on_a_dropped_connection_put_never(proxy, origins):
    origin, _, _, _ = origins
    client = Client(proxy)
    proxy.close()                   # start from an empty pool: the next request opens a connection
    mark = len(origin.seen)
    assert get(client, "/flaky/example.jpg").status_code == 200           # first on its connection
    assert get(client, "/flaky/example.jpg").status_code == 200           # dropped, then retried
    seen = origin.since(mark)
    assert [s.status for s in seen] == [200, -1, 200]
    assert seen[0].port == seen[1].port != seen[2].port
    # a PUT on a connection that gets dropped is sent once: 502, never again behind the client's back
    mark = len(origin.seen)
    env = create_environ("/flaky/put.bin", method="PUT", data=b"payload")
    body, status, _ = run_wsgi_app(proxy, env)
    assert status.startswith("502"), status
    b"".join(body)
    assert [s.method for s in origin.since(mark)] == ["PUT"]


# --- failures -------------------------------------------------------------------------------------


@LINT_LENGTH
def test_upstream_down_is_502_oss_xml():
    app = ProxyApp(f"http://127.0.0.1:{free_port()}", connect_timeout=1.0, read_timeout=READ_TIMEOUT)
    client = client_for(app)
    for process in (None, "image/resize,w_100"):
        response = get(client, "/example.jpg", process)
        error = oss_error(response)
        assert error["status"] == 502 and error["Code"] == "BadGateway"
        assert error["Message"] == "Upstream is unreachable."
        assert error["RequestId"] == response.headers["x-oss-request-id"]
    head = closed(client.head("/example.jpg"))
    assert head.status_code == 502 and head.get_data() == b""
    unresolvable = Client(ProxyApp("http://nosuchhost.invalid", connect_timeout=1.0))
    assert oss_error(get(unresolvable, "/x.jpg"))["Code"] == "BadGateway"


@LINT_LENGTH
def test_a_stalled_upstream_is_504_within_the_read_timeout(client, origins):
    origin, _, _, _ = origins
    for path, process in (("/slow/example.jpg", "image/resize,w_100"), ("/slow/example.jpg", None),
                          ("/slowbody/example.jpg", "image/resize,w_100")):
        mark = len(origin.seen)
        started = time.monotonic()
        response = get(client, path, process)
        elapsed = time.monotonic() - started
        error = oss_error(response)
        assert error["status"] == 504 and error["Code"] == "GatewayTimeout", (path, process)
        assert error["Message"] == "Upstream did not answer in time."
        assert elapsed < 3 * READ_TIMEOUT, elapsed
        assert len(origin.since(mark)) == 1            # a timeout is never retried


def test_other_methods_are_405(client, origins):
    origin, _, _, _ = origins
    mark = len(origin.seen)
    for method in ("DELETE", "POST", "OPTIONS", "PATCH"):
        response = closed(client.open("/example.jpg", method=method))
        error = oss_error(response)
        assert error["status"] == 405 and error["Code"] == "MethodNotAllowed"
        assert response.headers["Allow"] == "GET, HEAD, PUT"
    assert origin.since(mark) == []


# --- no SSRF --------------------------------------------------------------------------------------


def raw_environ(path_info: str, query: str = "", host: str = "client.example") -> dict:
    env = create_environ("/", base_url=f"http://{host}/")
    env["PATH_INFO"] = path_info
    env["QUERY_STRING"] = query
    env["HTTP_HOST"] = host
    return env


def test_the_client_cannot_choose_the_upstream(proxy, origins):
    origin, url, evil, evil_port = origins
    middleware = ImageMiddleware(proxy, Config())
    evil_at = f"127.0.0.1:{evil_port}"
    attempts = [f"//{evil_at}/x", f"///{evil_at}/x", f"http://{evil_at}/x", f"/http://{evil_at}/x",
                f"@{evil_at}/x", f"/@{evil_at}/x", f"\\\\{evil_at}/x", f"/\\{evil_at}/x",
                f"https:{evil_at}/x", f"{evil_at}/x", f"//user@{evil_at}:1/x", "/%2F%2Fevil/x",
                f"/x\r\nHost: {evil_at}\r\n\r\nGET /y", f"/x HTTP/1.1\r\nHost: {evil_at}"]
    mark = len(origin.seen)
    for path in attempts:
        for app, query in ((proxy, ""), (middleware, ""), (middleware, "x-oss-process=image/resize,w_10"),
                           (proxy, f"u=http://{evil_at}/"), (proxy, f"x#@{evil_at}")):
            body, status, _ = run_wsgi_app(app, raw_environ(path, query, host=evil_at))
            b"".join(body)
            body.close()
            assert status.startswith("404"), (path, status)
    seen = origin.since(mark)
    assert len(seen) == len(attempts) * 5
    assert evil.seen == []
    for s in seen:
        assert s.headers["host"] == url.removeprefix("http://")
        assert s.target.startswith("/") and " " not in s.target and "\r" not in s.target
        assert not s.target.startswith(f"//{evil_at}") and "#" not in s.target


def test_paths_are_encoded_and_dot_segments_refused(origins):
    origin, url, evil, _ = origins
    app = ProxyApp(url + "/prefix/")
    env = raw_environ("/图片 1%?#.jpg".encode("utf-8").decode("latin-1"), "a=b c&d")
    assert app.target(env) == "/prefix/%E5%9B%BE%E7%89%87%201%25%3F%23.jpg?a=b%20c&d"
    # the file with that name, through the middleware
    client = client_for(ProxyApp(url))
    response = get(client, "/" + urllib.parse.quote("图片 1%?#.jpg"), "image/resize,w_100")
    assert response.status_code == 200 and size_of(response.get_data()) == (100, 67)
    # "." and ".." would take the upstream above its base path: never sent
    mark = len(origin.seen)
    for path in ("/../etc/passwd", "/a/../../x", "/.", "/a/./b", "/..", "/a/.."):
        body, status, _ = run_wsgi_app(app, raw_environ(path))
        assert status.startswith("400") and ET.fromstring(b"".join(body)).findtext("Code") == "InvalidObjectName"
    assert origin.since(mark) == [] and evil.seen == []


def test_bad_upstream_urls_are_refused():
    for bad in ("ftp://host/", "127.0.0.1:8080", "http://", "http://u:p@host/", "http://host/?q=1",
                "http://host/#f", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            ProxyApp(bad)
    app = ProxyApp("https://bucket.oss-cn-hangzhou.aliyuncs.com/prefix")
    assert app.host_header == "bucket.oss-cn-hangzhou.aliyuncs.com" and app.base_path == "/prefix"
    assert ProxyApp("http://127.0.0.1:8081").host_header == "127.0.0.1:8081"


# --- (b) real nginx as the origin, `imgmiddleware serve --upstream` in front ------------------------------


def nginx_origin_block(port: int, root: Path) -> str:
    """deploy/nginx-origin.conf, on ``port`` and serving ``root``."""
    block = (ROOT / "deploy" / "nginx-origin.conf").read_text()
    block, listens = re.subn(r"(?m)^(\s*)listen\s+[^;]+;", rf"\g<1>listen 127.0.0.1:{port};", block)
    block, roots = re.subn(r"(?m)^(\s*)root\s+[^;]+;", rf"\g<1>root {root};", block)
    assert listens == 1 and roots == 1
    return block


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origins):
    """nginx serving a copy of the fixtures, gunicorn proxying to it; the nginx process is in a dict
    so a test can restart it."""
    workdir = tmp_path_factory.mktemp("nginx")
    # nginx's workers run as "nobody" when the tests run as root: a world-readable copy
    images = Path(tempfile.mkdtemp(prefix="imgmw-origin-"))
    images.chmod(0o755)
    for path in FIXTURES.iterdir():
        shutil.copy(path, images / path.name)
        (images / path.name).chmod(0o644)
    nginx_port, serve_port = free_port(), free_port()
    block = nginx_origin_block(nginx_port, images)
    state = {"nginx": start_nginx(workdir, block)}
    nginx_url = f"http://127.0.0.1:{nginx_port}"
    serve = None
    try:
        wait_for(nginx_url + "/example.jpg", state["nginx"], timeout=20)
        config = workdir / "imgmiddleware.toml"
        config.write_text("upstream_read_timeout = 5.0\nupstream_pool_size = 4\n")
        serve = start_serve(["--upstream", nginx_url, "--bind", f"127.0.0.1:{serve_port}",
                             "--workers", "1", "--threads", "4"], config)
        base = f"http://127.0.0.1:{serve_port}"
        wait_for(base + "/example.jpg", serve)
        state.update(base=base, nginx_url=nginx_url, workdir=workdir, block=block, serve=serve)
        yield state
    finally:
        if serve is not None:
            stop(serve)
        stop(state["nginx"])
        shutil.rmtree(images, ignore_errors=True)


def fetch(url: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_real_nginx_origin_through_imgmiddleware_serve(stack):
    base = stack["base"]
    status, headers, body = fetch(base + "/example.jpg?x-oss-process=image/resize,w_100")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and size_of(body) == (100, 67)
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', headers["ETag"])          # nginx's ETag, passed on
    assert headers["Cache-Control"] == "max-age=3600" and headers["Last-Modified"]
    status, headers, body = fetch(base + "/nodejs-1024x768.png?x-oss-process=image/resize,w_200/format,webp")
    assert status == 200 and format_of(body) == "WEBP" and size_of(body) == (200, 150)
    status, headers, body = fetch(base + "/f.jpg?x-oss-process=image/resize,w_100/format,png")
    assert status == 200 and format_of(body) == "PNG" and size_of(body) == (100, 127)
    status, headers, body = fetch(base + "/example.gif")
    assert status == 200 and body == (FIXTURES / "example.gif").read_bytes()
    assert headers["Content-Type"] == "image/gif"
    # cached, then revalidated against nginx (a 304 from nginx, the result from the cache)
    status, headers, _ = fetch(base + "/example.jpg?x-oss-process=image/resize,w_100")
    assert status == 200 and headers["x-imgmw-cache"] == "revalidated"


def test_real_nginx_missing_file_and_methods(stack):
    base = stack["base"]
    for url in (base + "/missing.jpg", base + "/missing.jpg?x-oss-process=image/resize,w_100",
                base + "/.hidden?x-oss-process=image/resize,w_100"):
        status, headers, body = fetch(url)
        assert status == 404 and ET.fromstring(body).findtext("Code") == "NoSuchKey", url
        assert headers["Content-Type"] == "application/xml"
    status, _, _ = fetch(base + "/example.jpg", method="DELETE")
    assert status == 405                                  # refused by the proxy itself
    status, _, _ = fetch(base + "/new.jpg", method="PUT")
    assert status == 405                                  # forwarded, refused by the read-only origin


def raw_request(port: int, request_line: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_real_server_ssrf_attempts_stay_on_the_configured_origin(stack, origins):
    _, _, evil, evil_port = origins
    port = int(stack["base"].rsplit(":", 1)[1])
    before = len(evil.seen)
    for target in (f"//127.0.0.1:{evil_port}/x", f"http://127.0.0.1:{evil_port}/x",
                   f"//127.0.0.1:{evil_port}/example.jpg?x-oss-process=image/resize,w_10",
                   f"/@127.0.0.1:{evil_port}/x", f"http://127.0.0.1:{evil_port}/example.jpg"):
        answer = raw_request(port, f"GET {target} HTTP/1.1")
        assert answer.split(b" ", 2)[1] in (b"200", b"400", b"404"), (target, answer[:200])
    assert len(evil.seen) == before


def test_real_nginx_down_is_502_and_back_is_200(stack):
    base = stack["base"]
    url = base + "/f.jpg?x-oss-process=image/resize,w_60"
    assert fetch(url)[0] == 200
    stop(stack["nginx"])
    for target in (url, base + "/f.jpg", base + "/example.jpg?x-oss-process=image/resize,w_100"):
        status, headers, body = fetch(target)
        assert status == 502, (target, status, body[:300])
        assert ET.fromstring(body).findtext("Code") == "BadGateway"
        assert headers["x-oss-request-id"] == ET.fromstring(body).findtext("RequestId")
    stack["nginx"] = start_nginx(stack["workdir"], stack["block"])
    wait_for(stack["nginx_url"] + "/example.jpg", stack["nginx"], timeout=20)
    status, headers, body = fetch(url)
    assert status == 200 and size_of(body) == (60, 76)
