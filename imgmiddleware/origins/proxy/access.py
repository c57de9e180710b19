"""Who may go through a proxy that signs with its own credentials.

The store trusts every request we sign, so the proxy applies OSS's rules itself, as the bundled bucket
app does: the requester is the AccessKeyId of a valid client signature (V1 or V4, checked by
auth.verify against ``credentials``), or anonymous. On the middleware's own subrequests it is the
principal the middleware verified on the outer request (PRINCIPAL_KEY; a client cannot set an
environ key), anonymous when the middleware checks no signatures.

    writes (PUT, saveas)       a signed client, or anyone when the bucket's ACL is public-read-write
    reads, bucket ACL private  a signed client only
    processed reads            anyone else the ACL lets read: the middleware fetches the original
                               for the transform and answers with the result
    plain reads (the original) a signed client, unless upstream_originals = "public-read"

So a private bucket behind the proxy keeps its originals private while its processed images are
public, the usual image origin behind a CDN. The bucket's name (upstream_bucket) keys bucket_acl and
protected, as for the bundled buckets; source-image protection (spec §1.4) applies on top, in the
middleware.
"""

from __future__ import annotations

from typing import Mapping

from ...auth import SignedRequest, verify
from ...config import UPSTREAM_ORIGINALS as ORIGINALS
from ...errors import OssError
from ...subrequest import PRINCIPAL_KEY, SUBREQUEST_MARK


class ProxyAccess:
    """``credentials``: AccessKeyId -> secret of our clients (Config.credentials); the ACLs as in
    Config (bucket_acl, default_acl); ``originals``: "private" or "public-read"."""

    def __init__(self, credentials: Mapping[str, str] | None = None,
                 bucket_acl: Mapping[str, str] | None = None, default_acl: str = "public-read",
                 originals: str = "private", region: str | None = None) -> None:
        if originals not in ORIGINALS:
            raise ValueError(f"upstream_originals must be one of {', '.join(ORIGINALS)}")
        self.credentials = dict(credentials or {})
        self.bucket_acl = dict(bucket_acl or {})
        self.default_acl = default_acl
        self.originals = originals
        self.region = region

    @classmethod
    def from_config(cls, config) -> "ProxyAccess":
        return cls(config.credentials, config.bucket_acl, config.default_acl, config.upstream_originals,
                   config.region)

    def requester(self, environ, bucket: str, key: str) -> str | None:
        """The AccessKeyId of the request's valid signature, None for an anonymous one; OssError
        for a bad signature."""
        if environ.get(SUBREQUEST_MARK):
            return environ.get(PRINCIPAL_KEY) or None
        return verify(SignedRequest.from_environ(environ, bucket, key), self.credentials, region=self.region)

    def check(self, environ, method: str, bucket: str, key: str) -> None:
        """Nothing when the request may go through; OssError (403) otherwise."""
        principal = self.requester(environ, bucket, key)
        if principal is not None:
            return
        acl = self.bucket_acl.get(bucket, self.default_acl)
        if method == "PUT":
            if acl != "public-read-write":
                raise acl_denied()
            return
        if acl == "private":
            raise acl_denied()
        if not environ.get(SUBREQUEST_MARK) and self.originals == "private":
            raise OssError("AccessDenied", "The original object is private: sign the request, or ask "
                           "for a processed image (x-oss-process).", "0003-00000001")


def acl_denied() -> OssError:
    return OssError("AccessDenied", "You have no right to access this object because of bucket acl.",
                    "0003-00000001")
