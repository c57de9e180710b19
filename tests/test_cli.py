"""The imgmiddleware command: offline processing, the cache operations, which configuration every command
loads, and what `imgmiddleware serve` prints and serves on a first run, from any directory."""

from __future__ import annotations

import io
import shutil
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image
from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.cli import config_file, main
from imgmiddleware.config import packaged_config_file
from imgmiddleware.origins.static import static_app

from .conftest import FIXTURES, size_of
from .servers import free_port, start_serve, stop, wait_for

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "imgmiddleware" / "samples"


# --- process ---------------------------------------------------------------------------------------

def test_process_writes_the_result(tmp_path, capsys):
    out = tmp_path / "out.webp"
    assert main(["process", str(FIXTURES / "example.jpg"), "image/resize,w_100/format,webp", str(out)]) == 0
    assert out.read_bytes()[8:12] == b"WEBP" and size_of(out.read_bytes()) == (100, 67)
    assert main(["process", str(FIXTURES / "example.jpg"), "image/resize,w_0", str(out)]) == 1
    assert "0040-00000312" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing input", "input is a directory", "no output directory",
                                  "output directory is a file", "missing --config"])
def test_process_file_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    """No traceback for a mistyped name: one line saying which file and why, exit status 2."""
    source, out, config = str(FIXTURES / "example.jpg"), str(tmp_path / "out.jpg"), []
    (tmp_path / "file").write_text("not a directory")
    if case == "missing input":
        source = str(tmp_path / "no-such.jpg")
    elif case == "input is a directory":
        source = str(tmp_path)
    elif case == "no output directory":
        out = str(tmp_path / "no-such-dir" / "out.jpg")
    elif case == "output directory is a file":
        out = str(tmp_path / "file" / "out.jpg")
    else:
        config = ["--config", str(tmp_path / "no-such.toml")]
    assert main([*config, "process", source, "image/resize,w_100", out]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("imgmiddleware process: "), err
    named = {"missing input": source, "input is a directory": source, "missing --config": "no-such.toml"}
    assert named.get(case, out) in err
    assert not Path(out).exists()


def test_process_warns_when_the_name_disagrees_with_the_result(tmp_path, capsys):
    """x.png receiving JPEG bytes is written, with a warning that names both; synonyms are no mismatch."""
    source = str(FIXTURES / "example.jpg")
    assert main(["process", source, "image/resize,w_100", str(tmp_path / "x.png")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and ".png" in err and "JPEG" in err and "format,png" in err
    assert (tmp_path / "x.png").read_bytes()[:2] == b"\xff\xd8"
    for name, process in (("a.jpg", "image/resize,w_100"), ("a.JPEG", "image/resize,w_100"),
                          ("a.tif", "image/resize,w_100/format,tiff"),
                          ("a.tiff", "image/resize,w_100/format,tiff"), ("a.json", "image/info"),
                          ("no-extension", "image/resize,w_100")):
        assert main(["process", source, process, str(tmp_path / name)]) == 0
        assert "warning" not in capsys.readouterr().err, name


@pytest.mark.parametrize("process", ["resize,w_100", "img/resize,w_100", "video/snapshot,t_0"])
def test_a_process_string_without_image_prefix_says_what_http_says(tmp_path, capsys, process):
    """The command prints the status, Code and EC the HTTP answer carries, and that EC is not empty."""
    response = Client(ImageMiddleware(static_app(FIXTURES), Config())).get(
        "/example.jpg", query_string={"x-oss-process": process})
    fields = {child.tag: child.text for child in ET.fromstring(response.data)}
    assert response.status_code == 400 and fields["Code"] == "InvalidArgument"
    assert fields["EC"] == response.headers["x-oss-ec"] == "0040-00000212"
    assert main(["process", str(FIXTURES / "example.jpg"), process, str(tmp_path / "out.jpg")]) == 1
    err = capsys.readouterr().err
    assert f"400 InvalidArgument EC 0040-00000212: {fields['Message']}" in err


# --- cache -----------------------------------------------------------------------------------------

def test_cache_stats_and_clear(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(f'cache_dir = "{tmp_path / "cache"}"\n')
    client = Client(ImageMiddleware(static_app(FIXTURES), Config.load(conf, environ={})))
    bodies = 0
    for width in (100, 120, 140):
        response = client.get("/example.jpg", query_string={"x-oss-process": f"image/resize,w_{width}"})
        bodies += len(response.data)
        response.close()
    assert main(["--config", str(conf), "cache", "stats"]) == 0
    out = capsys.readouterr().out
    assert "results:   3" in out
    stored = int(out.split("bytes:")[1].split()[0])
    assert bodies <= stored < bodies + 3 * 4096            # the bodies and their small headers
    assert main(["--config", str(conf), "cache", "clear"]) == 0
    assert f"cleared 3 results ({stored} bytes)" in capsys.readouterr().out
    assert main(["--config", str(conf), "cache", "stats"]) == 0
    out = capsys.readouterr().out
    # An empty cache stores nothing; diskcache's SQLite file (32 KB even when empty) is the index.
    assert "results:   0" in out and "bytes:     0 of" in out and "index:" in out


def test_cache_command_without_a_disk_tier(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text('cache_dir = ""\n')
    assert main(["--config", str(conf), "cache", "stats"]) == 1
    assert "cache_dir is not set" in capsys.readouterr().err


# --- which configuration -----------------------------------------------------------------------------

def test_every_command_finds_its_configuration_the_same_way(tmp_path, monkeypatch, capsys):
    """--config PATH, else ./conf/imgmiddleware.toml, else the packaged default."""
    monkeypatch.chdir(tmp_path)
    assert config_file(None) == packaged_config_file()
    assert main(["cache", "stats"]) == 0
    assert f"directory: {tmp_path / '.cache' / 'imgmiddleware'}" in capsys.readouterr().out

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "imgmiddleware.toml").write_text('cache_dir = "local"\nmax_process_length = 5\n')
    assert config_file(None) == Path("conf") / "imgmiddleware.toml"
    assert main(["cache", "stats"]) == 0
    assert f"directory: {tmp_path / 'local'}" in capsys.readouterr().out
    assert main(["process", str(FIXTURES / "example.jpg"), "image/resize,w_100", "out.jpg"]) == 1
    assert "0017-00000288" in capsys.readouterr().err      # the local file's cap on the string

    mine = tmp_path / "mine.toml"
    mine.write_text('cache_dir = "mine"\n')
    assert config_file(str(mine)) == mine
    assert main(["--config", str(mine), "cache", "stats"]) == 0
    assert f"directory: {tmp_path / 'mine'}" in capsys.readouterr().out


# --- serve -----------------------------------------------------------------------------------------

class Served:
    """`imgmiddleware serve ARGS` in ``cwd`` on a free loopback port, its output collected as it comes."""

    def __init__(self, args: list[str], cwd: Path, workers: int = 1) -> None:
        self.base = f"http://127.0.0.1:{free_port()}"
        self.proc = start_serve([*args, "--bind", self.base[len("http://"):], "--workers", str(workers)],
                                cwd=cwd)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_until(self, predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            assert self.proc.poll() is None, "serve exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n" + "\n".join(self.lines)
            time.sleep(0.05)

    def urls(self) -> list[str]:
        return [line.strip() for line in self.lines if line.startswith("  http://")]


@contextmanager
def serving(args: list[str], cwd: Path, workers: int = 1):
    served = Served(args, cwd, workers)
    try:
        wait_for(served.base + "/", served.proc)
        served.wait_until(lambda lines: any("imgmiddleware is serving" in line for line in lines), "URLs")
        served.wait_until(lambda lines: sum("Booting worker" in line for line in lines) >= workers, "workers")
        yield served
    finally:
        stop(served.proc)
        served.reader.join(timeout=5)
        served.proc.stdout.close()


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def frames_of(body: bytes) -> int:
    with Image.open(io.BytesIO(body)) as image:
        return getattr(image, "n_frames", 1)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """What a new user starts: `imgmiddleware serve` with no options, in a directory of their own
    outside the repository (so no ./conf/ is there), with two workers."""
    home = tmp_path_factory.mktemp("first-run")
    assert REPO not in home.parents and not (home / "conf").exists()
    with serving([], cwd=home, workers=2) as served:
        yield served


def test_serve_outside_the_repository_runs_the_packaged_default(first_run):
    base = first_run.base
    status, headers, body = fetch(base + "/_viewer/?bucket=examplebucket")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    status, headers, body = fetch(base + "/examplebucket/example.jpg!oss-pic-style-w-100")
    assert status == 200 and size_of(body)[0] == 100

    import oss2   # the test extra has it
    bucket = oss2.Bucket(oss2.Auth("imgmw-demo-key", "imgmw-demo-secret"), base, "examplebucket")
    result = bucket.get_object("example.jpg", process="image/resize,m_fixed,w_100,h_100")
    assert result.status == 200 and size_of(result.read()) == (100, 100)


def test_serve_says_once_which_configuration_it_loaded(first_run):
    """By path, from the master, not once per worker."""
    named = [line for line in first_run.lines if str(packaged_config_file()) in line]
    assert len(named) == 1 and "configuration" in named[0] and "packaged default" in named[0], named


def test_serve_says_once_which_font_file_serves_each_name(first_run):
    """The font table, from the master before the workers fork (they inherit it): one line per OSS
    font name, naming the file that draws it."""
    from imgmiddleware.imaging.fonts import FONT_NAMES, font_table_for

    table = font_table_for(Config.load(packaged_config_file()))
    for name in FONT_NAMES:
        lines = [line for line in first_run.lines if f"fonts: {name} -> " in line]
        assert len(lines) == 1, (name, lines)
        assert table.faces[name].path in lines[0]
    assert not [line for line in first_run.lines if "NO FONT FILE" in line or "NO CHINESE" in line]


def test_serve_says_once_which_decoder_reads_png_sources(first_run):
    """The wuffs extra is optional (it compiles its binding): the master says whether it is in use."""
    lines = [line for line in first_run.lines if "PNG sources: " in line]
    assert len(lines) == 1 and "PNG sources: Wuffs (the wuffs extra)" in lines[0], lines


def test_every_printed_url_does_what_it_says(first_run):
    """Each URL answers 200; every example on the animated GIF still has its frames (rotate, blur
    or circle would have made it one still frame, so none is printed for it)."""
    urls = first_run.urls()
    gifs = [url for url in urls if urlsplit(url).path.endswith(".gif")]
    assert any("x-oss-process" in url for url in gifs) and len(urls) > len(gifs)
    for url in urls:
        status, headers, body = fetch(url)
        assert status == 200, (url, body[:300])
        if url in gifs:
            assert headers["Content-Type"] in ("image/gif", "image/webp"), url
            assert frames_of(body) > 1, url


def test_serve_root_names_objects_it_has(tmp_path):
    """--root DIR with buckets of its own: URLs of its first images (a still one and an animated one)
    and the viewer on a bucket DIR has; nothing about examplebucket."""
    root = tmp_path / "data"
    for folder in ("albums", "docs", "pets", "photos/trip"):
        (root / folder).mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("no image")
    (root / "photos" / "notes.txt").write_text("no image")
    shutil.copy(SAMPLES / "example.jpg", root / "photos" / "trip" / "black cat.jpg")
    shutil.copy(SAMPLES / "example.gif", root / "pets" / "dog.gif")
    with serving(["--root", str(root)], cwd=tmp_path) as served:
        urls = served.urls()
        paths = {unquote(urlsplit(url).path) for url in urls}
        assert paths == {"/photos/trip/black cat.jpg", "/pets/dog.gif"}
        for url in urls:
            assert fetch(url)[0] == 200, url
        assert any(line.endswith("/_viewer/?bucket=photos") for line in served.lines), served.lines
    assert not any("examplebucket" in line for line in served.lines)


def test_serve_root_without_images_says_so(tmp_path):
    root = tmp_path / "data"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("no image")
    with serving(["--root", str(root)], cwd=tmp_path) as served:
        serving_line = next(line for line in served.lines if "imgmiddleware is serving" in line)
        assert "no images" in serving_line and "try:" not in serving_line
        assert not served.urls()
        assert any(line.endswith("/_viewer/?bucket=docs") for line in served.lines), served.lines


@pytest.mark.parametrize("bind, warns", [
    ("127.0.0.1:8080", False), ("[::1]:8080", False), ("localhost:8080", False),
    ("unix:/run/imgmiddleware.sock", False), ("0.0.0.0:8080", True), ("[::]:8080", True),
    ("192.0.2.10:8080", True), ("example.com:80", True)])
def test_serve_warns_when_bound_beyond_loopback(bind, warns):
    """Slow clients are cut off by the worker itself, but connections per client and TLS need a front."""
    from imgmiddleware.cli import exposure_warning

    warning = exposure_warning(bind)
    assert bool(warning) is warns
    if warns:
        assert bind in warning and "deploy/nginx-front.conf" in warning
