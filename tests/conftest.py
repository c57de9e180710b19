"""Shared test harness: the OSS fixtures served by the middleware, wrapped in werkzeug's LintMiddleware."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.origins.static import static_app

from .servers import free_port

FIXTURES = Path(__file__).parent / "fixtures"
NODE_LOCK_DIR = Path(__file__).parent / "node"          # package.json + package-lock.json, committed
NODE_DIR = NODE_LOCK_DIR / ".cache"                      # where npm ci installs them (gitignored)
# The SDK acceptance tests' server (the `server` fixture): its key and its two buckets.
SDK_AK, SDK_SK = "test-ak", "test-sk"
SDK_BUCKETS = ("examplebucket", "targetbucket")

# The Debian packages of the real faces behind OSS's font names (imgmiddleware/imaging/fonts.py).
FONT_PACKAGES = ("fonts-wqy-zenhei", "fonts-wqy-microhei", "fonts-droid-fallback", "fonts-noto-cjk",
                 "fonts-arphic-ukai", "fonts-arphic-uming",
                 "fonts-dejavu-core")   # a Latin-only face, for the tests of a face without Chinese


def pytest_sessionstart(session) -> None:
    """Install the font packages before any test module resolves the font table (once a process)."""
    from .servers import ensure_debian_packages

    ensure_debian_packages(*FONT_PACKAGES)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def make_client(root: Path | str = FIXTURES, config: Config | None = None, **overrides) -> Client:
    """A test client for LintMiddleware(ImageMiddleware(static files under root))."""
    app = ImageMiddleware(LintMiddleware(static_app(root)), config, **overrides)
    return Client(LintMiddleware(app))


@pytest.fixture
def client() -> Client:
    return make_client()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A writable copy of the fixtures, for tests that add their own images."""
    for path in FIXTURES.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


@pytest.fixture
def serve_file(image_dir):
    """serve_file(name, data) -> a client over the fixtures plus that one file."""
    def add(name: str, data: bytes) -> Client:
        (image_dir / name).write_bytes(data)
        return make_client(image_dir)
    return add


def save_image(directory: Path, name: str, pixels: np.ndarray, params: list[int] | None = None) -> Path:
    ok, buf = cv2.imencode(Path(name).suffix, pixels, params or [])
    assert ok
    path = directory / name
    path.write_bytes(buf.tobytes())
    return path


def closed(response):
    """Read and close a test response (LintMiddleware checks that every body gets closed)."""
    response.get_data()
    response.close()
    return response


def get(client: Client, key: str, process: str | None = None, method: str = "GET", **kwargs):
    """GET (or HEAD) /key, with ?x-oss-process=process when given; the response comes back closed."""
    query = {} if process is None else {"x-oss-process": process}
    return closed(client.open("/" + key, method=method, query_string=query, **kwargs))


def decode(data: bytes) -> np.ndarray:
    """Pixels of a response body as OpenCV sees them (BGR / BGRA), alpha kept."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "response body is not a decodable image"
    return img


def size_of(data: bytes) -> tuple[int, int]:
    """(width, height) of an image body."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def format_of(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as im:
        return im.format


def oss_error(response) -> dict[str, str]:
    """The fields of an OSS XML error body, plus the status code and x-oss-ec header."""
    assert response.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(response.get_data())
    assert root.tag == "Error"
    fields = {child.tag: child.text or "" for child in root}
    fields["status"] = response.status_code
    fields["header_ec"] = response.headers.get("x-oss-ec")
    return fields


def ok(response, content_type: str | None = None) -> bytes:
    """The body of a 200 answer, after checking its Content-Type (if given) and Content-Length."""
    assert response.status_code == 200, response.get_data()[:500]
    if content_type is not None:
        assert response.headers["Content-Type"] == content_type
    body = response.get_data()
    assert response.headers["Content-Length"] == str(len(body))
    return body


