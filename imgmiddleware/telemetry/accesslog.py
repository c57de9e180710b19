"""The access log: one line per request, JSON or text, with no secret in it.

Fields, in this order (JSON keys; the text format has them space-separated, "-" for none): time (the
request's arrival, UTC, milliseconds), request_id (the x-oss-request-id sent, when the app sent one),
client, method, bucket, key, process (the canonical process string), kind, status, code (OSS's error
Code, when the middleware answered one), ec, cache (x-imgmw-cache), bytes_in (the request body),
bytes_out (the answer's body), read_ms, wait_ms, transform_ms (Server-Timing's: reading the source,
waiting for a slot, the transform), total_ms (arrival to last byte written).

No secret by construction: a line holds these fields only, never the query string or a header, so a
presigned URL's Signature, OSSAccessKeyId or x-oss-signature, an x-oss-security-token, an
Authorization header or a cookie cannot reach it. The two fields a client writes (key, process) are
still scrubbed of anything shaped like one, and capped, so a line stays one small write.

Each line is one os.write() to standard output or to a file opened for appending: the lines of
several workers never interleave (pipes and O_APPEND files keep a write of up to 4 KB whole). A file
that logrotate moved away is reopened within a second.
"""

from __future__ import annotations

import json
import os
import re
import time

FIELDS = ("time", "request_id", "client", "method", "bucket", "key", "process", "kind", "status", "code",
          "ec", "cache", "bytes_in", "bytes_out", "read_ms", "wait_ms", "transform_ms", "total_ms")
MAX_TEXT = 300          # characters of a key or process string kept (a line stays under 4 KB)
# name=value pairs that carry credentials, in any case, as a URL or a process string could hold them.
SECRET = re.compile(r"(?i)((?:x-oss-|x-amz-)?(?:signature|credential|security-token|accesskeyid|"
                    r"ossaccesskeyid|accesskeysecret|access_key_secret|authorization)=)[^&\s]*")


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode   # made once: json.dumps
#                                                       with options builds an encoder per call


def scrub(text: str) -> str:
    """``text`` without credentials (``Signature=...`` -> ``Signature=***``), capped to MAX_TEXT."""
    if "=" in text:
        text = SECRET.sub(r"\1***", text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


class AccessLog:
    """Writes the lines; ``target`` is "-" (standard output) or a path; ``style`` "json" or "text"."""

    def __init__(self, target: str, style: str = "json") -> None:
        self.target = target
        self.style = style
        self._fd = 1 if target == "-" else None
        self._inode = None
        self._checked = 0.0
        self._second = -1
        self._stamp = ""
        if self._fd is None:
            self._open()

    def _open(self) -> None:
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        old, self._fd = self._fd, fd
        self._inode = os.fstat(fd).st_ino
        if old not in (None, 1):
            os.close(old)

    def _reopen_if_moved(self, now: float) -> None:
        if self.target == "-" or now - self._checked < 1.0:
            return
        self._checked = now
        try:
            moved = os.stat(self.target).st_ino != self._inode
        except OSError:
            moved = True
        if moved:
            self._open()

    def time(self, arrived: float) -> str:
        """ISO 8601 UTC with milliseconds; the part to the second is made once a second."""
        second = int(arrived)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((arrived - second) * 1000):03d}Z"

    def line(self, record: dict) -> bytes:
        record["key"] = scrub(record.get("key") or "")
        record["process"] = scrub(record.get("process") or "")
        if self.style == "json":
            return (_JSON({name: record.get(name) for name in FIELDS}) + "\n").encode("utf-8", "replace")
        words = []
        for name in FIELDS:
            value = record.get(name)
            if value is None or value == "":
                words.append("-")
            elif name in ("key", "process"):
                words.append(json.dumps(value, ensure_ascii=False))
            else:
                words.append(str(value))
        return (" ".join(words) + "\n").encode("utf-8", "replace")

    def write(self, record: dict) -> None:
        data = self.line(record)
        try:
            self._reopen_if_moved(time.monotonic())
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:
            pass        # a full disk or a closed pipe costs the line, never the request
