"""The imgmiddleware command: offline processing and the cache operations."""

from __future__ import annotations

from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.cli import main
from imgmiddleware.origins.static import static_app

from .conftest import FIXTURES, size_of


def test_process_writes_the_result(tmp_path, capsys):
    out = tmp_path / "out.webp"
    assert main(["process", str(FIXTURES / "example.jpg"), "image/resize,w_100/format,webp", str(out)]) == 0
    assert out.read_bytes()[8:12] == b"WEBP" and size_of(out.read_bytes()) == (100, 67)
    assert main(["process", str(FIXTURES / "example.jpg"), "image/resize,w_0", str(out)]) == 1
    assert "0040-00000312" in capsys.readouterr().err


def test_cache_stats_and_clear(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(f'cache_dir = "{tmp_path / "cache"}"\n')
    client = Client(ImageMiddleware(static_app(FIXTURES), Config.load(conf, environ={})))
    for width in (100, 120, 140):
        client.get("/example.jpg", query_string={"x-oss-process": f"image/resize,w_{width}"}).close()
    assert main(["--config", str(conf), "cache", "stats"]) == 0
    assert "results:   3" in capsys.readouterr().out
    assert main(["--config", str(conf), "cache", "clear"]) == 0
    assert "cleared 3 results" in capsys.readouterr().out
    assert main(["--config", str(conf), "cache", "stats"]) == 0
    assert "results:   0" in capsys.readouterr().out


def test_cache_command_without_a_disk_tier(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text('cache_dir = ""\n')
    assert main(["--config", str(conf), "cache", "stats"]) == 1
    assert "cache_dir is not set" in capsys.readouterr().err
