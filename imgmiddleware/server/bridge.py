"""BufferedWSGI: a WSGI app as the ASGI app of gunicorn's event-loop worker, reading whole requests first.

A thread is taken only when a request has arrived whole, and given back while its answer is written:

- the body is read on the event loop, into memory or, past ``request_body_memory_bytes``, a temporary
  file, under a deadline of ``client_body_timeout`` plus a second for every ``client_body_min_rate``
  bytes received (Apache's mod_reqtimeout rule: a fast upload never times out, a trickle soon does);
  late, it is a 400 RequestTimeout, over ``max_request_body_bytes`` a 400 EntityTooLarge (OSS's codes),
  after which the rest of the body is read and dropped for a few seconds so that a client still
  sending it gets that answer (a lingering close);
- the WSGI app then runs in one of ``threads`` threads, which also produce its answer's first block
  (the whole of it when it is a list, as every processed image is): one hop for most requests;
- the loop writes each block; a block the client does not read for ``client_send_timeout`` ends the
  connection. A streamed answer (a plain GET of a large object) takes a thread per block, not for the
  whole time the client takes to read it.

The health, readiness and metrics paths (telemetry/) are answered on the loop itself, never by an app
thread, so a probe never queues behind transforms; every other request is counted and logged there
once its last byte is written (telemetry.Telemetry.finish), when every time is known.

The environ is the one gunicorn's own WSGI workers build (PATH_INFO percent-decoded from the raw path,
as latin-1, RAW_URI, REMOTE_ADDR, SERVER_NAME/PORT), with ``wsgi.input`` the buffered body and
CONTENT_LENGTH its real length (``wsgi.input_terminated``: a chunked body is complete too).

a2wsgi does the same bridging, measured here at half gthread's rate on cached hits (three thread hops
a request and a lazily read body, which holds a thread while the client trickles it in); this one is
within a few percent of it (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes
from wsgiref.util import FileWrapper

from ..config import Config
from ..errors import OssError, new_request_id
from ..telemetry import FACTS, Telemetry

log = logging.getLogger("imgmiddleware.server")

# Blocks of a file an app hands to wsgi.file_wrapper: each block costs a trip between the loop and a
# thread, so they are large (werkzeug asks for 8 KiB, which made plain GETs of photos 2x slower).
FILE_BLOCK = 256 * 1024
# How long the rest of a refused body is read and dropped before the connection closes (nginx's
# lingering_timeout): long enough for a client on a fair link to finish sending, short enough that
# a refused upload cannot hold the connection.
LINGER_SECONDS = 5.0


def file_wrapper(filelike, block_size: int = 8192) -> FileWrapper:
    return FileWrapper(filelike, max(block_size, FILE_BLOCK))


class BufferedWSGI:
    """The ASGI face of ``app``; ``config`` gives the client bounds and, unless ``threads`` is given,
    the number of app threads."""

    def __init__(self, app, config: Config | None = None, threads: int | None = None) -> None:
        config = config or Config()
        self.app = app
        self.config = config
        self.head_timeout = config.client_header_timeout   # read by server.worker
        self.executor = ThreadPoolExecutor(max_workers=threads or config.threads, thread_name_prefix="imgmw")
        self.telemetry = Telemetry(app, config)
        self._sampler: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # Anything else (a WebSocket) is refused by returning without accepting it.

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start_sampler()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sampler is not None:
                    self._sampler.cancel()
                    self.telemetry.sampler.sample()        # the last second's figures
                # Requests in flight have had gunicorn's graceful_timeout; threads still running are
                # not waited for (the process is about to end).
                self.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_sampler(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.ensure_future(self.telemetry.sample_forever())

    async def _http(self, scope, receive, send) -> None:
        route = self.telemetry.route(scope["path"])
        if route is not None:
            await self._operations(route, scope, send)
            return
        if self._sampler is None:
            self._start_sampler()                  # a server that sends no lifespan events
        arrived, started = time.time(), time.perf_counter()
        exchange = _Exchange(scope)
        try:
            body, length = await self._read_body(scope, receive)
        except OssError as err:
            exchange.status, exchange.headers = await self._send_error(scope, send, err)
            if err.code == "EntityTooLarge":
                await self._discard_rest(receive)
            self._finish(exchange, arrived, started)
            return
        except ClientGone:
            return
        exchange.bytes_in = length
        try:
            environ = build_environ(scope, body, length)
        except OutsideMount as err:
            body.close()
            exchange.status, exchange.headers = await self._send_error(scope, send, OssError(
                "InvalidURI", f"The path is outside this server's mount point {err}.", status=400))
            self._finish(exchange, arrived, started)
            return
        environ[FACTS] = exchange.facts
        exchange.environ = environ
        loop = asyncio.get_running_loop()
        call = _Call(self.app, environ)
        try:
            try:
                await loop.run_in_executor(self.executor, call.begin)
            except Exception:
                request_id = new_request_id()
                log.exception("unhandled error in the WSGI app (request %s)", request_id)
                if call.status is None:
                    exchange.status, exchange.headers = await self._send_error(scope, send, OssError(
                        "InternalError", "We encountered an internal error. Please try again.", status=500),
                        request_id)
                return      # else gunicorn ends a response that was begun by closing the connection
            exchange.status, exchange.headers = call.status, call.headers
            await self._write(send, {"type": "http.response.start", "status": call.status,
                                     "headers": call.headers})
            await self._write(send, {"type": "http.response.body", "body": call.first,
                                     "more_body": not call.done})
            exchange.bytes_out += len(call.first)
            if not call.done:
                await self._stream(call, receive, send, exchange)
        except (TimeoutError, ConnectionError):
            # The client stopped reading (client_send_timeout) or left: gunicorn closes the connection.
            pass
        finally:
            body.close()
            if call.closable:
                loop.run_in_executor(self.executor, call.close)
            self._finish(exchange, arrived, started)

    async def _stream(self, call: "_Call", receive, send, exchange: "_Exchange") -> None:
        """The rest of a streamed answer, block by block, until it ends or the client leaves:
        gunicorn drops writes to a closed connection without a word, so without watching for the
        disconnect a thread would read the rest of a large object for nobody."""
        loop = asyncio.get_running_loop()
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            while not call.done and not gone.done():
                block = await loop.run_in_executor(self.executor, call.next_block)
                await self._write(send, {"type": "http.response.body", "body": block,
                                         "more_body": not call.done})
                exchange.bytes_out += len(block)
        finally:
            gone.cancel()

    def _finish(self, exchange: "_Exchange", arrived: float, started: float) -> None:
        try:
            self.telemetry.finish(exchange.environ, exchange.facts, exchange.method, exchange.status or 0,
                                  exchange.headers, exchange.bytes_in, exchange.bytes_out, arrived,
                                  time.perf_counter() - started, exchange.client)
        except Exception:
            log.exception("telemetry: a request could not be recorded")

    async def _operations(self, route: str, scope, send) -> None:
        """Health, readiness or metrics, on the loop; not counted or logged unless access_log_probes."""
        arrived, started = time.time(), time.perf_counter()
        method = scope["method"]
        status, headers, body = await self.telemetry.answer(route, method)
        headers.append(("Content-Length", str(len(body))))
        encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        try:
            await self._write(send, {"type": "http.response.start", "status": status, "headers": encoded})
            await self._write(send, {"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        except (TimeoutError, ConnectionError):
            pass
        if self.telemetry.probes_too:
            exchange = _Exchange(scope)
            exchange.facts["kind"] = route
            exchange.status, exchange.headers, exchange.bytes_out = status, encoded, len(body)
            self._finish(exchange, arrived, started)

    async def _write(self, send, message) -> None:
        async with asyncio.timeout(self.config.client_send_timeout):
            await send(message)

    async def _read_body(self, scope, receive) -> tuple[io.IOBase, int]:
        """The whole body, or an OssError (RequestTimeout, EntityTooLarge), or ClientGone."""
        config = self.config
        declared, chunked = _framing(scope["headers"])
        if declared is not None and declared > config.max_request_body_bytes:
            raise entity_too_large(config.max_request_body_bytes)
        if not declared and not chunked:
            return io.BytesIO(), 0
        in_memory = declared is not None and declared <= config.request_body_memory_bytes
        body = io.BytesIO() if in_memory else tempfile.SpooledTemporaryFile(
            max_size=config.request_body_memory_bytes, prefix="imgmw-body-")
        loop = asyncio.get_running_loop()
        started = loop.time()
        received = 0
        try:
            while True:
                deadline = started + config.client_body_timeout + received / config.client_body_min_rate
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise request_timeout() from None
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > config.max_request_body_bytes:
                    raise entity_too_large(config.max_request_body_bytes)
                if chunk:
                    body.write(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            body.close()
            raise
        body.seek(0)
        return body, received

    async def _discard_rest(self, receive) -> None:
        """Read and drop what is left of a refused body for up to LINGER_SECONDS, as nginx's
        lingering close does: closing a socket with unread bytes makes the kernel reset the
        connection, and a client still sending its body (http.client, oss2, curl) then loses the
        EntityTooLarge answer already on its way and sees only a broken pipe."""
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect" or not message.get("more_body", False):
                        return
        except TimeoutError:
            pass

    async def _send_error(self, scope, send, err: OssError, request_id: str = "") -> tuple[int, list]:
        """Send OSS's XML for ``err``; (status, headers) for the log."""
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        status, headers, payload = err.to_response(request_id or new_request_id(), self.config.host_id or host)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if err.code in ("RequestTimeout", "EntityTooLarge"):
            headers.append((b"Connection", b"close"))   # the rest of the body is never read
        code = int(status.split()[0])
        try:
            await self._write(send, {"type": "http.response.start", "status": code, "headers": headers})
            await self._write(send, {"type": "http.response.body", "body": payload})
        except (TimeoutError, ConnectionError):
            pass
        return code, headers


