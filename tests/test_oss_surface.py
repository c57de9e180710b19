"""The OSS surface through the server: ACLs and signatures, styles, custom delimiters, source-image
protection and sys/saveas (spec §1.3-§1.5, §7-§9), all on ``build_app(root, Config(...))``.

Requests are signed with the project's own ``imgmiddleware.auth`` (helpers in test_bucket.py) and
assembled the way the SDKs send them (oss2: presigned URLs with every query value percent-encoded, a
raw saveas body and no Content-Type; ali-oss: a form Content-Type and a raw '+' in base64).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from werkzeug.test import Client

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.origins.bucket import BucketAddressing, BucketApp

from .conftest import decode, save_image, size_of
from .test_bucket import (JPEG, client_for, files_under, make_root, md5_etag, oss_error, query_string,
                          send, v1_headers, v1_presigned, v4_headers, v4_presigned)

# werkzeug's lint: HEAD error answers keep their Content-Length, DeleteObject's 204 has "Content-Length: 0".
pytestmark = [pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes"),
              pytest.mark.filterwarnings("ignore:204 responses must have an empty content length")]

CREDS = {"ak": "sk"}
EXAMPLE = "examplebucket"    # private unless a test says otherwise
PRIV, PUB, RWB = "privbucket", "pubbucket", "rwbucket"
ACL = {EXAMPLE: "private", PRIV: "private", PUB: "public-read", RWB: "public-read-write"}
PROCESS = "image/resize,w_100"


def width(response) -> int:
    assert response.status_code == 200, response.get_data()[:400]
    return size_of(response.get_data())[0]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


@pytest.fixture
def root(tmp_path) -> Path:
    return make_root(tmp_path, (EXAMPLE, PRIV, PUB, RWB))


@pytest.fixture
def client(root) -> Client:
    return client_for(root, credentials=CREDS, bucket_acl=ACL)


# ---------------------------------------------------------------------------------------------------
# ACL

def test_public_read_bucket(client, root):
    got = send(client, "GET", PUB, "example.jpg")
    assert (got.status_code, got.get_data()) == (200, JPEG)
    assert width(send(client, "GET", PUB, "example.jpg", query=[("x-oss-process", PROCESS)])) == 100
    for method in ("PUT", "DELETE"):
        err = oss_error(send(client, method, PUB, "example.jpg", data=b"x" if method == "PUT" else None))
        assert (err["status"], err["Code"]) == (403, "AccessDenied")
    assert (root / PUB / "example.jpg").read_bytes() == JPEG
    # a signed PUT is allowed
    headers = v1_headers("PUT", PUB, "new.txt", content_type="text/plain")
    assert send(client, "PUT", PUB, "new.txt", data=b"hi", content_type="text/plain",
                headers=headers).status_code == 200


def test_public_read_write_bucket_takes_anonymous_writes(client, root):
    assert send(client, "PUT", RWB, "anon.txt", data=b"anon").status_code == 200
    assert (root / RWB / "anon.txt").read_bytes() == b"anon"
    assert send(client, "DELETE", RWB, "anon.txt").status_code == 204


def test_private_bucket_refuses_anonymous_requests(root):
    client = client_for(root, credentials=CREDS, bucket_acl=ACL, styles={"small": "image/resize,w_20"})
    for query in ([], [("x-oss-process", PROCESS)], [("x-oss-process", "style/small")]):
        err = oss_error(send(client, "GET", PRIV, "example.jpg", query=query))
        assert (err["status"], err["Code"]) == (403, "AccessDenied"), query
    assert send(client, "HEAD", PRIV, "example.jpg").status_code == 403
    assert oss_error(send(client, "PUT", PRIV, "x", data=b"x"))["Code"] == "AccessDenied"


def test_v1_header_signed_get_put_and_processed_get(client, root):
    got = send(client, "GET", PRIV, "example.jpg", headers=v1_headers("GET", PRIV, "example.jpg"))
    assert (got.status_code, got.get_data()) == (200, JPEG)
    headers = v1_headers("PUT", PRIV, "dir/new.jpg", content_type="image/jpeg",
                         headers={"x-oss-meta-who": "ak"})
    put = send(client, "PUT", PRIV, "dir/new.jpg", data=JPEG, content_type="image/jpeg", headers=headers)
    assert (put.status_code, put.headers["ETag"]) == (200, md5_etag(JPEG))
    assert (root / PRIV / "dir" / "new.jpg").read_bytes() == JPEG
    query = [("x-oss-process", PROCESS)]
    signed = v1_headers("GET", PRIV, "dir/new.jpg", query=query)
    response = send(client, "GET", PRIV, "dir/new.jpg", query=query, headers=signed)
    assert width(response) == 100
    assert response.headers["ETag"] == md5_etag(JPEG)
    assert response.headers["x-oss-meta-who"] == "ak"
    deleted = send(client, "DELETE", PRIV, "dir/new.jpg", headers=v1_headers("DELETE", PRIV, "dir/new.jpg"))
    assert deleted.status_code == 204


def test_v1_presigned_url_with_a_process(client):
    query = v1_presigned("GET", PRIV, "example.jpg", [("x-oss-process", PROCESS)])
    assert width(send(client, "GET", PRIV, "example.jpg", query=query)) == 100
    # the same URL with another process string
    tampered = [("x-oss-process", "image/resize,w_300")] + query[1:]
    err = oss_error(send(client, "GET", PRIV, "example.jpg", query=tampered))
    assert (err["status"], err["Code"], err["EC"]) == (403, "SignatureDoesNotMatch", "0002-00000040")
    assert err["StringToSign"].endswith("/privbucket/example.jpg?x-oss-process=image/resize,w_300")
    # a process added to a URL signed for the plain object
    plain = v1_presigned("GET", PRIV, "example.jpg")
    assert send(client, "GET", PRIV, "example.jpg", query=plain).get_data() == JPEG
    err = oss_error(send(client, "GET", PRIV, "example.jpg", query=plain + [("x-oss-process", PROCESS)]))
    assert (err["status"], err["Code"]) == (403, "SignatureDoesNotMatch")
    err = oss_error(send(client, "GET", PRIV, "example.jpg", query=[("x-oss-process", PROCESS)] + plain))
    assert (err["status"], err["Code"]) == (403, "SignatureDoesNotMatch")


def test_v1_refusals(client):
    query = [("x-oss-process", PROCESS)]
    expired = v1_presigned("GET", PRIV, "example.jpg", query, expires=int(time.time()) - 5)
    err = oss_error(send(client, "GET", PRIV, "example.jpg", query=expired))
    assert (err["status"], err["Code"], err["Message"]) == (403, "AccessDenied", "Request has expired.")
    for plain_query in ([], query):        # the bucket app and the middleware refuse alike
        wrong = v1_headers("GET", PRIV, "example.jpg", query=plain_query, sk="not-the-secret")
        err = oss_error(send(client, "GET", PRIV, "example.jpg", query=plain_query, headers=wrong))
        assert (err["status"], err["Code"]) == (403, "SignatureDoesNotMatch")
        unknown = v1_headers("GET", PRIV, "example.jpg", query=plain_query, ak="nobody")
        err = oss_error(send(client, "GET", PRIV, "example.jpg", query=plain_query, headers=unknown))
        assert (err["status"], err["Code"], err["OSSAccessKeyId"]) == (403, "InvalidAccessKeyId", "nobody")
        skewed = v1_headers("GET", PRIV, "example.jpg", query=plain_query,
                            date=time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 3600)))
        err = oss_error(send(client, "GET", PRIV, "example.jpg", query=plain_query, headers=skewed))
        assert (err["status"], err["Code"]) == (403, "RequestTimeTooSkewed")
    # a signature for one key does not open another
    other = v1_headers("GET", PRIV, "other.jpg")
    assert oss_error(send(client, "GET", PRIV, "example.jpg", headers=other))["Code"] == "SignatureDoesNotMatch"
    # refused requests never reach the disk
    wrong_put = v1_headers("PUT", PRIV, "w.txt", sk="bad")
    assert send(client, "PUT", PRIV, "w.txt", data=b"x", headers=wrong_put).status_code == 403


def test_signed_utf8_and_special_keys(client, root):
    key = "目录/中文 a+b.jpg"
    (root / PRIV / "目录").mkdir()
    (root / PRIV / key).write_bytes(JPEG)
    got = send(client, "GET", PRIV, key, headers=v1_headers("GET", PRIV, key))
    assert (got.status_code, got.get_data()) == (200, JPEG)
    query = v1_presigned("GET", PRIV, key, [("x-oss-process", PROCESS)])
    assert width(send(client, "GET", PRIV, key, query=query)) == 100
    v4 = v4_presigned("GET", PRIV, key, [("x-oss-process", PROCESS)])
    assert width(send(client, "GET", PRIV, key, query=v4)) == 100


def test_v4_presigned_url_and_header(client, root):
    query = v4_presigned("GET", PRIV, "example.jpg", [("x-oss-process", PROCESS)])
    assert width(send(client, "GET", PRIV, "example.jpg", query=query)) == 100
    tampered = [("x-oss-process", "image/resize,w_90")] + query[1:]
    err = oss_error(send(client, "GET", PRIV, "example.jpg", query=tampered))
    assert (err["status"], err["Code"]) == (403, "SignatureDoesNotMatch")
    plain = v4_presigned("GET", PRIV, "example.jpg")
    assert send(client, "GET", PRIV, "example.jpg", query=plain).get_data() == JPEG
    assert oss_error(send(client, "GET", PRIV, "example.jpg",
                          query=plain + [("x-oss-process", PROCESS)]))["Code"] == "SignatureDoesNotMatch"

    headers = v4_headers("GET", PRIV, "example.jpg", query=[("x-oss-process", PROCESS)])
    assert width(send(client, "GET", PRIV, "example.jpg", query=[("x-oss-process", PROCESS)],
                      headers=headers)) == 100
    err = oss_error(send(client, "GET", PRIV, "example.jpg", query=[("x-oss-process", "image/resize,w_9")],
                         headers=headers))
    assert err["Code"] == "SignatureDoesNotMatch"
    put_headers = v4_headers("PUT", PRIV, "v4.txt", content_type="text/plain")
    assert send(client, "PUT", PRIV, "v4.txt", data=b"v4", content_type="text/plain",
                headers=put_headers).status_code == 200
    assert (root / PRIV / "v4.txt").read_bytes() == b"v4"
    # the same headers for another body type: the signed Content-Type differs
    refused = send(client, "PUT", PRIV, "v4.txt", data=b"v4!", content_type="text/html", headers=put_headers)
    assert oss_error(refused)["Code"] == "SignatureDoesNotMatch"
    assert (root / PRIV / "v4.txt").read_bytes() == b"v4"
    wrong = v4_headers("GET", PRIV, "example.jpg", sk="bad")
    assert oss_error(send(client, "GET", PRIV, "example.jpg", headers=wrong))["Code"] == "SignatureDoesNotMatch"


# ---------------------------------------------------------------------------------------------------
# Watermark images are fetched as the requester (the principal passes down)

def _mark(directory: Path, name: str = "mark.png") -> None:
    mark = np.zeros((40, 40, 3), np.uint8)
    mark[:] = (0, 0, 255)
    ok, data = cv2.imencode(".png", mark)
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data.tobytes())


def _red_corner(data: bytes) -> bool:
    img = decode(data)
    corner = img[-50:, -50:]
    red = (corner[:, :, 2] > 200) & (corner[:, :, 1] < 60) & (corner[:, :, 0] < 60)
    return red.sum() > 400


def test_watermark_in_a_private_bucket_for_a_signed_request(client, root):
    _mark(root / PRIV, "标记/水印 1.png")      # a UTF-8 key: its subrequest path is WSGI-encoded
    process = f"image/resize,w_200/watermark,image_{b64('标记/水印 1.png').rstrip('=')},g_se,x_10,y_10"
    query = v1_presigned("GET", PRIV, "example.jpg", [("x-oss-process", process)])
    response = send(client, "GET", PRIV, "example.jpg", query=query)
    assert width(response) == 200
    assert _red_corner(response.get_data())
    plain = send(client, "GET", PRIV, "example.jpg",
                 query=v1_presigned("GET", PRIV, "example.jpg", [("x-oss-process", "image/resize,w_200")]))
    assert not _red_corner(plain.get_data())
    # anonymous: the source itself is refused first
    assert send(client, "GET", PRIV, "example.jpg", query=[("x-oss-process", process)]).status_code == 403


class MarksBucket(BucketAddressing):
    """An operator's addressing that keeps every watermark image in the private bucket 'marks'."""

    def object_path(self, environ, key: str, bucket: str | None = None) -> str:
        if bucket is None:
            return "/marks/" + key
        return super().object_path(environ, key, bucket)


