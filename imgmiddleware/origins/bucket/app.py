"""BucketApp: the WSGI app of the bundled bucket. It finds the bucket and the key, verifies the
signature (or trusts the middleware's verified principal on its subrequests), applies the bucket's
ACL, and hands the request to the module of its operation. Any OSError of the disk becomes OSS XML
(507 when full, else 500 with the errno logged), never an empty reply."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Mapping

from ...auth import SUBRESOURCES, SignedRequest, check_region, verify
from ...errors import OssError, new_request_id
from ...subrequest import PRINCIPAL_KEY as PRINCIPAL
from ...subrequest import SUBREQUEST_MARK as SUBREQUEST
from . import listing, objects
from .addressing import BucketAddressing, Located
from .buckets import Buckets
from .multipart import Multipart
from .store import ObjectStore
from .styles_api import style_api
from .wire import ClientBodyError, first_values, query

DEFAULT_REGION = "cn-hangzhou"
FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
# Bucket sub-resources this app answers; any other on a bucket is 501 NotImplemented.
BUCKET_GETS = ("acl", "bucketInfo", "location", "uploads", "style")
# Object sub-resources a PUT or GET of ours would otherwise take for a plain PutObject / GetObject.
OBJECT_OTHERS = ("acl", "symlink", "tagging", "append", "restore", "objectInfo", "cors", "comp")

log = logging.getLogger("imgmiddleware.bucket")


class BucketApp:
    """The WSGI app. ``credentials`` maps AccessKeyId -> secret; ``acl`` maps bucket -> canned ACL;
    ``region``: the region V4 signatures must be scoped to (OSS's ID form, "cn-hangzhou")."""

    def __init__(self, root: str | os.PathLike, credentials: Mapping[str, str] | None = None,
                 acl: Mapping[str, str] | None = None, default_acl: str = "public-read",
                 styles=None, region: str = DEFAULT_REGION) -> None:
        self.root = Path(root)
        self.addressing = BucketAddressing(root)
        self.credentials = dict(credentials or {})
        self.acl = dict(acl or {})
        self.default_acl = default_acl
        self.styles = styles
        self.region = region
        self.store = ObjectStore(root)
        self.buckets = Buckets(self.root, self.acl, default_acl, region)
        self.multipart = Multipart(self.root, self.store)

    # --- WSGI ---------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request_id = new_request_id()
        try:
            try:
                response = self._dispatch(environ)
            except ClientBodyError as gone:
                raise gone.error from None      # the client's connection: the server's to handle
            except OSError as failure:
                raise storage_error(failure, request_id, environ) from None
        except OssError as err:
            status, headers, body = err.to_response(request_id, environ.get("HTTP_HOST", ""))
            start_response(status, headers)
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        # werkzeug's Headers and objects.ObjectAnswer's list both take these (none of ours sets them)
        response.headers.extend((("x-oss-request-id", request_id), ("Server", "AliyunOSS")))
        return response(environ, start_response)

    def _dispatch(self, environ):
        where = self.addressing.locate(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        pairs = query(environ)
        params = first_values(pairs)
        if not where.bucket:
            return self._service(environ, method, pairs, params)
        if method == "PUT" and not where.key and not any(k in SUBRESOURCES for k in params):
            principal = self._authenticate(environ, where)
            self._owner(principal)
            return self.buckets.put_bucket(environ, where.bucket)
        bucket_dir = self.store.bucket_dir(where.bucket)
        principal = self._authenticate(environ, where)
        if not where.key:
            return self._bucket(environ, method, where, bucket_dir, params, principal)
        return self._object(environ, method, where, bucket_dir, params, principal)

    def _service(self, environ, method: str, pairs, params: dict):
        """ListBuckets on ``/``: as on OSS, only for a signed request (never anonymous)."""
        if method not in ("GET", "HEAD") or any(k in SUBRESOURCES for k, _ in pairs):
            raise OssError("NotImplemented", "Only ListBuckets is supported on the service root.")
        if verify(SignedRequest.from_environ(environ, "", ""), self.credentials, region=self.region) is None:
            raise OssError("AccessDenied", "Anonymous access is forbidden for this operation.",
                           "0003-00000001", status=403)
        return listing.list_buckets(self.root, params, environ.get("HTTP_HOST", ""), self.region,
                                    self.buckets.created)

    def _bucket(self, environ, method: str, where: Located, bucket_dir: Path, params: dict,
                principal: str | None):
        bucket = where.bucket
        if "style" in params:
            if principal is None and self.credentials:
                raise OssError("AccessDenied", "Style operations need a signed request.")
            self._allow(bucket, principal, write=method != "GET")   # without credentials: the ACL
            return style_api(self.styles, environ, method, bucket, params)
        if method in ("GET", "HEAD"):
            if "uploads" in params:
                self._allow(bucket, principal, write=True)
                return self.multipart.list_uploads(bucket, params)
            if "acl" in params:
                self._owner(principal)
                return self.buckets.get_acl(bucket)
            if "bucketInfo" in params:
                self._owner(principal)
                return self.buckets.get_info(bucket, environ.get("HTTP_HOST", ""))
            if "location" in params:
                self._owner(principal)
                return self.buckets.get_location()
            if any(k in SUBRESOURCES and k != "continuation-token" for k in params):
                raise OssError("NotImplemented", "This bucket operation is not supported.")
            self._allow(bucket, principal, write=False)
            if params.get("list-type") == "2":
                return listing.list_objects_v2(self.store, bucket, bucket_dir, params)
            return listing.list_objects(self.store, bucket, bucket_dir, params)
        if method == "PUT" and "acl" in params:
            self._owner(principal)
            return self.buckets.put_acl(environ, bucket)
        if method == "DELETE" and not any(k in SUBRESOURCES for k in params):
            self._owner(principal)
            busy = self.store.has_objects(bucket_dir) or self.multipart.has_uploads(bucket)
            response = self.buckets.delete_bucket(bucket, bucket_dir, busy)
            self.multipart.forget_bucket(bucket)
            return response
        raise OssError("NotImplemented", "This bucket operation is not supported.")

    def _object(self, environ, method: str, where: Located, bucket_dir: Path, params: dict,
                principal: str | None):
        stored = self.store.locate(bucket_dir, where.key)
        if method in ("GET", "HEAD"):
            self._allow(where.bucket, principal, write=False)
            if "uploadId" in params and method == "GET":
                self._allow(where.bucket, principal, write=True)
                return self.multipart.list_parts(where, params)
            return objects.get(self.store, environ, where, stored)
        if method == "PUT":
            self._allow(where.bucket, principal, write=True)
            if "uploadId" in params or "partNumber" in params:
                return self.multipart.upload_part(environ, where, params)
            if any(k in params for k in OBJECT_OTHERS):
                raise OssError("NotImplemented", "This object operation is not supported.")
            return objects.put(self.store, environ, where, stored)
        if method == "DELETE":
            self._allow(where.bucket, principal, write=True)
            if "uploadId" in params:
                return self.multipart.abort(where, params)
            return objects.delete(self.store, stored)
        if method == "POST":
            self._allow(where.bucket, principal, write=True)
            if "uploads" in params:
                return self.multipart.initiate(environ, where, params)
            if "uploadId" in params:
                return self.multipart.complete(environ, where, stored, params)
            raise OssError("InvalidArgument", f"operation not support post: {','.join(params) or '(none)'}")
        raise OssError("MethodNotAllowed", "The specified method is not allowed against this resource.",
                       status=405)

    # --- access ---------------------------------------------------------------------------------------

    def _authenticate(self, environ, where: Located) -> str | None:
        signed = SignedRequest.from_environ(environ, where.bucket, where.key)
        if environ.get(SUBREQUEST) and PRINCIPAL in environ:
            # The middleware verified the outer request; its Authorization (or x-oss-credential) is
            # still here, so a V4 signature of another region is refused on this path too.
            check_region(signed, self.region)
            return environ[PRINCIPAL] or None
        return verify(signed, self.credentials, region=self.region)

    def bucket_acl(self, bucket: str) -> str:
        return self.buckets.acl_of(bucket)

    def _allow(self, bucket: str, principal: str | None, write: bool) -> None:
        if principal is not None:
            return
        acl = self.bucket_acl(bucket)
        if acl == "public-read-write" or (acl == "public-read" and not write):
            return
        raise OssError("AccessDenied", "You have no right to access this object because of bucket acl.",
                       "0003-00000001")

    @staticmethod
    def _owner(principal: str | None) -> None:
        """Bucket operations (create, delete, ACL, info): the owner's, so a signed request's."""
        if principal is None:
            raise OssError("AccessDenied", "Anonymous access is forbidden for this operation.",
                           "0003-00000001", status=403)


def storage_error(err: OSError, request_id: str, environ) -> OssError:
    """An OSError of the disk as OSS XML: 507 when it is full, else 500 InternalError. The operator
    gets the errno and the path in the log; the client gets no path."""
    name = errno.errorcode.get(err.errno or 0, "OSError")
    log.error("bucket storage error %s on %s %r (request %s): %s", name,
              environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""), request_id, err,
              exc_info=err.errno not in FULL)
    if err.errno in FULL:
        return OssError("InsufficientStorage", "There is not enough space left to store the object.",
                        status=507)
    return OssError("InternalError", "We encountered an internal error. Please try again.", status=500)
