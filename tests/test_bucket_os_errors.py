"""The bundled bucket against its file system: keys a directory tree cannot hold as they are, and the
errors of the disk itself.

OSS's namespace is flat and only the whole key is limited (1023 bytes of UTF-8): a segment over the
file system's NAME_MAX, ``a`` beside ``a/b``, ``a//b`` beside ``a/b`` are all ordinary keys there. The
bucket stores what its own path cannot hold in a spill area (imgmiddleware/origins/bucket/store.py), and
every other OSError (a full disk, a read-only one, a path over PATH_MAX, a file where a directory
should be) becomes an OSS XML error, never an empty reply or a traceback.

Most tests go through ``build_app`` (the middleware over the bucket) in werkzeug's test Client; the
forced errors monkeypatch the calls the bucket makes (os.fsync, os.replace, open, ...), since the
tests may run as root, where a read-only directory is not read-only. The last section runs real
``imgmiddleware serve`` over HTTP, with raw requests and with oss2, and two instances side by side
(gunicorn's control socket).
"""

from __future__ import annotations

import base64
import builtins
import errno
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import oss2
import pytest
from werkzeug.test import Client, EnvironBuilder

import imgmiddleware.origins.bucket.store as bucket_module
from imgmiddleware.origins.bucket import META_DIR, BucketApp

from .conftest import size_of
from .servers import child_pids, free_port, stop, wait_for
from .test_bucket import (BUCKET, JPEG, OTHER, RW, _call, _put_environ, _xattrs_work, client_for, files_under,
                          listing, make_root, md5_etag, oss_error, send, v1_headers)

pytestmark = [pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes"),
              pytest.mark.filterwarnings("ignore:204 responses must have an empty content length")]

LONG = "a" * 300 + ".jpg"                                  # one segment over NAME_MAX (255)
LONG_WIDE = "dir/" + "中" * 100 + "/x.jpg"                  # 300 bytes of UTF-8 in the middle
LONGEST = ("y" * 300 + "/") * 3 + "z" * 120                # 1023 bytes: OSS's largest key
TOO_LONG = LONGEST + "z"                                   # 1024 bytes
assert len(LONGEST.encode()) == 1023 and len(TOO_LONG.encode()) == 1024


@pytest.fixture
def root(tmp_path) -> Path:
    return make_root(tmp_path, (BUCKET, OTHER))


@pytest.fixture
def client(root) -> Client:
    return client_for(root, default_acl=RW)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def saveas_body(key: str, bucket: str, process: str = "image/resize,w_50") -> bytes:
    return f"x-oss-process={process}|sys/saveas,o_{b64(key)},b_{b64(bucket)}".encode()


def post_saveas(client, bucket: str, key: str, body: bytes, signed: bool = False):
    query = [("x-oss-process", "")]
    headers = v1_headers("POST", bucket, key, query=query) if signed else {}
    return send(client, "POST", bucket, key, query=query, headers=headers, data=body)


def leftovers(root: Path) -> list[str]:
    """Files and directories of the data root besides the buckets, their example.jpg, the metadata
    sidecars and the spill area's directory per bucket: what a deleted object must not leave."""
    kept = {BUCKET, OTHER, META_DIR, f"{META_DIR}/spill"} | {f"{META_DIR}/spill/{b}" for b in (BUCKET, OTHER)}
    return sorted(f for f in files_under(root) if f not in kept and not f.endswith("example.jpg") and
                  not f.startswith((f"{META_DIR}/meta", f"{META_DIR}/keyed")))


def clean_error(response, status: int, code: str) -> dict:
    """An OSS XML error with ``status`` and ``code`` that names no path of the server."""
    err = oss_error(response)
    assert (err["status"], err["Code"]) == (status, code), err
    body = response.get_data()
    assert b"Traceback" not in body and b"/tmp" not in body and b"data/" not in body
    return err


# ---------------------------------------------------------------------------------------------------
# Long keys: a segment over NAME_MAX works, as on OSS; over 1023 bytes is OSS's InvalidObjectName