def test_watermark_refused_to_an_anonymous_request(tmp_path):
    root = make_root(tmp_path, (PUB, "marks"))
    _mark(root / "marks")
    config = Config(credentials=CREDS, bucket_acl={PUB: "public-read", "marks": "private"})
    bucket = BucketApp(root, CREDS, config.bucket_acl)
    client = Client(ImageMiddleware(bucket, config, addressing=MarksBucket(root)))
    process = f"image/resize,w_200/watermark,image_{b64('mark.png').rstrip('=')}"
    err = oss_error(send(client, "GET", PUB, "example.jpg", query=[("x-oss-process", process)]))
    assert (err["status"], err["Code"], err["EC"]) == (400, "WatermarkError", "0040-00000025")
    signed = send(client, "GET", PUB, "example.jpg",
                  query=v1_presigned("GET", PUB, "example.jpg", [("x-oss-process", process)]))
    assert width(signed) == 200 and _red_corner(signed.get_data())


# ---------------------------------------------------------------------------------------------------
# Styles

STYLES_TOML = """
[all]
small = "image/resize,w_200"
shared = "image/resize,w_70"

[bucket.{pub}]
only = "image/resize,w_30"
shared = "image/resize,w_80"
"""


@pytest.fixture
def styles_file(tmp_path) -> Path:
    path = tmp_path / "styles.toml"
    path.write_text(STYLES_TOML.format(pub=PUB))
    return path


