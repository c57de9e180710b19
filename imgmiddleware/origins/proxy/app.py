"""A reverse-proxy origin: a WSGI app that forwards GET / HEAD / PUT to one upstream HTTP origin.

    ImageMiddleware(ProxyApp("http://127.0.0.1:8081"))
    ImageMiddleware(ProxyApp("https://bucket.oss-cn-hangzhou.aliyuncs.com/prefix"))
    proxy = proxy_from_config(config)     # a private bucket: endpoint, bucket, signing, access
    ImageMiddleware(proxy, config, addressing=proxy.addressing)

The upstream (nginx, S3, OSS, any CDN origin) is configuration only: a request names a path under the
upstream's base path and nothing else. Its PATH_INFO is percent-encoded again and appended to that
base path, so no request can change the scheme, host or port ("//evil.com/x", "http://evil/x",
"@evil" are paths on the configured host), and a "." or ".." segment, which the upstream would
resolve above the base path, is refused.

Requests carry only the end-to-end headers that matter to an object store (Range, conditionals,
Authorization, Content-*, x-oss-* / x-amz-*, ...), never hop-by-hop ones, with Host set to the
upstream's. Bodies stream both ways in 64 KiB blocks: a PUT body straight from ``wsgi.input``, a
response as urllib3 reads it (``preload_content=False``), its connection back in the pool when the
body is done. Status and headers pass through, except hop-by-hop ones and the Date and Server the
WSGI server in front sets itself.

One urllib3 connection pool per ProxyApp (``maxsize=pool_size``, ``block=False``: a burst past it
opens extra connections that are not kept), bounded by a connect and a read timeout. No silent
retries: a PUT body is sent once; a GET or HEAD is repeated once only when a kept-alive connection
turned out to be closed by the upstream. An upstream that refuses, cannot be resolved or breaks the
connection is a 502 BadGateway, one that does not answer in time a 504 GatewayTimeout, both as OSS
XML with an x-oss-request-id.

With a ``signer`` the upstream is a private bucket and the proxy signs every request with its own
credentials (signing.py): the client's Authorization, Date and signing headers are dropped, only
``versionId`` of the query passes, the key must not be empty (no listings), and who may go through
is decided here first (access.py). A 401 or 403 of the upstream to our signature becomes a clean
OSS 403 (signing.refusal). upstream.py says where the bucket is (virtual-host or path style) and
how the proxy's clients name it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from http import HTTPStatus
from urllib.parse import quote

import urllib3
from urllib3.connectionpool import connection_from_url
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ReadTimeoutError)

from ...errors import OssError, new_request_id
from ...subrequest import PlainAddressing, query_pairs
from ...telemetry import metrics
from .access import ProxyAccess
from .signing import FORWARDED_QUERY, REFUSAL_READ, Signer, UpstreamRequest, refusal
from .upstream import CustomDomainAddressing, locate

log = logging.getLogger("imgmiddleware.proxy")

CHUNK = 64 * 1024
METHODS = ("GET", "HEAD", "PUT")

# Request headers forwarded to the upstream, by their WSGI environ names. Everything else stays here:
# hop-by-hop headers (Connection, Keep-Alive, TE, Upgrade, Proxy-*, Transfer-Encoding, Expect), the
# client's Host, cookies and forwarding headers an upstream might trust.
FORWARDED = {
    "HTTP_RANGE": "Range",
    "HTTP_IF_RANGE": "If-Range",
    "HTTP_IF_NONE_MATCH": "If-None-Match",
    "HTTP_IF_MODIFIED_SINCE": "If-Modified-Since",
    "HTTP_IF_MATCH": "If-Match",
    "HTTP_IF_UNMODIFIED_SINCE": "If-Unmodified-Since",
    "HTTP_ACCEPT": "Accept",
    "HTTP_ACCEPT_ENCODING": "Accept-Encoding",   # only when the client sent it: bodies pass undecoded
    "HTTP_AUTHORIZATION": "Authorization",
    "HTTP_DATE": "Date",                         # part of OSS V1 and S3 V2 signatures
    "HTTP_USER_AGENT": "User-Agent",
    "CONTENT_TYPE": "Content-Type",
    "HTTP_CONTENT_MD5": "Content-MD5",
    "CONTENT_MD5": "Content-MD5",
}
# Stored with an object by OSS and S3: forwarded on PUT only.
FORWARDED_ON_PUT = {
    "HTTP_CACHE_CONTROL": "Cache-Control",
    "HTTP_CONTENT_DISPOSITION": "Content-Disposition",
    "HTTP_CONTENT_ENCODING": "Content-Encoding",
    "HTTP_CONTENT_LANGUAGE": "Content-Language",
    "HTTP_EXPIRES": "Expires",
}
FORWARDED_PREFIXES = ("HTTP_X_OSS_", "HTTP_X_AMZ_")   # OSS / S3 headers (signing, metadata, options)

# Response headers that describe one connection, not the object (RFC 9110 §7.6.1), plus Date and
# Server, which the WSGI server sets itself (two Date headers would be invalid).
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade", "date", "server"))
NO_BODY_STATUSES = (204, 304)

# Characters left as they are in the re-encoded path: RFC 3986 unreserved (always kept by quote())
# and "/". Everything else, "%", "?", "#", ";", "@", ":" and every non-ASCII byte included, is
# %-encoded, which is also how S3 and OSS canonicalise a path for their signatures.
PATH_SAFE = "/"
# The query string is the client's, already encoded: kept as sent, except bytes that may not appear
# in a request line (spaces, quotes, controls, non-ASCII, "#"), which are %-encoded.
QUERY_SAFE = "%/?:@!$&'()*+,;=-._~"


class ProxyApp:
    """A WSGI app serving every object of ``upstream`` (``http[s]://host[:port][/base/path]``), or
    with ``bucket`` every object of that bucket of the object store at ``upstream`` (its endpoint),
    addressed virtual-host or path style; with ``signer`` (which needs the bucket) a private one."""

    def __init__(self, upstream: str, connect_timeout: float = 2.0, read_timeout: float = 10.0,
                 pool_size: int = 16, bucket: str = "", addressing: str = "auto",
                 signer: Signer | None = None, access: ProxyAccess | None = None) -> None:
        self.where = locate(upstream, bucket, addressing)
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if signer is not None and not bucket:
            raise ValueError("a proxy that signs its requests needs the bucket (upstream_bucket)")
        self.upstream = upstream
        self.scheme = self.where.scheme
        self.base_path = self.where.base_path
        self.host_header = self.where.host_header
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.pool_size = pool_size
        self.signer = signer
        self.access = access if access is not None else ProxyAccess()
        # How the middleware in front names our objects: /<key>, of the one bucket when there is one.
        self.addressing = CustomDomainAddressing(bucket) if bucket else PlainAddressing()
        self._origin = self.where.origin
        self._lock = threading.Lock()
        self._pool = None
        self._pid = None

    # --- the pool -------------------------------------------------------------------------------------

    @property
    def pool(self):
        """The connection pool of this process: a ProxyApp made before a fork (gunicorn --preload)
        gets a fresh one in each worker instead of sharing sockets with its parent."""
        pid = os.getpid()
        pool = self._pool
        if pool is None or self._pid != pid:
            with self._lock:
                if self._pool is None or self._pid != pid:
                    tls_name = ({"server_hostname": self.where.server_hostname}
                                if self.where.server_hostname else {})
                    self._pool = connection_from_url(
                        self._origin, maxsize=self.pool_size, block=False, retries=False,
                        timeout=self.timeout, **tls_name)
                    self._pid = pid
                pool = self._pool
        return pool

    def close(self) -> None:
        """Close the pooled connections; the next request starts a new pool."""
        with self._lock:
            pool, self._pool, self._pid = self._pool, None, None
        if pool is not None:
            pool.close()

    # --- WSGI -----------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method not in METHODS:
                raise OssError("MethodNotAllowed",
                               "The specified method is not allowed against this resource.",
                               status=405, Method=method, ResourceType="Object")
            target = self.target(environ)
            if self.signer is not None:
                self._admit(environ, method)
            response = self._send(method, target, environ)
            if self.signer is not None and response.status in (401, 403):
                raise self._refusal(response)
        except OssError as err:
            return self._error(environ, start_response, err)

        headers = _response_headers(response.headers)
        reason = response.reason or _phrase(response.status)
        start_response(f"{response.status} {reason}", headers)
        if method == "HEAD" or response.status in NO_BODY_STATUSES or response.status < 200:
            _release(response, complete=True)
            return []
        return StreamedBody(response)

    def target(self, environ) -> str:
        """The request target at the upstream: base path + the re-encoded PATH_INFO + the query.
        Always an origin-form path: it starts with "/" and goes to the configured host."""
        target = self.base_path + quote(_path_bytes(environ), safe=PATH_SAFE)
        if self.signer is not None:
            # Only the object's version, encoded as SigV4 and OSS V4 canonicalise it.
            pairs = self.forwarded_query(environ)
            if pairs:
                target += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
            return target
        query = environ.get("QUERY_STRING", "")
        if query:
            try:
                query_bytes = query.encode("latin-1")
            except UnicodeEncodeError:
                query_bytes = query.encode("utf-8")
            target += "?" + quote(query_bytes, safe=QUERY_SAFE)
        return target

    def forwarded_query(self, environ) -> list[tuple[str, str]]:
        """The decoded query pairs a signed request passes on (the object's version only)."""
        return [(key, value) for _, key, value in query_pairs(environ.get("QUERY_STRING", ""))
                if key in FORWARDED_QUERY]

    def request_headers(self, method: str, environ) -> dict[str, str]:
        headers = {"Host": self.host_header}
        for key, value in environ.items():
            if not isinstance(value, str) or not value:
                continue
            name = FORWARDED.get(key)
            if name is None and method == "PUT":
                name = FORWARDED_ON_PUT.get(key)
            if name is None and key.startswith(FORWARDED_PREFIXES):
                name = "-".join(part.capitalize() for part in key[5:].split("_"))
            if name is not None and (self.signer is None or self.signer.forwards(name, method)):
                headers[name] = value
        return headers

    # --- a private bucket ---------------------------------------------------------------------------

    def _admit(self, environ, method: str) -> None:
        """Before a request we sign: an object key, and a requester the access rules let through."""
        key = self.addressing.key_of(environ)
        if not key:
            raise OssError("InvalidObjectName", "An object key is required: this server serves the "
                           "objects of its bucket, not listings.", status=400)
        self.access.check(environ, method, self.where.bucket, key)

    def _sign(self, method: str, target: str, headers: dict[str, str], environ) -> dict[str, str]:
        # The key as the store decodes it from the path we send (after "/<bucket>/" or "/").
        key = _path_bytes(environ)[1:].decode("utf-8", "replace")
        request = UpstreamRequest(method, f"{self.scheme}://{self.host_header}{target}", headers,
                                  self.where.bucket, key, self.forwarded_query(environ))
        self.signer.sign(request)
        return request.headers

    def _refusal(self, response) -> OssError:
        """The upstream refused our signature: its body is read (a little) and never passed on."""
        try:
            body = response.read(REFUSAL_READ, decode_content=True) or b""
        except (HTTPError, OSError):
            body = b""
        finally:
            _release(response, complete=False)
        request_id = response.headers.get("x-amz-request-id") or response.headers.get("x-oss-request-id", "")
        return refusal(response.status, body, self.upstream, request_id)

    # --- the exchange ---------------------------------------------------------------------------------

    def _send(self, method: str, target: str, environ):
        headers = self.request_headers(method, environ)
        body = None
        if method == "PUT":
            length = _content_length(environ)
            if length is not None:
                headers["Content-Length"] = str(length)
                body = _read_body(environ["wsgi.input"], length)
            elif environ.get("wsgi.input_terminated"):       # a chunked request: to its end
                first = environ["wsgi.input"].read(CHUNK)
                if first:                                    # sent on chunked, as it comes
                    body = itertools.chain((first,), _read_body(environ["wsgi.input"], None))
                else:
                    headers["Content-Length"] = "0"
            else:
                headers["Content-Length"] = "0"                  # PEP 3333: no length, no body
        if self.signer is not None:
            headers = self._sign(method, target, headers, environ)
        started, outcome = time.perf_counter(), "unreachable"
        try:
            response = self._exchange(method, target, body, headers)
            outcome = f"{response.status // 100}xx"
            return response
        except OssError as err:
            outcome = "timeout" if err.status == 504 else "unreachable"
            raise
        finally:          # origin latency and errors by outcome (telemetry/metrics.py)
            metrics.recorder.origin(method, outcome, time.perf_counter() - started)

    def _exchange(self, method: str, target: str, body, headers: dict[str, str]):
        attempts = 2 if method in ("GET", "HEAD") else 1
        for attempt in range(attempts):
            try:
                return self.pool.urlopen(method, target, body=body, headers=headers,
                                         redirect=False, retries=False, preload_content=False,
                                         decode_content=False, release_conn=False,
                                         assert_same_host=True)
            except ProtocolError as exc:
                # Most often a kept-alive connection the upstream closed just as we reused it; a
                # GET or HEAD is safe to send once more, on a new connection.
                if attempt + 1 < attempts:
                    log.info("upstream %s: %s; retrying %s %s once", self.upstream, exc, method, target)
                    continue
                raise bad_gateway(self.upstream, exc) from None
            except ReadTimeoutError as exc:
                raise gateway_timeout(self.upstream, exc) from None
            except NewConnectionError as exc:   # refused, unresolvable (before ConnectTimeoutError:
                raise bad_gateway(self.upstream, exc) from None   # it is a subclass of it)
            except ConnectTimeoutError as exc:
                raise gateway_timeout(self.upstream, exc) from None
            except HTTPError as exc:            # TLS failures and the rest
                raise bad_gateway(self.upstream, exc) from None
            except OSError as exc:              # wsgi.input failing mid-PUT and the like
                raise bad_gateway(self.upstream, exc) from None
        raise AssertionError("unreachable")

    def _error(self, environ, start_response, err: OssError):
        request_id = new_request_id()
        if getattr(err, "cause", None):     # once, with the request id the client is given
            log.warning("upstream %s %s: %s (request %s)", self.upstream,
                        "timed out" if err.status == 504 else "unreachable", err.cause, request_id)
        status, headers, body = err.to_response(request_id, environ.get("HTTP_HOST", ""))
        headers.append(("Cache-Control", "no-store"))
        if err.status == 405:
            headers.append(("Allow", ", ".join(METHODS)))
        start_response(status, headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


class StreamedBody:
    """The upstream's body as a WSGI iterable of 64 KiB blocks. Its connection goes back to the pool
    when the body has been read to the end; a body left unread (client gone, middleware done with
    it) closes the connection instead, since its unread bytes would poison the next request."""

    def __init__(self, response) -> None:
        self.response = response
        self.complete = False

    def __iter__(self):
        try:
            for block in self.response.stream(CHUNK, decode_content=False):
                if block:
                    yield block
        except ReadTimeoutError as exc:
            log.warning("upstream %s timed out mid-body: %s", _pool_name(self.response), exc)
            raise gateway_timeout(_pool_name(self.response), exc) from None
        except (ProtocolError, HTTPError, OSError) as exc:
            log.warning("upstream %s broke mid-body: %s", _pool_name(self.response), exc)
            raise bad_gateway(_pool_name(self.response), exc) from None
        self.complete = True
        _release(self.response, complete=True)

    def close(self) -> None:
        _release(self.response, complete=self.complete)


def _path_bytes(environ) -> bytes:
    """PATH_INFO's bytes, starting with "/"; a "." or ".." segment is refused (400), since the
    upstream would resolve it, possibly above the base path."""
    raw = environ.get("PATH_INFO", "") or "/"
    try:
        path_bytes = raw.encode("latin-1")      # PEP 3333: the URL's bytes as latin-1
    except UnicodeEncodeError:                  # a server that decoded UTF-8 itself
        path_bytes = raw.encode("utf-8")
    if not path_bytes.startswith(b"/"):
        path_bytes = b"/" + path_bytes
    if any(segment in (b".", b"..") for segment in path_bytes.split(b"/")):
        raise OssError("InvalidObjectName", "The specified object is not valid.", status=400)
    return path_bytes


def _release(response, complete: bool) -> None:
    if not complete:
        response.close()            # drops the socket; the pool reconnects that slot when needed
    response.release_conn()         # no-op when already released


def _pool_name(response) -> str:
    pool = getattr(response, "_pool", None)
    return f"{pool.scheme}://{pool.host}:{pool.port}" if pool is not None else "upstream"


def bad_gateway(upstream: str, exc: BaseException) -> OssError:
    """502; its cause is logged once, with the request id (ProxyApp._error), or here when the body
    broke after the answer began (no error answer then, only a torn body)."""
    return _failed(OssError("BadGateway", "Upstream is unreachable.", status=502), exc)


def gateway_timeout(upstream: str, exc: BaseException) -> OssError:
    return _failed(OssError("GatewayTimeout", "Upstream did not answer in time.", status=504), exc)


def _failed(err: OssError, exc: BaseException) -> OssError:
    err.cause = f"{type(exc).__name__}: {exc}"
    return err


def _response_headers(headers) -> list[tuple[str, str]]:
    named = {token.strip().lower() for value in headers.getlist("Connection") for token in value.split(",")}
    return [(name, value) for name, value in headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() not in named]


def _content_length(environ) -> int | None:
    value = environ.get("CONTENT_LENGTH", "")
    if not value:
        return None
    try:
        length = int(value)
    except ValueError:
        raise OssError("InvalidArgument", "The Content-Length is not a number.") from None
    if length < 0:
        raise OssError("InvalidArgument", "The Content-Length is negative.")
    return length


def _read_body(stream, length: int | None):
    """wsgi.input in blocks: ``length`` bytes, or to the end (a chunked request)."""
    remaining = length
    while remaining is None or remaining > 0:
        block = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
        if not block:
            if remaining:   # the client went away: never let the upstream store a torn object
                raise OssError("IncompleteBody", "The request body is shorter than Content-Length.")
            break
        if remaining is not None:
            remaining -= len(block)
        yield block


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