@pytest.mark.parametrize("key", [LONG, LONG_WIDE, LONGEST], ids=["segment", "utf8-segment", "1023-bytes"])
def test_keys_with_segments_over_name_max_work(client, root, key):
    payload = os.urandom(3000)
    put = send(client, "PUT", BUCKET, key, data=payload, content_type="image/x-long",
               headers={"x-oss-meta-who": "long"})
    assert (put.status_code, put.headers["ETag"]) == (200, md5_etag(payload))
    got = send(client, "GET", BUCKET, key)
    assert (got.status_code, got.get_data()) == (200, payload)
    assert (got.headers["ETag"], got.headers["Content-Type"], got.headers["x-oss-meta-who"]) == (
        md5_etag(payload), "image/x-long", "long")
    ranged = send(client, "GET", BUCKET, key, headers={"Range": "bytes=10-19"})
    assert (ranged.status_code, ranged.get_data()) == (206, payload[10:20])
    head = send(client, "HEAD", BUCKET, key)
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(payload)))
    # listed under its real name, in UTF-8 order among the others
    send(client, "PUT", BUCKET, "b.txt", data=b"b")
    keys, _, _ = listing(send(client, "GET", BUCKET, ""))
    assert keys == sorted([key, "b.txt", "example.jpg"], key=lambda k: k.encode())
    keys, _, _ = listing(send(client, "GET", BUCKET, "", [("prefix", key[:5])]))
    assert keys == [key]
    # replaced, then deleted: nothing of it stays on disk
    assert send(client, "PUT", BUCKET, key, data=b"second").status_code == 200
    assert send(client, "GET", BUCKET, key).get_data() == b"second"
    assert send(client, "DELETE", BUCKET, key).status_code == 204
    assert clean_error(send(client, "GET", BUCKET, key), 404, "NoSuchKey")["Key"] == key
    assert send(client, "HEAD", BUCKET, key).status_code == 404
    assert send(client, "DELETE", BUCKET, key).status_code == 204
    send(client, "DELETE", BUCKET, "b.txt")
    assert leftovers(root) == []


def test_processing_and_saveas_with_long_keys(client, root):
    assert send(client, "PUT", BUCKET, LONG, data=JPEG, content_type="image/jpeg").status_code == 200
    processed = send(client, "GET", BUCKET, LONG, query=[("x-oss-process", "image/resize,w_40")])
    assert processed.status_code == 200 and size_of(processed.get_data())[0] == 40
    info = send(client, "GET", BUCKET, LONG, query=[("x-oss-process", "image/info")])
    assert json.loads(info.get_data())["ImageWidth"]["value"] == "400"
    # saveas to a long target, anonymous on a public-read-write bucket
    for target in (LONG_WIDE, "out/" + "t" * 400 + ".jpg", LONGEST):
        response = post_saveas(client, BUCKET, LONG, saveas_body(target, BUCKET))
        assert response.status_code == 200, response.get_data()[:300]
        assert json.loads(response.get_data())["object"] == target
        stored = send(client, "GET", BUCKET, target)
        assert stored.status_code == 200 and size_of(stored.get_data())[0] == 50
    # a target over 1023 bytes: OSS's answer, nothing stored
    err = clean_error(post_saveas(client, BUCKET, LONG, saveas_body(TOO_LONG, BUCKET)), 400,
                      "InvalidObjectName")
    assert err["EC"] == "0016-00000003"


def test_signed_saveas_with_a_long_target_into_a_private_bucket(root):
    client = client_for(root, default_acl="private", credentials={"ak": "sk"})
    target = "saved/" + "s" * 300 + ".png"
    body = saveas_body(target, OTHER, "image/resize,w_30/format,png")
    response = post_saveas(client, BUCKET, "example.jpg", body, signed=True)
    assert response.status_code == 200, response.get_data()[:300]
    answer = json.loads(response.get_data())
    assert (answer["bucket"], answer["object"], answer["status"]) == (OTHER, target, "OK")
    got = send(client, "GET", OTHER, target, headers=v1_headers("GET", OTHER, target))
    assert got.status_code == 200 and got.headers["Content-Type"] == "image/png"
    assert size_of(got.get_data())[0] == 30
    # anonymous: the private bucket's ACL, as before
    assert clean_error(post_saveas(client, BUCKET, "example.jpg", saveas_body(target, OTHER)), 403,
                       "AccessDenied")


def test_a_key_over_1023_bytes_is_invalid_object_name_as_on_oss(client, root):
    before = files_under(root)
    for method in ("GET", "PUT", "DELETE", "HEAD"):
        response = send(client, method, BUCKET, TOO_LONG, data=b"x" if method == "PUT" else None)
        assert response.status_code == 400, method
        assert response.headers["x-oss-ec"] == "0016-00000003"
        if method != "HEAD":
            err = clean_error(response, 400, "InvalidObjectName")
            assert err["Message"] == "The Length of Object name must be less than 1024."
    assert files_under(root) == before
    # counted in bytes of UTF-8: 342 CJK characters are 1026 bytes, 341 are 1023
    assert send(client, "PUT", BUCKET, "中" * 342, data=b"x").status_code == 400
    assert send(client, "PUT", BUCKET, "中" * 341, data=b"x").status_code == 200
    assert send(client, "GET", BUCKET, "中" * 341).get_data() == b"x"


