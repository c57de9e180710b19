"""OSS request signatures (spec §9): V1, V2 and V4, each as a header and as a presigned URL.

Verification: the server recomputes the signature from the request it received and compares in
constant time. It needs the request as WSGI gives it (method, headers, decoded query pairs) and the
bucket and key it addresses. ``x-oss-process`` is a signed sub-resource in V1 and, like every query
parameter, signed in V4, so a signed URL cannot be given another process string.

V2 (oss2's ``AuthV2``: ``Authorization: OSS2 ...`` and ``x-oss-signature-version=OSS2`` URLs) is
V1's string-to-sign with every query parameter in the resource, the signed additional headers listed,
and HMAC-SHA256. V4 signatures name a region: one made for another region than the server's
(``region``) is refused as OSS refuses it, before the signature is computed.

Signing (``sign_v1``, ``sign_v2``, ``sign_v4``): the reverse proxy's own requests to a private OSS bucket
(origins/proxy/signing.py), from the same string-to-sign and signature functions, so what we send
is exactly what we would accept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Mapping
from urllib.parse import quote

from .errors import OssError

MAX_SKEW_SECONDS = 15 * 60            # OSS: RequestTimeTooSkewed beyond 15 minutes
MAX_V4_EXPIRES = 7 * 24 * 3600        # spec §9.4 [INF]: at most 7 days

# V1 sub-resources (oss2 2.19.1's list, spec §9.1); any "x-oss-*" query key is signed as well.
SUBRESOURCES = frozenset("""
acl uploadId uploads partNumber group link delete website location objectInfo objectMeta
response-content-type response-content-language response-cache-control response-content-encoding
response-expires response-content-disposition logging cors lifecycle restore qos referer stat
bucketInfo append position security-token live comp status vod startTime endTime x-oss-process
symlink callback callback-var tagging encryption versions versioning versionId policy
requestPayment x-oss-traffic-limit qosInfo asyncFetch x-oss-request-payer sequential inventory
inventoryId continuation-token worm wormId wormExtend replication replicationLocation
replicationProgress transferAcceleration cname metaQuery resourceGroup style styleName
x-oss-async-process regionList x-oss-write-get-object-response img
""".split())

V4_ALGORITHM = "OSS4-HMAC-SHA256"
V2_VERSION = "OSS2"


@dataclass(frozen=True)
class SignedRequest:
    """What a verifier needs of a request, independent of WSGI."""
    method: str
    headers: Mapping[str, str]              # lower-case names
    query: list[tuple[str, str]]            # decoded (name, value) pairs, in order
    bucket: str
    key: str

    @classmethod
    def from_environ(cls, environ, bucket: str, key: str) -> "SignedRequest":
        """The request as a WSGI server hands it over, addressed to ``bucket``/``key``."""
        from .subrequest import query_pairs

        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        for name in ("CONTENT_TYPE", "CONTENT_MD5"):
            if environ.get(name):
                headers[name.replace("_", "-").lower()] = environ[name]
        query = [(k, v) for _, k, v in query_pairs(environ.get("QUERY_STRING", ""))]
        return cls(environ.get("REQUEST_METHOD", "GET"), headers, query, bucket, key)


def denied(code: str, message: str, ec: str | None = None, **extra) -> OssError:
    return OssError(code, message, ec, status=403, **extra)


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- V1 ---------------------------------------------------------------------------------------------

def v1_resource(bucket: str, key: str, query: list[tuple[str, str]]) -> str:
    resource = f"/{bucket}/{key}" if bucket else "/"
    signed = sorted((k, v) for k, v in query if k in SUBRESOURCES or k.startswith("x-oss-"))
    if signed:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in signed)
    return resource


def v1_string_to_sign(req: SignedRequest, date: str) -> str:
    oss_headers = sorted((k, v.strip()) for k, v in req.headers.items() if k.startswith("x-oss-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    return "\n".join((req.method, req.headers.get("content-md5", ""), req.headers.get("content-type", ""),
                      date, canonical_headers + v1_resource(req.bucket, req.key, req.query)))


def v1_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


# --- V2 ---------------------------------------------------------------------------------------------

def _v2_quote(text: str) -> str:
    return quote(text, safe="-_.~")


def v2_string_to_sign(req: SignedRequest, date: str, additional: list[str]) -> str:
    """VERB, Content-MD5, Content-Type, date, the x-oss-* and additional headers (lower-case names,
    sorted), the additional header names, then the resource: /bucket/key percent-encoded whole ('/'
    too) and every query parameter but the signature, encoded and sorted."""
    names = sorted(set(additional))
    headers = sorted((k, v.strip()) for k, v in req.headers.items()
                     if k.startswith("x-oss-") or k in names)
    uri = _v2_quote(f"/{req.bucket}/{req.key}" if req.bucket else "/")
    pairs = sorted((_v2_quote(k), _v2_quote(v)) for k, v in req.query if k != "x-oss-signature")
    if pairs:
        uri += "?" + "&".join(f"{k}={v}" if v else k for k, v in pairs)
    return "\n".join((req.method, req.headers.get("content-md5", ""), req.headers.get("content-type", ""),
                      date, "".join(f"{k}:{v}\n" for k, v in headers) + ";".join(names), uri))


def v2_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# --- V4 ---------------------------------------------------------------------------------------------

def _v4_quote(text: str, keep: str = "") -> str:
    return quote(text, safe="-_.~" + keep)


def v4_canonical_request(req: SignedRequest, additional: list[str], payload_hash: str) -> str:
    uri = _v4_quote(f"/{req.bucket}/{req.key}" if req.bucket else "/", keep="/")
    pairs = sorted((_v4_quote(k), _v4_quote(v)) for k, v in req.query if k != "x-oss-signature")
    query = "&".join(f"{k}={v}" if v else k for k, v in pairs)
    names = sorted({k for k in req.headers if k.startswith("x-oss-") or k in ("content-type", "content-md5")}
                   | {h for h in additional if h in req.headers})
    headers = "".join(f"{k}:{req.headers[k].strip()}\n" for k in names)
    return "\n".join((req.method, uri, query, headers, ";".join(sorted(additional)), payload_hash))


def v4_signing_key(secret: str, date: str, region: str) -> bytes:
    key = hmac.new(("aliyun_v4" + secret).encode("utf-8"), date.encode("utf-8"), hashlib.sha256).digest()
    for part in (region, "oss", "aliyun_v4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def v4_signature(secret: str, req: SignedRequest, when: str, scope: str, additional: list[str],
                 payload_hash: str) -> str:
    canonical = v4_canonical_request(req, additional, payload_hash)
    string = "\n".join((V4_ALGORITHM, when, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()))
    date, region = scope.split("/")[0], scope.split("/")[1]
    return hmac.new(v4_signing_key(secret, date, region), string.encode("utf-8"), hashlib.sha256).hexdigest()


# --- signing ----------------------------------------------------------------------------------------

def sign_v1(req: SignedRequest, access_key: str, secret: str, date: str) -> str:
    """The V1 Authorization header of ``req``, whose Date (or x-oss-date) header is ``date``."""
    return f"OSS {access_key}:{v1_signature(secret, v1_string_to_sign(req, date))}"


def sign_v2(req: SignedRequest, access_key: str, secret: str, date: str,
            additional: list[str] = ()) -> str:
    """The V2 Authorization header of ``req``, whose Date header is ``date``."""
    names = sorted(additional)
    signature = v2_signature(secret, v2_string_to_sign(req, date, names))
    listed = f",AdditionalHeaders:{';'.join(names)}" if names else ""
    return f"OSS2 AccessKeyId:{access_key}{listed},Signature:{signature}"


def sign_v4(req: SignedRequest, access_key: str, secret: str, region: str, when: str,
            additional: list[str] = ()) -> str:
    """The V4 Authorization header of ``req``, whose x-oss-date header is ``when``
    (yyyymmddThhmmssZ); ``additional``: lower-case names of other headers to sign with it."""
    scope = f"{when[:8]}/{region}/oss/aliyun_v4_request"
    payload = req.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    names = sorted(additional)
    signature = v4_signature(secret, req, when, scope, names, payload)
    listed = f",AdditionalHeaders={';'.join(names)}" if names else ""
    return f"{V4_ALGORITHM} Credential={access_key}/{scope}{listed},Signature={signature}"


# --- verification -----------------------------------------------------------------------------------

def verify(req: SignedRequest, credentials: Mapping[str, str], now: float | None = None,
           region: str | None = None) -> str | None:
    """The access key id of a correctly signed request, None for an anonymous one; OssError otherwise.
    ``region``: the server's; a V4 signature scoped to another is refused (None: not checked)."""
    now = time.time() if now is None else now
    query = dict(reversed(req.query))   # duplicates: the first wins (spec §9.2)
    authorization = req.headers.get("authorization", "")
    in_url_v1 = "Signature" in query or "OSSAccessKeyId" in query
    in_url = "x-oss-signature" in query
    if authorization and (in_url_v1 or in_url):
        raise OssError("InvalidArgument", "Authorization header and signature parameters both given.")
    if region is not None:
        check_region(req, region)
    if authorization.startswith("OSS "):
        return _verify_v1_header(req, authorization[4:], credentials, now)
    if authorization.startswith(V2_VERSION + " "):
        return _verify_v2_header(req, authorization[len(V2_VERSION) + 1:], credentials, now)
    if authorization.startswith(V4_ALGORITHM + " "):
        return _verify_v4_header(req, authorization[len(V4_ALGORITHM) + 1:], credentials, now)
    if authorization:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    version = query.get("x-oss-signature-version")
    if version == V2_VERSION:
        return _verify_v2_query(req, query, credentials, now)
    if in_url or version == V4_ALGORITHM:
        return _verify_v4_query(req, query, credentials, now)
    if in_url_v1 or "Expires" in query:
        return _verify_v1_query(req, query, credentials, now)
    return None


