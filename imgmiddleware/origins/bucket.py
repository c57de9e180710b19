"""An OSS-compatible bucket over a local directory: ``root/<bucket>/<key>``, the embedded default.

GetObject / HeadObject (Range and conditional GET through werkzeug's send_file), PutObject (streamed to
a temporary file, then renamed: atomic), DeleteObject, user metadata, OSS-style ETags (the upper-case
MD5 of the content, quoted), NoSuchKey / NoSuchBucket XML errors, V1/V4 signatures and a canned ACL
per bucket. Path-style (``/bucket/key``, what SDKs use for an IP or localhost endpoint) and
virtual-host style (``bucket.<host>``) addressing.

Metadata (ETag, Content-Type, x-oss-meta-*) is stored on the data file itself, in the extended
attribute ``user.imgmw.meta``, written to the temporary file before the rename: a reader takes the
metadata of the very file it opened, so a concurrent PUT shows it the old object or the new one, never
a mix, and never the new body with a guessed Content-Type. Where the file system has no user
extended attributes, it lives beside the data under ``root/.imgmw/meta/`` (no bucket can be named
``.imgmw``), or, where that name cannot be a file (``x`` and ``x.json/y`` want a file and a directory
of one name there; a name too long), under ``root/.imgmw/keyed/`` by the key's SHA-256. Either way it
is keyed to the data file's identity (inode, mtime, size), so a stale one is never taken. Files dropped
into a bucket directory by hand are served too; their ETag is computed on first read and remembered
in that sidecar (the file itself is left untouched).

OSS's namespace is flat, a directory tree is not: ``a`` and ``a/b`` can both be objects, a key may have
a segment longer than the file system's NAME_MAX (OSS limits only the whole key, 1023 bytes), or an
empty segment (``a//b``). An object whose own path cannot hold it (a file where a directory is needed,
a non-empty directory where the file should be, a segment too long, a name like a PUT in flight) is
stored under ``root/.imgmw/spill/<bucket>/<sha256 of the key>/``: the data in ``object``, the key in
``key``. GET, HEAD and DELETE look at the key's own path first, then at its spill entry; ListObjects
merges both, so it lists the real keys in order. DELETE removes the directories it leaves empty (up to
the bucket's, never above), and a PUT of a name that is an empty directory replaces it. A key over
1023 bytes is OSS's 400 InvalidObjectName (EC 0016-00000003); '.' and '..' segments are refused (a
second name for another file). Any other error of the disk is an OSS XML error: 507
InsufficientStorage when it is full, 500 InternalError otherwise (logged with the errno, the path and
the request id; the client gets neither path nor traceback).
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import logging
import mimetypes
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping
from urllib.parse import quote
from xml.sax.saxutils import escape

from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.security import safe_join
from werkzeug.utils import send_file

from ..auth import SUBRESOURCES, SignedRequest, verify
from ..errors import OssError, new_request_id
from ..subrequest import PATH_STYLE_KEY as PATH_STYLE
from ..subrequest import PRINCIPAL_KEY as PRINCIPAL
from ..subrequest import key_to_wsgi, query_pairs, wsgi_to_key
from ..subrequest import SUBREQUEST_MARK as SUBREQUEST

META_DIR = ".imgmw"
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")
ACLS = ("private", "public-read", "public-read-write")
CHUNK = 1 << 20
MAX_KEYS = 1000                      # OSS: max-keys 1..1000, 100 when absent
PUT_TEMP = re.compile(r"\.put-[A-Za-z0-9_]{8}\Z")   # a PUT in flight (tempfile.mkstemp's names)
MAX_KEY_BYTES = 1023                 # OSS: 1 to 1023 bytes of UTF-8; no limit on a segment
SPILL = "spill"                      # root/.imgmw/spill/<bucket>/<sha256 of key>/{key,object}
KEYED_META = "keyed"                 # root/.imgmw/keyed/<bucket>/<sha256 of key>.json
# What stops a key from living at its own path: a file where a directory is needed (ENOTDIR,
# EEXIST), a directory where the file is needed (EISDIR, ENOTEMPTY), a path over PATH_MAX.
BLOCKED = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY, errno.ENAMETOOLONG})
ABSENT = BLOCKED | {errno.ENOENT}
FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
RETRIES = 5                          # a PUT racing a DELETE that removes the directory it just made

log = logging.getLogger("imgmiddleware.bucket")


@dataclass(frozen=True)
class Located:
    bucket: str
    key: str
    virtual_host: bool


@dataclass(frozen=True)
class Stored:
    """Where one key of a bucket lives: its own path in the bucket's tree (``natural``; None when the
    name can never be a path there), else its spill entry."""
    bucket: str
    key: str
    natural: Path | None
    entry: Path

    @property
    def spilled(self) -> Path:
        return self.entry / "object"


class _ClientBodyError(Exception):
    """Reading the request body failed: the client's connection, not the disk. Re-raised as it was."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _is_ip_or_localhost(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class BucketAddressing:
    """Where buckets and keys are in a request, and where another object of a bucket lives."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def locate(self, environ) -> Located:
        host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0] if "]" not in environ.get("HTTP_HOST", "") \
            else environ.get("HTTP_HOST", "")
        path = wsgi_to_key(environ.get("PATH_INFO", "") or "/")
        first = host.split(".", 1)[0]
        if not environ.get(PATH_STYLE) and not _is_ip_or_localhost(host) and "." in host \
                and BUCKET_NAME.match(first) and _is_dir(self.root / first):
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


class BucketApp:
    """The WSGI app. ``credentials`` maps AccessKeyId -> secret; ``acl`` maps bucket -> canned ACL."""

    def __init__(self, root: str | os.PathLike, credentials: Mapping[str, str] | None = None,
                 acl: Mapping[str, str] | None = None, default_acl: str = "public-read",
                 styles=None) -> None:
        self.root = Path(root)
        self.addressing = BucketAddressing(root)
        self.credentials = dict(credentials or {})
        self.acl = dict(acl or {})
        self.default_acl = default_acl
        self.styles = styles
        self._name_max: dict[str, int] = {}

    # --- WSGI ---------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request_id = new_request_id()
        try:
            try:
                response = self._dispatch(environ, request_id)
            except _ClientBodyError as gone:
                raise gone.error from None      # the client's connection: the server's to handle
            except OSError as failure:
                raise storage_error(failure, request_id, environ) from None
        except OssError as err:
            status, headers, body = err.to_response(request_id, environ.get("HTTP_HOST", ""))
            start_response(status, headers)
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        response.headers["x-oss-request-id"] = request_id
        response.headers["Server"] = "AliyunOSS"
        return response(environ, start_response)

    def _dispatch(self, environ, request_id: str):
        from werkzeug.wrappers import Response

        where = self.addressing.locate(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        query = _query(environ)
        if not where.bucket:
            return self._list_buckets(environ, method, where, query)
        bucket_dir = self._bucket_dir(where.bucket)
        principal = self._authenticate(environ, where, query)
        if "style" in dict(query) and not where.key:
            return self._style_api(environ, method, where.bucket, dict(query), principal)
        if not where.key:
            if method in ("GET", "HEAD") and not any(k in SUBRESOURCES or k == "list-type" for k, _ in query):
                self._allow(where.bucket, principal, write=False)
                return self._list_objects(where.bucket, bucket_dir, dict(reversed(query)))
            raise OssError("NotImplemented", "Bucket operations other than styles and listing are not supported.")
        stored = self._object_path(bucket_dir, where.key)
        if method in ("GET", "HEAD"):
            self._allow(where.bucket, principal, write=False)
            return self._get(environ, where, stored)
        if method == "PUT":
            self._allow(where.bucket, principal, write=True)
            return self._put(environ, where, stored)
        if method == "DELETE":
            self._allow(where.bucket, principal, write=True)
            self._delete(where, stored)
            return Response(status=204)
        if method == "POST":
            raise OssError("InvalidArgument", f"operation not support post: {_query_names(query)}")
        raise OssError("MethodNotAllowed", "The specified method is not allowed against this resource.",
                       status=405)

    # --- access ---------------------------------------------------------------------------------------

    def _authenticate(self, environ, where: Located, query) -> str | None:
        if environ.get(SUBREQUEST) and PRINCIPAL in environ:
            return environ[PRINCIPAL] or None       # the middleware verified the outer request
        return verify(SignedRequest.from_environ(environ, where.bucket, where.key), self.credentials)

    def bucket_acl(self, bucket: str) -> str:
        return self.acl.get(bucket, self.default_acl)

    def _allow(self, bucket: str, principal: str | None, write: bool) -> None:
        if principal is not None:
            return
        acl = self.bucket_acl(bucket)
        if acl == "public-read-write" or (acl == "public-read" and not write):
            return
        raise OssError("AccessDenied", "You have no right to access this object because of bucket acl.",
                       "0003-00000001")

    # --- paths ----------------------------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        path = self.root / bucket
        if not BUCKET_NAME.match(bucket) or not _is_dir(path):
            raise OssError("NoSuchBucket", "The specified bucket does not exist.", "0015-00000101",
                           BucketName=bucket)
        return path

    def _object_path(self, bucket_dir: Path, key: str) -> Stored:
        """Where ``key`` lives, or InvalidObjectName: NUL, a trailing or leading '/', a '.' or '..'
        segment (never outside the bucket, and never two names for one file), over 1023 bytes."""
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise OssError("InvalidObjectName", "The Length of Object name must be less than 1024.",
                           "0016-00000003", status=400)
        segments = key.split("/")
        if "\0" in key or key.startswith("/") or key.endswith("/") or \
                any(s in (".", "..") for s in segments) or safe_join(str(bucket_dir), key) is None:
            raise OssError("InvalidObjectName", "The specified object is not valid.", status=400)
        entry = self.root / META_DIR / SPILL / bucket_dir.name / _digest(key)
        name_max = self._name_max_of(bucket_dir)
        if "" in segments or PUT_TEMP.match(segments[-1]) or \
                any(len(os.fsencode(s)) > name_max for s in segments):
            return Stored(bucket_dir.name, key, None, entry)
        return Stored(bucket_dir.name, key, bucket_dir.joinpath(*segments), entry)

    def _name_max_of(self, directory: Path) -> int:
        """The longest file name (bytes) the file system of ``directory`` takes (255 nearly everywhere)."""
        found = self._name_max.get(str(directory))
        if found is None:
            try:
                found = os.pathconf(directory, "PC_NAME_MAX")
            except (OSError, ValueError, AttributeError):
                found = 255
            self._name_max[str(directory)] = found = max(14, min(found, 4096))
        return found

    def _meta_paths(self, stored: Stored) -> list[Path]:
        """Where a sidecar of the key's metadata may be, in the order they are tried: beside the data
        under .imgmw/meta/ when the key is a path and the name fits, then by the key's digest."""
        paths = []
        if stored.natural is not None:
            name_max = self._name_max_of(self.root / stored.bucket)
            if len(os.fsencode(stored.natural.name + ".json")) <= name_max:
                paths.append(self._meta_path(stored.bucket, stored.key))
        return paths + [self.root / META_DIR / KEYED_META / stored.bucket / (_digest(stored.key) + ".json")]

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self.root / META_DIR / "meta" / bucket / (key + ".json")

    # --- objects --------------------------------------------------------------------------------------

    def _no_such_key(self, where: Located) -> OssError:
        return OssError("NoSuchKey", "The specified key does not exist.", "0026-00000001", Key=where.key)

    @staticmethod
    def _open(stored: Stored):
        """The key's data opened for reading (its own path first, then its spill entry), or None."""
        for path in ((stored.natural,) if stored.natural is not None else ()) + (stored.spilled,):
            try:
                return open(path, "rb")
            except OSError as err:
                if err.errno not in ABSENT:
                    raise
        return None

    def _get(self, environ, where: Located, stored: Stored):
        handle = self._open(stored)
        if handle is None:
            raise self._no_such_key(where)
        try:
            meta = self._meta_for(stored, handle)
        except Exception:
            handle.close()
            raise
        size = os.fstat(handle.fileno()).st_size
        response = send_file(handle, environ, mimetype=meta["content_type"], etag=meta["etag"],
                             last_modified=meta["mtime"], conditional=False, max_age=None)
        # send_file knows no size for an open file: without it, no Content-Length and no Range
        response.content_length = size
        try:
            response.make_conditional(environ, accept_ranges=True, complete_length=size)
        except RequestedRangeNotSatisfiable:
            # OSS ignores a Range it cannot satisfy and sends the whole object (200)
            response.make_conditional({k: v for k, v in environ.items() if k != "HTTP_RANGE"},
                                      accept_ranges=True, complete_length=size)
        response.headers["ETag"] = '"' + meta["etag"] + '"'
        response.headers["Content-Type"] = meta["content_type"]   # as stored: no "; charset=utf-8" added
        response.headers.pop("Cache-Control", None)
        for name, value in meta.get("user_meta", {}).items():
            response.headers["x-oss-meta-" + name] = value
        response.headers["x-oss-object-type"] = "Normal"
        response.headers["x-oss-storage-class"] = "Standard"
        return response

    def _meta_for(self, stored: Stored, handle) -> dict:
        """The metadata of the file behind ``handle``: from the sidecar when it describes this very
        file, else computed from the open file (and remembered)."""
        st = os.fstat(handle.fileno())
        identity = [st.st_ino, st.st_mtime_ns, st.st_size]
        meta = _read_xattr(handle.fileno())
        if meta is not None and meta.get("identity") == identity:
            return meta
        for meta_path in self._meta_paths(stored):
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
                if meta.get("identity") == identity:
                    return meta
            except (OSError, ValueError):
                pass
        digest = hashlib.md5()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
        handle.seek(0)
        meta = {"identity": identity, "etag": digest.hexdigest().upper(),
                "content_type": mimetypes.guess_type(stored.key)[0] or "application/octet-stream",
                "mtime": st.st_mtime, "user_meta": {}}
        try:   # files by hand stay untouched; remembering is optional (a full or read-only disk)
            self._write_meta(stored, json.dumps(meta).encode("utf-8"))
        except OSError:
            pass
        return meta

    def _write_meta(self, stored: Stored, data: bytes) -> None:
        """The sidecar, beside the data when it can be (keys "x" and "x.json/y" would want a file and
        a directory of one name there), else by the key's digest."""
        paths = self._meta_paths(stored)
        for meta_path in paths:
            try:
                _write_atomically(meta_path, data)
                return
            except OSError as err:
                if err.errno not in BLOCKED or meta_path == paths[-1]:
                    raise

    def _target(self, stored: Stored) -> Path:
        """The file a PUT renames its upload to, its directory made: the key's own path when the tree
        allows it (an empty directory of that name, left by hand or by an older version, is removed),
        else its spill entry."""
        if stored.natural is not None:
            try:
                stored.natural.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rmdir(stored.natural)       # only ever an empty directory
                except OSError as err:
                    if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise
                return stored.natural
            except OSError as err:
                if err.errno not in BLOCKED:
                    raise
        stored.entry.mkdir(parents=True, exist_ok=True)
        self._write_key(stored)
        return stored.spilled

    @staticmethod
    def _write_key(stored: Stored) -> None:
        """The spill entry's ``key`` file, which ListObjects reads (the entry's name is a digest)."""
        if not (stored.entry / "key").is_file():
            _write_atomically(stored.entry / "key", stored.key.encode("utf-8", "surrogatepass"))

    def _upload(self, stored: Stored) -> tuple[Path, int, str]:
        """(target, fd, temp): a temporary file beside where the object will be renamed to."""
        for attempt in range(RETRIES):
            try:
                target = self._target(stored)
                fd, temp = tempfile.mkstemp(prefix=".put-", dir=target.parent)
                return target, fd, temp
            except FileNotFoundError:           # a DELETE pruned a directory just made: again
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _put(self, environ, where: Located, stored: Stored):
        from werkzeug.wrappers import Response

        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        remaining = int(length) if length else None
        digest = hashlib.md5()
        target, fd, temp = self._upload(stored)
        try:
            with os.fdopen(fd, "wb") as out:
                while remaining is None or remaining > 0:
                    try:
                        chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    except Exception as err:
                        raise _ClientBodyError(err) from err
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    if remaining is not None:
                        remaining -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if remaining:
                raise OssError("IncompleteBody", "The request body is shorter than Content-Length.")
            etag = digest.hexdigest().upper()
            expected = environ.get("HTTP_CONTENT_MD5") or environ.get("CONTENT_MD5")
            if expected and _md5_base64(bytes.fromhex(etag)) != expected:
                raise OssError("InvalidDigest", "The Content-MD5 you specified is not valid.")
            os.chmod(temp, 0o644)
            # The identity of *this* file (a rename keeps inode, mtime and size): stat(path) after the
            # rename could be another writer's file, and would get this body's ETag.
            st = os.stat(temp)
            user_meta = {k[len("HTTP_X_OSS_META_"):].lower().replace("_", "-"): v
                         for k, v in environ.items() if k.startswith("HTTP_X_OSS_META_")}
            meta = {"identity": [st.st_ino, st.st_mtime_ns, st.st_size], "etag": etag,
                    "content_type": environ.get("CONTENT_TYPE") or mimetypes.guess_type(where.key)[0]
                    or "application/octet-stream", "mtime": st.st_mtime, "user_meta": user_meta}
            data = json.dumps(meta).encode("utf-8")
            on_file = _write_xattr(temp, data)      # travels with the file through the rename
            target = self._rename(temp, target, stored)   # atomic: readers see the old or the new
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        if target != stored.spilled:
            self._remove_spill(stored)       # an older copy from when its own path was taken
        else:
            self._write_key(stored)          # again, in case a DELETE removed it meanwhile
        if not on_file:
            self._write_meta(stored, data)
        response = Response(status=200)
        response.headers["ETag"] = f'"{etag}"'
        return response

    def _rename(self, temp: str, target: Path, stored: Stored) -> Path:
        """Rename the upload into place; when another PUT made a directory of that name meanwhile
        (``a/b`` while this was ``a``), into the spill entry instead. Where it went."""
        try:
            os.replace(temp, target)
            return target
        except OSError as err:
            if target == stored.spilled or err.errno not in BLOCKED:
                raise
        spilled = self._target(Stored(stored.bucket, stored.key, None, stored.entry))
        os.replace(temp, spilled)
        return spilled

    def _delete(self, where: Located, stored: Stored) -> None:
        bucket_dir = self.root / stored.bucket
        if stored.natural is not None and _unlink(stored.natural):
            _prune(stored.natural.parent, bucket_dir)
        self._remove_spill(stored)
        for meta_path in self._meta_paths(stored):
            if _unlink(meta_path):
                _prune(meta_path.parent, self.root / META_DIR / "meta" / stored.bucket)

    @staticmethod
    def _remove_spill(stored: Stored) -> None:
        if _unlink(stored.spilled):
            _unlink(stored.entry / "key")
            _prune(stored.entry, stored.entry.parent)

    # --- listing (ListBuckets / ListObjects) -----------------------------------------------------------

    def _list_buckets(self, environ, method: str, where: Located, query):
        """ListBuckets on ``/``: as on OSS, only for a signed request (never anonymous)."""
        if method not in ("GET", "HEAD") or any(k in SUBRESOURCES for k, _ in query):
            raise OssError("NotImplemented", "Only ListBuckets is supported on the service root.")
        if verify(SignedRequest.from_environ(environ, "", ""), self.credentials) is None:
            raise OssError("AccessDenied", "Anonymous access is forbidden for this operation.",
                           "0003-00000001", status=403)
        params = dict(reversed(query))
        prefix, marker = params.get("prefix", ""), params.get("marker", "")
        limit = _max_keys(params)
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and BUCKET_NAME.match(p.name)
                       and p.name.startswith(prefix) and p.name > marker)
        page = names[:limit]
        host = environ.get("HTTP_HOST", "")
        items = "".join(
            f"<Bucket><CreationDate>{_iso((self.root / n).stat().st_mtime)}</CreationDate>"
            f"<ExtranetEndpoint>{escape(host)}</ExtranetEndpoint><IntranetEndpoint>{escape(host)}"
            f"</IntranetEndpoint><Location>oss-local</Location><Name>{n}</Name><Region>local</Region>"
            f"<StorageClass>Standard</StorageClass></Bucket>" for n in page)
        truncated = len(names) > limit
        more = f"<NextMarker>{page[-1]}</NextMarker>" if truncated else ""
        return _xml_response(
            f"<ListAllMyBucketsResult><Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
            f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>{more}"
            f"<Owner><ID>imgmiddleware</ID><DisplayName>imgmiddleware</DisplayName></Owner>"
            f"<Buckets>{items}</Buckets></ListAllMyBucketsResult>")

    def _list_objects(self, bucket: str, bucket_dir: Path, params: dict):
        """ListObjects (V1, what oss2's ObjectIterator and ali-oss's list() send): keys in UTF-8 byte
        order after ``marker``, under ``prefix``, rolled up at ``delimiter`` into CommonPrefixes."""
        prefix, marker = params.get("prefix", ""), params.get("marker", "")
        delimiter, encoding = params.get("delimiter", ""), params.get("encoding-type", "")
        limit = _max_keys(params)
        if encoding not in ("", "url"):
            raise OssError("InvalidArgument", "The encoding-type parameter must be url.")
        if len(delimiter.encode("utf-8")) > 1:
            raise OssError("InvalidArgument", "The delimiter must be one character.")
        found = set(self._keys_under(bucket_dir, prefix)) | set(self._spilled_keys(bucket))
        keys = sorted((k for k in found if k.startswith(prefix)), key=lambda k: k.encode("utf-8"))
        after = marker.encode("utf-8")
        contents, prefixes, last = [], [], None
        truncated = False
        for key in keys:
            if key.encode("utf-8") <= after:
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            rolled = key[:cut + len(delimiter)] if cut >= 0 else None
            if rolled is not None and (rolled == last or rolled.encode("utf-8") <= after):
                continue
            if len(contents) + len(prefixes) == limit:
                truncated = True
                break
            if rolled is not None:
                prefixes.append(rolled)
                last = rolled
            else:
                contents.append(key)
                last = key
        enc = (lambda t: quote(t, safe="/")) if encoding else (lambda t: t)
        items = []
        for key in contents:
            info = self._object_info(bucket, bucket_dir, key)
            if info is None:                  # deleted since the walk
                continue
            size, mtime, etag = info
            items.append(f"<Contents><Key>{escape(enc(key))}</Key><LastModified>{_iso(mtime)}</LastModified>"
                         f"<ETag>&quot;{etag}&quot;</ETag><Type>Normal</Type><Size>{size}</Size>"
                         f"<StorageClass>Standard</StorageClass><Owner><ID>imgmiddleware</ID>"
                         f"<DisplayName>imgmiddleware</DisplayName></Owner></Contents>")
        items += [f"<CommonPrefixes><Prefix>{escape(enc(p))}</Prefix></CommonPrefixes>" for p in prefixes]
        head = (f"<Name>{bucket}</Name><Prefix>{escape(enc(prefix))}</Prefix><Marker>{escape(enc(marker))}"
                f"</Marker><MaxKeys>{limit}</MaxKeys><Delimiter>{escape(enc(delimiter))}</Delimiter>"
                + ("<EncodingType>url</EncodingType>" if encoding else "")
                + f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
                + (f"<NextMarker>{escape(enc(last))}</NextMarker>" if truncated else ""))
        return _xml_response(f"<ListBucketResult>{head}{''.join(items)}</ListBucketResult>")

    @staticmethod
    def _keys_under(bucket_dir: Path, prefix: str):
        """Every key whose file lies under the deepest directory ``prefix`` names (PUTs in flight
        left out)."""
        start = bucket_dir
        folder = prefix.rpartition("/")[0]
        if folder:
            joined = safe_join(str(bucket_dir), folder)
            if joined is None or not os.path.isdir(joined):
                return
            start = Path(joined)
        base = len(str(bucket_dir)) + 1
        for dirpath, dirnames, filenames in os.walk(start):
            for name in filenames:
                if not PUT_TEMP.match(name):
                    key = wsgi_safe_key(os.path.join(dirpath, name)[base:])
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:   # a name by hand that is not UTF-8: never a key
                        continue
                    yield key

    def _spilled_keys(self, bucket: str):
        """The keys stored in the bucket's spill entries (see the module's docstring)."""
        try:
            entries = list(os.scandir(self.root / META_DIR / SPILL / bucket))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            try:
                if not os.path.isfile(os.path.join(entry.path, "object")):
                    continue
                with open(os.path.join(entry.path, "key"), "rb") as handle:
                    key = handle.read(4 * MAX_KEY_BYTES).decode("utf-8", "surrogatepass")
            except (OSError, UnicodeDecodeError):
                continue                          # removed meanwhile, or not ours
            if _digest(key) == entry.name:
                yield key

    def _object_info(self, bucket: str, bucket_dir: Path, key: str):
        """(size, mtime, ETag) of one listed object, or None when it went away meanwhile (or cannot
        be an object: a file by hand with a name no request can address)."""
        try:
            stored = self._object_path(bucket_dir, key)
        except OssError:
            return None
        handle = self._open(stored)
        if handle is None:
            return None
        with handle:
            meta = self._meta_for(stored, handle)
            return os.fstat(handle.fileno()).st_size, meta["mtime"], meta["etag"]

    # --- styles (PutStyle / GetStyle / ListStyle / DeleteStyle) ---------------------------------------

    def _style_api(self, environ, method: str, bucket: str, query: dict, principal: str | None):
        from werkzeug.wrappers import Response

        if self.styles is None:
            raise OssError("NotImplemented", "Styles are not configured.")
        if principal is None and self.credentials:
            raise OssError("AccessDenied", "Style operations need a signed request.")
        self._allow(bucket, principal, write=method != "GET")   # without credentials: the ACL decides
        name = query.get("styleName")
        if method == "GET" and name is None:
            items = "".join(_style_xml(s) for s in self.styles.list(bucket))
            return _xml_response(f"<StyleList>{items}</StyleList>")
        if name is None:
            raise OssError("InvalidArgument", "The parameter styleName is missing.")
        if method == "PUT":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0) or -1)
            match = re.search(rb"<Content>(.*?)</Content>", body, re.S)
            if not match:
                raise OssError("InvalidArgument", "The style content is missing.")
            from xml.sax.saxutils import unescape
            self.styles.put(bucket, name, unescape(match.group(1).decode("utf-8")).strip())
            return Response(status=200)
        if method == "GET":
            style = self.styles.get_record(bucket, name)
            if style is None:
                raise OssError("NoSuchStyle", "The specified style does not exist.")
            return _xml_response(_style_xml(style))
        if method == "DELETE":
            self.styles.delete(bucket, name)
            return Response(status=204)
        raise OssError("MethodNotAllowed", "The specified method is not allowed.", status=405)