def test_a_path_over_path_max_works_too(tmp_path):
    """A data root deep enough that root + key passes PATH_MAX (4096): ENAMETOOLONG on the whole path."""
    deep = tmp_path
    while len(str(deep)) < 3300:
        deep = deep / ("d" * 200)
    root = make_root(deep)
    client = client_for(root, default_acl=RW)
    key = "/".join(["k" * 200] * 4) + "/end.bin"            # 808 bytes, every segment fits
    assert len(str(root / BUCKET / key)) > 4096
    assert send(client, "PUT", BUCKET, key, data=b"deep").status_code == 200
    assert send(client, "GET", BUCKET, key).get_data() == b"deep"
    assert listing(send(client, "GET", BUCKET, ""))[0] == ["example.jpg", key]
    assert send(client, "DELETE", BUCKET, key).status_code == 204
    assert send(client, "GET", BUCKET, key).status_code == 404


# ---------------------------------------------------------------------------------------------------
# A flat namespace over a tree: "a" beside "a/b", "a//b" beside "a/b"

def test_an_object_and_keys_under_its_name(client, root):
    # example.jpg is a file: example.jpg/x needs it as a directory
    assert send(client, "PUT", BUCKET, "example.jpg/x", data=b"under a file").status_code == 200
    # dir/x makes a directory: then "dir" itself
    assert send(client, "PUT", BUCKET, "dir/x", data=b"in dir").status_code == 200
    assert send(client, "PUT", BUCKET, "dir", data=b"the dir object").status_code == 200
    for key, body in (("example.jpg", JPEG), ("example.jpg/x", b"under a file"), ("dir/x", b"in dir"),
                      ("dir", b"the dir object")):
        got = send(client, "GET", BUCKET, key)
        assert (got.status_code, got.get_data(), got.headers["ETag"]) == (200, body, md5_etag(body)), key
    keys, prefixes, _ = listing(send(client, "GET", BUCKET, ""))
    assert keys == ["dir", "dir/x", "example.jpg", "example.jpg/x"]
    keys, prefixes, _ = listing(send(client, "GET", BUCKET, "", [("delimiter", "/")]))
    assert (keys, prefixes) == (["dir", "example.jpg"], ["dir/", "example.jpg/"])
    keys, _, _ = listing(send(client, "GET", BUCKET, "", [("prefix", "example.jpg/")]))
    assert keys == ["example.jpg/x"]
    seen, marker = [], ""
    while True:
        page = send(client, "GET", BUCKET, "", [("max-keys", "1"), ("marker", marker)])
        keys, prefixes, result = listing(page)
        seen += keys
        if result.findtext("IsTruncated") == "false":
            break
        marker = result.findtext("NextMarker")
    assert seen == ["dir", "dir/x", "example.jpg", "example.jpg/x"]

    # each goes away alone
    assert send(client, "DELETE", BUCKET, "example.jpg").status_code == 204
    assert send(client, "GET", BUCKET, "example.jpg").status_code == 404
    assert send(client, "GET", BUCKET, "example.jpg/x").get_data() == b"under a file"
    assert send(client, "DELETE", BUCKET, "dir/x").status_code == 204
    assert not (root / BUCKET / "dir").is_dir()                      # pruned
    assert send(client, "GET", BUCKET, "dir").get_data() == b"the dir object"
    # written again now that its own path is free: one object, one listing entry
    assert send(client, "PUT", BUCKET, "dir", data=b"again").status_code == 200
    assert (root / BUCKET / "dir").read_bytes() == b"again"
    assert send(client, "GET", BUCKET, "dir").get_data() == b"again"
    assert listing(send(client, "GET", BUCKET, ""))[0] == ["dir", "example.jpg/x"]
    for key in ("dir", "example.jpg/x"):
        assert send(client, "DELETE", BUCKET, key).status_code == 204
    assert listing(send(client, "GET", BUCKET, ""))[0] == []
    assert leftovers(root) == []


