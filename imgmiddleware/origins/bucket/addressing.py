"""Where the bucket and the key are in a request: path style (``/bucket/key``, what SDKs use for an
IP or localhost endpoint) or virtual-host style (``Host: bucket.<host>``, when the first label names
an existing bucket), and the PATH_INFO of another object of a bucket, for the middleware's
subrequests."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...subrequest import PATH_STYLE_KEY as PATH_STYLE
from ...subrequest import key_to_wsgi, wsgi_to_key

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")
# Hosts whose first label is always a bucket, even one that does not exist yet (a CreateBucket):
# <bucket>.oss-<region>.aliyuncs.com (what ali-oss puts in Host for an IP endpoint) and
# <bucket>.localhost (RFC 6761: loopback only; what ali-oss builds for "http://localhost:PORT").
BUCKET_HOST = re.compile(r"[^.]+\.(oss-[^.]+\.aliyuncs\.com|localhost)\Z", re.I)


@dataclass(frozen=True)
class Located:
    bucket: str
    key: str
    virtual_host: bool


@lru_cache(maxsize=256)
def is_ip_or_localhost(host: str) -> bool:
    """An IP address, localhost or no host at all: nothing a bucket name could stand in front of
    (path-style addressing; the proxy's upstream too)."""
    if host in ("localhost", ""):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:                     # unreadable, a name too long: not a bucket we can serve
        return False


class BucketAddressing:
    """Where buckets and keys are in a request, and where another object of a bucket lives."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def locate(self, environ) -> Located:
        raw = environ.get("HTTP_HOST", "")
        host = raw if "]" in raw else raw.rsplit(":", 1)[0]
        path = wsgi_to_key(environ.get("PATH_INFO", "") or "/")
        first = host.split(".", 1)[0]
        if not environ.get(PATH_STYLE) and not is_ip_or_localhost(host) and "." in host \
                and BUCKET_NAME.match(first) and (is_dir(self.root / first)
                                                  or BUCKET_HOST.match(host)):
            return Located(first, path[1:], True)
        bucket, _, key = path[1:].partition("/")
        return Located(bucket, key, False)

    def bucket_of(self, environ) -> str:
        return self.locate(environ).bucket

    def key_of(self, environ) -> str:
        return self.locate(environ).key

    def object_path(self, environ, key: str, bucket: str | None = None) -> str:
        """PATH_INFO for ``key`` in ``bucket`` (default: the request's bucket), in the request's style;
        "/<bucket>/<key>" for another bucket of a virtual-host request (its subrequest must then carry
        PATH_STYLE_KEY, or the Host would still name the request's bucket)."""
        here = self.locate(environ)
        if here.virtual_host and (bucket is None or bucket == here.bucket):
            return key_to_wsgi("/" + key)
        return key_to_wsgi(f"/{bucket or here.bucket}/{key}")
