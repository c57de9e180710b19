"""The WSGI contract: fall-through untouched, the subrequest, pass-through, HEAD, headers, limits."""

from __future__ import annotations

import hashlib

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

from imgmiddleware import ImageMiddleware
from imgmiddleware.subrequest import FileCapture, Upstream, call, source_environ

from .conftest import closed, fixture_bytes, get, oss_error, size_of

JPEG = fixture_bytes("example.jpg")


def object_app(body: bytes = JPEG, status: str = "200 OK", extra_headers=(), seen: list | None = None):
    """A minimal object store answering every path with one object; records the environs it gets."""
    def app(environ, start_response):
        if seen is not None:
            seen.append(dict(environ))
        start_response(status, [("Content-Type", "image/jpeg"), ("Content-Length", str(len(body))),
                                ("ETag", '"etag-1"'), ("Last-Modified", "Sun, 12 Nov 2023 16:42:40 GMT"),
                                *extra_headers])
        return [body]
    return app


def lint_client(app, **overrides) -> Client:
    return Client(LintMiddleware(ImageMiddleware(LintMiddleware(app), **overrides)))


def test_unprocessed_request_reaches_the_app_untouched_and_streamed():
    sentinel = iter([b"a", b"b"])

    class Body:
        def __iter__(self):
            return sentinel

        def close(self):
            pass

    body = Body()
    seen = []

    def app(environ, start_response):
        seen.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    middleware = ImageMiddleware(app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x.jpg", "QUERY_STRING": "versionId=3"}
    result = middleware(environ, lambda status, headers, exc_info=None: None)
    assert result is body          # not buffered, not wrapped
    assert seen == [environ] and seen[0] is environ


def test_plain_get_returns_original_bytes(client):
    response = get(client, "example.jpg")
    assert response.status_code == 200
    assert hashlib.sha1(response.get_data()).hexdigest() == hashlib.sha1(JPEG).hexdigest()


def test_subrequest_strips_range_encoding_and_the_process_parameter():
    seen: list = []
    client = lint_client(object_app(seen=seen), cache_memory_bytes=0)
    response = closed(client.get(
        "/dir/photo.jpg", query_string="versionId=7&x-oss-process=image%2Fresize%2Cw_100",
        headers={"Range": "bytes=0-99", "Accept-Encoding": "gzip", "X-Custom": "kept"}))
    assert response.status_code == 200          # Range ignored: the whole processed image
    assert size_of(response.get_data()) == (100, 67)
    env = seen[0]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/dir/photo.jpg"
    assert env["QUERY_STRING"] == "versionId=7"
    for stripped in ("HTTP_RANGE", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_ACCEPT_ENCODING"):
        assert stripped not in env
    assert env["HTTP_X_CUSTOM"] == "kept"


def test_client_conditionals_become_one_conditional_subrequest():
    """The answer's ETag is the source's, so the client's validators are asked of the app as they
    are; an app that ignores them (200) gets the object processed as usual."""
    seen: list = []
    client = lint_client(object_app(seen=seen), cache_memory_bytes=0)
    response = closed(client.get(
        "/a.jpg", query_string={"x-oss-process": "image/resize,w_100"},
        headers={"If-None-Match": '"old"', "If-Modified-Since": "Sun, 12 Nov 2023 16:42:40 GMT",
                 "Range": "bytes=0-9"}))
    assert response.status_code == 200 and size_of(response.get_data()) == (100, 67)
    assert len(seen) == 1
    assert seen[0]["HTTP_IF_NONE_MATCH"] == '"old"' and "HTTP_RANGE" not in seen[0]


HEAD_LINT = pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")


@HEAD_LINT
def test_head_gets_the_headers_get_would_give_and_no_body(client):
    got = get(client, "example.jpg", "image/resize,w_100/format,png")
    head = get(client, "example.jpg", "image/resize,w_100/format,png", method="HEAD")
    assert head.status_code == 200 and head.get_data() == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified"):
        assert head.headers[name] == got.headers[name]
    assert int(got.headers["Content-Length"]) == len(got.get_data())


@HEAD_LINT
def test_head_on_a_processed_request_sends_get_to_the_app():
    seen: list = []
    client = lint_client(object_app(seen=seen))
    closed(client.head("/a.jpg", query_string={"x-oss-process": "image/resize,w_100"}))
    assert seen[0]["REQUEST_METHOD"] == "GET"


def test_response_headers_follow_the_output_and_keep_the_source_identity():
    extra = [("x-oss-hash-crc64ecma", "123"), ("Content-MD5", "abc=="), ("x-oss-meta-author", "me"),
             ("Content-Disposition", "inline")]
    client = lint_client(object_app(extra_headers=extra))
    response = get(client, "a.jpg", "image/resize,w_100/format,webp")
    body = response.get_data()
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["ETag"] == '"etag-1"'
    assert response.headers["Last-Modified"] == "Sun, 12 Nov 2023 16:42:40 GMT"
    assert response.headers["x-oss-meta-author"] == "me"
    assert response.headers["Content-Disposition"] == "inline"
    assert "x-oss-hash-crc64ecma" not in response.headers
    assert "Content-MD5" not in response.headers
    assert len(response.headers["x-oss-request-id"]) == 24


@pytest.mark.parametrize("status", ["404 Not Found", "403 Forbidden", "500 Internal Server Error"])
def test_non_200_answers_pass_through_unchanged(status):
    body = b"<Error><Code>Whatever</Code></Error>"
    client = lint_client(object_app(body=body, status=status, extra_headers=[("x-upstream", "yes")]))
    response = get(client, "a.jpg", "image/resize,w_100")
    assert response.status == status
    assert response.get_data() == body
    assert response.headers["x-upstream"] == "yes"


def test_missing_object_is_the_apps_404(client):
    response = get(client, "missing.jpg", "image/resize,w_100")
    error = oss_error(response)
    assert error["status"] == 404 and error["Code"] == "NoSuchKey" and error["Key"] == "missing.jpg"


def test_declared_oversized_source_is_refused_without_reading_the_body():
    class Exploding:
        def __iter__(self):
            raise AssertionError("the body must not be read")

        def close(self):
            self.closed = True

    body = Exploding()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(10**9))])
        return body

    response = get(Client(ImageMiddleware(app)), "a.jpg", "image/resize,w_100")
    error = oss_error(response)
    assert error["status"] == 400 and error["EC"] == "0040-00000009"
    assert body.closed