def v4_region(req: SignedRequest) -> str | None:
    """The region a V4 signature is scoped to (header or URL), None for any other request."""
    authorization = req.headers.get("authorization", "")
    credential = None
    if authorization.startswith(V4_ALGORITHM + " "):
        for item in authorization[len(V4_ALGORITHM) + 1:].replace(", ", ",").split(","):
            name, _, content = item.strip().partition("=")
            if name == "Credential":
                credential = content
    elif not authorization:
        query = dict(reversed(req.query))
        if query.get("x-oss-signature-version") == V4_ALGORITHM or (
                "x-oss-signature" in query and query.get("x-oss-signature-version") != V2_VERSION):
            credential = query.get("x-oss-credential")
    if not credential:
        return None
    parts = credential.split("/")
    return parts[2] if len(parts) == 5 else None


def check_region(req: SignedRequest, region: str) -> None:
    """OSS's refusal of a V4 signature scoped to another region than the bucket's (400
    InvalidArgument, EC 0002-00000226). The bundled bucket runs this on the middleware's
    subrequests too, which keep the client's Authorization or x-oss-credential."""
    scoped = v4_region(req)
    if scoped is not None and scoped != region:
        raise OssError("InvalidArgument", "Invalid signing region in Authorization header.", "0002-00000226",
                       status=400)