def styled(client, bucket, name, key="example.jpg", **kwargs):
    return send(client, "GET", bucket, key, query=[("x-oss-process", "style/" + name)], **kwargs)


def test_conf_styles_per_bucket_and_reload(root, styles_file):
    client = client_for(root, credentials=CREDS, bucket_acl=ACL, styles_file=str(styles_file))
    assert width(styled(client, PUB, "small")) == 200
    assert width(styled(client, PUB, "only")) == 30
    assert width(styled(client, PUB, "shared")) == 80          # [bucket.x] wins over [all]
    assert width(styled(client, RWB, "shared")) == 70
    err = oss_error(styled(client, RWB, "only"))                # another bucket's style
    assert (err["status"], err["Code"]) == (404, "NoSuchStyle")
    err = oss_error(styled(client, PUB, "nosuch"))
    assert (err["status"], err["Code"]) == (404, "NoSuchStyle")

    styles_file.write_text(STYLES_TOML.format(pub=PUB).replace("w_200", "w_120") + 'later = "image/resize,w_44"\n')
    stamp = time.time() + 5
    os.utime(styles_file, (stamp, stamp))
    assert width(styled(client, PUB, "small")) == 120
    assert width(styled(client, PUB, "later")) == 44
    styles_file.unlink()
    assert oss_error(styled(client, PUB, "small"))["Code"] == "NoSuchStyle"


