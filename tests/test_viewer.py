"""The style viewer's HTTP side: the page and its files under ``viewer_path``, their headers, the
actions.json taken from the parser's tables, off unless configured, shipped as package data.

The browser side is tests/test_viewer_browser.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

from imgmiddleware import Config
from imgmiddleware.cli import build_app
from imgmiddleware.ops import ACTIONS
from imgmiddleware.ops.base import Base64Text, Choice, HexColor, IntRange
from imgmiddleware.styles import STYLE_NAME

from .conftest import FIXTURES
from .test_deploy import container_env, container_instructions, unit_environment, unit_sections

# werkzeug's lint: an answer to HEAD keeps the GET's Content-Length with no body (as it should).
pytestmark = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")

REPO = Path(__file__).resolve().parent.parent
VIEWER = "/_viewer/"
PAGE_FILES = ("index.html", "viewer.js", "viewer.css")


def client(tmp_path, **config) -> Client:
    bucket = tmp_path / "data" / "examplebucket"
    bucket.mkdir(parents=True)
    (bucket / "example.jpg").write_bytes((FIXTURES / "example.jpg").read_bytes())
    return Client(LintMiddleware(build_app(str(tmp_path / "data"), Config(**config))))


def fetch(c: Client, path: str, **kwargs):
    response = c.get(path, **kwargs)
    response.get_data()
    response.close()
    return response


@pytest.fixture
def viewer(tmp_path) -> Client:
    return client(tmp_path, viewer_path=VIEWER, credentials={"ak": "sk"})


def test_the_page_and_its_files_are_served_with_a_strict_policy(viewer):
    expected = {"": "text/html; charset=utf-8", "viewer.js": "text/javascript; charset=utf-8",
                "viewer.css": "text/css; charset=utf-8", "actions.json": "application/json",
                "favicon.svg": "image/svg+xml"}
    for name, content_type in expected.items():
        response = fetch(viewer, VIEWER + name)
        assert response.status_code == 200, name
        assert response.headers["Content-Type"] == content_type
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        csp = dict(part.strip().split(" ", 1) for part in
                   response.headers["Content-Security-Policy"].split(";"))
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == csp["style-src"] == csp["connect-src"] == "'self'"
        assert csp["img-src"] == "'self' blob:"        # blob: the page's own fetched results
        assert csp["frame-ancestors"] == "'none'"
    assert "<title>Image style viewer" in fetch(viewer, VIEWER).get_data(as_text=True)


def test_files_have_etags_and_answer_conditional_requests(viewer):
    first = fetch(viewer, VIEWER + "viewer.js")
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    again = fetch(viewer, VIEWER + "viewer.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    head = viewer.head(VIEWER + "viewer.js")
    assert head.status_code == 200 and head.headers["ETag"] == etag and head.get_data() == b""
    head.close()


def test_other_paths_and_methods(viewer):
    redirect = fetch(viewer, VIEWER.rstrip("/"), query_string="bucket=examplebucket")
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith(VIEWER + "?bucket=examplebucket")
    assert fetch(viewer, VIEWER + "missing.js").status_code == 404
    post = viewer.post(VIEWER, data=b"x")
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"
    post.close()
    # the objects are still the bucket's, as before
    assert fetch(viewer, "/examplebucket/example.jpg").status_code == 200


def test_off_unless_configured(tmp_path):
    """Config() and every production file leave it off: the path is then an ordinary request,
    and "_viewer" can never be a bucket name (OSS bucket names start with a letter or digit)."""
    assert Config().viewer_path == ""
    plain = client(tmp_path)
    response = fetch(plain, VIEWER)
    assert response.status_code == 404 and response.headers["Content-Type"] == "application/xml"
    assert b"<Code>NoSuchBucket</Code>" in response.get_data()
    assert fetch(plain, VIEWER + "actions.json").headers["Content-Type"] == "application/xml"

    containerfile = (REPO / "deploy" / "Containerfile").read_text()
    assert container_env(container_instructions(containerfile))["IMGMW_VIEWER_PATH"] == ""
    service = unit_sections((REPO / "deploy" / "imgmiddleware.service").read_text())["Service"]
    assert unit_environment(service)["IMGMW_VIEWER_PATH"] == ""
    assert Config.load(None, environ={"IMGMW_VIEWER_PATH": ""}).viewer_path == ""


def test_bad_viewer_paths_are_refused():
    for bad in ("_viewer/", "/", "//"):
        with pytest.raises(ValueError, match="viewer_path"):
            Config(viewer_path=bad)


def _kind(kind) -> dict:
    if isinstance(kind, IntRange):
        return {"type": "int", "min": kind.lo, "max": kind.hi}
    if isinstance(kind, Choice):
        return {"type": "choice", "values": list(kind.values)}
    if isinstance(kind, HexColor):
        return {"type": "color"}
    assert isinstance(kind, Base64Text)
    return {"type": "base64", "max_bytes": kind.max_bytes}


def test_actions_json_is_the_parsers_tables(viewer):
    document = json.loads(fetch(viewer, VIEWER + "actions.json").get_data())
    assert [a["name"] for a in document["actions"]] == list(ACTIONS)
    for entry in document["actions"]:
        spec = ACTIONS[entry["name"]]
        assert (entry["role"], entry["required"], entry["missing_ec"], entry["doc"]) == \
            (spec.role, spec.required, spec.missing_ec, spec.doc)
        params = ([spec.positional] if spec.positional else []) + list(spec.params)
        listed = ([entry["positional"]] if entry["positional"] else []) + entry["params"]
        assert len(listed) == len(params)
        for param, described in zip(params, listed):
            assert described["key"] == param.key and described["ec"] == param.ec
            assert described["code"] == param.code and described["describe"] == param.kind.describe()
            assert {k: described[k] for k in _kind(param.kind)} == _kind(param.kind)
            if param.default is not None:   # the default, written as a URL would carry it
                assert param.kind.convert(str(described["default"])) == param.default
    assert re.fullmatch(document["style_name"], "oss-pic-style-w-100")
    assert document["style_name"] + r"\Z" == STYLE_NAME.pattern


def test_actions_json_is_public_metadata_only(tmp_path):
    """Nothing of the configuration (keys, buckets, styles) is in it: the same bytes for any config."""
    one = fetch(client(tmp_path / "a", viewer_path=VIEWER), VIEWER + "actions.json").get_data()
    other = fetch(client(tmp_path / "b", viewer_path="/tools/viewer/", credentials={"ak": "secret-sk"},
                         styles={"small": "image/resize,w_10"}), "/tools/viewer/actions.json").get_data()
    assert one == other and b"secret-sk" not in other and b"small" not in other


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data


def test_the_page_has_no_inline_code_and_fetches_nothing_from_elsewhere(viewer):
    page = _Tags()
    page.feed(fetch(viewer, VIEWER).get_data(as_text=True))
    assert page.script_text.strip() == ""
    scripts = [attrs["src"] for tag, attrs in page.tags if tag == "script"]
    assert scripts == ["viewer.js"]
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") or name == "style" for name in attrs), (tag, attrs)
        for name in ("src", "href"):
            if name in attrs:
                assert "//" not in attrs[name] and ":" not in attrs[name], attrs[name]
    for name in PAGE_FILES:
        body = fetch(viewer, VIEWER + name).get_data(as_text=True)
        assert not re.search(r"https?://|@import|\beval\(|new Function", body), name


def test_the_files_ship_as_package_data(tmp_path):
    """A non-editable install copies what setup.py's package_data names: build the package as a
    wheel would contain it and read the files back through importlib.resources from there."""
    build = tmp_path / "build"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
                   cwd=REPO, check=True, capture_output=True)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import imgmiddleware.viewer as v; "
             "assert v.__file__.startswith(sys.argv[1]), v.__file__; "
             "print(sorted(v.static_files()))")
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(build)], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    assert set(PAGE_FILES) <= set(eval(out))


def test_serve_prints_the_viewer_url(tmp_path, capsys):
    from types import SimpleNamespace

    from imgmiddleware.cli import print_urls

    listener = SimpleNamespace(sock=SimpleNamespace(getsockname=lambda: ("127.0.0.1", 8080)))
    server = SimpleNamespace(LISTENERS=[listener])
    print_urls(server, str(tmp_path), viewer_path=Config.load(REPO / "conf" / "imgmiddleware.toml",
                                                              environ={}).viewer_path)
    assert "http://127.0.0.1:8080/_viewer/?bucket=examplebucket" in capsys.readouterr().out
    print_urls(server, str(tmp_path))
    assert "style viewer" not in capsys.readouterr().out