def _query(environ) -> list[tuple[str, str]]:
    return [(key, value) for _, key, value in query_pairs(environ.get("QUERY_STRING", ""))]


def _max_keys(params: dict) -> int:
    raw = params.get("max-keys", "")
    if raw == "":
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_KEYS:
        raise OssError("InvalidArgument", f"Argument max-keys must be an integer between 1 and {MAX_KEYS}.")
    return int(raw)


def wsgi_safe_key(relative: str) -> str:
    """A key from a file name: '/' separators whatever the OS uses."""
    return relative.replace(os.sep, "/")


def _query_names(query) -> str:
    return ",".join(k for k, _ in query) or "(none)"


def _md5_base64(digest: bytes) -> str:
    import base64
    return base64.b64encode(digest).decode("ascii")


XATTR = "user.imgmw.meta"


def _read_xattr(fd: int) -> dict | None:
    try:
        return json.loads(os.getxattr(fd, XATTR))
    except (OSError, ValueError, AttributeError):   # none, not supported, not Linux
        return None


def _write_xattr(target, data: bytes) -> bool:
    try:
        os.setxattr(target, XATTR, data)
        return True
    except (OSError, AttributeError):
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    for attempt in range(RETRIES):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            break
        except FileNotFoundError:       # a DELETE pruned the directory just made
            if attempt == RETRIES - 1:
                raise
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:                     # unreadable, a name too long: not a bucket we can serve
        return False


def _unlink(path: Path) -> bool:
    """Remove a file; False when there was none (or a directory is there)."""
    try:
        os.unlink(path)
        return True
    except OSError as err:
        if err.errno in ABSENT or err.errno == errno.EPERM and path.is_dir():
            return False
        raise


def _prune(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents while they are empty, up to ``stop`` (kept). A PUT that
    made one of them meanwhile retries (BucketApp._upload)."""
    while directory != stop and stop in directory.parents:
        try:
            os.rmdir(directory)
        except OSError:                 # not empty (another object, a PUT in flight), or gone
            return
        directory = directory.parent


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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _style_xml(style) -> str:
    return (f"<Style><Name>{escape(style.name)}</Name><Content>{escape(style.content)}</Content>"
            f"<CreateTime>{_iso(style.created)}</CreateTime>"
            f"<LastModifyTime>{_iso(style.modified)}</LastModifyTime></Style>")


def _xml_response(xml: str):
    from werkzeug.wrappers import Response
    return Response('<?xml version="1.0" encoding="UTF-8"?>\n' + xml, mimetype="application/xml")
