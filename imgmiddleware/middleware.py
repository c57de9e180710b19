"""ImageMiddleware: OSS image processing in front of any WSGI app that serves files or objects.

A request without the exact lower-case ``x-oss-process`` query parameter (or header) goes to the
wrapped app untouched: same environ, same streamed answer. A processed GET or HEAD travels one way:

    parse + validate the process string (400 before any I/O)
    -> GET subrequest to the wrapped app (Range / conditional headers removed)
    -> not 200: the app's answer passes through unchanged (404 stays 404)
    -> probe the header and enforce limits -> plan -> decode once -> actions in order -> encode once
    -> answer with the output's Content-Type and Content-Length and the source's ETag and Last-Modified
"""

from __future__ import annotations

import logging
from itertools import chain

from .config import Config
from .errors import OssError, new_request_id
from .process import parse, run
from .process.engine import load_image
from .subrequest import (ClosingIterable, call, is_object_key, object_environ, process_string,
                         root_object_path, source_environ)

log = logging.getLogger("imgmiddleware")

# Source headers a processed answer keeps (spec §3.5). Not Content-MD5 or x-oss-hash-crc64ecma: they
# describe the stored bytes, not ours, and SDKs would reject the body.
KEPT_SOURCE_HEADERS = ("ETag", "Last-Modified", "Cache-Control", "Expires", "Content-Disposition",
                       "Content-Language")
PROCESSED_METHODS = ("GET", "HEAD")


class ImageMiddleware:
    """Wrap ``app``; answer ``?x-oss-process=image/...`` requests with the transformed object.

    ``config`` is an :class:`imgmiddleware.Config`; keyword arguments override single fields, e.g.
    ``ImageMiddleware(app, jpeg_quality=85)``. ``object_path(environ, key)`` says where another object
    of the same app (a watermark image) is found; the default is ``/<key>``.
    """

    def __init__(self, app, config: Config | None = None, object_path=root_object_path,
                 **overrides) -> None:
        self.app = app
        config = config or Config()
        self.config = config.replace(**overrides) if overrides else config
        self.object_path = object_path

    def __call__(self, environ, start_response):
        process = process_string(environ)
        if process is None or environ.get("REQUEST_METHOD", "GET") not in PROCESSED_METHODS:
            return self.app(environ, start_response)
        return self.process(environ, start_response, process)

    def process(self, environ, start_response, process: str):
        request_id = new_request_id()
        head = environ["REQUEST_METHOD"] == "HEAD"
        try:
            pipeline = parse(process, self.config)
            upstream = call(self.app, source_environ(environ))
            if upstream.status_code != 200:
                return self._pass_through(upstream, start_response, head)
            body = upstream.read(self.config.max_source_bytes)
            result = run(pipeline, body, self.config, self._object_loader(environ))
        except OssError as err:
            return self._error(err, environ, start_response, request_id, head)
        except Exception:   # a bug or a codec failure must cost one request, never the worker
            log.exception("processing %r failed (request %s)", process, request_id)
            err = OssError("InternalError", "We encountered an internal error. Please try again.")
            return self._error(err, environ, start_response, request_id, head)

        headers = [("Content-Type", result.content_type),
                   ("Content-Length", str(len(result.body))),
                   ("x-oss-request-id", request_id)]
        for name in KEPT_SOURCE_HEADERS:
            value = upstream.headers.get(name)
            if value is not None:
                headers.append((name, value))
        headers.extend((k, v) for k, v in upstream.headers.items() if k.lower().startswith("x-oss-meta-"))
        start_response("200 OK", headers)
        return [] if head else [result.body]

    def _object_loader(self, environ):
        """load_object(key, formats, orient) for this request: other objects through the wrapped app,
        with the request's own headers (so its access rules apply), each key fetched once."""
        loaded: dict[tuple[str, bool], object] = {}
        config = self.config

        def load_object(key: str, formats: frozenset, orient: bool = True):
            if (key, orient) in loaded:
                return loaded[key, orient]
            keys = {k for k, _ in loaded}
            if key not in keys and len(keys) >= config.max_watermark_images:
                raise OssError("WatermarkError", f"At most {config.max_watermark_images} distinct "
                               "watermark images can be used on one image.")
            missing = OssError("WatermarkError", "The watermark object does not exist.",
                               "0040-00000025")
            if not is_object_key(key):
                raise missing
            upstream = call(self.app, object_environ(environ, self.object_path(environ, key)))
            if upstream.status_code != 200:
                upstream.close()
                raise missing
            loaded[key, orient] = load_image(upstream.read(config.max_source_bytes), config, formats,
                                             orient)
            return loaded[key, orient]

        return load_object

    def _pass_through(self, upstream, start_response, head: bool):
        start_response(upstream.status, upstream.headers.to_wsgi_list())
        if head:
            upstream.close()
            return []
        return ClosingIterable(chain(upstream.written, upstream.body), upstream.close)

    def _error(self, err: OssError, environ, start_response, request_id: str, head: bool):
        host_id = self.config.host_id or environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        status, headers, body = err.to_response(request_id, host_id)
        start_response(status, headers)
        return [] if head else [body]
