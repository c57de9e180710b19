"""OSS signatures (spec §9): the §10 vectors (31-38), and what the verifier refuses, with which code."""

from __future__ import annotations

import pytest

from imgmiddleware.auth import (SignedRequest, v1_signature, v1_string_to_sign, v4_signature, verify)
from imgmiddleware.errors import OssError

DATE = "Sun, 12 Nov 2023 16:42:40 GMT"
DATE_TS = 1699807360            # DATE as a Unix time
CREDENTIALS = {"ak": "sk"}


def request(method="GET", headers=None, query=(), bucket="bucket", key="example.jpg"):
    return SignedRequest(method, dict(headers or {}), list(query), bucket, key)


# --- the vectors of §10 ------------------------------------------------------------------------------

@pytest.mark.parametrize("req, slot, expected", [
    # 31: V1 presigned GET with x-oss-process
    (request(query=[("x-oss-process", "image/resize,w_100"), ("OSSAccessKeyId", "ak"),
                    ("Expires", "1699807420"), ("Signature", "x")]), "1699807420",
     "0dHkb3+smQt17Wzdqmf83UC4KuE="),
    # 32: the same with a style
    (request(query=[("x-oss-process", "style/small")]), "1699807420", "vp33FWOfbJb/RpMSaNjHmrH3nkU="),
    # 33: V1 header GET
    (request(headers={"date": DATE}, query=[("x-oss-process", "image/resize,w_100")]), DATE,
     "1LjiIjjjgvNcIsa2f1Hui6pzM4s="),
    # 34: V1 header POST ProcessObject: empty sub-resource value -> bare key
    (request("POST", {"date": DATE}, [("x-oss-process", "")]), DATE, "jxpUwgTpptYqukE7spXtj40ywS8="),
    # 35: V1 presigned GET of a version
    (request(query=[("versionId", "versionId")], key="key"), "1699807420", "dcLTea+Yh9ApirQ8o8dOPqtvJXQ="),
])
def test_v1_vectors(req, slot, expected):
    assert v1_signature("sk", v1_string_to_sign(req, slot)) == expected


def test_v1_documentation_example():
    """36: OSS's documented PUT example with x-oss-* headers."""
    req = request("PUT", {"content-md5": "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=",
                          "content-type": "text/html", "date": "Thu, 17 Nov 2005 18:49:58 GMT",
                          "x-oss-magic": "abracadabra", "x-oss-meta-author": "foo@bar.com"},
                  bucket="oss-example", key="nelson")
    string = v1_string_to_sign(req, "Thu, 17 Nov 2005 18:49:58 GMT")
    assert string.endswith("x-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n/oss-example/nelson")
    assert v1_signature("OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV", string) == "26NBxoKdsyly4EDv6inkoDft/yA="


def test_v4_presign_vector():
    """37: oss2's V4 presigned URL."""
    req = request(query=[("x-oss-process", "image/resize,w_100"),
                         ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
                         ("x-oss-credential", "ak/20231217/cn-hangzhou/oss/aliyun_v4_request"),
                         ("x-oss-date", "20231217T025437Z"), ("x-oss-expires", "600")])
    assert v4_signature("sk", req, "20231217T025437Z", "20231217/cn-hangzhou/oss/aliyun_v4_request", [],
                        "UNSIGNED-PAYLOAD") == "9d6c49968a68d7a3ac8566fe7896f6b54678e6f033416d674c16c560d4ccf100"


def test_v4_header_vector():
    """38: Go v2's TestV4AuthHeader: '+' and '|' in query names, empty values, '+' and '/' in the key."""
    req = request("PUT", {"x-oss-head1": "value", "content-type": "text/plain",
                          "x-oss-content-sha256": "UNSIGNED-PAYLOAD", "x-oss-date": "20231216T162057Z",
                          "abc": "value", "zabc": "value", "xyz": "value"},
                  [("param1", "value1"), ("+param1", "value3"), ("|param1", "value4"), ("+param2", ""),
                   ("|param2", ""), ("param2", "")], key="1234+-/123/1.txt")
    assert v4_signature("sk", req, "20231216T162057Z", "20231216/cn-hangzhou/oss/aliyun_v4_request", [],
                        "UNSIGNED-PAYLOAD") == "e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
    header = ("OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,"
              "Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe")
    signed = request("PUT", {**req.headers, "authorization": header}, req.query, key=req.key)
    assert verify(signed, CREDENTIALS, now=1702743657) == "ak"


# --- verify(): accepted and refused ----------------------------------------------------------------

def v1_header_request(process="image/resize,w_100", date=DATE, secret="sk", ak="ak", **extra):
    base = request(headers={"date": date}, query=[("x-oss-process", process)])
    sig = v1_signature(secret, v1_string_to_sign(base, date))
    return request(headers={"date": date, "authorization": f"OSS {ak}:{sig}", **extra},
                   query=[("x-oss-process", process)])


