"""OSS's Range rule for GetObject, which is not HTTP's (RFC 9110).

By default a Range that is not valid for the object is ignored and the whole object is sent with 200:
an end past the last byte (``bytes=0-1000`` of a 1,000-byte object), a start past it, a suffix
longer than the object, or a header of another syntax. With ``x-oss-range-behavior: standard`` OSS
follows HTTP instead: an end past the last byte is cut to it (206), a start past it is 416
InvalidRange. Several ranges: the first one is served (OSS does not send multipart/byteranges); with
the standard behaviour they are 416.
"""

from __future__ import annotations

import re

from ...errors import OssError

SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*\Z")


def requested_range(header: str, size: int, standard: bool) -> tuple[int, int] | None:
    """The (first, last) byte positions to send, or None for the whole object (200)."""
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges = specs.split(",")
    if len(ranges) > 1 and standard:
        raise unsatisfiable(size)
    match = SPEC.match(ranges[0])
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":                               # a suffix: the last N bytes
        count = int(last)
        if count == 0:
            if standard:
                raise unsatisfiable(size)
            return None
        if count > size:
            return (0, size - 1) if standard and size else None
        return size - count, size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None                               # not a range at all: ignored by both rules
    if start >= size:
        if standard:
            raise unsatisfiable(size)
        return None
    if end >= size:
        if not standard:
            return None
        end = size - 1
    return start, end


def unsatisfiable(size: int) -> OssError:
    return OssError("InvalidRange", "The requested range cannot be satisfied", status=416,
                    headers=[("Content-Range", f"bytes */{size}")])