def test_empty_segments_and_names_like_a_put_in_flight_are_keys_of_their_own(client, root):
    for key, body in (("a/b", b"one"), ("a//b", b"two"), ("a///b", b"three"), ("p/.put-abcd1234", b"four")):
        assert send(client, "PUT", BUCKET, key, data=body).status_code == 200, key
    for key, body in (("a/b", b"one"), ("a//b", b"two"), ("a///b", b"three"), ("p/.put-abcd1234", b"four")):
        assert send(client, "GET", BUCKET, key).get_data() == body, key
    assert listing(send(client, "GET", BUCKET, ""))[0] == ["a///b", "a//b", "a/b", "example.jpg",
                                                           "p/.put-abcd1234"]
    # a temporary file of a PUT in flight, under the same kind of name, is never served
    (root / BUCKET / "p").mkdir(exist_ok=True)
    (root / BUCKET / "p" / ".put-wxyz5678").write_bytes(b"half an upload")
    assert send(client, "GET", BUCKET, "p/.put-wxyz5678").status_code == 404
    # '.' and '..' segments would be a second name for another file: refused, as for saveas targets
    for key in ("a/./b", "./a", "a/../a/b"):
        assert clean_error(send(client, "GET", BUCKET, key), 400, "InvalidObjectName")


def test_delete_prunes_empty_directories_up_to_the_bucket(client, root):
    assert send(client, "PUT", BUCKET, "one/two/three/four.txt", data=b"4").status_code == 200
    assert send(client, "PUT", BUCKET, "one/keep.txt", data=b"k").status_code == 200
    assert send(client, "DELETE", BUCKET, "one/two/three/four.txt").status_code == 204
    assert sorted(p.name for p in (root / BUCKET).iterdir()) == ["example.jpg", "one"]
    assert [p.name for p in (root / BUCKET / "one").iterdir()] == ["keep.txt"]
    assert send(client, "DELETE", BUCKET, "one/keep.txt").status_code == 204
    assert send(client, "DELETE", BUCKET, "example.jpg").status_code == 204
    assert (root / BUCKET).is_dir() and list((root / BUCKET).iterdir()) == []    # the bucket stays
    # a name that is an empty directory left behind (by hand, by an older version): PUT works
    (root / BUCKET / "leftover" / "deeper").mkdir(parents=True)
    assert send(client, "PUT", BUCKET, "leftover/deeper", data=b"d").status_code == 200
    assert send(client, "PUT", BUCKET, "leftover", data=b"l").status_code == 200   # not empty: spilled
    assert send(client, "GET", BUCKET, "leftover/deeper").get_data() == b"d"
    assert send(client, "GET", BUCKET, "leftover").get_data() == b"l"
    assert listing(send(client, "GET", BUCKET, ""))[0] == ["leftover", "leftover/deeper"]


@pytest.mark.parametrize("order", [("x", "x.json/y"), ("x.json/y", "x")])
def test_metadata_sidecars_that_would_collide(root, monkeypatch, order):
    """Without extended attributes: the sidecars of "x" and "x.json/y" want a file and a directory of
    one name; both objects keep their Content-Type."""
    monkeypatch.setattr(os, "setxattr", lambda *a, **k: (_ for _ in ()).throw(OSError(95, "no xattr")))
    client = client_for(root, default_acl=RW)
    for key in order:
        put = send(client, "PUT", BUCKET, key, data=key.encode(), content_type=f"text/x-{key[-1]}")
        assert put.status_code == 200, key
    for key in order:
        got = send(client, "GET", BUCKET, key)
        assert (got.get_data(), got.headers["Content-Type"]) == (key.encode(), f"text/x-{key[-1]}")
    for key in order:
        assert send(client, "DELETE", BUCKET, key).status_code == 204
    assert leftovers(root) == []