def _style_request(client, method, bucket, name=None, body=None, signed=True):
    query = [("style", "")] + ([("styleName", name)] if name is not None else [])
    content_type = "application/xml" if body is not None else None
    headers = v1_headers(method, bucket, "", query=query, content_type=content_type) if signed else {}
    response = client.open(f"/{bucket}/", method=method, query_string=query_string(query), headers=headers,
                           data=body, content_type=content_type)
    response.get_data()
    response.close()
    return response


def style_xml(content: str) -> bytes:
    return f"<Style><Content>{content}</Content></Style>".encode()


def _xml(response):
    import xml.etree.ElementTree as ET
    assert response.headers["Content-Type"].startswith("application/xml")
    return ET.fromstring(response.get_data())


def test_style_api(root, styles_file):
    client = client_for(root, credentials=CREDS, bucket_acl=ACL, styles_file=str(styles_file))
    body = b"<Style><Content>image/resize,w_50</Content></Style>"
    assert _style_request(client, "PUT", PUB, "n", body).status_code == 200
    assert width(styled(client, PUB, "n")) == 50
    assert oss_error(styled(client, RWB, "n"))["Code"] == "NoSuchStyle"      # per bucket

    got = _style_request(client, "GET", PUB, "n")
    style = _xml(got)
    assert style.tag == "Style"
    assert style.findtext("Name") == "n" and style.findtext("Content") == "image/resize,w_50"
    for name in ("CreateTime", "LastModifyTime"):
        assert time.strptime(style.findtext(name), "%Y-%m-%dT%H:%M:%S.000Z")
    listed = _xml(_style_request(client, "GET", PUB))
    assert listed.tag == "StyleList"
    contents = {s.findtext("Name"): s.findtext("Content") for s in listed.findall("Style")}
    assert contents["n"] == "image/resize,w_50" and contents["only"] == "image/resize,w_30"

    # an API style wins over the conf style of the same name, and deleting it brings that back
    assert _style_request(client, "PUT", PUB, "small", style_xml("image/resize,w_60")).status_code == 200
    assert width(styled(client, PUB, "small")) == 60
    assert _style_request(client, "DELETE", PUB, "small").status_code == 204
    assert width(styled(client, PUB, "small")) == 200

    # changing a style changes the result at once (no stale cached result)
    assert _style_request(client, "PUT", PUB, "n", style_xml("image/resize,w_55")).status_code == 200
    assert width(styled(client, PUB, "n")) == 55
    again = _xml(_style_request(client, "GET", PUB, "n"))
    assert again.findtext("CreateTime") == style.findtext("CreateTime")

    assert _style_request(client, "DELETE", PUB, "n").status_code == 204
    err = oss_error(_style_request(client, "GET", PUB, "n"))
    assert (err["status"], err["Code"]) == (404, "NoSuchStyle")
    assert oss_error(styled(client, PUB, "n"))["Code"] == "NoSuchStyle"


