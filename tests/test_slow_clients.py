"""Slow and oversized clients against a real `imgmiddleware serve` (issue 15).

gunicorn's threaded worker read heads and bodies in app threads: ten connections trickling a byte
every two seconds made plain GETs time out for the whole attack. The event-loop worker reads them
instead (imgmiddleware/server/), so here a dozen trickling clients hold connections while plain GETs
and transforms are answered, each trickler is cut off with 400 RequestTimeout once its head or body
is late, an oversized body is refused before it is read, a client that stops reading its answer is
dropped, and uploads that arrive properly (large, chunked, non-ASCII keys) still work.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .servers import free_port, start_serve, stop, wait_for

HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MIN_RATE = 1000          # bytes/s: a trickle of a byte every 0.3 s is far below it
SEND_TIMEOUT = 2.0
MAX_BODY = 8 * 1024 * 1024
# How long a plain GET may take while the tricklers hold their connections: without the event-loop
# worker it waited for the whole attack (the tricklers are cut off only at HEAD_TIMEOUT/BODY_TIMEOUT,
# and reconnect here), so this bound is far below what the old worker gave and far above a GET's time.
GET_BOUND = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow")
    (root / "data").mkdir()
    config = root / "imgmiddleware.toml"
    config.write_text(f"""
client_header_timeout = {HEAD_TIMEOUT}
client_body_timeout = {BODY_TIMEOUT}
client_body_min_rate = {MIN_RATE}
client_send_timeout = {SEND_TIMEOUT}
max_request_body_bytes = {MAX_BODY}
request_body_memory_bytes = 65536
default_acl = "public-read-write"
""")
    port = free_port()
    proc = start_serve(["--root", str(root / "data"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
                        "--threads", "2"], config=config, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/examplebucket/example.jpg", proc)
        yield base, port, root / "data"
    finally:
        stop(proc)


def _get(url: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read(), time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.monotonic() - started


def _read_answer(sock: socket.socket, limit: float) -> bytes:
    """Everything the server sends until it closes, within ``limit`` seconds."""
    sock.settimeout(limit)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (socket.timeout, ConnectionResetError):
        return data


class Trickler(threading.Thread):
    """Sends ``prefix`` at once, then ``payload`` a byte at a time every ``gap`` seconds, reconnecting
    whenever cut off, until stopped; keeps what each connection was answered."""

    def __init__(self, port: int, payload: bytes, prefix: bytes = b"", gap: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.port, self.payload, self.prefix, self.gap = port, payload, prefix, gap
        self.answers: list[bytes] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            with socket.create_connection(("127.0.0.1", self.port)) as sock:
                try:
                    sock.sendall(self.prefix)
                    for byte in self.payload:
                        if self.stopped.is_set():
                            return
                        sock.sendall(bytes([byte]))
                        time.sleep(self.gap)
                except OSError:
                    pass
                self.answers.append(_read_answer(sock, 5))


def test_tricklers_do_not_stall_gets_and_are_cut_off(server):
    base, port, _ = server
    head = b"GET /examplebucket/example.jpg HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    put = b"PUT /examplebucket/slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    tricklers = ([Trickler(port, head) for _ in range(6)]
                 + [Trickler(port, b"b" * 100000, prefix=put) for _ in range(6)])
    for t in tricklers:
        t.start()
    try:
        time.sleep(1.0)           # every trickler has a connection open and a byte or more sent
        timings = []
        for i in range(12):
            process = "" if i % 2 else "?x-oss-process=image/resize,w_100"
            status, body, took = _get(base + "/examplebucket/example.jpg" + process)
            assert status == 200 and body[:2] == b"\xff\xd8"
            timings.append(took)
        assert max(timings) < GET_BOUND, timings
        time.sleep(HEAD_TIMEOUT + BODY_TIMEOUT + 1.5)   # each has been cut off at least once
    finally:
        for t in tricklers:
            t.stopped.set()
        for t in tricklers:
            t.join(10)
    for t in tricklers:
        assert t.answers, "a trickler was never cut off"
        first = t.answers[0]
        assert first.startswith(b"HTTP/1.1 400"), first[:200]
        assert b"<Code>RequestTimeout</Code>" in first
    # Nothing slow.bin was ever stored: a late body loses nothing and keeps nothing.
    assert _get(base + "/examplebucket/slow.bin")[0] == 404


def test_head_is_cut_off_at_its_deadline(server):
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /examplebucket/example.jpg HT")
        started = time.monotonic()
        answer = _read_answer(sock, 20)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in answer
    assert HEAD_TIMEOUT - 0.1 <= took < HEAD_TIMEOUT + 2.5     # the sweep looks every 0.5 s here


def test_a_silent_connection_is_closed(server):
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        answer = _read_answer(sock, 20)
    assert b"RequestTimeout" in answer


def test_oversized_body_is_refused_before_it_is_read(server):
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"PUT /examplebucket/big.bin HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        sock.settimeout(10)
        answer = b""
        while b"</Error>" not in answer:       # at once, not when the lingering close ends
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"<Code>EntityTooLarge</Code>" in answer and b"<MaxSizeAllowed>%d<" % MAX_BODY in answer
    assert b"Connection: close" in answer


def test_a_client_sending_an_oversized_body_anyway_reads_the_refusal(server):
    """http.client (as oss2 does) sends the whole body before it reads the answer: the server reads
    and drops the rest (a lingering close), else the kernel resets the connection over the unread
    bytes and the client sees a broken pipe instead of EntityTooLarge."""
    _, port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", "/examplebucket/declared-big.bin", body=b"d" * (MAX_BODY + 2 * 1024 * 1024))
        resp = conn.getresponse()
        body = resp.read()
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection without an answer")
    finally:
        conn.close()
    assert resp.status == 400 and b"<Code>EntityTooLarge</Code>" in body


def test_chunked_body_over_the_limit_is_refused(server):
    _, port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    block = b"c" * (1024 * 1024)

    def blocks():
        for _ in range(MAX_BODY // len(block) + 2):
            yield block

    try:
        conn.request("PUT", "/examplebucket/chunked-big.bin", body=blocks(), encode_chunked=True)
        resp = conn.getresponse()
        body = resp.read()
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection without an answer")
    assert resp.status == 400 and b"<Code>EntityTooLarge</Code>" in body


def test_large_and_chunked_uploads_arrive_whole(server):
    base, port, _ = server
    data = bytes(range(256)) * (3 * 4096 + 7)          # 3 MB: well past the in-memory part
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("PUT", "/examplebucket/%E5%A4%A7/large.bin", body=data)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("ETag").strip('"') == hashlib.md5(data).hexdigest().upper()
    assert _get(base + "/examplebucket/%E5%A4%A7/large.bin")[1] == data

    conn.request("PUT", "/examplebucket/chunked.bin", body=iter([data[:100000], data[100000:]]),
                 encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert _get(base + "/examplebucket/chunked.bin")[1] == data


def test_a_client_that_stops_reading_is_dropped(server):
    base, port, data_root = server
    big = data_root / "examplebucket" / "huge.bin"
    big.write_bytes(b"\0" * (64 * 1024 * 1024))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /examplebucket/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(SEND_TIMEOUT + 3)    # read nothing meanwhile: the socket buffers fill, writes stall
        # Others are served while it hangs, and once dropped its answer ends short of the object.
        assert _get(base + "/examplebucket/example.jpg")[0] == 200
        received = len(_read_answer(sock, 10))
    assert received < 64 * 1024 * 1024


def _bytes_read(pids) -> int:
    """What the server's processes have read so far (rchar: every read(), from the page cache too)."""
    total = 0
    for pid in pids:
        try:
            fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except OSError:
            continue
        total += int(fields["rchar"])
    return total


def test_a_client_that_leaves_mid_answer_stops_the_read(server):
    """A streamed answer (a plain GET of a large object) stops when its client disconnects: no
    thread goes on reading the rest of the object for nobody."""
    base, port, data_root = server
    size = 64 * 1024 * 1024
    (data_root / "examplebucket" / "leave.bin").write_bytes(b"\0" * size)
    pids = {int(p) for p in
            subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True).stdout.split()}
    assert pids
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /examplebucket/leave.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")   # the answer has begun
        before = _bytes_read(pids)
    time.sleep(2.0)                                      # the server notices the closed connection
    assert _bytes_read(pids) - before < size // 2
    assert _get(base + "/examplebucket/example.jpg")[0] == 200