def _secret(credentials: Mapping[str, str], access_key: str) -> str:
    secret = credentials.get(access_key)
    if secret is None:
        raise denied("InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.",
                     OSSAccessKeyId=access_key)
    return secret


def _mismatch(string_to_sign: str, provided: str, access_key: str) -> OssError:
    return denied("SignatureDoesNotMatch",
                  "The request signature we calculated does not match the signature you provided. "
                  "Check your key and signing method.", "0002-00000040",
                  StringToSign=string_to_sign, SignatureProvided=provided, OSSAccessKeyId=access_key)


def _verify_v1_header(req: SignedRequest, credential: str, credentials, now: float) -> str:
    access_key, sep, provided = credential.partition(":")
    if not sep or not access_key or not provided:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    date = _checked_date(req.headers.get("x-oss-date") or req.headers.get("date"), now)
    secret = _secret(credentials, access_key)
    # oss2 signs x-oss-date in the Date slot when it sends one; other SDKs sign Date: accept either.
    for slot in dict.fromkeys(d for d in (req.headers.get("x-oss-date"), req.headers.get("date")) if d):
        string = v1_string_to_sign(req, slot)
        if constant_time_equal(v1_signature(secret, string), provided):
            return access_key
    raise _mismatch(v1_string_to_sign(req, date), provided, access_key)


def _verify_v1_query(req: SignedRequest, query: dict, credentials, now: float) -> str:
    access_key, expires, provided = query.get("OSSAccessKeyId"), query.get("Expires"), query.get("Signature")
    if not (access_key and expires and provided):
        raise denied("AccessDenied", "Missing OSSAccessKeyId, Expires or Signature.")
    _check_expiry(expires, now)
    secret = _secret(credentials, access_key)
    string = v1_string_to_sign(req, expires)
    if not constant_time_equal(v1_signature(secret, string), provided):
        raise _mismatch(string, provided, access_key)
    return access_key


def _check_expiry(expires: str, now: float) -> None:
    """The Expires of a presigned URL (V1 and V2): a number of seconds since the epoch, not past."""
    try:
        expiry = int(expires)
    except ValueError:
        raise denied("AccessDenied", "Invalid Expires.") from None
    if now > expiry:
        raise denied("AccessDenied", "Request has expired.", Expires=expires)


def _checked_date(date: str | None, now: float) -> str:
    """The signed Date of a header signature (V1 and V2), present, parseable and within the skew."""
    if not date:
        raise denied("AccessDenied", "Missing Date Header.")
    try:
        when = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        raise denied("AccessDenied", "Invalid Date Header.") from None
    if abs(now - when) > MAX_SKEW_SECONDS:
        raise denied("RequestTimeTooSkewed",
                     "The difference between the request time and the current time is too large.")
    return date