def test_style_api_refusals(root):
    client = client_for(root, credentials=CREDS, bucket_acl=ACL)
    body = b"<Style><Content>image/resize,w_50</Content></Style>"
    for bad in ("bad name", "x" * 64, "a/b", "中文"):
        err = oss_error(_style_request(client, "PUT", PUB, bad, body))
        assert (err["status"], err["Code"], err["EC"]) == (400, "InvalidArgument", "0017-00000250"), bad
    assert _style_request(client, "PUT", PUB, "x" * 63, body).status_code == 200
    # anonymous style management is refused when credentials are configured
    err = oss_error(_style_request(client, "PUT", PUB, "anon", body, signed=False))
    assert (err["status"], err["Code"]) == (403, "AccessDenied")
    assert oss_error(styled(client, PUB, "anon"))["Code"] == "NoSuchStyle"
    err = oss_error(_style_request(client, "PUT", PUB, "nobody", b"<Style></Style>"))
    assert err["status"] == 400


def test_style_delimiter(root, styles_file):
    client = client_for(root, credentials=CREDS, bucket_acl=ACL, styles_file=str(styles_file),
                        style_delimiters="!")
    response = client.get(f"/{PUB}/example.jpg!small")
    assert width(response) == 200
    response.close()
    assert width(send(client, "GET", PUB, "example.jpg!only")) == 30
    # not a style: the key as it is
    err = oss_error(send(client, "GET", PUB, "example.jpg!nosuch"))
    assert (err["status"], err["Code"], err["Key"]) == (404, "NoSuchKey", "example.jpg!nosuch")
    # a key that really ends in !small is that object
    (root / PUB / "a!small").write_bytes(b"not an image")
    got = send(client, "GET", PUB, "a!small")
    assert (got.status_code, got.get_data()) == (200, b"not an image")
    # the same in a private bucket, signed
    (root / PRIV / "a!small").write_bytes(b"private object")
    got = send(client, "GET", PRIV, "a!small", headers=v1_headers("GET", PRIV, "a!small"))
    assert (got.status_code, got.get_data()) == (200, b"private object")
    got = send(client, "GET", PRIV, "a!small", query=v1_presigned("GET", PRIV, "a!small"))
    assert (got.status_code, got.get_data()) == (200, b"private object")
    # and a signed delimiter request of a private image is styled
    signed = send(client, "GET", PRIV, "example.jpg!small", headers=v1_headers("GET", PRIV, "example.jpg!small"))
    assert width(signed) == 200
    assert send(client, "GET", PRIV, "example.jpg!small").status_code == 403
    # without the delimiter configured, '!' is an ordinary character
    plain = client_for(root, credentials=CREDS, bucket_acl=ACL, styles_file=str(styles_file))
    assert send(plain, "GET", PUB, "example.jpg!small").status_code == 404


