"""Issue 18 B over plain HTTP: the bucket API SDK set-ups call (PutBucket, DeleteBucket, bucket ACL and
info, ListObjectsV2), multipart upload with OSS's ETag, size and order rules, x-oss-hash-crc64ecma,
OSS's Range rule, Content-Type of a PUT without one, the style API's rules, V2 signatures and the V4
region check. Requests are signed with imgmiddleware.auth's own functions; the real SDKs drive the
same operations in tests/test_sdk_bucket_api.py."""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from email.utils import formatdate
from pathlib import Path

import pytest

from imgmiddleware.auth import SignedRequest, sign_v2, v2_signature, v2_string_to_sign
from imgmiddleware.origins.bucket import META_DIR
from imgmiddleware.origins.bucket.crc64 import combine, crc64

from .test_bucket import (BUCKET, JPEG, OTHER, client_for, make_root, oss_error, send, v1_headers,
                          v4_headers, v4_presigned)

# werkzeug's lint: PutBucket's Location is a path (as OSS's), DeleteBucket's 204 says Content-Length: 0
pytestmark = [pytest.mark.filterwarnings("ignore:Absolute URLs required"),
              pytest.mark.filterwarnings("ignore:204 responses must have an empty content length"),
              pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")]
KB = 1024
CREDS = {"ak": "sk"}


@pytest.fixture
def root(tmp_path) -> Path:
    return make_root(tmp_path, (BUCKET, OTHER))


@pytest.fixture
def owner(root):
    """A private server with one key: every request below is signed by send_signed()."""
    return client_for(root, default_acl="private", credentials=CREDS)


def signed(client, method, bucket, key, query=(), data=None, headers=None, content_type=None):
    headers = dict(headers or {})
    headers.update(v1_headers(method, bucket, key, query, headers=headers, content_type=content_type))
    return send(client, method, bucket, key, query, headers=headers, data=data, content_type=content_type)


def xml(response) -> ET.Element:
    assert response.status_code == 200, response.get_data()[:400]
    return ET.fromstring(response.get_data())


# --- buckets -----------------------------------------------------------------------------------------

def test_put_bucket_with_acl_info_acl_and_delete(owner, root):
    assert signed(owner, "PUT", "newbucket", "", headers={"x-oss-acl": "public-read"}).status_code == 200
    assert (root / "newbucket").is_dir()
    info = xml(signed(owner, "GET", "newbucket", "", [("bucketInfo", "")]))
    assert info.findtext("Bucket/Name") == "newbucket"
    assert info.findtext("Bucket/AccessControlList/Grant") == "public-read"
    assert info.findtext("Bucket/Location") == "oss-cn-hangzhou"
    assert xml(signed(owner, "GET", "newbucket", "", [("acl", "")])).findtext(
        "AccessControlList/Grant") == "public-read"
    assert xml(signed(owner, "GET", "newbucket", "", [("location", "")])).text == "oss-cn-hangzhou"
    # the ACL is in force: anonymous reads of a public-read bucket, not writes
    assert signed(owner, "PUT", "newbucket", "a.jpg", data=JPEG).status_code == 200
    assert send(owner, "GET", "newbucket", "a.jpg").status_code == 200
    assert oss_error(send(owner, "PUT", "newbucket", "b.jpg", data=JPEG))["Code"] == "AccessDenied"
    # PutBucketAcl, then a bucket with an object is not deleted
    assert signed(owner, "PUT", "newbucket", "", [("acl", "")], headers={"x-oss-acl": "private"}).status_code == 200
    assert oss_error(send(owner, "GET", "newbucket", "a.jpg"))["Code"] == "AccessDenied"
    err = oss_error(signed(owner, "DELETE", "newbucket", ""))
    assert (err["status"], err["Code"], err["BucketName"]) == (409, "BucketNotEmpty", "newbucket")
    assert signed(owner, "DELETE", "newbucket", "a.jpg").status_code == 204
    assert signed(owner, "DELETE", "newbucket", "").status_code == 204
    assert not (root / "newbucket").exists()
    err = oss_error(signed(owner, "DELETE", "newbucket", ""))
    assert (err["status"], err["Code"], err["EC"]) == (404, "NoSuchBucket", "0015-00000101")


def test_acl_set_through_one_worker_holds_in_another_at_once(root):
    """Each worker keeps the bucket records it parsed, checked by the file's identity on every
    request: an ACL set through one worker (app) holds for the next request to another, both ways,
    and a record removed by hand is gone for both."""
    first, second = (client_for(root, default_acl="private", credentials=CREDS) for _ in range(2))
    assert signed(first, "PUT", BUCKET, "a.jpg", data=JPEG).status_code == 200
    for _ in range(2):                           # both have the record parsed and kept
        assert oss_error(send(second, "GET", BUCKET, "a.jpg"))["Code"] == "AccessDenied"
        assert oss_error(send(first, "GET", BUCKET, "a.jpg"))["Code"] == "AccessDenied"
    assert signed(first, "PUT", BUCKET, "", [("acl", "")], headers={"x-oss-acl": "public-read"}).status_code == 200
    assert send(second, "GET", BUCKET, "a.jpg").get_data() == JPEG
    assert signed(second, "PUT", BUCKET, "", [("acl", "")], headers={"x-oss-acl": "private"}).status_code == 200
    assert oss_error(send(first, "GET", BUCKET, "a.jpg"))["Code"] == "AccessDenied"
    assert signed(second, "PUT", BUCKET, "", [("acl", "")], headers={"x-oss-acl": "public-read"}).status_code == 200
    assert send(first, "GET", BUCKET, "a.jpg").status_code == 200
    (root / META_DIR / "buckets" / f"{BUCKET}.json").unlink()   # back to the configured ACL
    for client in (first, second):
        assert oss_error(send(client, "GET", BUCKET, "a.jpg"))["Code"] == "AccessDenied"


def test_bucket_operations_are_the_owners(owner, root):
    for method, query in (("PUT", ()), ("DELETE", ()), ("GET", [("acl", "")]), ("GET", [("bucketInfo", "")])):
        err = oss_error(send(owner, method, BUCKET if method != "PUT" else "anonbucket", "", query))
        assert (err["status"], err["Code"]) == (403, "AccessDenied"), (method, query)
    assert not (root / "anonbucket").exists()
    # a new bucket without x-oss-acl is private (OSS's default), whatever default_acl says
    public = client_for(root, default_acl="public-read", credentials=CREDS)
    assert signed(public, "PUT", "quiet", "").status_code == 200
    assert xml(signed(public, "GET", "quiet", "", [("acl", "")])).findtext("AccessControlList/Grant") == "private"
    assert signed(public, "PUT", "quiet", "").status_code == 200            # again: left as it is
    for name, code in (("Bad_Name", "InvalidBucketName"), ("ab", "InvalidBucketName")):
        assert oss_error(signed(public, "PUT", name, ""))["Code"] == code
    err = oss_error(signed(public, "PUT", "other2", "", headers={"x-oss-acl": "everyone"}))
    assert (err["Code"], err["ArgumentName"]) == ("InvalidArgument", "x-oss-acl")
    # another bucket sub-resource is not a CreateBucket
    assert oss_error(signed(public, "PUT", "quiet", "", [("cors", "")]))["Code"] == "NotImplemented"
    assert oss_error(signed(public, "PUT", "notyet", "", [("cors", "")]))["Code"] == "NoSuchBucket"


def test_create_bucket_by_virtual_host(owner, root):
    """ali-oss names a new bucket in Host (<bucket>.oss-<region>.aliyuncs.com for an IP endpoint,
    <bucket>.localhost for localhost), before the directory exists."""
    for host in ("vhbucket.oss-cn-hangzhou.aliyuncs.com", "vhbucket2.localhost:8080"):
        name = host.split(".")[0]
        headers = v1_headers("PUT", name, "")
        headers["Host"] = host
        response = owner.open("/", method="PUT", headers=headers)
        response.close()
        assert response.status_code == 200 and (root / name).is_dir(), host


# --- ListObjectsV2 -----------------------------------------------------------------------------------

def test_list_objects_v2_pages_with_tokens(owner):
    keys = ["v2/a.jpg", "v2/b.jpg", "v2/c/d.jpg", "v2/e.jpg"]
    for key in keys:
        assert signed(owner, "PUT", BUCKET, key, data=b"x").status_code == 200
    seen, token = [], None
    while True:
        query = [("list-type", "2"), ("prefix", "v2/"), ("max-keys", "2")]
        query += [("continuation-token", token)] if token else []
        page = xml(signed(owner, "GET", BUCKET, "", query))
        assert page.find("Contents/Owner") is None                    # fetch-owner not asked
        assert int(page.findtext("KeyCount")) == len(page.findall("Contents"))
        seen += [c.findtext("Key") for c in page.findall("Contents")]
        if page.findtext("IsTruncated") == "false":
            break
        token = page.findtext("NextContinuationToken")
    assert seen == keys
    rolled = xml(signed(owner, "GET", BUCKET, "", [("list-type", "2"), ("prefix", "v2/"), ("delimiter", "/"),
                                                  ("start-after", "v2/a.jpg"), ("fetch-owner", "true")]))
    assert [c.findtext("Key") for c in rolled.findall("Contents")] == ["v2/b.jpg", "v2/e.jpg"]
    assert [p.findtext("Prefix") for p in rolled.findall("CommonPrefixes")] == ["v2/c/"]
    assert rolled.find("Contents/Owner/ID") is not None and rolled.findtext("StartAfter") == "v2/a.jpg"
    err = oss_error(signed(owner, "GET", BUCKET, "", [("list-type", "2"), ("continuation-token", "%%%")]))
    assert err["Code"] == "InvalidArgument"


# --- multipart ---------------------------------------------------------------------------------------

def initiate(client, key, content_type=None) -> str:
    result = xml(signed(client, "POST", BUCKET, key, [("uploads", "")], content_type=content_type))
    assert result.findtext("Key") == key and result.findtext("Bucket") == BUCKET
    return result.findtext("UploadId")


def upload_part(client, key, upload_id, number, data):
    return signed(client, "PUT", BUCKET, key, [("partNumber", str(number)), ("uploadId", upload_id)], data=data)


def complete_body(parts) -> bytes:
    return ("<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
        + "</CompleteMultipartUpload>").encode()


def test_multipart_upload_end_to_end(owner, root):
    key = "big/photo.jpg"
    pieces = [os.urandom(150 * KB), os.urandom(100 * KB), b"tail" * 10]
    upload_id = initiate(owner, key, content_type="image/jpeg")
    assert len(upload_id) == 32
    etags = []
    for number, piece in enumerate(pieces, 1):
        response = upload_part(owner, key, upload_id, number, piece)
        assert response.status_code == 200
        assert response.headers["ETag"] == '"' + hashlib.md5(piece).hexdigest().upper() + '"'
        assert response.headers["x-oss-hash-crc64ecma"] == str(crc64(piece))
        etags.append(response.headers["ETag"])
    # a part sent again replaces the first copy
    assert upload_part(owner, key, upload_id, 2, pieces[1]).status_code == 200
    parts = xml(signed(owner, "GET", BUCKET, key, [("uploadId", upload_id), ("max-parts", "2")]))
    assert [p.findtext("PartNumber") for p in parts.findall("Part")] == ["1", "2"]
    assert parts.findtext("IsTruncated") == "true" and parts.findtext("NextPartNumberMarker") == "2"
    assert parts.findtext("Part/HashCrc64ecma") == str(crc64(pieces[0]))
    uploads = xml(signed(owner, "GET", BUCKET, "", [("uploads", "")]))
    assert [(u.findtext("Key"), u.findtext("UploadId")) for u in uploads.findall("Upload")] == [(key, upload_id)]

    done = signed(owner, "POST", BUCKET, key, [("uploadId", upload_id)],
                  data=complete_body(zip((1, 2, 3), etags)), content_type="application/xml")
    result = xml(done)
    whole = b"".join(pieces)
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in pieces)).hexdigest().upper() + "-3"
    assert result.findtext("ETag") == f'"{expected}"' and done.headers["ETag"] == f'"{expected}"'
    assert done.headers["x-oss-hash-crc64ecma"] == str(crc64(whole))
    got = signed(owner, "GET", BUCKET, key)
    assert got.get_data() == whole and got.headers["ETag"] == f'"{expected}"'
    assert got.headers["Content-Type"] == "image/jpeg"                    # from Initiate
    assert got.headers["x-oss-object-type"] == "Multipart"
    assert got.headers["x-oss-hash-crc64ecma"] == str(crc64(whole))
    # the state is gone: the upload is no more, nothing is left under .imgmw/multipart
    assert not list((root / META_DIR / "multipart" / BUCKET).iterdir())
    err = oss_error(upload_part(owner, key, upload_id, 1, b"x"))
    assert (err["status"], err["Code"], err["UploadId"]) == (404, "NoSuchUpload", upload_id)
    listed = xml(signed(owner, "GET", BUCKET, "", [("prefix", "big/")]))
    assert listed.findtext("Contents/Type") == "Multipart"


