"""EventLoopWorker: gunicorn's asgi worker for a WSGI app, with a deadline for each request's head.

gunicorn's event loop reads requests for nothing but a connection, so slow clients no longer hold
threads; but it never gives up on a head that is still arriving (a fresh connection that trickles one
byte every few seconds stays open for ever), so enough of them would use up the process's file
descriptors. This worker closes a connection whose next request's head has not arrived whole within
the app's ``head_timeout`` (``client_header_timeout``, 10 s by default; nginx's client_header_timeout),
answering 400 RequestTimeout as OSS does for a late request.

gunicorn builds its protocol object inside the worker's serving coroutine with no setting to choose
another, so in this worker process (and only there) the name it builds is bound to a subclass that
registers each connection; a sweep every second reads two of gunicorn's own fields per connection
(waiting for a request's head, and the request count, which tells one wait from the next).
tests/test_slow_clients.py fails if a gunicorn release changes them.

Connections are shared among the workers by the loop in accept.py.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi

from ..errors import new_request_id
from .accept import ACCEPT_PAUSE_SECONDS, ConnectionShare, FairAcceptLoop
from .bridge import BufferedWSGI, request_timeout

DEFAULT_HEAD_TIMEOUT = 10.0


class _RegisteredProtocol(ASGIProtocol):
    """gunicorn's protocol, known to the worker's sweep and counted by its accept loop."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.worker.connections.add(self)
        self.worker.share.opened()
        if self.worker.parser is None:     # the parser gunicorn chose, once, in the worker's log
            self.worker.parser = type(getattr(self, "_callback_parser", None)).__name__
            self.worker.log.info("HTTP parser: %s", self.worker.parser)

    def connection_lost(self, exc):
        self.worker.connections.discard(self)
        self.worker.share.closed()
        super().connection_lost(exc)


class EventLoopWorker(gasgi.ASGIWorker):
    """``worker_class = "imgmiddleware.server.worker.EventLoopWorker"`` in place of gthread, for any
    WSGI app (``imgmiddleware.wsgi:application``, a Django or Flask project): it is wrapped in
    BufferedWSGI with gunicorn's ``threads`` and the client bounds of the imgmiddleware config
    (IMGMW_CONFIG, as imgmiddleware.wsgi reads it). `imgmiddleware serve` hands it a BufferedWSGI
    already, made from its own config and command line."""

    @classmethod
    def check_config(cls, cfg, log):
        """gunicorn's asgi worker warns that it ignores ``threads``; BufferedWSGI uses them."""

    def load_wsgi(self):
        super().load_wsgi()
        if not isinstance(self.asgi, BufferedWSGI):
            from ..cli import load_config
            self.asgi = BufferedWSGI(self.asgi, load_config(os.environ.get("IMGMW_CONFIG")),
                                     threads=self.cfg.threads)

    def _setup_event_loop(self):
        super()._setup_event_loop()
        if type(self.loop) is asyncio.SelectorEventLoop:   # uvloop (asgi_loop) accepts its own way
            self.loop.close()
            self.loop = FairAcceptLoop(self.cfg.backlog, self.share,
                                       ACCEPT_PAUSE_SECONDS if self.cfg.workers > 1 else 0.0)
            asyncio.set_event_loop(self.loop)

    def init_process(self):
        self.connections: weakref.WeakSet = weakref.WeakSet()
        self.share = ConnectionShare(self.cfg.threads, lambda: self.nr)
        # gunicorn records whether its C parser (gunicorn_h1c) is there on the class it is asked
        # through, but reads the answer from ASGIProtocol's own attributes: asked through the
        # subclass, the answer never reaches them and every connection falls back to the Python
        # parser. Asked once here, on ASGIProtocol itself.
        ASGIProtocol._check_h1c_protocol_available()
        self.parser: str | None = None
        gasgi.ASGIProtocol = _RegisteredProtocol     # this process runs nothing but this worker
        super().init_process()

    async def _serve(self):
        sweep = asyncio.ensure_future(self._close_late_heads())
        try:
            await super()._serve()
        finally:
            sweep.cancel()

    async def _close_late_heads(self) -> None:
        timeout = float(getattr(self.asgi, "head_timeout", DEFAULT_HEAD_TIMEOUT))
        host = getattr(getattr(self.asgi, "config", None), "host_id", "")
        waits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # connection -> (request, since)
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = self.loop.time()
            for conn in list(self.connections):
                if not conn._awaiting_request or conn.transport is None or conn.transport.is_closing():
                    waits.pop(conn, None)
                    continue
                request, since = waits.get(conn, (None, now))
                if request != conn.req_count:            # a new wait began since the last look
                    waits[conn] = (conn.req_count, now)
                elif now - since >= timeout:
                    waits.pop(conn, None)
                    _answer_late(conn.transport, host)


def _answer_late(transport, host: str) -> None:
    """400 RequestTimeout (OSS XML), then close: the head never came whole."""
    status, headers, body = request_timeout().to_response(new_request_id(), host)
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers] + ["Connection: close", "", ""]
    try:
        transport.write("\r\n".join(lines).encode("latin-1") + body)
    finally:
        transport.close()
