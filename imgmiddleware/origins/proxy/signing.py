"""Our own signatures on the proxy's requests to a private object store.

    s3        AWS Signature V4 by botocore's signer, S3SigV4Auth (the 's3' extra): S3 and the stores
              that speak its API (MinIO, Ceph, R2, ...)
    oss-v1    OSS's V1 header signature, auth.sign_v1
    oss-v4    OSS4-HMAC-SHA256, auth.sign_v4 (needs the region)

The OSS signatures come from auth.py, the functions that verify our own clients, so what we send is
what we accept. What is signed is what is sent: the method, the re-encoded path, the query (only
``versionId`` is passed on: through our keys the proxy does Get, Head and PutObject, no other API),
Host, the forwarded headers with Range and the conditional headers of the cache's revalidations
(SigV4 signs every header; OSS V4 lists them as additional headers, as oss2 does with Range and
If-Modified-Since; V1 has no place for them) and the date. A PUT body streams through unread, so its
hash is UNSIGNED-PAYLOAD, which S3 and OSS accept; a client's Content-MD5 is still signed and checked.

The client's own credentials never reach the store: its Authorization and Date are dropped, and of
its x-amz-* / x-oss-* headers only the object's metadata on a PUT passes (x-amz-meta-* to S3,
x-oss-meta-* to OSS); the security token, the date and the content hash are ours.

Credentials: ``upstream_access_key_id``, ``upstream_access_key_secret`` and
``upstream_session_token`` (in the config file, or IMGMW_UPSTREAM_* in the environment), else the
environment every SDK reads: botocore's chain for S3 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, a profile of the shared files, a container or instance role, refreshed before
they expire), OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET and OSS_SESSION_TOKEN for OSS (the names of
oss2, ali-oss and Alibaba's other SDKs). A secret is never logged, and no repr holds one.

An upstream that refuses our signature (401, 403) is the server's trouble, not the client's, and its
answer would show a stranger our key id and canonical request: :func:`refusal` makes it OSS XML with
the upstream's Code, OSS's EC where it has one, a message of ours, no-store; the upstream's Code and
request id go to the log.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Callable, Mapping

from ...auth import SignedRequest, sign_v1, sign_v4
from ...errors import OssError

log = logging.getLogger("imgmiddleware.proxy")

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# The query parameters passed on to a signed upstream: the object's version, nothing else (a
# sub-resource such as ?acl, ?tagging or ?uploads would be another API called with our keys).
FORWARDED_QUERY = frozenset({"versionId"})
# Headers OSS V4 signs as "additional headers" when a request carries them.
V4_ADDITIONAL = ("if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
                 "range")
# What an upstream says when it refuses a signature or a key; kept as the Code of our answer.
REFUSAL_CODES = frozenset({
    "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "RequestTimeTooSkewed",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "InvalidSecurityToken",
    "SecurityTokenExpired", "AllAccessDisabled", "AccountProblem"})
REFUSAL_EC = {"SignatureDoesNotMatch": "0002-00000040"}       # OSS's ECs (spec §7)
REFUSAL_READ = 16 * 1024            # an error body is small; more is not read


@dataclass
class UpstreamRequest:
    """One request to the upstream, as it will be sent; ``sign`` adds to its headers."""
    method: str
    url: str                            # scheme://<Host><target>
    headers: dict[str, str] = field(repr=False)   # holds our signature and session token
    bucket: str
    key: str                            # decoded UTF-8
    query: list[tuple[str, str]]        # decoded pairs, in the order sent

    def for_oss(self) -> SignedRequest:
        """The request as auth.py's functions see it (lower-case header names)."""
        return SignedRequest(self.method, {k.lower(): v for k, v in self.headers.items()}, self.query,
                             self.bucket, self.key)


@dataclass(frozen=True)
class Credentials:
    """A key, its secret and an optional session token; botocore's signer reads the same names."""
    access_key: str
    secret_key: str = field(repr=False)
    token: str = field(default="", repr=False)


class Signer:
    """Signs requests to one bucket with one set of credentials (``credentials()`` is called per
    request: botocore's refreshable credentials rotate under it)."""

    name = ""
    metadata_prefix = ""

    def __init__(self, credentials: Callable[[], Credentials], region: str) -> None:
        self.credentials = credentials
        self.region = region

    def forwards(self, header: str, method: str) -> bool:
        """Whether a client's header may go to the store in a request we sign."""
        lower = header.lower()
        if lower in ("authorization", "date"):
            return False
        if lower.startswith(("x-amz-", "x-oss-")):
            return method == "PUT" and lower.startswith(self.metadata_prefix)
        return True

    def sign(self, request: UpstreamRequest) -> None:
        raise NotImplementedError


class S3Signer(Signer):
    """AWS Signature V4 for S3 by botocore."""

    name = "s3"
    metadata_prefix = "x-amz-meta-"

    def __init__(self, credentials: Callable[[], Credentials], region: str) -> None:
        super().__init__(credentials, region or "us-east-1")
        try:
            from botocore.auth import S3SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.config import Config as BotocoreConfig
        except ImportError:
            raise ValueError('upstream_signing = "s3" needs botocore: '
                             "pip install 'imgmiddleware[s3]'") from None
        self._auth = S3SigV4Auth
        self._request = AWSRequest
        # botocore's own switch for S3's optional payload signing: a streamed body is not hashed.
        self._unsigned_body = BotocoreConfig(s3={"payload_signing_enabled": False})

    def sign(self, request: UpstreamRequest) -> None:
        aws = self._request(method=request.method, url=request.url, headers=request.headers)
        if request.method == "PUT":
            aws.context["client_config"] = self._unsigned_body
        self._auth(self.credentials(), "s3", self.region).add_auth(aws)
        request.headers = dict(aws.headers.items())


