"""The style viewer's HTTP side: the page and its files under ``viewer_path``, their headers, the
actions.json taken from the parser's tables, off unless configured, shipped as package data.

The browser side is tests/test_viewer_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
from email.utils import formatdate
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from PIL import Image
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

from imgmiddleware import Config
from imgmiddleware.cli import build_app
from imgmiddleware.ops import ACTIONS
from imgmiddleware.ops.base import Base64Text, Choice, HexColor, IntRange
from imgmiddleware.styles import STYLE_NAME

from .conftest import FIXTURES, run_in_built_package
from .test_deploy import container_env, container_instructions, unit_environment, unit_sections

# werkzeug's lint: an answer to HEAD keeps the GET's Content-Length with no body (as it should).
pytestmark = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")

REPO = Path(__file__).resolve().parent.parent
VIEWER = "/_viewer/"
PAGE_FILES = ("index.html", "viewer.js", "viewer.css")


def client(tmp_path, mount: str = "", **config) -> Client:
    """The embedded default app on a bucket with example.jpg; under ``mount`` ("/media") the way
    werkzeug's DispatcherMiddleware mounts it (SCRIPT_NAME), with every other path another app's 404,
    so a URL that loses the prefix fails."""
    bucket = tmp_path / "data" / "examplebucket"
    bucket.mkdir(parents=True)
    (bucket / "example.jpg").write_bytes((FIXTURES / "example.jpg").read_bytes())
    app = build_app(str(tmp_path / "data"), Config(**config))
    if mount:
        app = DispatcherMiddleware(NotFound(), {mount: app})
    return Client(LintMiddleware(app))


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


# werkzeug's lint still wants an absolute Location; RFC 9110 (10.2.2) allows a relative one, which
# the viewer's redirect is so that it keeps any mount prefix.
@pytest.mark.filterwarnings("ignore:Absolute URLs required for location header")
def test_other_paths_and_methods(viewer):
    redirect = fetch(viewer, VIEWER.rstrip("/"), query_string="bucket=examplebucket")
    assert redirect.status_code == 308
    assert urljoin("http://localhost" + VIEWER.rstrip("/"), redirect.headers["Location"]) == \
        "http://localhost" + VIEWER + "?bucket=examplebucket"
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
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import imgmiddleware.viewer as v; "
             "assert v.__file__.startswith(sys.argv[1]), v.__file__; "
             "print(sorted(v.static_files()))")
    out = run_in_built_package(tmp_path, probe)
    assert set(PAGE_FILES) <= set(eval(out))


def test_serve_prints_the_viewer_url(tmp_path, capsys):
    from types import SimpleNamespace

    from imgmiddleware.cli import print_urls

    listener = SimpleNamespace(sock=SimpleNamespace(getsockname=lambda: ("127.0.0.1", 8080)))
    server = SimpleNamespace(LISTENERS=[listener])
    (tmp_path / "examplebucket").mkdir()              # the page opens on the root's bucket
    (tmp_path / "examplebucket" / "example.jpg").write_bytes((FIXTURES / "example.jpg").read_bytes())
    print_urls(server, str(tmp_path), viewer_path=Config.load(REPO / "conf" / "imgmiddleware.toml",
                                                              environ={}).viewer_path)
    assert "http://127.0.0.1:8080/_viewer/?bucket=examplebucket" in capsys.readouterr().out
    print_urls(server, str(tmp_path))
    assert "style viewer" not in capsys.readouterr().out


# --- mounted under a prefix (SCRIPT_NAME) ---------------------------------------------------------

MOUNT = "/media"


def page_root(c: Client, page_path: str) -> str:
    """The mount root the page computes: its imgmw-root meta resolved against the page's URL."""
    page = _Tags()
    page.feed(fetch(c, page_path).get_data(as_text=True))
    (content,) = [attrs["content"] for tag, attrs in page.tags
                  if tag == "meta" and attrs.get("name") == "imgmw-root"]
    return urlsplit(urljoin("http://localhost" + page_path, content)).path


def browser_signed(method: str, resource: str, content_type: str = "", secret: str = "sk") -> dict:
    """The headers viewer.js sends with a typed key: OSS V1 with the date in x-oss-date."""
    date = formatdate(usegmt=True)
    to_sign = "\n".join((method, "", content_type, date, f"x-oss-date:{date}\n" + resource))
    signature = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    headers = {"x-oss-date": date, "Authorization": "OSS ak:" + signature}
    return headers | ({"Content-Type": content_type} if content_type else {})