def test_multipart_rules(owner, root):
    key = "rules.bin"
    upload_id = initiate(owner, key)
    small, big = b"s" * (50 * KB), b"b" * (100 * KB)
    e1 = upload_part(owner, key, upload_id, 1, small).headers["ETag"]
    e2 = upload_part(owner, key, upload_id, 2, big).headers["ETag"]
    e3 = upload_part(owner, key, upload_id, 3, b"end").headers["ETag"]
    for number in ("0", "10001", "x"):
        err = oss_error(upload_part(owner, key, upload_id, number, b"x"))
        assert (err["Code"], err["EC"], err["ArgumentName"]) == ("InvalidArgument", "0017-00000220", "PartNumber")
    err = oss_error(signed(owner, "POST", BUCKET, key, [("uploadId", upload_id)],
                           data=complete_body([(1, e1), (2, e2), (3, e3)])))
    assert (err["status"], err["Code"], err["EC"]) == (400, "EntityTooSmall", "0042-00000213")
    err = oss_error(signed(owner, "POST", BUCKET, key, [("uploadId", upload_id)],
                           data=complete_body([(2, e2), (1, e1)])))
    assert (err["Code"], err["EC"]) == ("InvalidPartOrder", "0042-00000209")
    err = oss_error(signed(owner, "POST", BUCKET, key, [("uploadId", upload_id)],
                           data=complete_body([(2, e2), (3, '"' + "0" * 32 + '"')])))
    assert (err["Code"], err["PartNumber"]) == ("InvalidPart", "3")
    err = oss_error(signed(owner, "POST", BUCKET, key, [("uploadId", upload_id)], data=b"<nope"))
    assert err["Code"] == "MalformedXML"
    # a failed Complete keeps the upload: the last part may be the 50 KB one
    done = signed(owner, "POST", BUCKET, key, [("uploadId", upload_id)], data=complete_body([(2, e2), (1 + 2, e3)]))
    assert done.status_code == 200
    assert signed(owner, "GET", BUCKET, key).get_data() == big + b"end"
    # another key's upload id, an unknown one, and Abort
    other = initiate(owner, "other.bin")
    assert oss_error(upload_part(owner, key, other, 1, b"x"))["Code"] == "NoSuchUpload"
    assert oss_error(upload_part(owner, key, "F" * 32, 1, b"x"))["Code"] == "NoSuchUpload"
    assert oss_error(upload_part(owner, key, "../../x", 1, b"x"))["Code"] == "NoSuchUpload"
    assert signed(owner, "DELETE", BUCKET, "other.bin", [("uploadId", other)]).status_code == 204
    assert oss_error(signed(owner, "DELETE", BUCKET, "other.bin", [("uploadId", other)]))["Code"] == "NoSuchUpload"
    assert not list((root / META_DIR / "multipart" / BUCKET).iterdir())