def test_puts_and_deletes_racing_over_shared_directories(tmp_path):
    """DELETE prunes directories that a PUT of a neighbour may have just made: every PUT still
    succeeds, and "z" beside "z/1" never fails either."""
    root = make_root(tmp_path)
    app = BucketApp(root, default_acl=RW)
    stop_at = time.monotonic() + 1.5
    failures: list[str] = []

    def loop(keys: tuple[str, ...], delete: bool) -> None:
        n = 0
        while time.monotonic() < stop_at:
            for key in keys:
                data = f"{key} {n}".encode()
                status, body = _call(app, _put_environ(key, BytesIO(data), len(data)))
                if not status.startswith("200"):
                    failures.append(f"PUT {key}: {status} {body[:200]!r}")
                if delete:
                    env = EnvironBuilder(path=f"/{BUCKET}/{key}", method="DELETE").get_environ()
                    status, body = _call(app, env)
                    if not status.startswith("204"):
                        failures.append(f"DELETE {key}: {status}")
            n += 1

    threads = [threading.Thread(target=loop, args=(("s/t/u/1",), True)),
               threading.Thread(target=loop, args=(("s/t/u/2",), False)),
               threading.Thread(target=loop, args=(("z",), True)),
               threading.Thread(target=loop, args=(("z/1", "z/2/3"), True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert send(Client(app), "GET", BUCKET, "s/t/u/2").status_code == 200
    assert not [p for p in root.rglob("*") if p.name.startswith((".put-", ".tmp-"))]


# ---------------------------------------------------------------------------------------------------
# Errors of the disk: OSS XML with a status, never a traceback or an empty reply

def _patch(monkeypatch, target, name: str, code: int, only=None) -> None:
    """``target.name`` raises OSError(code) (for the calls ``only`` picks, else every call), as the
    kernel would, with the path in the exception (which must never reach the client)."""
    real = getattr(target, name, None) or getattr(builtins, name)

    def fail(*args, **kwargs):
        if only is None or only(*args):
            raise OSError(code, os.strerror(code), str(args[0]) if args else None)
        return real(*args, **kwargs)
    monkeypatch.setattr(target, name, fail, raising=False)


def test_a_full_disk_is_507_and_keeps_the_old_object(client, root, monkeypatch, caplog):
    send(client, "PUT", BUCKET, "keep.bin", data=b"old")
    before = files_under(root)
    _patch(monkeypatch, os, "fsync", errno.ENOSPC)
    for key in ("keep.bin", LONG, "example.jpg/x"):
        err = clean_error(send(client, "PUT", BUCKET, key, data=b"new" * 1000), 507, "InsufficientStorage")
        assert err["Message"] == "There is not enough space left to store the object."
    _patch(monkeypatch, os, "fsync", errno.EDQUOT)
    clean_error(send(client, "PUT", BUCKET, "keep.bin", data=b"new"), 507, "InsufficientStorage")
    # saveas: the bucket's answer reaches the client
    clean_error(post_saveas(client, BUCKET, "example.jpg", saveas_body("out.jpg", BUCKET)), 507,
                "InsufficientStorage")
    monkeypatch.undo()
    assert send(client, "GET", BUCKET, "keep.bin").get_data() == b"old"
    assert {f for f in files_under(root) - before if not f.startswith(META_DIR)} == set()
    assert not [p for p in root.rglob("*") if p.name.startswith(".put-")]
    assert "ENOSPC" in caplog.text and "EDQUOT" in caplog.text


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EIO, errno.ENAMETOOLONG, errno.ENOTDIR],
                         ids=lambda c: errno.errorcode[c])
def test_other_errors_of_a_put_are_500_internal_error(client, root, monkeypatch, caplog, code):
    # the temporary file cannot be made (an object at its own path), or the rename fails (spilled)
    _patch(monkeypatch, bucket_module.tempfile, "mkstemp", code)
    clean_error(send(client, "PUT", BUCKET, "new.bin", data=b"x"), 500, "InternalError")
    monkeypatch.undo()
    _patch(monkeypatch, os, "replace", code)
    err = clean_error(send(client, "PUT", BUCKET, LONG, data=b"x"), 500, "InternalError")
    assert err["Message"] == "We encountered an internal error. Please try again."
    monkeypatch.undo()
    assert send(client, "GET", BUCKET, "new.bin").status_code == 404
    assert send(client, "GET", BUCKET, LONG).status_code == 404
    assert errno.errorcode[code] in caplog.text and f"(request {err['RequestId']})" in caplog.text


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO], ids=lambda c: errno.errorcode[c])
def test_errors_reading_or_deleting_are_500_internal_error(client, root, monkeypatch, caplog, code):
    """(ENOENT, ENOTDIR, EISDIR, ENAMETOOLONG on the way to a key mean that there is no such
    object: 404 NoSuchKey, and 204 for DELETE.)"""
    # GET, HEAD, processed GET, listing: the file cannot be opened
    _patch(monkeypatch, bucket_module, "open", code, only=lambda path, *a: str(path).endswith("example.jpg"))
    clean_error(send(client, "GET", BUCKET, "example.jpg"), 500, "InternalError")
    head = send(client, "HEAD", BUCKET, "example.jpg")
    assert (head.status_code, head.get_data(), head.headers["Content-Type"]) == (500, b"", "application/xml")
    processed = send(client, "GET", BUCKET, "example.jpg", query=[("x-oss-process", "image/resize,w_10")])
    clean_error(processed, 500, "InternalError")
    clean_error(send(client, "GET", BUCKET, ""), 500, "InternalError")
    monkeypatch.undo()
    # DELETE
    _patch(monkeypatch, os, "unlink", code, only=lambda path, *a: str(path).endswith("example.jpg"))
    clean_error(send(client, "DELETE", BUCKET, "example.jpg"), 500, "InternalError")
    monkeypatch.undo()
    assert send(client, "GET", BUCKET, "example.jpg").get_data() == JPEG
    assert errno.errorcode[code] in caplog.text