class _Exchange:
    """What the log and the metrics learn of one request as it goes."""
    __slots__ = ("method", "client", "environ", "facts", "status", "headers", "bytes_in", "bytes_out")

    def __init__(self, scope) -> None:
        self.method = scope["method"]
        client = scope.get("client")
        self.client = str(client[0]) if client else ""
        self.environ = None
        self.facts: dict = {}
        self.status: int | None = None
        self.headers: list = []
        self.bytes_in = 0
        self.bytes_out = 0


async def _disconnect(receive) -> None:
    """Until the client disconnects. Once the body is read, ASGI's receive() gives at most one
    last empty body message, then waits for the disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


class OutsideMount(Exception):
    """A request for a path outside SCRIPT_NAME (the message): gunicorn's WSGI workers refuse it too."""


class ClientGone(Exception):
    """The client closed the connection before its body was complete."""


def request_timeout() -> OssError:
    return OssError("RequestTimeout", "Your socket connection to the server was not read from or "
                    "written to within the timeout period.", status=400)


def entity_too_large(limit: int) -> OssError:
    return OssError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.",
                    status=400, MaxSizeAllowed=str(limit))


def _framing(headers) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is chunked). gunicorn has checked both already."""
    length, chunked = None, False
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


def build_environ(scope, body, length: int) -> dict:
    """The WSGI environ gunicorn's own workers would build for this request. The mount point is theirs
    too: the SCRIPT_NAME environment variable, else a SCRIPT_NAME header (gunicorn passes it on from
    trusted forwarders only), else the ASGI root_path; the raw path must begin with it."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    script_name = os.environ.get("SCRIPT_NAME", "")
    for name, value in scope["headers"]:
        if name == b"script_name":
            script_name = value.decode("latin-1")
    script_name = script_name or scope.get("root_path", "")
    if script_name:
        if not raw_path.decode("latin-1").startswith(script_name):
            raise OutsideMount(script_name)
        raw_path = raw_path[len(script_name.encode("latin-1")):]
    query = scope.get("query_string", b"")
    server = scope.get("server") or ("localhost", 80)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": (raw_path + (b"?" + query if query else b"")).decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] if len(server) > 1 and server[1] is not None else ""),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": file_wrapper,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = str(client[0]), str(client[1])
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING", "SCRIPT_NAME"):
            continue                      # the body is whole now: its real length stands instead
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    if length or scope["method"] in ("PUT", "POST"):
        environ["CONTENT_LENGTH"] = str(length)
    return environ


