"""Operations (issue 17): Prometheus metrics, liveness and readiness, the access log.

One module per concern: metrics.py (what is counted; prometheus_client, multiprocess under gunicorn),
sampler.py (the worker's once-a-second look at the throttle and the cache tiers), health.py (liveness,
readiness, the board the workers share), accesslog.py (one line per request, no secrets), master.py
(gunicorn's master: the instance's directory, a dead worker's files, the metrics_bind listener),
wsgi.py (instrument(): all of it for another WSGI server).

:class:`Telemetry` is what a server layer does around each request: server/bridge.py (the event-loop
worker that `imgmiddleware serve` runs) answers the health, readiness and metrics paths on its event
loop and calls :meth:`Telemetry.finish` once a request's last byte is written, when it knows every
time. The middleware only notes what it learnt in ``environ[FACTS]``, a dict the server layer puts
there (its copies of the environ share it): the kind of request, the bucket, the canonical process
string, the Code of an error, a transform's times and sizes. Everything else (status, EC, cache
outcome, request id, bytes) is read off the answer's own headers, so plain apps are logged too.
Nothing here knows images; prometheus_client is imported only when metrics are on.
"""

from __future__ import annotations

import asyncio

from . import metrics
from .accesslog import AccessLog
from .health import Board, Health
from .sampler import Sampler

FACTS = "imgmw.facts"
PLAIN = "text/plain; charset=utf-8"
NO_STORE = [("Content-Type", PLAIN), ("Cache-Control", "no-store")]


class Telemetry:
    """Everything per request for ``app`` (the middleware, or anything that wraps it) under ``config``."""

    def __init__(self, app, config) -> None:
        self.config = config
        if config.metrics:
            metrics.enable()
        self.board = Board(metrics.multiprocess_dir())
        self.health = Health(app, config, self.board)
        self.sampler = Sampler(app, self.board)
        self.log = AccessLog(config.access_log, config.access_log_format) if config.access_log else None
        self.routes = {path: name for path, name in ((config.health_path, "health"),
                                                    (config.ready_path, "ready"),
                                                    (config.metrics_path, "metrics")) if path}
        self.probes_too = config.access_log_probes
        self.sampler.sample()                     # this worker's gauges exist from its start

    def route(self, path: str) -> str | None:
        """"health", "ready" or "metrics" for their paths, else None."""
        return self.routes.get(path)

    async def answer(self, route: str, method: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one of the routes: cheap, unauthenticated, never cached."""
        if method not in ("GET", "HEAD"):
            return 405, NO_STORE + [("Allow", "GET, HEAD")], b"GET or HEAD\n"
        if route == "health":
            return 200, list(NO_STORE), b"ok\n"
        if route == "ready":
            reasons = await self.health.reasons()
            if reasons:
                return 503, list(NO_STORE), ("not ready\n" + "".join(r + "\n" for r in reasons)).encode()
            return 200, list(NO_STORE), b"ready\n"
        self.sampler.sample()                     # this worker's figures as of now
        # Reading every worker's files takes a few milliseconds: off the loop, on its default
        # executor, never one of the app's threads.
        body, content_type = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return 200, [("Content-Type", content_type), ("Cache-Control", "no-store")], body

    def finish(self, environ: dict | None, facts: dict, method: str, status: int, headers, bytes_in: int,
               bytes_out: int, arrived: float, seconds: float, client: str = "") -> None:
        """A request is over (its last byte written, or the client gone): count it and log it.
        ``headers`` are the answer's (str or bytes pairs); ``arrived`` is time.time() at arrival."""
        request_id = ec = cache = ""
        for name, value in headers:
            if isinstance(name, bytes):
                name, value = name.decode("latin-1"), value.decode("latin-1")
            lower = name.lower()
            if lower == "x-oss-request-id":
                request_id = value
            elif lower == "x-oss-ec":
                ec = value
            elif lower == "x-imgmw-cache":
                cache = value
        kind = facts.get("kind", "plain")
        rec = metrics.recorder
        if rec.enabled:
            rec.request(method, status, ec, cache, kind, seconds)
            if "transform" in facts:
                rec.transform(facts)
        if self.log is None:
            return
        bucket, key = facts.get("bucket"), facts.get("key")
        addressing = facts.get("addressing")
        if environ is not None:
            if addressing is not None:
                try:
                    bucket = addressing.bucket_of(environ) if bucket is None else bucket
                    key = addressing.key_of(environ) if key is None else key
                except Exception:          # an odd path is the app's to refuse, not the log's
                    pass
            elif key is None:
                key = environ.get("PATH_INFO", "")
        self.log.write({
            "time": self.log.time(arrived), "request_id": request_id or None, "client": client or None,
            "method": method, "bucket": bucket or None, "key": key, "process": facts.get("process"),
            "kind": kind, "status": status, "code": facts.get("code"), "ec": ec or None,
            "cache": cache or None, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "read_ms": _ms(facts.get("read")), "wait_ms": _ms(facts.get("wait")),
            "transform_ms": _ms(facts.get("transform")), "total_ms": round(seconds * 1000, 1),
        })

    def sample_forever(self):
        """The sampler's loop, for the worker's event loop (server/bridge.py)."""
        async def run():
            while True:
                self.sampler.sample()
                await asyncio.sleep(1.0)
        return run()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
