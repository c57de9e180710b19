"""What every operation of the bucket app shares on the wire: XML answers, OSS's dates, the query,
bounded XML request bodies, streamed bodies written to disk (with their MD5 and CRC-64), and the
errors several operations raise alike."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from ...errors import OssError
from ...subrequest import query_pairs
from .crc64 import Crc64

CHUNK = 1 << 20
MAX_KEYS = 1000                      # OSS: max-keys 1..1000, 100 when absent
MAX_XML_BODY = 2 << 20               # a CompleteMultipartUpload of 10,000 parts is about 1 MB
OWNER = "<Owner><ID>imgmiddleware</ID><DisplayName>imgmiddleware</DisplayName></Owner>"


class ClientBodyError(Exception):
    """Reading the request body failed: the client's connection, not the disk. Re-raised as it was."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def query(environ) -> list[tuple[str, str]]:
    return [(key, value) for _, key, value in query_pairs(environ.get("QUERY_STRING", ""))]


def first_values(pairs) -> dict:
    """name -> value, the first of duplicates winning (as OSS reads a query)."""
    return dict(reversed(pairs))


def max_keys(params: dict, name: str = "max-keys", default: int = 100, top: int = MAX_KEYS) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise OssError("InvalidArgument", f"Argument {name} must be an integer between 1 and {top}.")
    return int(raw)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def xml_response(xml: str, status: int = 200):
    from werkzeug.wrappers import Response
    return Response('<?xml version="1.0" encoding="UTF-8"?>\n' + xml, status=status,
                    mimetype="application/xml")


def empty(status: int = 200):
    from werkzeug.wrappers import Response
    return Response(status=status)


def text(value: str) -> str:
    return escape(value)


def no_such_bucket(bucket: str) -> OssError:
    return OssError("NoSuchBucket", "The specified bucket does not exist.", "0015-00000101",
                    BucketName=bucket)


def read_xml(environ, required: bool = True) -> ET.Element | None:
    """The request body as XML, at most MAX_XML_BODY bytes: MalformedXML otherwise (OSS's code for
    a body it cannot read). ElementTree's expat refuses entity expansion bombs by itself."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length and int(length) > MAX_XML_BODY:
        raise OssError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.",
                       MaxSizeAllowed=str(MAX_XML_BODY))
    try:
        body = environ["wsgi.input"].read(int(length) if length else MAX_XML_BODY + 1)
    except Exception as err:
        raise ClientBodyError(err) from err
    if len(body) > MAX_XML_BODY:
        raise OssError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.",
                       MaxSizeAllowed=str(MAX_XML_BODY))
    if not body.strip():
        if required:
            raise malformed()
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        raise malformed() from None


def malformed() -> OssError:
    return OssError("MalformedXML", "The XML you provided was not well-formed or did not validate "
                    "against our published schema.")


class Received:
    """What a streamed body came to: its size, upper-case MD5 hex and CRC-64."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self.crc = Crc64()
        self.size = 0

    @property
    def etag(self) -> str:
        return self.md5.hexdigest().upper()


def receive(environ, out, limit: int) -> Received:
    """Copy the request body to ``out`` block by block (never whole in memory), hashing as it goes.
    Over ``limit`` bytes is EntityTooLarge; shorter than Content-Length is IncompleteBody; a
    Content-MD5 that does not match is InvalidDigest."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    remaining = int(length) if length else None
    if remaining is not None and remaining > limit:
        raise too_large(limit)
    got = Received()
    while remaining is None or remaining > 0:
        try:
            chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
        except Exception as err:
            raise ClientBodyError(err) from err
        if not chunk:
            break
        got.size += len(chunk)
        if got.size > limit:
            raise too_large(limit)
        got.md5.update(chunk)
        got.crc.update(chunk)
        out.write(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    if remaining:
        raise OssError("IncompleteBody", "The request body is shorter than Content-Length.")
    expected = environ.get("HTTP_CONTENT_MD5") or environ.get("CONTENT_MD5")
    if expected:
        import base64
        if base64.b64encode(got.md5.digest()).decode("ascii") != expected:
            raise OssError("InvalidDigest", "The Content-MD5 you specified is not valid.")
    return got


def too_large(limit: int) -> OssError:
    return OssError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.",
                    MaxSizeAllowed=str(limit))
