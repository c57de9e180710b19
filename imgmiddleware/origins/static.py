"""A plain static-file app over a directory: the embedded default until the OSS bucket app lands.

It is werkzeug's SharedDataMiddleware (safe_join against traversal, ETag, Last-Modified, 304) with an
OSS-style NoSuchKey answer for anything it does not have.
"""

from __future__ import annotations

import os

from werkzeug.middleware.shared_data import SharedDataMiddleware

from ..errors import OssError, new_request_id


def no_such_key(environ, start_response):
    key = environ.get("PATH_INFO", "/").lstrip("/")
    err = OssError("NoSuchKey", "The specified key does not exist.", "0026-00000001", Key=key)
    status, headers, body = err.to_response(new_request_id(), environ.get("HTTP_HOST", ""))
    start_response(status, headers)
    return [body]


def static_app(root: str | os.PathLike, cache_timeout: int = 3600):
    """Serve the files under ``root`` at ``/<relative path>``."""
    return SharedDataMiddleware(no_such_key, {"/": os.fspath(root)}, cache_timeout=cache_timeout)