def test_an_unfinished_upload_keeps_the_bucket(owner, root):
    assert signed(owner, "PUT", "mpbucket", "").status_code == 200
    result = xml(signed(owner, "POST", "mpbucket", "k", [("uploads", "")]))
    err = oss_error(signed(owner, "DELETE", "mpbucket", ""))
    assert err["Code"] == "BucketNotEmpty"
    assert signed(owner, "DELETE", "mpbucket", "k", [("uploadId", result.findtext("UploadId"))]).status_code == 204
    assert signed(owner, "DELETE", "mpbucket", "").status_code == 204


def test_anonymous_multipart_follows_the_acl(root):
    client = client_for(root, default_acl="public-read", credentials=CREDS)
    assert oss_error(send(client, "POST", BUCKET, "k", [("uploads", "")]))["Code"] == "AccessDenied"
    open_client = client_for(root, default_acl="public-read-write", credentials=CREDS)
    assert send(open_client, "POST", BUCKET, "k", [("uploads", "")]).status_code == 200


# --- CRC, Range, Content-Type ------------------------------------------------------------------------

def test_crc64_of_put_get_head_and_files_by_hand(owner, root):
    put = signed(owner, "PUT", BUCKET, "crc.jpg", data=JPEG, content_type="image/jpeg")
    assert put.headers["x-oss-hash-crc64ecma"] == str(crc64(JPEG))
    for method in ("GET", "HEAD"):
        assert signed(owner, method, BUCKET, "crc.jpg").headers["x-oss-hash-crc64ecma"] == str(crc64(JPEG))
    (root / BUCKET / "byhand.bin").write_bytes(b"by hand")
    assert signed(owner, "GET", BUCKET, "byhand.bin").headers["x-oss-hash-crc64ecma"] == str(crc64(b"by hand"))