def source(name: str) -> np.ndarray:
    """A fixture's stored pixels (BGR), EXIF orientation ignored."""
    data = (FIXTURES / name).read_bytes()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two same-sized images in dB (inf when identical)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(cv2.PSNR(a, b))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 2-D arrays, the smaller one padded with zeros to the larger."""
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    pa, pb = np.zeros((h, w)), np.zeros((h, w))
    pa[:a.shape[0], :a.shape[1]] = a
    pb[:b.shape[0], :b.shape[1]] = b
    return float(np.corrcoef(pa.ravel(), pb.ravel())[0, 1])


def run_in_built_package(tmp_path: Path, probe: str) -> str:
    """Build the package as a wheel would hold it (setup.py build_py) and run ``probe`` in an
    isolated interpreter with only that build importable (its path is sys.argv[1]); its stdout."""
    import sys

    build = tmp_path / "build"
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
                   cwd=repo, check=True, capture_output=True)
    return subprocess.run([sys.executable, "-I", "-c", probe, str(build)], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def ali_oss() -> Path:
    """The ali-oss package directory: ``npm ci`` of the committed tests/node/package-lock.json into
    tests/node/.cache, redone only when the lock changed, so every run tests the same versions."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail(f"the Node.js acceptance tests need node and npm on PATH (node={node}, npm={npm})")
    package = NODE_DIR / "node_modules" / "ali-oss"
    lock = (NODE_LOCK_DIR / "package-lock.json").read_bytes()
    installed_lock = NODE_DIR / "package-lock.json"
    if not (package / "package.json").is_file() or not installed_lock.is_file() or \
            installed_lock.read_bytes() != lock:
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NODE_LOCK_DIR / name, NODE_DIR / name)
        try:
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                                  capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"npm ci of tests/node timed out:\n{err.stdout}\n{err.stderr}")
        if done.returncode != 0 or not (package / "package.json").is_file():
            pytest.fail(f"npm ci of tests/node failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    locked = json.loads(lock)["packages"]["node_modules/ali-oss"]["version"]
    assert json.loads((package / "package.json").read_text())["version"] == locked
    return package


# --- imgmiddleware serve for the SDK acceptance tests (test_sdk*.py) ---------------------------------


class Server:
    def __init__(self, base: str, port: int, root: Path, log: Path) -> None:
        self.base, self.port, self.root, self.log = base, port, root, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`imgmiddleware serve` (gunicorn, 2 workers) on a free loopback port over two private buckets,
    examplebucket and targetbucket, key test-ak / test-sk, the [all] style oss-pic-style-w-100; one
    per test module, stopped at its end (tests/test_sdk.py's docstring has the details)."""
    tmp = tmp_path_factory.mktemp("sdk-server")
    root = tmp / "data"
    for name in SDK_BUCKETS:
        (root / name).mkdir(parents=True)
    styles = tmp / "styles.toml"
    styles.write_text('[all]\noss-pic-style-w-100 = "image/resize,w_100"\n')
    config = tmp / "imgmiddleware.toml"
    config.write_text(f'default_acl = "private"\nstyles_file = {json.dumps(str(styles))}\n'
                      f'cache_dir = {json.dumps(str(tmp / "cache"))}\n'
                      f'[credentials]\n{SDK_AK} = "{SDK_SK}"\n')
    port = free_port()
    command = shutil.which("imgmiddleware")
    argv = [command] if command else [sys.executable, "-m", "imgmiddleware.cli"]
    argv += ["--config", str(config), "serve", "--root", str(root), "--bind", f"127.0.0.1:{port}",
             "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGMW_")}
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", port, root, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(srv.base + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break                                   # any OSS answer (an XML error) means ready
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                if proc.poll() is not None:
                    pytest.fail("imgmiddleware serve exited:\n" + srv.output())
                if time.monotonic() > deadline:
                    pytest.fail("imgmiddleware serve did not start in 30 s:\n" + srv.output())
                time.sleep(0.1)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