class OssV1Signer(Signer):
    """OSS V1: HMAC-SHA1 over the method, Content-MD5, Content-Type, Date, x-oss-* headers and
    /<bucket>/<key> with its sub-resources."""

    name = "oss-v1"
    metadata_prefix = "x-oss-meta-"

    def sign(self, request: UpstreamRequest) -> None:
        credentials = self.credentials()
        date = formatdate(usegmt=True)
        request.headers["Date"] = date
        if credentials.token:
            request.headers["x-oss-security-token"] = credentials.token
        request.headers["Authorization"] = sign_v1(request.for_oss(), credentials.access_key,
                                                   credentials.secret_key, date)


class OssV4Signer(Signer):
    """OSS V4: HMAC-SHA256 with a key derived for the day and the region."""

    name = "oss-v4"
    metadata_prefix = "x-oss-meta-"

    def __init__(self, credentials: Callable[[], Credentials], region: str) -> None:
        if not region:
            raise ValueError('upstream_signing = "oss-v4" needs upstream_region (e.g. "cn-hangzhou")')
        super().__init__(credentials, region)

    def sign(self, request: UpstreamRequest) -> None:
        credentials = self.credentials()
        when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        request.headers["x-oss-date"] = when
        request.headers["x-oss-content-sha256"] = UNSIGNED_PAYLOAD
        if credentials.token:
            request.headers["x-oss-security-token"] = credentials.token
        present = {name.lower() for name in request.headers}
        additional = [name for name in V4_ADDITIONAL if name in present]
        request.headers["Authorization"] = sign_v4(request.for_oss(), credentials.access_key,
                                                   credentials.secret_key, self.region, when, additional)


SIGNERS = {"s3": S3Signer, "oss-v1": OssV1Signer, "oss-v4": OssV4Signer}


def signer_from_config(config, environ: Mapping[str, str] | None = None) -> Signer | None:
    """The signer the config asks for (None: forward the client's own Authorization), with its
    credentials found now, so a server without them does not start."""
    if not config.upstream_signing:
        return None
    environ = os.environ if environ is None else environ
    credentials = (s3_credentials(config) if config.upstream_signing == "s3"
                   else oss_credentials(config, environ))
    return SIGNERS[config.upstream_signing](credentials, config.upstream_region)


def _configured(config) -> Credentials | None:
    if not config.upstream_access_key_id:
        return None
    return Credentials(config.upstream_access_key_id, config.upstream_access_key_secret,
                       config.upstream_session_token)


def oss_credentials(config, environ: Mapping[str, str]) -> Callable[[], Credentials]:
    """The config's key, else OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET / OSS_SESSION_TOKEN."""
    found = _configured(config)
    if found is None and environ.get("OSS_ACCESS_KEY_ID"):
        found = Credentials(environ["OSS_ACCESS_KEY_ID"], environ.get("OSS_ACCESS_KEY_SECRET", ""),
                            environ.get("OSS_SESSION_TOKEN", ""))
    if found is None or not found.secret_key:
        raise ValueError(f'upstream_signing = "{config.upstream_signing}" needs credentials: '
                         "upstream_access_key_id and upstream_access_key_secret, or OSS_ACCESS_KEY_ID "
                         "and OSS_ACCESS_KEY_SECRET in the environment")
    return lambda: found


def s3_credentials(config) -> Callable[[], Credentials]:
    """The config's key, else botocore's credential chain (environment, shared files, roles)."""
    found = _configured(config)
    if found is not None:
        return lambda: found
    try:
        from botocore.session import Session
    except ImportError:
        raise ValueError('upstream_signing = "s3" needs botocore: '
                         "pip install 'imgmiddleware[s3]'") from None
    chain = Session().get_credentials()
    if chain is None:
        raise ValueError('upstream_signing = "s3" needs credentials: upstream_access_key_id and '
                         "upstream_access_key_secret, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                         "in the environment (or any source of botocore's chain: a profile, a role)")

    def frozen() -> Credentials:
        # One consistent key, secret and token, even while a refresh replaces them.
        current = chain.get_frozen_credentials()
        return Credentials(current.access_key, current.secret_key, current.token or "")

    return frozen


# --- an upstream's refusal ----------------------------------------------------------------------------

_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")


def refusal(status: int, body: bytes, upstream: str, request_id: str = "") -> OssError:
    """The answer to an upstream's 401 or 403 to a request we signed: 403 with its Code (when it is
    one of the refusals both stores use, else AccessDenied), OSS's EC for it, and nothing else of
    the upstream's body (it names our key id and the canonical request)."""
    match = _CODE.search(body)
    code = match.group(1).decode("ascii") if match else ""
    log.warning("upstream %s refused a signed request: %s %s (its request id %s); check the "
                "upstream credentials and region", upstream, status, code or "(no body)",
                request_id or "-")
    if code not in REFUSAL_CODES:
        code = "AccessDenied"
    return OssError(code, f"The object store behind this server refused the request it signed "
                          f"({code}).", REFUSAL_EC.get(code), status=403)
