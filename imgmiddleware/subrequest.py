"""Ask the wrapped WSGI app for an object, as a GET subrequest, and read its body without copies.

The subrequest is the original request with everything that would change the bytes removed: Range,
conditional headers, Accept-Encoding, and the x-oss-process parameter itself (so a wrapped proxy to
a real OSS does not process twice). Apps that serve files through ``wsgi.file_wrapper`` (werkzeug's
SharedDataMiddleware, Django's FileResponse, the bundled bucket) hand us their file object, which we
read in one call instead of in 8 KB blocks.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from io import BytesIO
from typing import Callable, Iterable
from urllib.parse import unquote

from werkzeug.datastructures import Headers

from .errors import OssError, image_too_large

PROCESS_PARAM = "x-oss-process"
_STRIPPED = (
    "HTTP_RANGE", "HTTP_IF_RANGE", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE", "HTTP_ACCEPT_ENCODING", "HTTP_X_OSS_PROCESS", "CONTENT_TYPE",
    "CONTENT_LENGTH", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING",
    "RAW_URI", "REQUEST_URI",   # servers' copies of the original URI; PATH_INFO and QUERY_STRING rule
)
SUBREQUEST_MARK = "imgmiddleware.subrequest"   # set on every subrequest of the middleware
# Set on subrequests when the middleware has verified the outer request's signature: the AccessKeyId,
# or "" for an anonymous request. A wrapped app may then apply its ACL to that principal instead of
# checking a signature that covered the outer URL (with its x-oss-process), not the subrequest's.
PRINCIPAL_KEY = "imgmiddleware.principal"
# Set on a subrequest whose PATH_INFO is "/<bucket>/<key>" whatever its Host: a saveas into another
# bucket, made while the request came virtual-host style (Host: <its bucket>.<endpoint>).
PATH_STYLE_KEY = "imgmiddleware.path_style"


def wsgi_to_key(path: str) -> str:
    """PATH_INFO as WSGI gives it (PEP 3333: the URL's bytes as latin-1) -> the UTF-8 text of the key."""
    try:
        return path.encode("latin-1").decode("utf-8")
    except UnicodeError:        # not a WSGI string, or not UTF-8: taken as it is
        return path


def key_to_wsgi(path: str) -> str:
    """The reverse of wsgi_to_key(), for the PATH_INFO of a subrequest."""
    return path.encode("utf-8").decode("latin-1")


class PlainAddressing:
    """A wrapped app without buckets: every object is /<key>, and there is one (unnamed) bucket."""

    def bucket_of(self, environ) -> str:
        return ""

    def key_of(self, environ) -> str:
        return wsgi_to_key(environ.get("PATH_INFO", "")).lstrip("/")

    def object_path(self, environ, key: str, bucket: str | None = None) -> str:
        return key_to_wsgi("/" + key)


def query_pairs(query: str) -> list[tuple[str, str, str]]:
    """(raw pair, key, value) for each pair; values are %-decoded only, never '+'-as-space (spec §1.1)."""
    out = []
    for raw in query.split("&"):
        if raw:
            key, _, value = raw.partition("=")
            out.append((raw, unquote(key), unquote(value)))
    return out


def process_string(environ: dict) -> str | None:
    """The x-oss-process value of a request: exact lower-case query name first, then the header."""
    for _, key, value in query_pairs(environ.get("QUERY_STRING", "")):
        if key == PROCESS_PARAM:
            return value
    return environ.get("HTTP_X_OSS_PROCESS")


class FileCapture:
    """A ``wsgi.file_wrapper`` that keeps the file object so the body can be read in one call."""

    def __init__(self, filelike, block_size: int = 1 << 16) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterable[bytes]:
        while block := self.filelike.read(self.block_size):
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


@dataclass
class Upstream:
    """The wrapped app's answer: status line, headers and the (unread) body iterable."""
    status: str
    headers: Headers
    body: Iterable[bytes]
    written: list[bytes] = field(default_factory=list)   # data sent through write() (legacy apps)

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()

    def read(self, limit: int) -> bytes:
        """The whole body, or ImageTooLarge once it passes ``limit`` bytes. Closes the body."""
        try:
            declared = self.headers.get("Content-Length", type=int)
            if declared is not None and declared > limit:
                raise _too_large(limit)
            if isinstance(self.body, FileCapture) and not self.written:
                filelike = self.body.filelike
                # Ask for what the file holds (+1), not for limit + 1: CPython allocates the whole
                # request before reading, and a 20 MB buffer is a fresh mmap whose pages fault in on
                # every request (2.5 ms for a 4.4 MB photo), where a buffer of the file's size comes
                # back from the heap. Same bytes, same limit, same single read.
                remaining = _remaining(filelike)
                want = limit + 1 if remaining is None or remaining >= limit else remaining + 1
                data = filelike.read(want)
                if len(data) == want and want <= limit:   # the file grew since fstat: read on
                    data += filelike.read(limit + 1 - want)
                if len(data) > limit:
                    raise _too_large(limit)
                _check_complete(declared, len(data))
                return data
            chunks = list(self.written)
            size = sum(map(len, chunks))
            for chunk in self.body:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            _check_complete(declared, size)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            self.close()


def _check_complete(declared: int | None, size: int) -> None:
    """A body shorter than its Content-Length is a torn answer (an app or upstream that failed half
    way, a file truncated while it was read), never the object. It is not processed: the decoder
    would call it a corrupt image (400, the client's fault, which SDKs do not retry) or, for a
    format that decodes from its first bytes, make a wrong picture. 502 BadGateway, as for an
    upstream that breaks the connection, and nothing is cached (docs/COMPATIBILITY.md, decision 73)."""
    if declared is not None and size < declared:
        raise OssError("BadGateway", f"The source object ended after {size} of its {declared} bytes.",
                       status=502)


def _remaining(filelike) -> int | None:
    """Bytes left in a regular file from its position, or None when that cannot be known."""
    try:
        st = os.fstat(filelike.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - filelike.tell())
    except Exception:   # no fileno/tell (BytesIO, custom objects): read as before, up to the limit
        return None


def _too_large(limit: int):
    return image_too_large(f"The image is larger than {limit} bytes.")


def source_environ(environ: dict) -> dict:
    """A GET environ for the object itself, without anything that changes its bytes."""
    env = {k: v for k, v in environ.items() if k not in _STRIPPED}
    env["REQUEST_METHOD"] = "GET"
    env["QUERY_STRING"] = "&".join(
        raw for raw, key, _ in query_pairs(environ.get("QUERY_STRING", "")) if key != PROCESS_PARAM)
    env["wsgi.input"] = BytesIO()
    env["wsgi.file_wrapper"] = FileCapture
    env[SUBREQUEST_MARK] = True
    return env


def is_object_key(key: str) -> bool:
    """Whether ``key`` can only name an object under the app's root: not empty, not absolute, no
    '.' or '..' segment, no backslash or NUL. Anything else is never sent to the app."""
    if not key or key[0] == "/" or "\\" in key or "\0" in key:
        return False
    return all(segment not in (".", "..") for segment in key.split("/"))


def root_object_path(environ: dict, key: str) -> str:
    """Where another object of the same app lives: ``/<key>`` (a file server, a virtual-host bucket)."""
    return "/" + key


def object_environ(environ: dict, path: str) -> dict:
    """A GET environ for another object of the same app: the request's headers, a new path, no query."""
    env = source_environ(environ)
    env["PATH_INFO"] = path
    env["QUERY_STRING"] = ""
    return env


def validator_of(headers: Headers) -> str | None:
    """What identifies this version of an object: its ETag, or, failing that, a weak one derived
    from Last-Modified and Content-Length. None when neither exists (such a source is not cached)."""
    etag = headers.get("ETag")
    if etag:
        return etag
    modified, length = headers.get("Last-Modified"), headers.get("Content-Length")
    if modified and length:
        return f'W/"lm-{modified}-{length}"'
    return None


def conditional_environ(environ: dict, path: str, query: str, validator: str) -> dict:
    """A conditional GET for one object at a version we hold: If-None-Match with its ETag, or
    If-Modified-Since for a validator derived from Last-Modified."""
    env = object_environ(environ, path)
    env["QUERY_STRING"] = query
    if validator.startswith('W/"lm-'):
        env["HTTP_IF_MODIFIED_SINCE"] = validator[len('W/"lm-'):].rsplit("-", 1)[0]
    else:
        env["HTTP_IF_NONE_MATCH"] = validator
    return env


def call(app: Callable, environ: dict) -> Upstream:
    """Run the app until it has started its response; the body is left for :meth:`Upstream.read`."""
    started: list = []
    written: list[bytes] = []

    def start_response(status, headers, exc_info=None):
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    result = app(environ, start_response)
    body: Iterable[bytes] = result
    if not started:   # a generator app calls start_response on its first iteration
        iterator = iter(result)
        first = next(iterator, b"")
        written.append(first)
        body = ClosingIterable(iterator, getattr(result, "close", lambda: None))
    return Upstream(started[0], Headers(started[1]), body, written)


class ClosingIterable:
    """An iterable that keeps the close() of the app body it came from (WSGI requires calling it)."""

    def __init__(self, iterable, close) -> None:
        self._iterable = iterable
        self.close = close

    def __iter__(self):
        return iter(self._iterable)