def test_errors_of_the_style_api_and_listing_are_500_too(client, root, monkeypatch):
    body = b"<Style><Content>image/resize,w_10</Content></Style>"
    _patch(monkeypatch, os, "replace", errno.EROFS)
    response = client.put(f"/{BUCKET}/?style&styleName=small", data=body)
    clean_error(response, 500, "InternalError")
    response.close()
    monkeypatch.undo()
    send(client, "PUT", BUCKET, LONG, data=b"spilled")
    _patch(monkeypatch, os, "scandir", errno.EACCES, only=lambda path, *a: "spill" in str(path))
    clean_error(send(client, "GET", BUCKET, ""), 500, "InternalError")


def test_real_errors_without_monkeypatching(client, root):
    """The metadata directory made a file (ENOTDIR), a spill entry's data made a directory (EISDIR)."""
    send(client, "PUT", BUCKET, LONG, data=b"x")
    entry = next((root / META_DIR / "spill" / BUCKET).iterdir())
    (entry / "object").unlink()
    (entry / "object").mkdir()
    clean_error(send(client, "PUT", BUCKET, LONG, data=b"y"), 500, "InternalError")
    assert send(client, "GET", BUCKET, LONG).status_code == 404
    shutil.rmtree(root / META_DIR)
    (root / META_DIR).write_bytes(b"not a directory")
    clean_error(send(client, "PUT", BUCKET, LONG_WIDE, data=b"x"), 500, "InternalError")
    assert send(client, "GET", BUCKET, LONG_WIDE).status_code == 404
    # the objects at their own paths still work (their metadata on the file itself)
    if _xattrs_work(root):
        assert send(client, "PUT", BUCKET, "plain.txt", data=b"p").status_code == 200
        assert send(client, "GET", BUCKET, "plain.txt").get_data() == b"p"


def test_a_client_that_goes_away_is_still_the_servers_to_handle(root):
    """A read of the request body that fails is the connection's, not the disk's: it is not turned
    into a 500 (test_bucket.py::test_failed_put_keeps_the_old_object has the rest)."""
    app = BucketApp(root, default_acl=RW)

    class Gone:
        def read(self, size=-1):
            raise ConnectionResetError(errno.ECONNRESET, "client went away")

    with pytest.raises(ConnectionResetError):
        _call(app, _put_environ(LONG, Gone(), 100))
    assert not [p for p in root.rglob("*") if p.name.startswith(".put-")]


# ---------------------------------------------------------------------------------------------------
# Real `imgmiddleware serve` over HTTP

AK, SK = "os-ak", "os-sk"
PRIVATE = "privbucket"