def test_streamed_oversized_source_is_cut_off_at_the_limit():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "image/jpeg")])
        return (b"x" * 1000 for _ in range(100))

    response = get(Client(ImageMiddleware(app, max_source_bytes=50_000)), "a.jpg", "image/resize,w_100")
    assert oss_error(response)["EC"] == "0040-00000009"


def test_generator_and_write_callable_apps_are_read_whole():
    def generator_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "image/jpeg")])
        for i in range(0, len(JPEG), 1000):
            yield JPEG[i:i + 1000]

    def write_app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "image/jpeg")])
        write(JPEG[:5000])
        return [JPEG[5000:]]

    for app in (generator_app, write_app):
        response = get(Client(ImageMiddleware(app)), "a.jpg", "image/resize,w_100")
        assert response.status_code == 200
        assert size_of(response.get_data()) == (100, 67)


def test_file_wrapper_bodies_are_read_in_one_call(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(JPEG)

    class CountingFile:
        def __init__(self):
            self.reads = 0
            self.fh = open(path, "rb")

        def read(self, size=-1):
            self.reads += 1
            return self.fh.read(size)

        def close(self):
            self.fh.close()

    counting = CountingFile()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "image/jpeg")])
        return environ["wsgi.file_wrapper"](counting)

    upstream = call(app, source_environ({"REQUEST_METHOD": "GET", "PATH_INFO": "/a.jpg",
                                         "QUERY_STRING": "", "wsgi.input": None}))
    assert isinstance(upstream, Upstream) and isinstance(upstream.body, FileCapture)
    assert upstream.read(len(JPEG)) == JPEG
    assert counting.reads == 1 and counting.fh.closed


def test_an_unexpected_failure_costs_one_request_not_the_worker(client, monkeypatch):
    from imgmiddleware.process import engine

    real_encode = engine.encode

    def broken_encode(img, opts):
        raise RuntimeError("codec bug")

    monkeypatch.setattr(engine, "encode", broken_encode)
    error = oss_error(get(client, "example.jpg", "image/sharpen,100"))
    assert error["status"] == 500 and error["Code"] == "InternalError"
    monkeypatch.setattr(engine, "encode", real_encode)
    assert get(client, "example.jpg", "image/sharpen,100").status_code == 200


def test_other_methods_with_the_parameter_go_to_the_app():
    seen: list = []
    client = lint_client(object_app(seen=seen))
    response = closed(client.put("/a.jpg", query_string={"x-oss-process": "image/resize,w_100"}, data=b"x"))
    assert response.status_code == 200 and seen[0]["REQUEST_METHOD"] == "PUT"
    assert "x-oss-process" in seen[0]["QUERY_STRING"]


def test_error_host_id_is_the_request_host(client):
    response = get(client, "example.jpg", "image/slim,1", headers={"Host": "bucket.example.com"})
    assert oss_error(response)["HostId"] == "bucket.example.com"
