"""The image style viewer (issue 10): a static page, served under ``Config.viewer_path``, for trying
process strings on a bucket's objects, OSS's ImageStyleViewer in miniature.

The page is plain HTML, CSS and JavaScript shipped as package data (``viewer/static/``): no build
step, nothing fetched from elsewhere. It talks to the server only through the public OSS interface
(ListBuckets, ListObjects, GET with ``x-oss-process``, the style API), signing V1 in the browser with
the key the user types, so it has no powers a client lacks. The one document the viewer adds,
``<viewer_path>actions.json``, is the parser's own action tables (``ops.ACTIONS``) as JSON, so the
page's form builder cannot drift from the parser.

Every URL the page builds is relative to the page itself, so it works wherever the app is mounted
(a WSGI ``SCRIPT_NAME`` such as werkzeug's DispatcherMiddleware or gunicorn's, or a proxy that strips
a prefix and says nothing): index.html carries the way up from the page to the mount root
(``<meta name="imgmw-root" content="../">``, one ``../`` per segment of ``viewer_path``), and the page
puts objects under that root. Signatures still name ``/bucket/key``, as the server checks them: the
bucket app and the middleware take bucket and key from ``PATH_INFO``, which never holds the prefix.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

from werkzeug.wrappers import Response

from ..ops import ACTIONS
from ..ops.base import Base64Text, Choice, HexColor, IntRange, Param
from ..styles import STYLE_NAME

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json",
                 ".png": "image/png", ".svg": "image/svg+xml"}

# Scripts and styles from files of this origin only (no inline code, no eval); images from this
# origin and from blob: URLs, which are the page's own fetched results. Requests go to this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-cache"))


def _kind(param: Param) -> dict:
    kind = param.kind
    if isinstance(kind, IntRange):
        described = {"type": "int", "min": kind.lo, "max": kind.hi}
    elif isinstance(kind, Choice):
        described = {"type": "choice", "values": list(kind.values)}
    elif isinstance(kind, HexColor):
        described = {"type": "color"}
    elif isinstance(kind, Base64Text):
        described = {"type": "base64", "max_bytes": kind.max_bytes}
    else:
        described = {"type": "text"}
    default = param.default
    if default is not None:
        default = param.kind.canon(default) if isinstance(default, tuple) else default
    return {"key": param.key, **described, "describe": kind.describe(), "default": default,
            "ec": param.ec, "range_ec": param.range_ec, "code": param.code, "doc": param.doc}


def actions_document() -> dict:
    """The action tables as the form builder needs them: every parameter with its kind, range,
    default and EC, in the parser's order."""
    return {
        "actions": [{"name": spec.name, "role": spec.role, "doc": spec.doc,
                     "positional": _kind(spec.positional) if spec.positional is not None else None,
                     "params": [_kind(p) for p in spec.params],
                     "required": spec.required, "missing_ec": spec.missing_ec,
                     "many_values_ec": spec.many_values_ec}
                    for spec in ACTIONS.values()],
        "style_name": STYLE_NAME.pattern.removesuffix(r"\Z"),
    }


def static_files() -> dict[str, bytes]:
    """name -> bytes of the page's files, read through importlib.resources (so from an installed
    wheel as well as from a checkout)."""
    folder = resources.files(__name__).joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.is_file() and not entry.name.startswith(".")}


class Viewer:
    """A tiny static responder for the page under ``path`` ("/_viewer/"): GET and HEAD, strong
    ETags computed once (304 on If-None-Match), the Content-Security-Policy above."""

    def __init__(self, path: str) -> None:
        self.path = "/" + path.strip("/") + "/"
        files = static_files()
        files["index.html"] = _with_root(files["index.html"], self.path)
        files["actions.json"] = json.dumps(actions_document(), indent=1).encode("utf-8")
        self.files = {name: (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
                      for name, data in files.items()}

    def matches(self, environ) -> bool:
        path = environ.get("PATH_INFO", "")
        return path == self.path[:-1] or path.startswith(self.path)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == self.path[:-1]:
            response = Response(status=308, headers={"Location": self._location(environ)})
            return response(environ, start_response)
        name = path[len(self.path):] or "index.html"
        method = environ.get("REQUEST_METHOD", "GET")
        if name not in self.files:
            response = Response("Not Found\n", status=404, mimetype="text/plain")
        elif method not in ("GET", "HEAD"):
            response = Response("Method Not Allowed\n", status=405, mimetype="text/plain",
                                headers={"Allow": "GET, HEAD"})
        else:
            data, etag = self.files[name]
            suffix = "." + name.rpartition(".")[2]
            response = Response(data, content_type=CONTENT_TYPES.get(suffix, "application/octet-stream"))
            response.headers["ETag"] = etag
            response.make_conditional(environ)
        for header, value in SECURITY_HEADERS:
            response.headers[header] = value
        return response(environ, start_response)

    def _location(self, environ) -> str:
        """Relative ("_viewer/?..."): the browser resolves it against the URL it asked for, which
        holds any mount prefix, even one a proxy strips without setting SCRIPT_NAME."""
        query = environ.get("QUERY_STRING", "")
        return self.path.rstrip("/").rpartition("/")[2] + "/" + ("?" + query if query else "")


ROOT_MARKER = b'<meta name="imgmw-root" content="../">'


def _with_root(page: bytes, path: str) -> bytes:
    """index.html with the relative way from ``path`` up to the mount root (the file ships with
    the one for a single-segment path such as "/_viewer/")."""
    if ROOT_MARKER not in page:
        raise RuntimeError("viewer/static/index.html lost its imgmw-root meta element")
    depth = path.strip("/").count("/") + 1
    return page.replace(ROOT_MARKER, ROOT_MARKER.replace(b'"../"', b'"' + b"../" * depth + b'"'))
