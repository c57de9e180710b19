"""instrument(): the same operations for the middleware under another WSGI server (uWSGI, Waitress,
gunicorn's own workers, a Django or Flask project).

`imgmiddleware serve` and deploy/ need none of this: their event-loop worker (server/bridge.py) does
it all, health checks included, without taking an app thread. Elsewhere wrap the outermost app once:

    application = instrument(ImageMiddleware(app, config), config)

and the health, readiness and metrics paths are answered (by the server's thread: that server decides
whether they can queue behind transforms), each request is counted and logged when its answer has
been iterated, and a daemon thread samples the throttle and the cache tiers once a second. Metrics
add up across processes only when PROMETHEUS_MULTIPROC_DIR names a directory every process shares
(and master.py's folding is the server's to do: mark_process_dead when a process dies).
"""

from __future__ import annotations

import asyncio
import threading
import time

from ..config import Config
from . import FACTS, Telemetry


def instrument(app, config: Config | None = None):
    """``app`` with health, readiness and metrics paths, request metrics and the access log."""
    return Instrumented(app, config)


class Instrumented:
    def __init__(self, app, config: Config | None = None) -> None:
        self.app = app
        self.config = config or getattr(app, "config", None) or Config()
        self.telemetry = Telemetry(app, self.config)
        threading.Thread(target=self._sample, name="imgmw-sampler", daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.telemetry.sampler.sample()
            time.sleep(1.0)

    def __call__(self, environ, start_response):
        arrived, started = time.time(), time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        route = self.telemetry.route(environ.get("PATH_INFO", ""))
        if route is not None:
            status, headers, body = asyncio.run(self.telemetry.answer(route, method))
            headers.append(("Content-Length", str(len(body))))
            start_response(f"{status} {_PHRASES.get(status, 'OK')}", headers)
            if self.telemetry.probes_too:
                self.telemetry.finish(environ, {"kind": route}, method, status, headers, 0, len(body),
                                      arrived, time.perf_counter() - started,
                                      environ.get("REMOTE_ADDR", ""))
            return [] if method == "HEAD" else [body]
        facts = environ[FACTS] = {}
        answer: dict = {}

        def capture(status, headers, exc_info=None):
            answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), headers
            return start_response(status, headers, exc_info)

        def done(sent: int) -> None:
            self.telemetry.finish(environ, facts, method, answer.get("status", 500), answer.get("headers", ()),
                                  int(environ.get("CONTENT_LENGTH") or 0), sent, arrived,
                                  time.perf_counter() - started, environ.get("REMOTE_ADDR", ""))

        return _Counted(self.app(environ, capture), done)


_PHRASES = {200: "OK", 405: "Method Not Allowed", 503: "Service Unavailable"}


class _Counted:
    """The app's answer, its bytes counted; ``done(bytes)`` once the server closes it."""

    def __init__(self, iterable, done) -> None:
        self.iterable = iterable
        self.done = done
        self.sent = 0

    def __iter__(self):
        for block in self.iterable:
            self.sent += len(block)
            yield block

    def close(self) -> None:
        try:
            if hasattr(self.iterable, "close"):
                self.iterable.close()
        finally:
            self.done(self.sent)