def test_crc64_combine_matches_the_whole():
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA          # CRC-64/XZ, the ECMA-182 check value
    for a, b in ((b"12345", b"67890"), (os.urandom(1000), os.urandom(123_457)), (b"", b"x"), (b"abc", b"")):
        assert combine(crc64(a), crc64(b), len(b)) == crc64(a + b)


@pytest.mark.parametrize("header,standard,expected", [
    ("bytes=0-999", False, (206, 0, 999)), ("bytes=0-1000", False, (200, None, None)),
    ("bytes=1000-2000", False, (200, None, None)), ("bytes=1000-", False, (200, None, None)),
    ("bytes=-2000", False, (200, None, None)), ("byte=0-499", False, (200, None, None)),
    ("bytes=-500", False, (206, 500, 999)), ("bytes=500-", False, (206, 500, 999)),
    ("bytes=0-1,5-9", False, (206, 0, 1)),
    ("bytes=500-2000", True, (206, 500, 999)), ("bytes=1000-2000", True, (416, None, None)),
    ("bytes=0-1,5-9", True, (416, None, None)), ("bytes=-2000", True, (206, 0, 999)),
])
def test_range_follows_oss(owner, header, standard, expected):
    data = bytes(range(256)) * 3 + bytes(232)                  # 1,000 bytes
    assert signed(owner, "PUT", BUCKET, "r.bin", data=data).status_code == 200
    headers = {"Range": header}
    if standard:
        headers["x-oss-range-behavior"] = "standard"
    got = signed(owner, "GET", BUCKET, "r.bin", headers=headers)
    status, first, last = expected
    assert got.status_code == status, (header, got.get_data()[:200])
    if status == 206:
        assert got.get_data() == data[first:last + 1]
        assert got.headers["Content-Range"] == f"bytes {first}-{last}/1000"
    elif status == 200:
        assert got.get_data() == data and "Content-Range" not in got.headers
    else:
        err = oss_error(got)
        assert err["Code"] == "InvalidRange" and got.headers["Content-Range"] == "bytes */1000"


