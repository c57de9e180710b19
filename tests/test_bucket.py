"""The bundled OSS-compatible bucket app (imgmiddleware/origins/bucket/), as a client sees it.

Everything goes through ``build_app(root, Config(...))`` (the middleware over the bucket, what
``imgmiddleware serve`` runs) in werkzeug's test Client, except the failure-injection and thread
tests, which call the raw BucketApp with hand-made environs. Requests are signed with the project's
own ``imgmiddleware.auth`` functions (the SDK tests are elsewhere).

Helpers for signing and for reading OSS answers are shared with test_oss_surface.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from email.utils import formatdate, parsedate_to_datetime
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client, EnvironBuilder

from imgmiddleware import Config
from imgmiddleware.auth import SignedRequest, v1_signature, v1_string_to_sign, v4_signature
from imgmiddleware.cli import build_app
from imgmiddleware.origins.bucket import META_DIR, BucketApp

from .conftest import FIXTURES, size_of

# werkzeug's lint: an error answer to HEAD keeps the GET's Content-Length (as OSS does) with no body,
# and DeleteObject's 204 carries "Content-Length: 0" (as OSS's does).
pytestmark = [pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes"),
              pytest.mark.filterwarnings("ignore:204 responses must have an empty content length")]

BUCKET = "examplebucket"
OTHER = "otherbucket"
SECRET = b"sentinel: never served, never written"
RW = "public-read-write"
JPEG = (FIXTURES / "example.jpg").read_bytes()        # 400 x 267


# ---------------------------------------------------------------------------------------------------
# Helpers (also used by test_oss_surface.py)

def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest().upper() + '"'


def make_root(tmp_path: Path, buckets=(BUCKET,)) -> Path:
    """tmp/data/<bucket>/example.jpg for each bucket, and tmp/secret.txt beside the root."""
    root = tmp_path / "data"
    for name in buckets:
        (root / name).mkdir(parents=True)
        shutil.copy(FIXTURES / "example.jpg", root / name / "example.jpg")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return root


def client_for(root: Path, lint: bool = True, **config) -> Client:
    app = build_app(str(root), Config(**config))
    return Client(LintMiddleware(app) if lint else app)


def url(bucket: str, key: str) -> str:
    """A path-style URL path, the key percent-encoded the way SDKs do (``/`` kept)."""
    return f"/{bucket}/" + quote(key, safe="/")


def query_string(pairs) -> str:
    """A query string as SDKs build it: names and values percent-encoded, '/' and ',' too."""
    return "&".join(quote(k, safe="") + ("=" + quote(v, safe="") if v != "" else "") for k, v in pairs)


def send(client: Client, method: str, bucket: str, key: str, query=(), headers=None, data=None,
         content_type=None, host=None):
    """One request; the response is read and closed."""
    headers = dict(headers or {})
    if host:
        headers["Host"] = host
    path = "/" + quote(key, safe="/") if host and host.startswith(bucket + ".") else url(bucket, key)
    response = client.open(path, method=method, query_string=query_string(query), headers=headers,
                           data=data, content_type=content_type)
    response.get_data()
    response.close()
    return response


def v1_headers(method: str, bucket: str, key: str, query=(), headers=None, content_type=None,
               ak: str = "ak", sk: str = "sk", date: str | None = None) -> dict:
    """Date and Authorization: OSS ak:sig for a request, signed with auth.v1_string_to_sign."""
    date = date or formatdate(usegmt=True)
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    lower["date"] = date
    if content_type:
        lower["content-type"] = content_type
    string = v1_string_to_sign(SignedRequest(method, lower, list(query), bucket, key), date)
    return {**(headers or {}), "Date": date, "Authorization": f"OSS {ak}:{v1_signature(sk, string)}"}


def v1_presigned(method: str, bucket: str, key: str, query=(), expires: int | None = None,
                 ak: str = "ak", sk: str = "sk") -> list[tuple[str, str]]:
    """The query of an oss2-style presigned URL: the parameters, then OSSAccessKeyId, Expires,
    Signature (all percent-encoded by query_string())."""
    expires = int(datetime.now(timezone.utc).timestamp()) + 600 if expires is None else expires
    string = v1_string_to_sign(SignedRequest(method, {}, list(query), bucket, key), str(expires))
    return list(query) + [("OSSAccessKeyId", ak), ("Expires", str(expires)),
                          ("Signature", v1_signature(sk, string))]


def _v4_now(offset: int = 0) -> tuple[str, str]:
    moment = datetime.now(timezone.utc) + timedelta(seconds=offset)
    return moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")


def v4_presigned(method: str, bucket: str, key: str, query=(), expires: int = 600, ak: str = "ak",
                 sk: str = "sk", region: str = "cn-hangzhou") -> list[tuple[str, str]]:
    when, day = _v4_now()
    scope = f"{day}/{region}/oss/aliyun_v4_request"
    pairs = list(query) + [("x-oss-signature-version", "OSS4-HMAC-SHA256"),
                           ("x-oss-credential", f"{ak}/{scope}"), ("x-oss-date", when),
                           ("x-oss-expires", str(expires))]
    sig = v4_signature(sk, SignedRequest(method, {}, pairs, bucket, key), when, scope, [],
                       "UNSIGNED-PAYLOAD")
    return pairs + [("x-oss-signature", sig)]


def v4_headers(method: str, bucket: str, key: str, query=(), content_type=None, ak: str = "ak",
               sk: str = "sk", region: str = "cn-hangzhou") -> dict:
    when, day = _v4_now()
    scope = f"{day}/{region}/oss/aliyun_v4_request"
    headers = {"x-oss-date": when, "x-oss-content-sha256": "UNSIGNED-PAYLOAD"}
    lower = dict(headers)
    if content_type:
        lower["content-type"] = content_type
    sig = v4_signature(sk, SignedRequest(method, lower, list(query), bucket, key), when, scope, [],
                       "UNSIGNED-PAYLOAD")
    headers["Authorization"] = f"OSS4-HMAC-SHA256 Credential={ak}/{scope}, Signature={sig}"
    return headers


def oss_error(response) -> dict:
    """The fields of an OSS XML error body, plus status, x-oss-ec and x-oss-request-id."""
    assert response.headers["Content-Type"] == "application/xml", response.get_data()[:300]
    root = ET.fromstring(response.get_data())
    assert root.tag == "Error"
    fields = {child.tag: child.text or "" for child in root}
    fields["status"] = response.status_code
    fields["header_ec"] = response.headers.get("x-oss-ec")
    assert response.headers["x-oss-request-id"] == fields["RequestId"]
    return fields


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# ---------------------------------------------------------------------------------------------------
# Put, Get, Head, Delete

@pytest.fixture
def root(tmp_path) -> Path:
    return make_root(tmp_path, (BUCKET, OTHER))


@pytest.fixture
def client(root) -> Client:
    return client_for(root, default_acl=RW)


def test_put_then_get_and_head(client, root):
    payload = b"\x89PNG not really" * 1000
    put = send(client, "PUT", BUCKET, "dir/a.bin", data=payload, content_type="image/x-custom",
               headers={"x-oss-meta-author": "Ann", "x-oss-meta-my-tag": "v 1"})
    assert put.status_code == 200
    assert put.headers["ETag"] == md5_etag(payload)
    assert (root / BUCKET / "dir" / "a.bin").read_bytes() == payload

    got = send(client, "GET", BUCKET, "dir/a.bin")
    assert got.status_code == 200
    assert got.get_data() == payload
    assert got.headers["Content-Type"] == "image/x-custom"
    assert got.headers["Content-Length"] == str(len(payload))
    assert got.headers["ETag"] == md5_etag(payload)
    modified = parsedate_to_datetime(got.headers["Last-Modified"])
    assert abs(modified.timestamp() - (root / BUCKET / "dir" / "a.bin").stat().st_mtime) < 1
    assert got.headers["x-oss-meta-author"] == "Ann"
    assert got.headers["x-oss-meta-my-tag"] == "v 1"
    assert len(got.headers["x-oss-request-id"]) == 24

    head = send(client, "HEAD", BUCKET, "dir/a.bin")
    assert head.status_code == 200 and head.get_data() == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "x-oss-meta-author"):
        assert head.headers[name] == got.headers[name]


def test_a_put_without_content_type_is_octet_stream_and_files_by_hand_go_by_extension(root):
    """OSS stores what the request says and application/octet-stream when it says nothing (the SDKs
    guess from the name themselves; COMPATIBILITY.md decision 182); a file dropped in by hand has no
    request, so its name decides."""
    app = BucketApp(root, default_acl=RW)
    env = EnvironBuilder(path=f"/{BUCKET}/photo.png", method="PUT", input_stream=BytesIO(b"x" * 10),
                         content_length=10).get_environ()
    env.pop("CONTENT_TYPE", None)
    status, _ = _call(app, env)
    assert status.startswith("200")
    got = send(Client(app), "GET", BUCKET, "photo.png")
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert send(Client(app), "GET", BUCKET, "example.jpg").headers["Content-Type"] == "image/jpeg"


def test_put_replaces_and_forgets_old_metadata(client):
    send(client, "PUT", BUCKET, "k.txt", data=b"one", content_type="text/plain",
         headers={"x-oss-meta-a": "1"})
    send(client, "PUT", BUCKET, "k.txt", data=b"two!", content_type="text/csv")
    got = send(client, "GET", BUCKET, "k.txt")
    assert got.get_data() == b"two!"
    assert got.headers["ETag"] == md5_etag(b"two!")
    assert got.headers["Content-Type"] == "text/csv"          # as PUT, no charset added
    assert "x-oss-meta-a" not in got.headers


def test_content_md5_is_checked(client, root):
    import base64
    good = base64.b64encode(hashlib.md5(b"abc").digest()).decode()
    assert send(client, "PUT", BUCKET, "m", data=b"abc", headers={"Content-MD5": good}).status_code == 200
    bad = send(client, "PUT", BUCKET, "m2", data=b"abd", headers={"Content-MD5": good})
    assert (bad.status_code, oss_error(bad)["Code"]) == (400, "InvalidDigest")
    assert not (root / BUCKET / "m2").exists()


def test_delete_then_no_such_key(client, root):
    send(client, "PUT", BUCKET, "gone.txt", data=b"bye")
    deleted = send(client, "DELETE", BUCKET, "gone.txt")
    assert deleted.status_code == 204
    assert not (root / BUCKET / "gone.txt").exists()
    response = send(client, "GET", BUCKET, "gone.txt")
    err = oss_error(response)
    assert (err["status"], err["Code"], err["Key"], err["EC"]) == (404, "NoSuchKey", "gone.txt",
                                                                    "0026-00000001")
    assert err["Message"] == "The specified key does not exist."
    assert err["header_ec"] == "0026-00000001"
    # deleting what is not there is not an error (OSS answers 204)
    assert send(client, "DELETE", BUCKET, "gone.txt").status_code == 204
    assert send(client, "HEAD", BUCKET, "gone.txt").status_code == 404


def test_unknown_bucket(client):
    for method in ("GET", "PUT", "DELETE"):
        response = send(client, method, "nosuchbucket", "example.jpg", data=b"x" if method == "PUT" else None)
        err = oss_error(response)
        assert (err["status"], err["Code"], err["EC"], err["BucketName"]) == (
            404, "NoSuchBucket", "0015-00000101", "nosuchbucket")
        assert err["Message"] == "The specified bucket does not exist."
    # a processed GET of an unknown bucket gets the bucket's answer too
    err = oss_error(send(client, "GET", "nosuchbucket", "example.jpg",
                         query=[("x-oss-process", "image/resize,w_10")]))
    assert (err["status"], err["Code"]) == (404, "NoSuchBucket")


def test_range_get(client):
    response = send(client, "GET", BUCKET, "example.jpg", headers={"Range": "bytes=100-299"})
    assert response.status_code == 206
    assert response.get_data() == JPEG[100:300]
    assert response.headers["Content-Range"] == f"bytes 100-299/{len(JPEG)}"
    assert response.headers["ETag"] == md5_etag(JPEG)
    suffix = send(client, "GET", BUCKET, "example.jpg", headers={"Range": "bytes=-10"})
    assert (suffix.status_code, suffix.get_data()) == (206, JPEG[-10:])
    head = send(client, "HEAD", BUCKET, "example.jpg", headers={"Range": "bytes=0-9"})
    assert (head.status_code, head.headers["Content-Length"]) == (206, "10")
    # OSS ignores a range it cannot satisfy (or parse) and sends the whole object
    for bad in (f"bytes={len(JPEG) + 5}-", "byte=0-9"):
        whole = send(client, "GET", BUCKET, "example.jpg", headers={"Range": bad})
        assert (whole.status_code, whole.get_data()) == (200, JPEG)
        assert whole.headers["Content-Length"] == str(len(JPEG))


def test_conditional_get(client):
    first = send(client, "GET", BUCKET, "example.jpg")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag == md5_etag(JPEG)
    same = send(client, "GET", BUCKET, "example.jpg", headers={"If-None-Match": etag})
    assert (same.status_code, same.get_data()) == (304, b"")
    assert same.headers["ETag"] == etag
    other = send(client, "GET", BUCKET, "example.jpg", headers={"If-None-Match": '"0123"'})
    assert other.status_code == 200 and other.get_data() == JPEG
    assert send(client, "GET", BUCKET, "example.jpg",
                headers={"If-Modified-Since": modified}).status_code == 304
    earlier = formatdate(parsedate_to_datetime(modified).timestamp() - 3600, usegmt=True)
    assert send(client, "GET", BUCKET, "example.jpg",
                headers={"If-Modified-Since": earlier}).status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_preconditions_as_oss_answers_them(client, method):
    """OSS's conditional download: If-Match not matching, or an If-Unmodified-Since earlier than
    the object, is 412 PreconditionFailed (an error, never the object's bytes); If-None-Match
    matching, or an If-Modified-Since not earlier, is 304; a date that does not parse is ignored."""
    first = send(client, "GET", BUCKET, "example.jpg")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    stamp = parsedate_to_datetime(modified).timestamp()
    earlier, later = (formatdate(stamp + d, usegmt=True) for d in (-3600, 3600))

    def status(**headers):
        answer = send(client, method, BUCKET, "example.jpg",
                      headers={k.replace("_", "-"): v for k, v in headers.items()})
        body = answer.get_data()
        if answer.status_code == 200:
            assert body == (JPEG if method == "GET" else b"")
        elif answer.status_code == 412 and method == "GET":
            error = oss_error(answer)
            assert (error["Code"], error["EC"], error["header_ec"]) == \
                ("PreconditionFailed", "0017-00001001", "0017-00001001")
            assert error["Message"] == "At least one of the pre-conditions you specified did not hold"
        else:
            assert body == b""
            assert answer.status_code != 412 or answer.headers["x-oss-ec"] == "0017-00001001"
        return answer.status_code

    assert status(If_Match='"0123"') == 412
    assert status(If_Match=etag) == 200
    assert status(If_Match='"0123", ' + etag) == 200
    assert status(If_Match="*") == 200
    assert status(If_Unmodified_Since=earlier) == 412
    assert status(If_Unmodified_Since=modified) == 200           # equal: not modified since
    assert status(If_Unmodified_Since=later) == 200
    assert status(If_Unmodified_Since="not a date") == 200
    assert status(If_Modified_Since="not a date") == 200
    assert status(If_Modified_Since=later) == 304
    # several at once (decision 188): If-Match decides over If-Unmodified-Since, If-None-Match
    # over If-Modified-Since, and a failed precondition over a copy the client has
    assert status(If_Match=etag, If_Unmodified_Since=earlier) == 200
    assert status(If_None_Match='"0123"', If_Modified_Since=later) == 200
    assert status(If_Match='"0123"', If_None_Match=etag) == 412
    assert status(If_Match=etag, If_None_Match=etag) == 304
    assert status(If_Unmodified_Since=later, If_Modified_Since=earlier) == 200
    assert status(If_Unmodified_Since=later, If_Modified_Since=later) == 304


@pytest.mark.parametrize("key", ["dir/sub/a.txt", "with space.txt", "a+b.txt", "中文/图片.txt",
                                 "pct%20literal.txt", "semi;colon?.txt", "#hash.txt"])
def test_keys_with_special_characters(client, root, key):
    payload = key.encode("utf-8") * 3
    assert send(client, "PUT", BUCKET, key, data=payload).status_code == 200
    # the object is stored under its decoded UTF-8 name, where an operator would look for it
    assert (root / BUCKET / key).read_bytes() == payload
    got = send(client, "GET", BUCKET, key)
    assert (got.status_code, got.get_data()) == (200, payload)
    assert got.headers["ETag"] == md5_etag(payload)
    assert send(client, "DELETE", BUCKET, key).status_code == 204
    err = oss_error(send(client, "GET", BUCKET, key))
    assert (err["Code"], err["Key"]) == ("NoSuchKey", key)


def test_files_dropped_in_by_hand_are_served(client, root):
    payload = os.urandom(5000)
    (root / BUCKET / "hand" / "中文 a+b.dat").parent.mkdir()
    (root / BUCKET / "hand" / "中文 a+b.dat").write_bytes(payload)
    got = send(client, "GET", BUCKET, "hand/中文 a+b.dat")
    assert got.status_code == 200 and got.get_data() == payload
    assert got.headers["ETag"] == md5_etag(payload)
    assert got.headers["Content-Type"] == "application/octet-stream"
    # replaced by hand: the remembered ETag is not reused
    (root / BUCKET / "hand" / "中文 a+b.dat").write_bytes(payload[:100])
    again = send(client, "GET", BUCKET, "hand/中文 a+b.dat")
    assert again.get_data() == payload[:100]
    assert again.headers["ETag"] == md5_etag(payload[:100])


@pytest.mark.parametrize("order", [("x", "x.json/y"), ("x.json/y", "x")])
def test_keys_whose_remembered_metadata_would_collide(client, root, order):
    """Files by hand 'x' and 'x.json/y': both are served, whichever is read first."""
    (root / BUCKET / "x.json").mkdir()
    (root / BUCKET / "x").write_bytes(b"file x")
    (root / BUCKET / "x.json" / "y").write_bytes(b"file y")
    for _ in range(2):
        for key in order:
            got = send(client, "GET", BUCKET, key)
            assert got.status_code == 200, key
            assert got.headers["ETag"] == md5_etag(got.get_data())


def test_virtual_host_and_path_style(client, root):
    vhost = send(client, "GET", BUCKET, "example.jpg", host=f"{BUCKET}.oss.test")
    path = send(client, "GET", BUCKET, "example.jpg")
    assert vhost.status_code == path.status_code == 200
    assert vhost.get_data() == path.get_data() == JPEG
    assert send(client, "PUT", BUCKET, "v/h.txt", data=b"vh", host=f"{BUCKET}.oss.test:8080").status_code == 200
    assert (root / BUCKET / "v" / "h.txt").read_bytes() == b"vh"
    # processing in virtual-host style
    processed = send(client, "GET", BUCKET, "example.jpg", host=f"{BUCKET}.oss.test",
                     query=[("x-oss-process", "image/resize,w_40")])
    assert size_of(processed.get_data())[0] == 40
    # an IP host is always path style; an unknown first label is not a bucket
    for host in ("127.0.0.1:8080", "nosuch.oss.test", "[::1]:8080"):
        response = client.get(f"/{BUCKET}/example.jpg", headers={"Host": host})
        assert (response.status_code, response.get_data()) == (200, JPEG), host
        response.close()


# ---------------------------------------------------------------------------------------------------
# Traversal: nothing outside root/<bucket> is ever read, written or deleted

TRAVERSAL_PATHS = [
    f"/{BUCKET}/../secret.txt",
    f"/{BUCKET}/%2e%2e/secret.txt",
    f"/{BUCKET}/%2E%2E%2Fsecret.txt",
    f"/{BUCKET}/a/../../secret.txt",
    f"/{BUCKET}//etc/passwd",
    f"/{BUCKET}/%2Fetc%2Fpasswd",
    f"/{BUCKET}/" + "%2e%2e/" * 8 + "etc/passwd",
    f"/{BUCKET}/a%00b",
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/.imgmw/meta/x.json",
]


@pytest.mark.parametrize("path", TRAVERSAL_PATHS)
def test_traversal_is_refused(tmp_path, path):
    root = make_root(tmp_path)
    client = client_for(root, lint=False, default_acl=RW)
    before = files_under(tmp_path)
    for host in (None, f"{BUCKET}.oss.test"):
        if host and (not path.startswith(f"/{BUCKET}/") or path.startswith(f"/{BUCKET}//")):
            continue    # no bucket in the path to drop ('//x' would be read as a host by the client)
        headers = {"Host": host} if host else {}
        p = path if host is None else path[len(BUCKET) + 1:]
        for method in ("GET", "HEAD", "PUT", "DELETE"):
            response = client.open(p, method=method, headers=headers,
                                   data=b"overwritten" if method == "PUT" else None)
            body = response.get_data()
            response.close()
            assert response.status_code in (400, 404), (method, p, response.status_code)
            assert SECRET not in body and b"root:" not in body
            if method != "HEAD":
                assert oss_error(response)["Code"] in ("InvalidObjectName", "NoSuchBucket", "NoSuchKey")
        processed = client.open(p, query_string="x-oss-process=image/info", headers=headers)
        assert processed.status_code in (400, 404) and SECRET not in processed.get_data()
        processed.close()
    assert (tmp_path / "secret.txt").read_bytes() == SECRET
    after = files_under(tmp_path)
    assert {f for f in after - before if not f.startswith(f"data/{META_DIR}")} == set()


def test_traversal_answers_are_invalid_object_name(client):
    for path in (f"/{BUCKET}/../secret.txt", f"/{BUCKET}/a/../../x", f"/{BUCKET}//etc/passwd", f"/{BUCKET}/a%00b"):
        response = client.get(path)
        err = oss_error(response)
        response.close()
        assert (err["status"], err["Code"]) == (400, "InvalidObjectName"), path


def test_traversal_with_the_raw_app(tmp_path):
    """PATH_INFO exactly as a server could pass it, no client normalisation on the way."""
    root = make_root(tmp_path)
    app = BucketApp(root, default_acl=RW)
    before = files_under(tmp_path)
    for key in ("../secret.txt", "a/../../secret.txt", "/" + str(tmp_path / "secret.txt"), "x\0y",
                "../data/" + BUCKET + "/example.jpg", "dir/"):
        for method in ("GET", "PUT", "DELETE"):
            for host, path in (("localhost", f"/{BUCKET}/" + key), (f"{BUCKET}.oss.test", "/" + key)):
                env = EnvironBuilder(method=method, data=b"evil" if method == "PUT" else None,
                                     headers={"Host": host}).get_environ()
                env["PATH_INFO"] = path
                status, body = _call(app, env)
                assert status.split()[0] in ("400", "404"), (method, path, status)
                assert SECRET not in body
    assert (tmp_path / "secret.txt").read_bytes() == SECRET
    assert (root / BUCKET / "example.jpg").read_bytes() == JPEG
    assert {f for f in files_under(tmp_path) - before if not f.startswith(f"data/{META_DIR}")} == set()
    # a backslash is an ordinary character of a key on a POSIX disk: the object stays in its bucket
    env = EnvironBuilder(method="PUT", data=b"inside").get_environ()
    env["PATH_INFO"] = f"/{BUCKET}/..\\secret.txt"
    assert _call(app, env)[0].startswith("200")
    assert (root / BUCKET / "..\\secret.txt").read_bytes() == b"inside"
    assert (tmp_path / "secret.txt").read_bytes() == SECRET


def _call(app, environ) -> tuple[str, bytes]:
    started = []
    result = app(environ, lambda status, headers, exc_info=None: started.append(status))
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return started[0], body


# ---------------------------------------------------------------------------------------------------
# PUT failing mid-body; concurrent PUT and GET

class Exploding:
    def __init__(self, data: bytes, fail_after: int) -> None:
        self.data, self.fail_after, self.sent = data, fail_after, 0

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.fail_after:
            raise ConnectionResetError("client went away")
        size = self.fail_after - self.sent if size < 0 else min(size, self.fail_after - self.sent)
        chunk = self.data[self.sent:self.sent + size]
        self.sent += len(chunk)
        return chunk


def _put_environ(key: str, stream, length: int, content_type="application/octet-stream") -> dict:
    env = EnvironBuilder(path=f"/{BUCKET}/{key}", method="PUT", content_type=content_type).get_environ()
    env["wsgi.input"] = stream
    env["CONTENT_LENGTH"] = str(length)
    return env


def test_failed_put_keeps_the_old_object(tmp_path):
    root = make_root(tmp_path)
    app = build_app(str(root), Config(default_acl=RW))
    client = Client(app)
    old = b"old object" * 100
    send(client, "PUT", BUCKET, "d/obj", data=old)
    before = files_under(root)
    new = os.urandom(3 << 20)

    with pytest.raises(ConnectionResetError):
        _call(app, _put_environ("d/obj", Exploding(new, 1500 * 1024), len(new)))
    status, body = _call(app, _put_environ("d/obj", BytesIO(new[:1000]), len(new)))   # short body
    assert status.startswith("400") and b"IncompleteBody" in body

    got = send(client, "GET", BUCKET, "d/obj")
    assert got.get_data() == old and got.headers["ETag"] == md5_etag(old)
    assert files_under(root) == before                    # no temp files left
    assert not [p for p in root.rglob("*") if p.name.startswith((".put-", ".tmp-"))]
    # the same for a key that did not exist: nothing appears
    with pytest.raises(ConnectionResetError):
        _call(app, _put_environ("d/new", Exploding(new, 10), len(new)))
    assert send(client, "GET", BUCKET, "d/new").status_code == 404
    assert files_under(root) == before


def _xattrs_work(directory: Path) -> bool:
    probe = directory / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except (OSError, AttributeError):
        return False
    finally:
        probe.unlink()


@pytest.mark.parametrize("xattrs", [True, False], ids=["xattr", "sidecar"])
def test_concurrent_put_and_get_never_mix(tmp_path, monkeypatch, xattrs):
    """Metadata on the file itself (xattr) or, where the file system has none, in a sidecar."""
    if not xattrs:
        monkeypatch.setattr(os, "setxattr", _no_xattr)
    elif not _xattrs_work(tmp_path):
        pytest.skip("no user extended attributes on this file system")
    root = make_root(tmp_path)
    app = BucketApp(root, default_acl=RW)
    payloads = [os.urandom(200 * 1024), os.urandom(200 * 1024)]
    etags = {md5_etag(p) for p in payloads}
    ctype = "application/x-test"
    _call(app, _put_environ("hot", BytesIO(payloads[0]), len(payloads[0]), ctype))
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def writer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            data = payloads[i % 2]
            i += 1
            status, _ = _call(app, _put_environ("hot", BytesIO(data), len(data), ctype))
            if not status.startswith("200"):
                errors.append("PUT " + status)

    def reader() -> None:
        while not stop.is_set():
            env = EnvironBuilder(path=f"/{BUCKET}/hot").get_environ()
            headers = {}
            started = []

            def start_response(status, hdrs, exc_info=None):
                started.append(status)
                headers.update(hdrs)

            result = app(env, start_response)
            try:
                body = b"".join(result)
            finally:
                result.close()
            reads[0] += 1
            if body not in payloads:
                errors.append(f"mixed body of {len(body)} bytes")
            elif headers["ETag"] != md5_etag(body) or headers["Content-Length"] != str(len(body)):
                errors.append(f"ETag {headers['ETag']} does not describe the body")
            elif headers["ETag"] not in etags:
                errors.append("unknown ETag")
            elif xattrs and headers["Content-Type"] != ctype:
                # (with a sidecar, a reader may briefly see the type guessed from the key)
                errors.append(f"Content-Type {headers['Content-Type']} is not the PUT's")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    threading.Event().wait(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert reads[0] > 20
    assert not [p for p in root.rglob("*") if p.name.startswith((".put-", ".tmp-"))]
    # at rest, the last PUT's metadata is what a reader gets
    _call(app, _put_environ("hot", BytesIO(payloads[1]), len(payloads[1]), "image/x-last"))
    env = EnvironBuilder(path=f"/{BUCKET}/hot", method="HEAD").get_environ()
    got = Client(app).open(env)
    assert (got.headers["Content-Type"], got.headers["ETag"]) == ("image/x-last", md5_etag(payloads[1]))


def _no_xattr(*args, **kwargs):
    raise OSError(95, "Operation not supported")


def test_metadata_without_extended_attributes(root, monkeypatch):
    """A file system without user xattrs: metadata in root/.imgmw/meta, same answers."""
    monkeypatch.setattr(os, "setxattr", _no_xattr)
    client = client_for(root, default_acl=RW)
    send(client, "PUT", BUCKET, "n/x.bin", data=b"12345", content_type="text/x-thing",
         headers={"x-oss-meta-k": "v"})
    assert (root / META_DIR / "meta" / BUCKET / "n" / "x.bin.json").is_file()
    got = send(client, "GET", BUCKET, "n/x.bin")
    assert (got.headers["Content-Type"], got.headers["ETag"], got.headers["x-oss-meta-k"]) == (
        "text/x-thing", md5_etag(b"12345"), "v")
    assert send(client, "DELETE", BUCKET, "n/x.bin").status_code == 204
    assert not (root / META_DIR / "meta" / BUCKET / "n" / "x.bin.json").exists()


# ---------------------------------------------------------------------------------------------------
# ListBuckets and ListObjects (what oss2's ObjectIterator, ali-oss's list() and the style viewer use)

def listing(response) -> tuple[list[str], list[str], ET.Element]:
    """(keys, common prefixes, root) of a ListBucketResult."""
    assert response.status_code == 200, response.get_data()[:300]
    assert response.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(response.get_data())
    assert root.tag == "ListBucketResult"
    return ([c.findtext("Key") for c in root.findall("Contents")],
            [p.findtext("Prefix") for p in root.findall("CommonPrefixes")], root)


def test_list_objects_with_prefix_marker_delimiter_and_max_keys(client, root):
    for key in ("b/1.jpg", "b/2.jpg", "b-c.jpg", "c/d/e.jpg", "中.jpg"):
        send(client, "PUT", BUCKET, key, data=JPEG, content_type="image/jpeg")
    (root / BUCKET / "b" / ".put-abcd1234").write_bytes(b"a PUT in flight")   # never listed

    keys, prefixes, result = listing(send(client, "GET", BUCKET, ""))
    assert keys == ["b-c.jpg", "b/1.jpg", "b/2.jpg", "c/d/e.jpg", "example.jpg", "中.jpg"]  # UTF-8 order
    assert prefixes == [] and result.findtext("IsTruncated") == "false"
    assert result.findtext("Name") == BUCKET and result.findtext("MaxKeys") == "100"
    first = result.find("Contents")
    assert first.findtext("ETag") == md5_etag(JPEG) and first.findtext("Size") == str(len(JPEG))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", first.findtext("LastModified"))

    keys, prefixes, _ = listing(send(client, "GET", BUCKET, "", [("delimiter", "/")]))
    assert keys == ["b-c.jpg", "example.jpg", "中.jpg"] and prefixes == ["b/", "c/"]
    keys, prefixes, _ = listing(send(client, "GET", BUCKET, "", [("prefix", "b/"), ("delimiter", "/")]))
    assert keys == ["b/1.jpg", "b/2.jpg"] and prefixes == []

    # pages: max-keys counts keys and prefixes; NextMarker continues after the last one
    seen, marker = [], ""
    while True:
        keys, prefixes, result = listing(send(client, "GET", BUCKET, "", [
            ("delimiter", "/"), ("max-keys", "2"), ("marker", marker)]))
        seen += keys + prefixes
        assert len(keys) + len(prefixes) <= 2
        if result.findtext("IsTruncated") == "false":
            break
        marker = result.findtext("NextMarker")
    assert sorted(seen) == sorted(["b-c.jpg", "b/", "c/", "example.jpg", "中.jpg"])

    keys, _, result = listing(send(client, "GET", BUCKET, "", [("encoding-type", "url"), ("prefix", "中")]))
    assert keys == [quote("中.jpg")] and result.findtext("EncodingType") == "url"


def test_list_objects_refuses_bad_arguments_and_other_subresources(client):
    for query in ([("max-keys", "0")], [("max-keys", "1001")], [("max-keys", "x")],
                  [("encoding-type", "base64")]):
        assert oss_error(send(client, "GET", BUCKET, "", query))["Code"] == "InvalidArgument", query
    for query in ([("cors", "")], [("lifecycle", "")], [("website", "")]):
        assert oss_error(send(client, "GET", BUCKET, "", query))["Code"] == "NotImplemented", query
    # GetBucketAcl is the owner's (tests/test_bucket_api.py): anonymous is refused
    assert oss_error(send(client, "GET", BUCKET, "", [("acl", "")]))["Code"] == "AccessDenied"
    assert oss_error(send(client, "GET", "nosuchbucket", ""))["Code"] == "NoSuchBucket"


def test_listing_follows_the_acl_and_signatures(root):
    private = client_for(root, default_acl="private", credentials={"ak": "sk"})
    assert oss_error(send(private, "GET", BUCKET, ""))["Code"] == "AccessDenied"
    keys, _, _ = listing(send(private, "GET", BUCKET, "", headers=v1_headers("GET", BUCKET, "")))
    assert keys == ["example.jpg"]
    public = client_for(root, default_acl="public-read", credentials={"ak": "sk"})
    assert listing(send(public, "GET", BUCKET, ""))[0] == ["example.jpg"]     # anonymous, as on OSS

    # ListBuckets: never anonymous; signed, every bucket
    anonymous = public.get("/")
    assert oss_error(anonymous)["Code"] == "AccessDenied"
    anonymous.close()
    signed = private.get("/", headers=v1_headers("GET", "", ""))
    result = ET.fromstring(signed.get_data())
    signed.close()
    assert result.tag == "ListAllMyBucketsResult"
    assert [b.findtext("Name") for b in result.iter("Bucket")] == [BUCKET, OTHER]