class Served:
    def __init__(self, proc: subprocess.Popen, port: int, root: Path, log: Path) -> None:
        self.proc, self.port, self.root, self.log = proc, port, root, log
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """(status, headers, body) with http.client: an empty reply raises RemoteDisconnected."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_instance(tmp: Path, name: str, config_text: str, env_extra: dict | None = None,
                   workers: int = 1) -> Served:
    """`imgmiddleware --config C serve --root R --bind 127.0.0.1:P` with its log in a file, in its
    own working directory, HOME and no XDG_RUNTIME_DIR (so gunicorn's per-user default paths are
    the test's, never the machine's)."""
    base = tmp / name
    root = base / "data"
    root.mkdir(parents=True)
    config = base / "imgmiddleware.toml"
    config.write_text(config_text)
    port = free_port()
    command = shutil.which("imgmiddleware")
    argv = [command] if command else [sys.executable, "-m", "imgmiddleware.cli"]
    argv += ["--config", str(config), "serve", "--root", str(root), "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGMW_") and k != "XDG_RUNTIME_DIR"}
    env["HOME"] = str(tmp / "home")
    env.update(env_extra or {})
    log = base / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Served(proc, port, root, log)
    try:
        wait_for(served.base + "/", proc)
    except BaseException:
        stop(proc)
        raise
    return served


CONFIG = (f'default_acl = "public-read-write"\n[credentials]\n{AK} = "{SK}"\n'
          f'[bucket_acl]\n{PRIVATE} = "private"\n')


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("os-errors-serve")
    server = start_instance(tmp, "one", CONFIG)
    (server.root / PRIVATE).mkdir()
    (server.root / PRIVATE / "example.jpg").write_bytes(JPEG)
    yield server
    stop(server.proc)


def test_long_keys_and_a_flat_namespace_over_http(served):
    path = "/examplebucket/" + quote(LONG_WIDE)
    status, headers, _ = served.request("PUT", path, b"over http", {"Content-Type": "text/plain"})
    assert status == 200 and headers["ETag"] == md5_etag(b"over http")
    assert served.request("GET", path)[::2] == (200, b"over http")
    status, headers, body = served.request("HEAD", path)
    assert (status, headers["Content-Length"], body) == (200, "9", b"")
    # under a file, and a name that is a directory
    assert served.request("PUT", "/examplebucket/example.jpg/x", b"x")[0] == 200
    assert served.request("PUT", "/examplebucket/dir", b"d")[0] == 200        # dir/ holds LONG_WIDE
    assert served.request("GET", "/examplebucket/example.jpg/x")[2] == b"x"
    assert served.request("GET", "/examplebucket/dir")[2] == b"d"
    status, _, body = served.request("GET", "/examplebucket/?prefix=" + quote("dir"))
    assert [k.text for k in ET.fromstring(body).iter("Key")] == ["dir", LONG_WIDE]
    # a processed GET and an anonymous saveas with a long target
    long_jpg = "/examplebucket/" + quote(LONG)
    assert served.request("PUT", long_jpg, JPEG, {"Content-Type": "image/jpeg"})[0] == 200
    status, _, body = served.request("GET", long_jpg + "?x-oss-process=image/resize,w_60")
    assert status == 200 and size_of(body)[0] == 60
    target = "saved/" + "s" * 280 + ".jpg"
    status, _, body = served.request("POST", long_jpg + "?x-oss-process", saveas_body(target, BUCKET))
    assert status == 200 and json.loads(body)["object"] == target
    assert served.request("GET", "/examplebucket/" + quote(target))[0] == 200
    # over 1023 bytes: OSS's answer
    status, headers, body = served.request("PUT", "/examplebucket/" + quote(TOO_LONG), b"x")
    assert (status, headers["x-oss-ec"]) == (400, "0016-00000003")
    assert ET.fromstring(body).findtext("Code") == "InvalidObjectName"
    for key in (LONG_WIDE, "example.jpg/x", "dir", LONG, target):
        assert served.request("DELETE", "/examplebucket/" + quote(key))[0] == 204
        assert served.request("GET", "/examplebucket/" + quote(key))[0] == 404


def test_oss2_with_long_keys_against_serve(served):
    bucket = oss2.Bucket(oss2.Auth(AK, SK), served.base, PRIVATE)
    keys = [LONG, LONG_WIDE, "example.jpg/under", LONGEST]
    for key in keys:
        result = bucket.put_object(key, key.encode() * 2, headers={"x-oss-meta-k": "v"})
        assert result.status == 200
    for key in keys:
        got = bucket.get_object(key)
        assert got.read() == key.encode() * 2 and got.headers["x-oss-meta-k"] == "v"
    listed = [o.key for o in oss2.ObjectIterator(bucket)]
    assert listed == sorted(keys + ["example.jpg"], key=lambda k: k.encode())
    listed = [o.key for o in oss2.ObjectIterator(bucket, delimiter="/")]
    assert sorted(listed) == ["a" * 300 + ".jpg", "dir/", "example.jpg", "example.jpg/", "y" * 300 + "/"]
    target = "out/" + "o" * 300 + ".jpg"
    process = f"image/resize,w_70|sys/saveas,o_{b64(target)},b_{b64(PRIVATE)}"
    result = bucket.process_object("example.jpg", process)
    assert result.status == 200 and result.object == target
    assert size_of(bucket.get_object(target).read())[0] == 70
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bucket.put_object(TOO_LONG, b"x")
    assert (raised.value.status, raised.value.code) == (400, "InvalidObjectName")
    for key in keys + [target]:
        bucket.delete_object(key)
        assert not bucket.object_exists(key)
    assert [o.key for o in oss2.ObjectIterator(bucket)] == ["example.jpg"]


def test_an_error_of_the_disk_over_http_is_a_clean_500(served):
    """A real ENOTDIR: the spill area made a file. A clean OSS XML error, never an empty reply."""
    spill = served.root / META_DIR / "spill"
    moved = served.root / META_DIR / "spill.moved"
    if spill.exists():
        spill.rename(moved)
    spill.parent.mkdir(parents=True, exist_ok=True)
    spill.write_bytes(b"in the way")
    try:
        for method in ("PUT", "GET", "HEAD", "DELETE"):
            status, headers, body = served.request(method, "/examplebucket/" + quote(LONG),
                                                   b"x" if method == "PUT" else None)
            if method == "PUT":
                assert status == 500 and ET.fromstring(body).findtext("Code") == "InternalError"
                assert headers["x-oss-request-id"] == ET.fromstring(body).findtext("RequestId")
            else:   # a file where the spill area should be: nothing stored there, nothing to delete
                assert status in (204, 404), (method, status)
        assert "bucket storage error" in served.output()
    finally:
        spill.unlink()
        if moved.exists():
            moved.rename(spill)
    assert served.request("PUT", "/examplebucket/" + quote(LONG), b"x")[0] == 200
    assert served.request("DELETE", "/examplebucket/" + quote(LONG))[0] == 204


# ---------------------------------------------------------------------------------------------------
# Several `imgmiddleware serve` on one host: gunicorn's control socket

def wait_for_line(served: Served, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in served.output().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    pytest.fail(f"no {text!r} in the log:\n{served.output()[-3000:]}")


def test_two_instances_on_one_host_share_no_control_socket(tmp_path):
    """By default `imgmiddleware serve` opens none: gunicorn's own default is one path per user
    (~/.gunicorn/gunicorn.ctl), which a second instance would take over and remove on stopping."""
    config = 'default_acl = "public-read"\n'
    first = start_instance(tmp_path, "first", config)
    try:
        second = start_instance(tmp_path, "second", config)
        try:
            for server in (first, second):
                wait_for_line(server, "Booting worker")
                status, _, body = server.request("GET", "/examplebucket/example.jpg")
                assert status == 200 and body == (server.root / "examplebucket" / "example.jpg").read_bytes()
            time.sleep(1.0)   # gunicorn opens its control socket after the workers: give it the time
            for server in (first, second):
                assert "Control socket listening" not in server.output()
            assert not (tmp_path / "home" / ".gunicorn").exists()   # gunicorn's shared default
        finally:
            stop(second.proc)
        status, _, _ = first.request("GET", "/examplebucket/example.jpg")
        assert status == 200 and first.proc.poll() is None
    finally:
        stop(first.proc)


def test_each_instance_may_have_a_control_socket_of_its_own(tmp_path):
    """IMGMW_CONTROL_SOCKET: each instance's own path; stopping one leaves the other's socket and
    server working, and gunicornc on a socket reaches that instance's workers."""
    from gunicorn.ctl.client import ControlClient

    config = 'default_acl = "public-read"\n'
    sockets = {name: tmp_path / f"{name}.ctl" for name in ("first", "second")}
    first = start_instance(tmp_path, "first", config, {"IMGMW_CONTROL_SOCKET": str(sockets["first"])})
    try:
        second = start_instance(tmp_path, "second", config, {"IMGMW_CONTROL_SOCKET": str(sockets["second"])})
        try:
            lines = {name: wait_for_line(server, "Control socket listening at")
                     for name, server in (("first", first), ("second", second))}
            assert lines["first"].endswith(str(sockets["first"]))
            assert lines["second"].endswith(str(sockets["second"]))
            for name, server in (("first", first), ("second", second)):
                with ControlClient(str(sockets[name]), timeout=10) as control:
                    workers = {w["pid"] for w in control.send_command("show workers")["workers"]}
                assert workers and workers <= child_pids(server.proc.pid), name
                assert server.request("GET", "/examplebucket/example.jpg")[0] == 200
        finally:
            stop(second.proc)
        assert not sockets["second"].exists() and sockets["first"].exists()
        assert first.request("GET", "/examplebucket/example.jpg")[0] == 200
        with ControlClient(str(sockets["first"]), timeout=10) as control:
            assert control.send_command("show workers")["count"] == 1
    finally:
        stop(first.proc)


def test_the_deploy_config_opens_no_shared_control_socket(monkeypatch, tmp_path):
    import runpy

    conf = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
    monkeypatch.delenv("IMGMW_CONTROL_SOCKET", raising=False)
    settings = runpy.run_path(str(conf))
    assert settings["control_socket_disable"] is True and "control_socket" not in settings
    monkeypatch.setenv("IMGMW_CONTROL_SOCKET", str(tmp_path / "node-1.ctl"))
    settings = runpy.run_path(str(conf))
    assert settings["control_socket_disable"] is False
    assert settings["control_socket"] == str(tmp_path / "node-1.ctl")