@pytest.mark.filterwarnings("ignore:Absolute URLs required for location header")
@pytest.mark.parametrize("viewer_path", [VIEWER, "/tools/viewer/"])
def test_the_page_finds_its_files_and_the_mount_root_under_a_prefix(tmp_path, viewer_path):
    c = client(tmp_path, mount=MOUNT, viewer_path=viewer_path)
    page_path = MOUNT + viewer_path
    assert page_root(c, page_path) == MOUNT + "/"
    assert page_root(c, page_path + "index.html") == MOUNT + "/"
    page = _Tags()
    page.feed(fetch(c, page_path).get_data(as_text=True))
    linked = [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags if tag in ("script", "link")]
    for name in linked + ["actions.json"]:              # actions.json: fetched by viewer.js, relative
        url = urljoin(page_path, name)
        assert url.startswith(page_path) and fetch(c, url).status_code == 200, url
    redirect = fetch(c, page_path.rstrip("/"), query_string="bucket=examplebucket")
    assert urljoin("http://localhost" + page_path.rstrip("/"), redirect.headers["Location"]) == \
        "http://localhost" + page_path + "?bucket=examplebucket"
    assert fetch(c, viewer_path).status_code == 404       # outside the mount: the page is not there


def test_every_request_the_page_makes_answers_under_the_prefix(tmp_path):
    """What viewer.js asks, at the URLs it builds from the mount root, signed over "/bucket/key" as the
    server reads them from PATH_INFO (the prefix is SCRIPT_NAME, in no signature)."""
    c = client(tmp_path, mount=MOUNT, viewer_path=VIEWER, credentials={"ak": "sk"})
    root = page_root(c, MOUNT + VIEWER)
    obj = root + "examplebucket/example.jpg"

    buckets = fetch(c, root, headers=browser_signed("GET", "/"))                       # ListBuckets
    assert buckets.status_code == 200 and b"<Name>examplebucket</Name>" in buckets.get_data()
    listing = fetch(c, root + "examplebucket/", query_string="max-keys=1000")         # ListObjects
    assert listing.status_code == 200 and b"<Key>example.jpg</Key>" in listing.get_data()
    original = fetch(c, obj)                                                           # the original
    assert original.status_code == 200 and original.headers["Content-Type"] == "image/jpeg"

    resized = "/examplebucket/example.jpg?x-oss-process=image/resize,w_100"         # as signed
    result = fetch(c, obj, query_string="x-oss-process=image/resize,w_100")           # the check + result
    assert result.status_code == 200 and result.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(result.get_data())).size == (100, 67)
    signed = fetch(c, obj, query_string="x-oss-process=image/resize,w_100",
                   headers=browser_signed("GET", resized))
    assert signed.status_code == 200
    invalid = fetch(c, obj, query_string="x-oss-process=image/resize,w_99999")
    assert invalid.status_code == 400 and b"<Code>InvalidArgument</Code>" in invalid.get_data()

    body = b"<Style><Content>image/resize,w_64</Content></Style>"                     # save a style
    saved = c.put(root + "examplebucket/", query_string="style&styleName=small", data=body,
                  headers=browser_signed("PUT", "/examplebucket/?style&styleName=small", "application/xml"))
    saved.close()
    assert saved.status_code == 200
    styles = fetch(c, root + "examplebucket/", query_string="style",
                   headers=browser_signed("GET", "/examplebucket/?style"))
    assert styles.status_code == 200 and b"<Name>small</Name>" in styles.get_data()
    styled = fetch(c, obj, query_string="x-oss-process=style/small")
    assert Image.open(io.BytesIO(styled.get_data())).size == (64, 43)

    # the prefix in the signed resource is what the server does not check: refused
    wrong = fetch(c, obj, query_string="x-oss-process=image/resize,w_100",
                  headers=browser_signed("GET", MOUNT + resized))
    assert wrong.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in wrong.get_data()
    # and without the prefix nothing of it is reached
    assert fetch(c, "/examplebucket/example.jpg").status_code == 404