def v1_url_request(process="image/resize,w_100", expires=1699807420, tamper=None):
    base = request(query=[("x-oss-process", process)])
    sig = v1_signature("sk", v1_string_to_sign(base, str(expires)))
    return request(query=[("x-oss-process", tamper or process), ("OSSAccessKeyId", "ak"),
                          ("Expires", str(expires)), ("Signature", sig)])


def refused(req, now=DATE_TS) -> OssError:
    with pytest.raises(OssError) as info:
        verify(req, CREDENTIALS, now=now)
    return info.value


def test_anonymous_requests_carry_no_principal():
    assert verify(request(query=[("x-oss-process", "image/resize,w_100")]), CREDENTIALS) is None


def test_v1_header_and_url_are_accepted():
    assert verify(v1_header_request(), CREDENTIALS, now=DATE_TS) == "ak"
    assert verify(v1_url_request(), CREDENTIALS, now=1699807000) == "ak"


def test_oss2_puts_x_oss_date_in_the_date_slot():
    x_date = "Sun, 12 Nov 2023 16:43:00 GMT"
    base = request(headers={"x-oss-date": x_date, "date": DATE}, query=[("x-oss-process", "image/info")])
    sig = v1_signature("sk", v1_string_to_sign(base, x_date))
    signed = request(headers={**base.headers, "authorization": f"OSS ak:{sig}"}, query=base.query)
    assert verify(signed, CREDENTIALS, now=DATE_TS) == "ak"


def test_a_changed_process_string_breaks_the_signature():
    err = refused(v1_url_request(tamper="image/resize,w_2000"), now=1699807000)
    assert (err.status, err.code) == (403, "SignatureDoesNotMatch")
    assert err.extra["StringToSign"].endswith("x-oss-process=image/resize,w_2000")


def test_a_tampered_signature_wrong_key_and_unknown_key():
    assert refused(v1_header_request(secret="other")).code == "SignatureDoesNotMatch"
    err = refused(v1_header_request(ak="nobody"))
    assert (err.status, err.code) == (403, "InvalidAccessKeyId")


def test_expired_url_and_skewed_clock():
    err = refused(v1_url_request(expires=1699807420), now=1699807421)
    assert (err.status, err.code, err.message) == (403, "AccessDenied", "Request has expired.")
    err = refused(v1_header_request(), now=DATE_TS + 16 * 60)
    assert (err.status, err.code) == (403, "RequestTimeTooSkewed")


def test_missing_date_and_malformed_headers():
    req = request(headers={"authorization": "OSS ak:abc"}, query=[("x-oss-process", "image/info")])
    assert refused(req).code == "AccessDenied"
    req = request(headers={"authorization": "OSS nocolon", "date": DATE})
    err = refused(req)
    assert (err.status, err.code) == (400, "InvalidArgument")
    both = v1_url_request()
    both = request(headers={"authorization": "OSS ak:x", "date": DATE}, query=both.query)
    assert refused(both, now=1699807000).code == "InvalidArgument"


def test_v1_url_with_a_missing_part_is_denied():
    req = request(query=[("x-oss-process", "image/info"), ("OSSAccessKeyId", "ak"), ("Expires", "1699807420")])
    assert refused(req, now=1699807000).code == "AccessDenied"


def v4_url_request(process="image/resize,w_100", when="20231217T025437Z", expires="600", tamper=None):
    query = [("x-oss-process", process), ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
             ("x-oss-credential", "ak/20231217/cn-hangzhou/oss/aliyun_v4_request"),
             ("x-oss-date", when), ("x-oss-expires", expires)]
    sig = v4_signature("sk", request(query=query), when, "20231217/cn-hangzhou/oss/aliyun_v4_request", [],
                       "UNSIGNED-PAYLOAD")
    if tamper:
        query[0] = ("x-oss-process", tamper)
    return request(query=query + [("x-oss-signature", sig)])


V4_NOW = 1702781677 + 60       # a minute after 20231217T025437Z


def test_v4_url_accepted_tampered_and_expired():
    assert verify(v4_url_request(), CREDENTIALS, now=V4_NOW) == "ak"
    assert refused(v4_url_request(tamper="image/resize,w_9"), now=V4_NOW).code == "SignatureDoesNotMatch"
    err = refused(v4_url_request(), now=V4_NOW + 600)
    assert (err.code, err.message) == ("AccessDenied", "Request has expired.")


@pytest.mark.parametrize("change, ec", [
    (lambda q: [p for p in q if p[0] != "x-oss-expires"], "0002-00000215"),
    (lambda q: [(k, "" if k == "x-oss-expires" else v) for k, v in q], "0002-00000216"),
    (lambda q: [(k, "" if k == "x-oss-credential" else v) for k, v in q], "0002-00000223"),
    (lambda q: [(k, "ak/20231217/oss" if k == "x-oss-credential" else v) for k, v in q], "0002-00000224"),
])
def test_v4_url_parameter_errors(change, ec):
    req = v4_url_request()
    err = refused(request(query=change(req.query)), now=V4_NOW)
    assert (err.status, err.ec) == (400, ec)