def _verify_v2_header(req: SignedRequest, value: str, credentials, now: float) -> str:
    fields = {}
    for item in value.split(","):
        name, sep, content = item.strip().partition(":")
        if sep:
            fields[name] = content
    access_key, provided = fields.get("AccessKeyId"), fields.get("Signature")
    if not access_key or not provided:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    date = _checked_date(req.headers.get("date"), now)
    secret = _secret(credentials, access_key)
    additional = [h.strip().lower() for h in fields.get("AdditionalHeaders", "").split(";") if h.strip()]
    string = v2_string_to_sign(req, date, additional)
    if not constant_time_equal(v2_signature(secret, string), provided):
        raise _mismatch(string, provided, access_key)
    return access_key


def _verify_v2_query(req: SignedRequest, query: dict, credentials, now: float) -> str:
    access_key, expires = query.get("x-oss-access-key-id"), query.get("x-oss-expires")
    provided = query.get("x-oss-signature")
    if not (access_key and expires and provided):
        raise denied("AccessDenied", "Missing x-oss-access-key-id, x-oss-expires or x-oss-signature.")
    _check_expiry(expires, now)
    secret = _secret(credentials, access_key)
    additional = [h.strip().lower() for h in query.get("x-oss-additional-headers", "").split(";") if h.strip()]
    string = v2_string_to_sign(req, expires, additional)
    if not constant_time_equal(v2_signature(secret, string), provided):
        raise _mismatch(string, provided, access_key)
    return access_key


def _parse_v4_credential(credential: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "oss" or parts[4] != "aliyun_v4_request" or not parts[0]:
        raise OssError("InvalidArgument", "Credential is malformed.", "0002-00000224")
    access_key, date, region = parts[0], parts[1], parts[2]
    return access_key, date, region, "/".join(parts[1:])


def _v4_time(when: str, now: float) -> float:
    try:
        return datetime.strptime(when, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise denied("AccessDenied", "Invalid x-oss-date.") from None


def _verify_v4_header(req: SignedRequest, value: str, credentials, now: float) -> str:
    fields = {}
    for item in value.replace(", ", ",").split(","):
        name, _, content = item.strip().partition("=")
        fields[name] = content
    if "Credential" not in fields or "Signature" not in fields:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    access_key, date, region, scope = _parse_v4_credential(fields["Credential"])
    when = req.headers.get("x-oss-date", "")
    moment = _v4_time(when, now)
    if abs(now - moment) > MAX_SKEW_SECONDS:
        raise denied("RequestTimeTooSkewed",
                     "The difference between the request time and the current time is too large.")
    additional = [h.strip().lower() for h in fields.get("AdditionalHeaders", "").split(";") if h.strip()]
    payload = req.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    secret = _secret(credentials, access_key)
    expected = v4_signature(secret, req, when, scope, additional, payload)
    if not constant_time_equal(expected, fields["Signature"]):
        raise _mismatch(v4_canonical_request(req, additional, payload), fields["Signature"], access_key)
    return access_key


def _verify_v4_query(req: SignedRequest, query: dict, credentials, now: float) -> str:
    if "x-oss-expires" not in query:
        raise OssError("InvalidArgument", "x-oss-expires is missing.", "0002-00000215")
    if not query["x-oss-expires"]:
        raise OssError("InvalidArgument", "x-oss-expires is empty.", "0002-00000216")
    credential = query.get("x-oss-credential")
    if not credential:
        raise OssError("InvalidArgument", "x-oss-credential is empty.", "0002-00000223")
    access_key, date, region, scope = _parse_v4_credential(credential)
    when = query.get("x-oss-date", "")
    moment = _v4_time(when, now)
    try:
        lifetime = int(query["x-oss-expires"])
    except ValueError:
        raise OssError("InvalidArgument", "x-oss-expires is invalid.", "0002-00000216") from None
    if not 0 < lifetime <= MAX_V4_EXPIRES:
        raise OssError("InvalidArgument", "x-oss-expires is out of range.", "0002-00000216")
    if now > moment + lifetime:
        raise denied("AccessDenied", "Request has expired.")
    if moment - now > MAX_SKEW_SECONDS:
        raise denied("RequestTimeTooSkewed",
                     "The difference between the request time and the current time is too large.")
    additional = [h.strip().lower() for h in query.get("x-oss-additional-headers", "").split(";") if h.strip()]
    secret = _secret(credentials, access_key)
    expected = v4_signature(secret, req, when, scope, additional, "UNSIGNED-PAYLOAD")
    provided = query.get("x-oss-signature", "")
    if not constant_time_equal(expected, provided):
        raise _mismatch(v4_canonical_request(req, additional, "UNSIGNED-PAYLOAD"), provided, access_key)
    return access_key