# ---------------------------------------------------------------------------------------------------
# Source-image protection

@pytest.fixture
def protected(root, styles_file) -> Client:
    save_image(root / PUB, "open.png", np.zeros((20, 30, 3), np.uint8))
    return client_for(root, credentials=CREDS, bucket_acl=ACL, styles_file=str(styles_file),
                      style_delimiters="!", protected={PUB: {"suffixes": [".jpg"]}})


def test_protected_source_anonymous(protected):
    err = oss_error(send(protected, "GET", PUB, "example.jpg"))
    assert (err["status"], err["Code"]) == (403, "AccessDenied")
    assert send(protected, "HEAD", PUB, "example.jpg").status_code == 403
    err = oss_error(send(protected, "GET", PUB, "example.jpg", query=[("x-oss-process", PROCESS)]))
    assert (err["status"], err["Code"], err["EC"]) == (403, "AccessDenied", "0040-00000031")
    assert width(styled(protected, PUB, "small")) == 200
    assert width(send(protected, "GET", PUB, "example.jpg!small")) == 200
    # keys that do not match the rule are not protected
    assert send(protected, "GET", PUB, "open.png").status_code == 200
    assert width(send(protected, "GET", PUB, "open.png", query=[("x-oss-process", "image/resize,w_10")])) == 10
    # other buckets are not protected
    assert send(protected, "GET", RWB, "example.jpg").get_data() == JPEG


def test_protected_source_signed(protected):
    got = send(protected, "GET", PUB, "example.jpg", headers=v1_headers("GET", PUB, "example.jpg"))
    assert (got.status_code, got.get_data()) == (200, JPEG)
    got = send(protected, "GET", PUB, "example.jpg", query=v1_presigned("GET", PUB, "example.jpg"))
    assert (got.status_code, got.get_data()) == (200, JPEG)
    query = v1_presigned("GET", PUB, "example.jpg", [("x-oss-process", PROCESS)])
    assert width(send(protected, "GET", PUB, "example.jpg", query=query)) == 100
    # a bad signature is not taken as anonymous
    bad = v1_headers("GET", PUB, "example.jpg", sk="bad")
    assert oss_error(send(protected, "GET", PUB, "example.jpg", headers=bad))["Code"] == "SignatureDoesNotMatch"


def test_protection_without_credentials(root, styles_file):
    client = client_for(root, styles_file=str(styles_file), protected={EXAMPLE: {"prefixes": ["img/"]}})
    (root / EXAMPLE / "img").mkdir()
    (root / EXAMPLE / "img" / "p.jpg").write_bytes(JPEG)
    assert oss_error(send(client, "GET", EXAMPLE, "img/p.jpg"))["Code"] == "AccessDenied"
    assert oss_error(send(client, "GET", EXAMPLE, "img/p.jpg",
                          query=[("x-oss-process", PROCESS)]))["EC"] == "0040-00000031"
    assert width(styled(client, EXAMPLE, "small", key="img/p.jpg")) == 200
    assert send(client, "GET", EXAMPLE, "example.jpg").get_data() == JPEG


# ---------------------------------------------------------------------------------------------------
# sys/saveas (POST ProcessObject)

def saveas_body(process: str, key: str | None, bucket: str | None = None, encode=b64) -> bytes:
    params = ([f"o_{encode(key)}"] if key is not None else []) + ([f"b_{encode(bucket)}"] if bucket else [])
    return f"x-oss-process={process}|sys/saveas,{','.join(params)}".encode()


def post_saveas(client, bucket, key, body: bytes, signed=True, content_type=None, host=None):
    """POST /bucket/key?x-oss-process as oss2 sends it (no Content-Type) or ali-oss (a form type)."""
    query = [("x-oss-process", "")]
    headers = v1_headers("POST", bucket, key, query=query, content_type=content_type) if signed else {}
    return send(client, "POST", bucket, key, query=query, headers=headers, data=body,
                content_type=content_type, host=host)


def saved(response) -> dict:
    assert response.status_code == 200, response.get_data()[:500]
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.get_data())


