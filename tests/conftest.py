"""Shared test harness: the OSS fixtures served by the middleware, wrapped in werkzeug's LintMiddleware."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
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

FIXTURES = Path(__file__).parent / "fixtures"
NODE_LOCK_DIR = Path(__file__).parent / "node"          # package.json + package-lock.json, committed
NODE_DIR = NODE_LOCK_DIR / ".cache"                      # where npm ci installs them (gitignored)

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