def test_presigned_put_without_content_type_is_octet_stream(owner):
    from .test_bucket import v1_presigned
    response = send(owner, "PUT", BUCKET, "nocontent.jpg", v1_presigned("PUT", BUCKET, "nocontent.jpg"), data=JPEG)
    assert response.status_code == 200
    assert signed(owner, "GET", BUCKET, "nocontent.jpg").headers["Content-Type"] == "application/octet-stream"


# --- styles ------------------------------------------------------------------------------------------

def test_style_content_is_stored_as_sent_and_list_is_the_buckets_own(root, tmp_path):
    conf = tmp_path / "styles.toml"
    conf.write_text('[all]\neverywhere = "image/resize,w_10"\n[bucket.examplebucket]\nmine = "image/resize,w_20"\n')
    client = client_for(root, default_acl="private", credentials=CREDS, styles_file=str(conf))
    body = b"<Style><Content>csdar5324</Content></Style>"
    assert signed(client, "PUT", BUCKET, "", [("style", ""), ("styleName", "aaa")], data=body).status_code == 200
    got = xml(signed(client, "GET", BUCKET, "", [("style", ""), ("styleName", "aaa")]))
    assert (got.findtext("Name"), got.findtext("Content")) == ("aaa", "csdar5324")
    err = oss_error(signed(client, "PUT", BUCKET, "", [("style", ""), ("styleName", "e")],
                           data=b"<Style><Content></Content></Style>"))
    assert (err["Code"], err["Message"]) == ("InvalidArgument", "Style content is invalid.")
    listed = xml(signed(client, "GET", BUCKET, "", [("style", "")]))
    assert [s.findtext("Name") for s in listed.findall("Style")] == ["aaa", "mine"]
    assert oss_error(signed(client, "GET", BUCKET, "", [("style", ""), ("styleName", "everywhere")]))["Code"] == \
        "NoSuchStyle"
    # the operator-wide style still works on the bucket's images
    styled = signed(client, "GET", BUCKET, "example.jpg", [("x-oss-process", "style/everywhere")])
    assert styled.status_code == 200


# --- signatures --------------------------------------------------------------------------------------