def test_saveas_as_oss2_sends_it(client, root):
    response = post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, "out/small.jpg", PRIV))
    stored = (root / PRIV / "out" / "small.jpg").read_bytes()
    assert saved(response) == {"bucket": PRIV, "fileSize": len(stored), "object": "out/small.jpg",
                               "status": "OK"}
    assert list(json.loads(response.get_data())) == ["bucket", "fileSize", "object", "status"]
    assert size_of(stored) == (100, 67)
    got = send(client, "GET", PRIV, "out/small.jpg", headers=v1_headers("GET", PRIV, "out/small.jpg"))
    assert got.get_data() == stored and got.headers["ETag"] == md5_etag(stored)
    assert got.headers["Content-Type"] == "image/jpeg"
    # no b_: the source bucket, and "" in the answer
    response = post_saveas(client, PRIV, "example.jpg", saveas_body("image/resize,w_50/format,png", "out/b.png"))
    stored = (root / PRIV / "out" / "b.png").read_bytes()
    assert saved(response) == {"bucket": "", "fileSize": len(stored), "object": "out/b.png", "status": "OK"}
    assert size_of(stored) == (50, 33)


def test_saveas_as_ali_oss_sends_it(client, root):
    key = "ali/~~~.jpg"
    standard = base64.b64encode(key.encode()).decode()
    assert "+" in standard
    body = saveas_body("image/resize,w_120", key, PRIV, encode=lambda t: base64.b64encode(t.encode()).decode())
    assert b"+" in body
    response = post_saveas(client, PRIV, "example.jpg", body, content_type="application/x-www-form-urlencoded")
    stored = (root / PRIV / "ali" / "~~~.jpg").read_bytes()
    assert saved(response) == {"bucket": PRIV, "fileSize": len(stored), "object": key, "status": "OK"}
    assert size_of(stored)[0] == 120


def test_saveas_to_another_bucket(client, root):
    response = post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, "from-priv.jpg", PUB))
    assert saved(response)["bucket"] == PUB
    assert size_of((root / PUB / "from-priv.jpg").read_bytes())[0] == 100
    assert not (root / PRIV / "from-priv.jpg").exists()
    # the same, virtual-host style
    response = post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, "vh.jpg", PUB),
                           host=f"{PRIV}.oss.test")
    assert saved(response)["bucket"] == PUB
    assert (root / PUB / "vh.jpg").is_file() and not (root / PRIV / "vh.jpg").exists()
    # a bucket that does not exist
    response = post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, "x.jpg", "nosuchbucket"))
    assert response.status_code == 404
    assert oss_error(response)["Code"] == "NoSuchBucket"


def test_saveas_with_a_style(client, root, styles_file):
    client = client_for(root, credentials=CREDS, bucket_acl=ACL, styles_file=str(styles_file))
    response = post_saveas(client, PUB, "example.jpg", saveas_body("style/only", "styled.jpg"))
    assert saved(response)["object"] == "styled.jpg"
    assert size_of((root / PUB / "styled.jpg").read_bytes())[0] == 30
    err = oss_error(post_saveas(client, PUB, "example.jpg", saveas_body("style/nosuch", "n.jpg")))
    assert (err["status"], err["Code"]) == (404, "NoSuchStyle")
    assert not (root / PUB / "n.jpg").exists()


def test_saveas_bad_requests(client, root, tmp_path):
    before = files_under(tmp_path)
    for target in ("../x.jpg", "/abs.jpg", "a/../../x.jpg", "../../secret.txt", ""):
        response = post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, target))
        assert response.status_code == 400, (target, response.get_data())
    for bucket in ("../data", "Bad_Bucket"):
        response = post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, "x.jpg", bucket))
        assert response.status_code == 400, bucket
    err = oss_error(post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, None, PRIV)))
    assert (err["status"], err["Code"]) == (400, "InvalidArgument")
    err = oss_error(post_saveas(client, PRIV, "example.jpg", b"x-oss-process=image/resize,w_10"))
    assert err["status"] == 400
    err = oss_error(post_saveas(client, PRIV, "example.jpg", b"x-oss-process=image/resize,w_10|sys/saveas,o_!!!"))
    assert err["status"] == 400
    # the source must exist
    err = oss_error(post_saveas(client, PRIV, "missing.jpg", saveas_body(PROCESS, "m.jpg")))
    assert (err["status"], err["Code"]) == (404, "NoSuchKey")
    # a GET cannot save
    process = f"{PROCESS}|sys/saveas,o_{b64('g.jpg')}"
    err = oss_error(send(client, "GET", PUB, "example.jpg", query=[("x-oss-process", process)]))
    assert (err["status"], err["Code"]) == (400, "InvalidArgument")
    # a POST without x-oss-process is no ProcessObject
    response = send(client, "POST", PUB, "example.jpg", data=b"x", headers=v1_headers("POST", PUB, "example.jpg"))
    assert (response.status_code, oss_error(response)["Code"]) == (400, "InvalidArgument")
    assert (tmp_path / "secret.txt").read_bytes() == b"sentinel: never served, never written"
    assert {f for f in files_under(tmp_path) - before if "/.imgmw" not in "/" + f} == set()


