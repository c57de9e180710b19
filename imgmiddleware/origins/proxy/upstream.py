"""Where the proxy's objects are, and how its clients name them.

``upstream`` alone is any HTTP origin, with an optional base path: ``http://nginx:8081/images``.
With a bucket it is an object store's endpoint (``https://s3.eu-west-1.amazonaws.com``,
``https://oss-cn-hangzhou.aliyuncs.com``, ``http://minio:9000``) and the bucket is named the way the
store expects:

    virtual   Host: <bucket>.<endpoint host>, path /<key>      (AWS and OSS's default)
    path      Host: <endpoint host>, path /<bucket>/<key>       (MinIO's default, IP endpoints)
    auto      path for an endpoint that is an IP address, localhost or a name without a dot (a
              container's, such as http://minio:9000), or a bucket name with a dot (a wildcard
              certificate does not cover it); virtual otherwise

The connection always goes to the endpoint's own address: a virtual-host request names its bucket
in Host and, over TLS, in SNI and the certificate check, as AWS's and OSS's regional endpoints and a
MinIO with MINIO_DOMAIN answer them on those addresses. So no wildcard DNS is needed (a store on
loopback, a MinIO on a private network), and one pool serves every request.

The proxy's clients see that one bucket as OSS shows a bucket on a custom domain: ``/<key>``,
signed as ``/<bucket>/<key>`` (:class:`CustomDomainAddressing`). So the bucket's name keys
``bucket_acl``, ``protected`` and the styles tables, as for the bundled bucket app.
"""

from __future__ import annotations

from dataclasses import dataclass

from urllib3.util import parse_url

from ...config import UPSTREAM_ADDRESSING as ADDRESSING
from ...config import UPSTREAM_BUCKET_NAME as BUCKET_NAME
from ...errors import OssError
from ...subrequest import PlainAddressing
from ..bucket.addressing import is_ip_or_localhost


@dataclass(frozen=True)
class Upstream:
    """The resolved upstream: where to connect, what to name, what to put before every path."""
    url: str                          # as configured, for logs and errors
    scheme: str
    origin: str                       # scheme://host[:port] the pool connects to
    host_header: str                  # the Host every request names
    base_path: str                    # before every request's path: "", "/base" or "/<bucket>"
    bucket: str = ""                  # "" for a plain HTTP origin
    style: str = ""                   # "virtual" or "path" with a bucket
    server_hostname: str | None = None   # TLS SNI and certificate name, when not the origin's host


def locate(upstream: str, bucket: str = "", addressing: str = "auto") -> Upstream:
    """The upstream of ``upstream`` (an origin URL, or with ``bucket`` an endpoint) and ``bucket``."""
    parsed = parse_url(upstream)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"upstream must be an http:// or https:// URL, not {upstream!r}")
    if parsed.auth or parsed.query is not None or parsed.fragment is not None:
        raise ValueError(f"upstream must be scheme://host[:port][/path], without credentials, "
                         f"query or fragment: {upstream!r}")
    default_port = 443 if parsed.scheme == "https" else 80
    port = "" if parsed.port in (None, default_port) else f":{parsed.port}"
    host = parsed.host
    origin = f"{parsed.scheme}://{host}{port}"
    base_path = (parsed.path or "").rstrip("/")
    if not bucket:
        return Upstream(upstream, parsed.scheme, origin, host + port, base_path)
    if not BUCKET_NAME.match(bucket):
        raise ValueError(f"upstream_bucket {bucket!r} is not a bucket name")
    if base_path:
        raise ValueError(f"with upstream_bucket, upstream is the store's endpoint, scheme://host[:port] "
                         f"without a path: {upstream!r}")
    if addressing not in ADDRESSING:
        raise ValueError(f"upstream_addressing must be one of {', '.join(ADDRESSING)}")
    style = addressing
    if style == "auto":
        style = "path" if is_ip_or_localhost(host) or "." not in host or "." in bucket else "virtual"
    if style == "path":
        return Upstream(upstream, parsed.scheme, origin, host + port, f"/{bucket}", bucket, style)
    virtual_host = f"{bucket}.{host}"
    return Upstream(upstream, parsed.scheme, origin, virtual_host + port, "", bucket, style,
                    server_hostname=virtual_host if parsed.scheme == "https" else None)


class CustomDomainAddressing(PlainAddressing):
    """The proxy's one bucket as its clients see it: every object at /<key>, signed as
    /<bucket>/<key> (OSS's custom-domain view; SDKs sign it so with is_cname / cname: true)."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def bucket_of(self, environ) -> str:
        return self.bucket

    def object_path(self, environ, key: str, bucket: str | None = None) -> str:
        if bucket not in (None, "", self.bucket):
            # saveas into another bucket: not one this proxy reaches
            raise OssError("NoSuchBucket", "The specified bucket does not exist.", "0015-00000101",
                           BucketName=bucket)
        return super().object_path(environ, key)