def v2_headers(method, bucket, key, query=(), additional=(), extra=None, ak="ak", sk="sk"):
    date = formatdate(usegmt=True)
    lower = {k.lower(): v for k, v in (extra or {}).items()}
    lower["date"] = date
    auth = sign_v2(SignedRequest(method, lower, list(query), bucket, key), ak, sk, date, list(additional))
    return {**(extra or {}), "Date": date, "Authorization": auth}


def test_v2_header_and_presigned_url(owner):
    got = send(owner, "GET", BUCKET, "example.jpg", headers=v2_headers("GET", BUCKET, "example.jpg"))
    assert got.status_code == 200 and got.get_data() == JPEG
    ranged = send(owner, "GET", BUCKET, "example.jpg",
                  headers=v2_headers("GET", BUCKET, "example.jpg", additional=["range"], extra={"Range": "bytes=0-9"}))
    assert ranged.status_code == 206 and ranged.get_data() == JPEG[:10]
    query = [("x-oss-process", "image/resize,w_50")]
    processed = send(owner, "GET", BUCKET, "example.jpg", query,
                     headers=v2_headers("GET", BUCKET, "example.jpg", query))
    assert processed.status_code == 200 and processed.headers["Content-Type"] == "image/jpeg"
    bad = send(owner, "GET", BUCKET, "example.jpg", headers=v2_headers("GET", BUCKET, "example.jpg", sk="wrong"))
    assert oss_error(bad)["Code"] == "SignatureDoesNotMatch"
    # presigned: x-oss-signature-version=OSS2, the expiry in the date slot
    import time
    expires = str(int(time.time()) + 600)
    pairs = [("x-oss-process", "image/resize,w_50"), ("x-oss-signature-version", "OSS2"),
             ("x-oss-expires", expires), ("x-oss-access-key-id", "ak")]
    sig = v2_signature("sk", v2_string_to_sign(SignedRequest("GET", {}, pairs, BUCKET, "example.jpg"), expires, []))
    url_ok = send(owner, "GET", BUCKET, "example.jpg", pairs + [("x-oss-signature", sig)])
    assert url_ok.status_code == 200
    tampered = [(k, "image/resize,w_60" if k == "x-oss-process" else v) for k, v in pairs]
    assert oss_error(send(owner, "GET", BUCKET, "example.jpg", tampered + [("x-oss-signature", sig)]))["Code"] == \
        "SignatureDoesNotMatch"
    old = [(k, "100" if k == "x-oss-expires" else v) for k, v in pairs]
    assert oss_error(send(owner, "GET", BUCKET, "example.jpg", old + [("x-oss-signature", sig)]))["Code"] == \
        "AccessDenied"


def test_v4_of_another_region_is_refused(owner):
    assert send(owner, "GET", BUCKET, "example.jpg", headers=v4_headers("GET", BUCKET, "example.jpg")).status_code == 200
    for query in ((), [("x-oss-process", "image/resize,w_50")]):
        err = oss_error(send(owner, "GET", BUCKET, "example.jpg", query,
                             headers=v4_headers("GET", BUCKET, "example.jpg", query, region="cn-beijing")))
        assert (err["status"], err["Code"], err["EC"]) == (400, "InvalidArgument", "0002-00000226"), query
        assert err["Message"] == "Invalid signing region in Authorization header."
        err = oss_error(send(owner, "GET", BUCKET, "example.jpg",
                             v4_presigned("GET", BUCKET, "example.jpg", query, region="cn-beijing")))
        assert (err["status"], err["Code"], err["EC"]) == (400, "InvalidArgument", "0002-00000226"), query


def test_the_region_setting(root):
    """BucketApp(region=...): the bucket's region is a parameter, Config.region's default is its."""
    from werkzeug.test import Client

    from imgmiddleware.origins.bucket import BucketApp
    client = Client(BucketApp(root, CREDS, default_acl="private", region="cn-beijing"))
    ok = send(client, "GET", BUCKET, "example.jpg", headers=v4_headers("GET", BUCKET, "example.jpg", region="cn-beijing"))
    assert ok.status_code == 200
    err = oss_error(send(client, "GET", BUCKET, "example.jpg", headers=v4_headers("GET", BUCKET, "example.jpg")))
    assert err["EC"] == "0002-00000226"



def test_the_region_setting_is_an_oss_region_id():
    from imgmiddleware import Config
    assert Config().region == "cn-hangzhou"
    for bad in ("oss-cn-hangzhou", "CN-Hangzhou", "", "cn_hangzhou"):
        with pytest.raises(ValueError, match="region"):
            Config(region=bad)
