"""The embedded default for real: `imgmiddleware serve` (gunicorn) on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from imgmiddleware.imaging.fonts import FONT_NAMES

from .conftest import FIXTURES, size_of

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from listeners import ESTABLISHED, socket_fds, sockets, wait_until_accepting  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    command = shutil.which("imgmiddleware")
    argv = [command] if command else [sys.executable, "-m", "imgmiddleware.cli"]
    proc = subprocess.Popen(
        argv + ["serve", "--static", str(FIXTURES), "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/example.jpg", timeout=2).read()
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                pytest.fail("gunicorn exited: " + proc.stdout.read())
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gunicorn did not start in time")
    yield base, proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def fetch(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_processed_image_over_real_http(server):
    base, _ = server
    status, headers, body = fetch(base + "/example.jpg?x-oss-process=image%2Fresize%2Cw_100")
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert int(headers["Content-Length"]) == len(body)
    assert size_of(body) == (100, 67)


def test_sdk_style_chain_and_format_over_real_http(server):
    base, _ = server
    status, headers, body = fetch(base + "/nodejs-1024x768.png?x-oss-process=image/resize,w_200")
    assert status == 200 and headers["Content-Type"] == "image/png" and size_of(body) == (200, 150)


def test_errors_and_pass_through_over_real_http(server):
    base, _ = server
    status, headers, body = fetch(base + "/example.jpg?x-oss-process=image/resize,w_0")
    assert status == 400 and headers["x-oss-ec"] == "0040-00000312"
    assert ET.fromstring(body).findtext("Code") == "InvalidArgument"
    status, _, body = fetch(base + "/nope.jpg?x-oss-process=image/resize,w_100")
    assert status == 404 and ET.fromstring(body).findtext("Code") == "NoSuchKey"
    status, _, body = fetch(base + "/example.jpg")
    assert status == 200 and body == (FIXTURES / "example.jpg").read_bytes()


def test_serve_prints_urls_to_try(server):
    base, proc = server
    proc.terminate()
    output, _ = proc.communicate(timeout=15)
    assert f"{base}/example.jpg?x-oss-process=image/resize,w_200" in output


def thumbnail_from_deploy_gunicorn(*options: str, **env: str) -> str:
    """gunicorn as deploy/gunicorn.conf.py runs it (one worker, the fixtures as a static folder), with
    ``options`` on its command line and ``env`` added: one thumbnail checked, then its whole log."""
    port = free_port()
    env = dict(__import__("os").environ, IMGMW_STATIC=str(FIXTURES), IMGMW_BIND=f"127.0.0.1:{port}",
               IMGMW_WORKERS="1", **env)
    root = FIXTURES.parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(root / "deploy" / "gunicorn.conf.py"),
                             *options, "imgmiddleware.wsgi:application"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, body = fetch(f"http://127.0.0.1:{port}/f.jpg?x-oss-process=image/resize,w_100")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "gunicorn did not start in time"
                time.sleep(0.2)
        assert status == 200 and size_of(body) == (100, 127)   # auto-oriented, then resized
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=15)
    return output


def test_gunicorn_with_the_deploy_config_and_the_wsgi_entry_point():
    output = thumbnail_from_deploy_gunicorn()
    # The font table, once, from the master (deploy/gunicorn.conf.py's on_starting), in its log.
    for name in FONT_NAMES:
        assert output.count(f"fonts: {name} -> ") == 1, output
    # The parser gunicorn gave the first connection, once per worker: its own (gunicorn_h1c is not
    # a dependency: bench/server_bench.py measured 20-30 us a request, a few percent of a cached hit).
    assert output.count("HTTP parser: PythonProtocol") == 1, output


H1C_STAND_IN = '''"""Stands in for gunicorn_h1c (gunicorn's optional C parser) in one test: gunicorn's
own Python parser under the C parser's names, so that which one gunicorn picks is what is tested."""
from gunicorn.asgi.parser import PythonProtocol


class LimitRequestLine(Exception):
    pass


class LimitRequestHeaders(Exception):
    pass


class H1CProtocol(PythonProtocol):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
'''


def test_gunicorns_c_parser_is_used_when_an_operator_installs_it(tmp_path):
    """gunicorn's http_parser setting ("auto" uses gunicorn_h1c when it is installed, "fast" requires
    it) works under the event-loop worker. gunicorn records whether the C parser is there on the
    class it is asked through but reads the answer from its own protocol class, so the worker's
    subclass hid it: "auto" silently kept the Python parser and "fast" failed every connection."""
    (tmp_path / "gunicorn_h1c").mkdir()
    (tmp_path / "gunicorn_h1c" / "__init__.py").write_text(H1C_STAND_IN)
    for setting in ("auto", "fast"):
        output = thumbnail_from_deploy_gunicorn("--http-parser", setting, PYTHONPATH=str(tmp_path))
        assert output.count("HTTP parser: H1CProtocol") == 1, (setting, output)


def test_opencv_never_runs_in_the_gunicorn_master(tmp_path):
    """The app is built in each worker after the fork, so the master never runs OpenCV and makes no
    thread pool that workers would inherit (importing the library creates none; running a parallel
    operation would): its thread count stays gunicorn's own after real image work. The library is
    loaded there, to be shared by the workers (server/preload.py)."""
    from .servers import start_serve, stop, wait_for

    port = free_port()
    proc = start_serve(["--root", str(tmp_path / "data"), "--bind", f"127.0.0.1:{port}",
                        "--workers", "2", "--threads", "2"])
    try:
        base = f"http://127.0.0.1:{port}/examplebucket/example.jpg"
        wait_for(base, proc)
        for width in range(100, 140, 5):
            status, _, body = fetch(f"{base}?x-oss-process=image/resize,w_{width}/blur,r_5,s_5")
            assert status == 200 and size_of(body)[0] == width
        status_lines = open(f"/proc/{proc.pid}/status").read().splitlines()
        threads = int(next(line for line in status_lines if line.startswith("Threads:")).split()[1])
        assert threads <= 2, f"the gunicorn master runs {threads} threads"
    finally:
        stop(proc)


def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in kB."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup").read().splitlines()[1:]:
        name, value = line.split()[:2]
        fields[name.rstrip(":")] = int(value)
    return fields


def test_workers_share_the_libraries_the_master_loaded(tmp_path):
    """OpenCV, NumPy, Pillow and the engine are imported once, in the master, and their pages shared
    copy-on-write by the workers: in an idle worker more memory is shared with the master than is
    its own (without the preload it was 8 MB shared against 36 MB private), so the tree's PSS is
    about a fifth lower (docs/BENCHMARKS.md)."""
    from .servers import child_pids, start_serve, stop, wait_for

    port = free_port()
    proc = start_serve(["--root", str(tmp_path / "data"), "--bind", f"127.0.0.1:{port}",
                        "--workers", "2", "--threads", "2", "--metrics", "off"])
    try:
        wait_for(f"http://127.0.0.1:{port}/_healthz", proc)
        maps = open(f"/proc/{proc.pid}/maps").read()
        assert "cv2" in maps or "opencv" in maps.lower()      # loaded in the master ...
        workers = child_pids(proc.pid)
        assert len(workers) == 2
        for pid in workers:                                  # ... and shared by each worker
            memory = smaps_rollup(pid)
            assert memory["Shared_Dirty"] > memory["Private_Dirty"], memory
    finally:
        stop(proc)


async def _burst(port: int, workers: list[int], count: int, requests: int = 3) -> list[int]:
    """``count`` connections opened at once (no waiting between them, as a client's pool does), each
    carrying ``requests`` requests one after another (keep-alive); then the connections each worker
    holds."""
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    try:
        for _ in range(requests):
            for _, writer in opened:
                writer.write(b"GET /_healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for reader, _ in opened:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
        return [len(socket_fds(pid, sockets(port, ESTABLISHED))) for pid in workers]
    finally:
        for _, writer in opened:
            writer.close()


def test_a_burst_of_connections_is_shared_by_the_workers(tmp_path):
    """Eight keep-alive connections arriving together (a client's pool, nginx's upstream keepalive)
    end up in both workers, not all in the first one awake (asyncio accepts up to 100 a wakeup: one
    worker's threads then did every transform while the other idled, half the rate on cached hits),
    and the shared socket keeps gunicorn's listen backlog (asyncio set it to 100). The kernel's
    scheduling can still favour one worker now and then, so two bursts of three must be shared;
    before, one in five or fewer was."""
    from .servers import start_serve, stop, wait_for

    port = free_port()
    proc = start_serve(["--root", str(tmp_path / "data"), "--bind", f"127.0.0.1:{port}",
                        "--workers", "2", "--threads", "4", "--metrics", "off"])
    try:
        wait_for(f"http://127.0.0.1:{port}/_healthz", proc)
        workers = sorted(wait_until_accepting(proc.pid, port, 2, timeout=30))
        assert len(workers) == 2
        bursts = []
        for _ in range(3):
            bursts.append(asyncio.run(_burst(port, workers, 8)))
            time.sleep(0.2)                                   # the last burst's connections close
        assert all(sum(held) == 8 for held in bursts), bursts
        assert sum(min(held) >= 3 for held in bursts) >= 2, f"connections per worker: {bursts}"
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                                   text=True, check=True).stdout.split()
        assert listening[2] == "2048", listening          # Send-Q of a listener: its backlog
    finally:
        stop(proc)
