"""GetObject, HeadObject, PutObject and DeleteObject on the store: OSS's headers (upper-case MD5
ETag, ``x-oss-hash-crc64ecma`` so the SDKs' CRC checks run, user metadata, the object type), OSS's
Range rule (ranges.py), conditional GETs, and PUT bodies streamed to a temporary file and renamed."""

from __future__ import annotations

import os

from werkzeug.http import HTTP_STATUS_CODES, http_date, is_entity_header, parse_date, parse_etags
from werkzeug.wsgi import wrap_file

from ...errors import OssError
from .addressing import Located
from .ranges import requested_range
from .store import ObjectStore, Stored
from .wire import CHUNK, empty, receive

MAX_OBJECT_BYTES = 5 << 30          # OSS: PutObject and each part at most 5 GB
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def no_such_key(where: Located) -> OssError:
    return OssError("NoSuchKey", "The specified key does not exist.", "0026-00000001", Key=where.key)


def get(store: ObjectStore, environ, where: Located, stored: Stored):
    """GetObject and HeadObject: OSS's preconditions first (precondition()), then OSS's Range rule,
    the headers built in one list (werkzeug's send_file and make_conditional took half of a GET's
    time, and they answer a failed If-Match with the object itself)."""
    handle = store.open(stored)
    if handle is None:
        raise no_such_key(where)
    try:
        meta = store.meta_for(stored, handle)
        size = os.fstat(handle.fileno()).st_size
        status = precondition(environ, meta)
        span = None
        wanted = environ.get("HTTP_RANGE")
        if wanted and status == 200 and _if_range_holds(environ, meta):
            standard = environ.get("HTTP_X_OSS_RANGE_BEHAVIOR", "").strip().lower() == "standard"
            span = requested_range(wanted, size, standard)
        length = size if span is None else span[1] - span[0] + 1
        headers = [("Content-Type", meta["content_type"]),   # as stored: no "; charset=utf-8" added
                   ("Last-Modified", http_date(meta["mtime"])), ("ETag", '"' + meta["etag"] + '"'),
                   ("Content-Length", str(length)), ("Date", http_date()), ("Accept-Ranges", "bytes")]
        headers += [("x-oss-meta-" + name, value) for name, value in meta.get("user_meta", {}).items()]
        headers += [("x-oss-object-type", meta.get("object_type", "Normal")),
                    ("x-oss-storage-class", "Standard"), ("x-oss-hash-crc64ecma", str(meta["crc64"]))]
        if span is None:
            return ObjectAnswer(status, headers, wrap_file(environ, handle))
        handle.seek(span[0])
        headers.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
        return ObjectAnswer(206, headers, _Slice(handle, length))
    except BaseException:
        handle.close()
        raise


def precondition(environ, meta: dict) -> int:
    """200, or 304 for a copy the client has, by OSS's rules for GetObject and HeadObject: If-Match
    (else If-Unmodified-Since) failing is 412 PreconditionFailed, then If-None-Match matching (else
    If-Modified-Since not earlier than the object) is 304. Which header wins when several are sent
    is RFC 9110's order (decision 188); a date that does not parse is ignored, as OSS does."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        held = parse_etags(if_match).contains(meta["etag"])
    else:
        since = parse_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        held = since is None or int(meta["mtime"]) <= since.timestamp()
    if not held:
        raise OssError("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                       "0017-00001001", status=412)
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        return 304 if parse_etags(if_none_match).contains_weak(meta["etag"]) else 200
    since = parse_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
    return 304 if since is not None and int(meta["mtime"]) <= since.timestamp() else 200


class ObjectAnswer:
    """A GetObject's answer as the WSGI list it ends as: werkzeug's Response checked and copied each
    header two or three times, a third of a GET's time. A 304 drops the entity headers (Content-Type,
    Content-Length, Last-Modified), as werkzeug's did; a 304 and a HEAD send no body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body) -> None:
        self.status_code, self.headers, self.body = status, headers, body

    def __call__(self, environ, start_response):
        headers = self.headers
        if self.status_code == 304:
            headers = [(k, v) for k, v in headers if not is_entity_header(k)]
        start_response(f"{self.status_code} {HTTP_STATUS_CODES[self.status_code]}", headers)
        if self.status_code == 304 or environ.get("REQUEST_METHOD") == "HEAD":
            self.body.close()
            return []
        return self.body


def _if_range_holds(environ, meta: dict) -> bool:
    """If-Range: the Range applies only to the version the client names (its ETag or date)."""
    condition = environ.get("HTTP_IF_RANGE")
    if not condition:
        return True
    if condition.startswith('"') or condition.startswith("W/"):
        return condition == '"' + meta["etag"] + '"'
    return condition == http_date(meta["mtime"])


class _Slice:
    """The bytes of one range of an open file, block by block; closes the file."""

    def __init__(self, handle, length: int) -> None:
        self.handle, self.left = handle, length

    def __iter__(self):
        while self.left > 0:
            block = self.handle.read(min(CHUNK, self.left))
            if not block:
                return
            self.left -= len(block)
            yield block

    def close(self) -> None:
        self.handle.close()


def put(store: ObjectStore, environ, where: Located, stored: Stored):
    """The body streamed to a temporary file beside the target, fsynced, then renamed over it.
    Without a Content-Type the object is application/octet-stream, as OSS stores it (the SDKs guess
    one from the key's extension themselves; a presigned PUT with none sends none)."""
    target, fd, temp = store.new_upload(stored)
    try:
        with os.fdopen(fd, "wb") as out:
            got = receive(environ, out, MAX_OBJECT_BYTES)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    meta = {"etag": got.etag, "crc64": got.crc.value, "object_type": "Normal",
            "content_type": environ.get("CONTENT_TYPE") or DEFAULT_CONTENT_TYPE,
            "user_meta": user_meta(environ)}
    store.commit(temp, target, stored, meta)
    response = empty(200)
    response.headers["ETag"] = f'"{got.etag}"'
    response.headers["x-oss-hash-crc64ecma"] = str(got.crc.value)
    return response


def user_meta(environ) -> dict:
    return {k[len("HTTP_X_OSS_META_"):].lower().replace("_", "-"): v
            for k, v in environ.items() if k.startswith("HTTP_X_OSS_META_")}


def delete(store: ObjectStore, stored: Stored):
    store.delete(stored)
    return empty(204)

