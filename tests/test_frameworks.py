"""Frameworks: a real Django project and a real Flask app (tests/frameworks/) serving files, wrapped by
the middleware exactly as the README shows, and processed through their own request cycle.

    Django (tests/frameworks/django_site/wsgi.py)   application = ImageMiddleware(get_wsgi_application())
    Flask  (tests/frameworks/flask_app.py)          app.wsgi_app = ImageMiddleware(app.wsgi_app)

Each framework is driven twice: by werkzeug's test Client over the very WSGI objects a server would
run (``application``, ``app``), and by gunicorn serving them over real HTTP.

What the apps do for themselves and must keep doing under the middleware:
- /media/<name>: the files of tests/fixtures (Django: django.views.static.serve, a FileResponse with
  Last-Modified; Flask: send_from_directory, with ETag and Last-Modified). Both hand their open file
  to ``wsgi.file_wrapper``.
- /files/<name> (Django only): a bare ``FileResponse(open(...))`` view, with no validator at all.
- /private/<name>: the same files, only with ``X-Api-Key: letmein`` or the cookie ``session=letmein``;
  otherwise the framework's own 403 page. The middleware's subrequest carries the client's headers
  and cookies, so this rule decides for processed requests too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

import imgmiddleware.subrequest as subrequest
from imgmiddleware import Config, ImageMiddleware

from .conftest import FIXTURES, closed, fixture_bytes, format_of, oss_error, ok, size_of
from .servers import free_port, stop, wait_for

REPO = Path(__file__).resolve().parent.parent
TOKEN = "letmein"
# WSGI lint findings about the middleware's or the frameworks' answers fail the test.
pytestmark = pytest.mark.filterwarnings("error::werkzeug.middleware.lint.WSGIWarning",
                                        "error::werkzeug.middleware.lint.HTTPWarning")

STYLES = {"thumb": "image/resize,w_120/format,webp"}

RESIZE = "image/resize,w_100"               # example.jpg is 400 x 267
WEBP = "image/resize,w_200/format,webp"     # nodejs-1024x768.png


@dataclass
class Framework:
    name: str
    wrapped: Callable        # the module's WSGI object, as a server runs it
    bare: Callable           # the same framework app without the middleware
    styled: Callable         # the app wrapped again, with Config(styles=STYLES)
    target: str              # what gunicorn serves
    file_prefixes: tuple     # paths that serve tests/fixtures


def _django() -> Framework:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.frameworks.django_site.settings")
    from django.core.wsgi import get_wsgi_application

    from tests.frameworks.django_site.wsgi import application

    assert isinstance(application, ImageMiddleware)
    return Framework("django", application, get_wsgi_application(),
                     ImageMiddleware(get_wsgi_application(), Config(styles=STYLES)),
                     "tests.frameworks.django_site.wsgi:application", ("/media/", "/files/"))


def _flask() -> Framework:
    from tests.frameworks.flask_app import app, create_app

    assert isinstance(app.wsgi_app, ImageMiddleware)
    styled = create_app()
    styled.wsgi_app = ImageMiddleware(styled.wsgi_app, Config(styles=STYLES))   # the README's Flask line, with a Config
    return Framework("flask", app, create_app(), styled, "tests.frameworks.flask_app:app", ("/media/",))


@pytest.fixture(scope="module", params=["django", "flask"])
def fw(request) -> Framework:
    return _django() if request.param == "django" else _flask()


def fetch(app, path: str, process: str | None = None, method: str = "GET", cookies: dict | None = None,
          **kwargs):
    """One request through werkzeug's test Client, the response read and closed. GETs go through
    LintMiddleware too (its Content-Length check does not know HEAD, so HEADs do not)."""
    if process is not None:
        path += ("&" if "?" in path else "?") + "x-oss-process=" + process
    test_client = Client(app if method == "HEAD" else LintMiddleware(app))
    for name, value in (cookies or {}).items():
        test_client.set_cookie(name, value)
    return closed(test_client.open(path, method=method, **kwargs))


def same_response(a, b) -> None:
    """Status, headers (but the clock's Date) and bytes are the same."""
    assert a.status == b.status
    assert [h for h in a.headers.to_wsgi_list() if h[0] != "Date"] == \
        [h for h in b.headers.to_wsgi_list() if h[0] != "Date"]
    assert a.get_data() == b.get_data()


# --- processed images ---------------------------------------------------------------------------------

def test_resize(fw):
    for prefix in fw.file_prefixes:
        response = fetch(fw.wrapped, prefix + "example.jpg", RESIZE)
        body = ok(response, "image/jpeg")
        assert size_of(body) == (100, 67) and format_of(body) == "JPEG", prefix
        assert response.headers["x-oss-request-id"]
        if prefix == "/files/":   # a bare FileResponse has no ETag or Last-Modified: never cached
            assert response.headers["x-imgmw-cache"] == "bypass"


def test_format_webp(fw):
    for prefix in fw.file_prefixes:
        body = ok(fetch(fw.wrapped, prefix + "nodejs-1024x768.png", WEBP), "image/webp")
        assert size_of(body) == (200, 150) and format_of(body) == "WEBP", prefix


def test_style(fw):
    body = ok(fetch(fw.styled, "/media/example.jpg", "style/thumb"), "image/webp")
    assert size_of(body) == (120, 80) and format_of(body) == "WEBP"
    # the README's one-liner has no styles: an unknown style is OSS's error, not the framework's page
    error = oss_error(fetch(fw.wrapped, "/media/example.jpg", "style/thumb"))
    assert (error["status"], error["Code"]) == (404, "NoSuchStyle")


def test_source_validators_kept_and_conditional_get(fw):
    first = fetch(fw.wrapped, "/media/example.jpg", RESIZE)
    ok(first, "image/jpeg")
    source = fetch(fw.bare, "/media/example.jpg")
    assert first.headers["Last-Modified"] == source.headers["Last-Modified"]
    assert first.headers.get("ETag") == source.headers.get("ETag")     # Flask's; Django's serve has none
    validator = ({"If-None-Match": source.headers["ETag"]} if "ETag" in source.headers
                 else {"If-Modified-Since": source.headers["Last-Modified"]})
    again = fetch(fw.wrapped, "/media/example.jpg", RESIZE, headers=validator)
    assert again.status_code == 304 and again.get_data() == b""


def test_the_file_goes_through_wsgi_file_wrapper(fw, monkeypatch):
    """Django's FileResponse and Flask's send_from_directory hand their open file to the subrequest's
    wsgi.file_wrapper: the middleware reads the file itself, in one call."""
    captured = []

    class Spy(subrequest.FileCapture):
        def __init__(self, filelike, block_size=1 << 16):
            captured.append(filelike)
            super().__init__(filelike, block_size)

    monkeypatch.setattr(subrequest, "FileCapture", Spy)
    for prefix in fw.file_prefixes:
        captured.clear()
        ok(fetch(fw.wrapped, prefix + "f.jpg", "image/resize,w_50"), "image/jpeg")
        assert len(captured) == 1, prefix
        assert Path(captured[0].name).resolve() == (FIXTURES / "f.jpg").resolve()
        assert captured[0].closed


# --- everything else is the framework's own answer ----------------------------------------------------

def test_unprocessed_requests_are_the_frameworks_own(fw):
    for prefix in fw.file_prefixes:
        for name in ("example.jpg", "nodejs-1024x768.png", "missing.jpg"):
            wrapped, bare = fetch(fw.wrapped, prefix + name), fetch(fw.bare, prefix + name)
            same_response(wrapped, bare)
            if name != "missing.jpg":
                assert wrapped.status_code == 200 and wrapped.get_data() == fixture_bytes(name)
            else:
                assert wrapped.status_code == 404
    for method in ("HEAD", "POST"):
        same_response(fetch(fw.wrapped, "/media/example.jpg", method=method),
                      fetch(fw.bare, "/media/example.jpg", method=method))
    # a query the middleware does not own goes through as it is
    same_response(fetch(fw.wrapped, "/media/example.jpg?v=2"), fetch(fw.bare, "/media/example.jpg?v=2"))


def test_processing_a_missing_file_keeps_the_frameworks_404(fw):
    for prefix in fw.file_prefixes:
        processed = fetch(fw.wrapped, prefix + "missing.jpg", RESIZE)
        assert processed.status_code == 404
        assert processed.headers["Content-Type"].startswith("text/html")
        same_response(processed, fetch(fw.bare, prefix + "missing.jpg"))
        head = fetch(fw.wrapped, prefix + "missing.jpg", RESIZE, method="HEAD")
        assert head.status_code == 404 and head.get_data() == b""


def test_the_frameworks_access_rules_apply_to_the_subrequest(fw):
    path = "/private/example.jpg"
    refused = fetch(fw.wrapped, path, RESIZE)
    assert refused.status_code == 403
    same_response(refused, fetch(fw.bare, path))          # the framework's own 403 page
    for credentials in ({"headers": {"X-Api-Key": TOKEN}}, {"cookies": {"session": TOKEN}}):
        body = ok(fetch(fw.wrapped, path, RESIZE, **credentials), "image/jpeg")
        assert size_of(body) == (100, 67)
    # the result is now cached, and still no one without the key gets it
    assert fetch(fw.wrapped, path, RESIZE).status_code == 403
    assert fetch(fw.wrapped, path, RESIZE, headers={"X-Api-Key": "wrong"}).status_code == 403
    same_response(fetch(fw.wrapped, path, headers={"X-Api-Key": TOKEN}),
                  fetch(fw.bare, path, headers={"X-Api-Key": TOKEN}))


def test_head(fw):
    get = fetch(fw.wrapped, "/media/nodejs-1024x768.png", WEBP)
    head = fetch(fw.wrapped, "/media/nodejs-1024x768.png", WEBP, method="HEAD")
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Type"] == "image/webp"
    assert head.headers["Content-Length"] == str(len(ok(get, "image/webp")))
    refused = fetch(fw.wrapped, "/private/example.jpg", RESIZE, method="HEAD")
    assert refused.status_code == 403 and refused.get_data() == b""


def test_errors_are_oss_xml(fw):
    for path in ("/media/example.jpg", "/media/missing.jpg", "/private/example.jpg"):
        response = fetch(fw.wrapped, path, "image/resize,w_0")
        error = oss_error(response)
        assert (error["status"], error["Code"], error["EC"], error["header_ec"]) == \
            (400, "InvalidArgument", "0040-00000312", "0040-00000312"), path
    head = fetch(fw.wrapped, "/media/example.jpg", "image/resize,w_0", method="HEAD")
    assert head.status_code == 400 and head.get_data() == b""
    # an unknown action: OSS's error too, before the framework is asked
    bad = oss_error(fetch(fw.wrapped, "/media/example.jpg", "image/nosuchaction,x_1"))
    assert (bad["status"], bad["Code"], bad["EC"]) == (400, "InvalidArgument", "0040-00000213")


# --- a real server per framework ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(fw):
    """gunicorn serving the framework's module object on a free port; always stopped."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMGMW_") and k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--log-level", "warning", fw.target],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/media/example.jpg", proc)
        yield base
    finally:
        stop(proc)


def http(url: str, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def test_over_real_http(fw, served):
    q = "?x-oss-process="
    status, headers, body = http(served + "/media/example.jpg" + q + RESIZE)
    assert (status, headers["Content-Type"], size_of(body)) == (200, "image/jpeg", (100, 67))
    assert int(headers["Content-Length"]) == len(body)

    status, headers, body = http(served + "/media/nodejs-1024x768.png" + q + WEBP)
    assert (status, headers["Content-Type"], size_of(body), format_of(body)) == \
        (200, "image/webp", (200, 150), "WEBP")
    status, headers, head_body = http(served + "/media/nodejs-1024x768.png" + q + WEBP, "HEAD")
    assert (status, head_body, int(headers["Content-Length"])) == (200, b"", len(body))

    for prefix in fw.file_prefixes:      # through gunicorn's own wsgi.file_wrapper (sendfile)
        status, _, body = http(served + prefix + "nodejs-1024x768.png")
        assert (status, body) == (200, fixture_bytes("nodejs-1024x768.png"))

    plain_404 = http(served + "/media/missing.jpg")
    processed_404 = http(served + "/media/missing.jpg" + q + RESIZE)
    assert plain_404[0] == processed_404[0] == 404 and plain_404[2] == processed_404[2]
    assert processed_404[1]["Content-Type"].startswith("text/html")

    plain_403 = http(served + "/private/example.jpg")
    processed_403 = http(served + "/private/example.jpg" + q + RESIZE)
    assert plain_403[0] == processed_403[0] == 403 and plain_403[2] == processed_403[2]
    status, headers, body = http(served + "/private/example.jpg" + q + RESIZE, headers={"X-Api-Key": TOKEN})
    assert (status, headers["Content-Type"], size_of(body)) == (200, "image/jpeg", (100, 67))

    status, headers, body = http(served + "/media/example.jpg" + q + "image/resize,w_0")
    assert (status, headers["Content-Type"], headers["x-oss-ec"]) == (400, "application/xml", "0040-00000312")
    assert b"<Code>InvalidArgument</Code>" in body and b"<EC>0040-00000312</EC>" in body
