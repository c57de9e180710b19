"""The OSS error model: one exception type that knows its HTTP status, Code, EC and message.

Every failure a client can cause is raised as an :class:`OssError` somewhere below the middleware
and turned into OSS's XML body and headers in exactly one place (:meth:`OssError.to_response`).
Codes and ECs come from the spec (§7, §8); where OSS publishes no EC we send none rather than invent one
(one exception: a stage without the image/ prefix gets the EC of that rule, 0040-00000212; see
process/parser.py).
"""

from __future__ import annotations

import os
import re
from http import HTTPStatus
from xml.sax.saxutils import escape, unescape

# Statuses for the Code values OSS uses (spec §7).
STATUS_BY_CODE = {
    "InvalidArgument": 400,
    "BadRequest": 400,
    "MissingArgument": 400,
    "ImageTooLarge": 400,
    "MemLimitExceeded": 400,
    "WatermarkError": 400,
    "TooManyPipe": 400,
    "AccessDenied": 403,
    "SignatureDoesNotMatch": 403,
    "NoSuchKey": 404,
    "NoSuchBucket": 404,
    "NoSuchStyle": 404,
    "SlowDown": 503,
    "InternalError": 500,
    "NotImplemented": 501,
}

RECOMMEND_DOC = "https://api.aliyun.com/troubleshoot?q="

# Characters XML 1.0 cannot carry at all, not even as character references (control characters,
# lone surrogates, U+FFFE/U+FFFF). A message echoing client text (a process string with %08 in it)
# must still be well-formed XML, so these become U+FFFD; found by tests/test_fuzz.py.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    """Element text: markup escaped, XML-illegal characters replaced."""
    return escape(_XML_ILLEGAL.sub("\ufffd", value))


def new_request_id() -> str:
    """24 upper-case hex characters, the shape of an OSS x-oss-request-id."""
    return os.urandom(12).hex().upper()


def invalid_value_message(key: str, value: str) -> str:
    """OSS's own wording for a rejected parameter (spec §7, known from the style-name EC)."""
    return f"The value: {value} of parameter: {key} is invalid."


class OssError(Exception):
    """A client-visible failure: raise it anywhere, the middleware renders it."""

    def __init__(self, code: str, message: str, ec: str | None = None,
                 status: int | None = None, headers: list[tuple[str, str]] | None = None,
                 **extra: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ec = ec
        self.status = status if status is not None else STATUS_BY_CODE.get(code, 400)
        self.headers = headers or []   # additional HTTP headers, e.g. Retry-After for SlowDown
        self.extra = extra  # additional XML elements, e.g. Key for NoSuchKey

    def __repr__(self) -> str:
        return f"OssError({self.status} {self.code} ec={self.ec}: {self.message})"

    def to_xml(self, request_id: str, host_id: str) -> bytes:
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n',
            f"  <Code>{_text(self.code)}</Code>\n",
            f"  <Message>{_text(self.message)}</Message>\n",
            f"  <RequestId>{_text(request_id)}</RequestId>\n",
            f"  <HostId>{_text(host_id)}</HostId>\n",
        ]
        for name, value in self.extra.items():
            parts.append(f"  <{name}>{_text(str(value))}</{name}>\n")
        if self.ec:
            parts.append(f"  <EC>{_text(self.ec)}</EC>\n")
            parts.append(f"  <RecommendDoc>{_text(RECOMMEND_DOC + self.ec)}</RecommendDoc>\n")
        parts.append("</Error>\n")
        return "".join(parts).encode("utf-8")

    def to_response(self, request_id: str, host_id: str) -> tuple[str, list[tuple[str, str]], bytes]:
        """(status line, headers, body) ready for a WSGI start_response."""
        body = self.to_xml(request_id, host_id)
        headers = [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-oss-request-id", request_id),
        ]
        if self.ec:
            headers.append(("x-oss-ec", self.ec))
        headers.extend(self.headers)
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return f"{self.status} {phrase}", headers, body


# Constructors for errors raised from more than one place. Keeping them here keeps the wording one.

def invalid_argument(key: str, value: str, ec: str | None) -> OssError:
    return OssError("InvalidArgument", invalid_value_message(key, value), ec)


def unsupported_source(detail: str = "The image format is not supported.",
                       ec: str = "0040-00000005") -> OssError:
    return OssError("BadRequest", detail, ec)


def image_too_large(detail: str, ec: str = "0040-00000009") -> OssError:
    # OSS's FAQ names this MemLimitExceeded; which EC depends on the limit and the pipeline
    # (process/limits.py, from OSS's EC pages).
    return OssError("ImageTooLarge", detail, ec)


# A plain GET of a missing object is NoSuchKey with this EC; the same 404 to a processed GET carries
# IMG's own EC instead (its EC page, docs/COMPATIBILITY.md decision 143).
NO_SUCH_KEY_EC = "0026-00000001"
MISSING_SOURCE_EC = "0040-00000024"
_KEY_ELEMENT = re.compile(rb"<Key>([^<]*)</Key>")


def missing_source(app_body: bytes) -> OssError:
    """404 NoSuchKey, IMG's EC, for a source the app says is missing; the Key is the app's own."""
    found = _KEY_ELEMENT.search(app_body)
    key = unescape(found.group(1).decode("utf-8", "replace")) if found else ""
    return OssError("NoSuchKey", "The specified key does not exist.", MISSING_SOURCE_EC, Key=key)


def rotation_range_exceeded() -> OssError:
    # rotate and auto-orient alike; the wording is OSS's own (a real answer to auto-orient,1), the EC
    # its page for a side over 4096 px
    return OssError("BadRequest", "Picture exceed the maximum allowable rotation range.",
                    "0040-00000006")