def test_saveas_permissions(client, root):
    # anonymous into a public-read bucket: the PUT is refused
    err = oss_error(post_saveas(client, PUB, "example.jpg", saveas_body(PROCESS, "anon.jpg"), signed=False))
    assert (err["status"], err["Code"]) == (403, "AccessDenied")
    assert not (root / PUB / "anon.jpg").exists()
    # anonymous into a public-read-write bucket
    response = post_saveas(client, RWB, "example.jpg", saveas_body(PROCESS, "anon.jpg"), signed=False)
    assert saved(response)["object"] == "anon.jpg"
    assert size_of((root / RWB / "anon.jpg").read_bytes())[0] == 100
    # anonymous from a public-read source into a public-read-write bucket
    response = post_saveas(client, PUB, "example.jpg", saveas_body(PROCESS, "cross.jpg", RWB), signed=False)
    assert saved(response)["bucket"] == RWB
    # anonymous from a private bucket: the source is refused
    err = oss_error(post_saveas(client, PRIV, "example.jpg", saveas_body(PROCESS, "x.jpg", RWB), signed=False))
    assert (err["status"], err["Code"]) == (403, "AccessDenied")
    assert not (root / RWB / "x.jpg").exists()
    # a bad signature
    body = saveas_body(PROCESS, "bad.jpg")
    headers = v1_headers("POST", PRIV, "example.jpg", query=[("x-oss-process", "")], sk="bad")
    response = send(client, "POST", PRIV, "example.jpg", query=[("x-oss-process", "")], headers=headers, data=body)
    assert oss_error(response)["Code"] == "SignatureDoesNotMatch"
    # a signature made without the sub-resource
    headers = v1_headers("POST", PRIV, "example.jpg")
    response = send(client, "POST", PRIV, "example.jpg", query=[("x-oss-process", "")], headers=headers, data=body)
    assert oss_error(response)["Code"] == "SignatureDoesNotMatch"
    assert not (root / PRIV / "bad.jpg").exists()


def test_a_stranger_gets_403_before_any_process_string_is_read(tmp_path):
    """Anonymous processing on a private bucket is AccessDenied whatever the process string says,
    so nobody can probe which style names exist."""
    from werkzeug.test import Client

    from imgmiddleware import Config
    from imgmiddleware.cli import build_app, seed_example_bucket

    seed_example_bucket(str(tmp_path))
    config = Config(credentials={"ak": "sk"}, default_acl="private")
    client = Client(build_app(str(tmp_path), config))
    for process in ("style/no-such-style", "image/slim,1", "image/resize,w_100"):
        response = client.get("/examplebucket/example.jpg", query_string={"x-oss-process": process})
        assert response.status_code == 403, process
        response.close()


def test_without_credentials_style_writes_follow_the_bucket_acl(tmp_path):
    from werkzeug.test import Client

    from imgmiddleware import Config
    from imgmiddleware.cli import build_app, seed_example_bucket

    seed_example_bucket(str(tmp_path))
    body = b"<Style><Content>image/resize,w_50</Content></Style>"
    readonly = Client(build_app(str(tmp_path), Config(default_acl="public-read")))
    response = readonly.put("/examplebucket/", query_string="style&styleName=s", data=body)
    assert response.status_code == 403
    response.close()
    writable = Client(build_app(str(tmp_path), Config(default_acl="public-read-write")))
    response = writable.put("/examplebucket/", query_string="style&styleName=s", data=body)
    assert response.status_code == 200
    response.close()
