"""GetObject, HeadObject, PutObject and DeleteObject on the store: OSS's headers (upper-case MD5
ETag, ``x-oss-hash-crc64ecma`` so the SDKs' CRC checks run, user metadata, the object type), OSS's
Range rule (ranges.py), conditional GETs, and PUT bodies streamed to a temporary file and renamed."""

from __future__ import annotations

import os

from werkzeug.utils import send_file

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
    handle = store.open(stored)
    if handle is None:
        raise no_such_key(where)
    try:
        meta = store.meta_for(stored, handle)
        size = os.fstat(handle.fileno()).st_size
        response = send_file(handle, environ, mimetype=meta["content_type"], etag=meta["etag"],
                             last_modified=meta["mtime"], conditional=False, max_age=None)
    except BaseException:
        handle.close()
        raise
    # send_file knows no size for an open file: without it, no Content-Length
    response.content_length = size
    # werkzeug's conditionals (304, 412); its Range handling is HTTP's, not OSS's: done below
    response.make_conditional({k: v for k, v in environ.items() if k not in ("HTTP_RANGE", "HTTP_IF_RANGE")},
                              accept_ranges=True, complete_length=size)
    wanted = environ.get("HTTP_RANGE")
    if wanted and response.status_code == 200 and _if_range_holds(environ, meta):
        standard = environ.get("HTTP_X_OSS_RANGE_BEHAVIOR", "").strip().lower() == "standard"
        try:
            span = requested_range(wanted, size, standard)
        except OssError:
            handle.close()
            raise
        if span is not None:
            first, last = span
            handle.seek(first)
            response.response = _Slice(handle, last - first + 1)
            response.status_code = 206
            response.content_length = last - first + 1
            response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    response.headers["ETag"] = '"' + meta["etag"] + '"'
    response.headers["Content-Type"] = meta["content_type"]   # as stored: no "; charset=utf-8" added
    response.headers.pop("Cache-Control", None)
    for name, value in meta.get("user_meta", {}).items():
        response.headers["x-oss-meta-" + name] = value
    response.headers["x-oss-object-type"] = meta.get("object_type", "Normal")
    response.headers["x-oss-storage-class"] = "Standard"
    response.headers["x-oss-hash-crc64ecma"] = str(meta["crc64"])
    return response


def _if_range_holds(environ, meta: dict) -> bool:
    """If-Range: the Range applies only to the version the client names (its ETag or date)."""
    condition = environ.get("HTTP_IF_RANGE")
    if not condition:
        return True
    if condition.startswith('"') or condition.startswith("W/"):
        return condition == '"' + meta["etag"] + '"'
    from werkzeug.http import http_date
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