class _Call:
    """One WSGI call, driven from the event loop; every method runs in an app thread."""

    def __init__(self, app, environ: dict) -> None:
        self.app = app
        self.environ = environ
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.first = b""
        self.done = False
        self.closable = False
        self._written: list[bytes] = []     # what the app gave the legacy write() callable
        self._iterable = None
        self._iterator = None

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info and self.status is not None:
            raise exc_info[1].with_traceback(exc_info[2])   # too late to change the answer (PEP 3333)
        self.status = int(status.split(" ", 1)[0])
        # As the app spelt them (ETag, x-oss-request-id): what gthread sent, and OSS sends.
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        return self._written.append

    def begin(self) -> None:
        """Call the app and take the first block of its answer (all of it when it is a list)."""
        self._iterable = self.app(self.environ, self.start_response)
        self.closable = hasattr(self._iterable, "close")
        if isinstance(self._iterable, (list, tuple)):
            self.first = b"".join(self._written) + b"".join(self._iterable)
            self.done = True
            if self.status is None:
                raise RuntimeError("the WSGI app answered without calling start_response")
            return
        self._iterator = iter(self._iterable)
        self.first = b"".join(self._written) + self.next_block()
        if self.status is None:
            raise RuntimeError("the WSGI app answered without calling start_response")

    def next_block(self) -> bytes:
        """The next non-empty block, or b"" and ``done`` at the end."""
        for block in self._iterator:
            if self._written:
                block = b"".join(self._written) + block
                self._written.clear()
            if block:
                return bytes(block)
        self.done = True
        tail = b"".join(self._written)
        self._written.clear()
        return tail

    def close(self) -> None:
        try:
            self._iterable.close()
        except Exception:
            log.exception("error closing a WSGI response")
