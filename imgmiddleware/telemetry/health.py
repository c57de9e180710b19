"""Liveness and readiness, answered on the worker's event loop (server/bridge.py), never by an app thread.

**Liveness** says only that the worker's event loop answers; a worker whose loop is stuck answers
nothing, and gunicorn's own timeout restarts it. It never waits behind transforms.

**Readiness** says whether sending this node more requests is useful now. gunicorn's event loop
accepts connections whatever the app threads are doing, so a saturated node still answers a plain
health check while every request queues (the complaint users of other image servers repeat). Not ready:

- while some worker's transform queue has had requests waiting for a slot for
  ``readiness_saturation_seconds`` without a break. Each worker writes, once a second (sampler.py),
  since when its queue has been waiting to the *board*: one 8-byte file per worker in the instance's
  telemetry directory; any worker answers for the node. Without the directory (another server, one
  process) the answering process's own throttle decides;
- while a dependency named in ``readiness_checks`` is down: ``origin`` (the proxy's upstream takes a
  TCP connection, remembered for a second; the bundled bucket's root is a directory), ``redis`` (the
  shared tier's circuit breaker is open in the answering worker).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from urllib.parse import urlsplit

BOARD_PREFIX = "board_"
_SINCE = struct.Struct("d")            # CLOCK_MONOTONIC seconds, one clock for every process of a host
ORIGIN_MEMORY = 1.0                    # seconds an origin check's outcome is reused


class Board:
    """Since when each worker's transform queue has been waiting (0.0: it is not)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._written: float | None = None

    def publish(self, since: float) -> None:
        """This worker's value; written only when it changed."""
        if self.path is None or since == self._written and self._pid == os.getpid():
            return
        if self._pid != os.getpid():
            self._fd = os.open(os.path.join(self.path, f"{BOARD_PREFIX}{os.getpid()}"),
                               os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        os.pwrite(self._fd, _SINCE.pack(since), 0)
        self._written = since

    def waiting_since(self) -> float:
        """The earliest time some live worker's queue began waiting, or 0.0."""
        if self.path is None:
            return 0.0
        earliest = 0.0
        try:
            names = os.listdir(self.path)
        except OSError:
            return 0.0
        for name in names:
            if not name.startswith(BOARD_PREFIX):
                continue
            try:
                pid = int(name[len(BOARD_PREFIX):])
                os.kill(pid, 0)                  # a worker killed before the master forgot it
                with open(os.path.join(self.path, name), "rb") as fh:
                    (since,) = _SINCE.unpack(fh.read(_SINCE.size))
            except (ValueError, OSError, struct.error):
                continue
            if since and (not earliest or since < earliest):
                earliest = since
        return earliest

    def forget(self, pid: int) -> None:
        """The master, when a worker is gone."""
        if self.path is not None:
            try:
                os.remove(os.path.join(self.path, f"{BOARD_PREFIX}{pid}"))
            except OSError:
                pass


def find(app, attribute: str):
    """The first of ``app``, ``app.app``, ... (wrappers around the middleware) that has ``attribute``."""
    for _ in range(8):
        if app is None:
            return None
        if hasattr(app, attribute):
            return app
        app = getattr(app, "app", None)
    return None


class Health:
    """The answers of ``health_path`` and ``ready_path`` for ``app`` (the middleware, or anything that
    wraps it) under ``config``; ``board`` is the instance's, when there is one."""

    def __init__(self, app, config, board: Board) -> None:
        self.config = config
        self.board = board
        middleware = find(app, "throttle")
        self.throttle = middleware.throttle if middleware is not None else None
        self.shared = getattr(getattr(middleware, "cache", None), "shared", None)
        self.origin = _origin(getattr(middleware, "app", None)) if middleware is not None else None
        self._origin_checked = (0.0, "")      # (when, reason or "")

    async def reasons(self) -> list[str]:
        """Why this node is not ready (empty: it is)."""
        reasons = []
        limit = self.config.readiness_saturation_seconds
        if limit:
            since = self.board.waiting_since() if self.board.path else 0.0
            if self.throttle is not None and self.throttle.waiting_since:
                since = min(since or self.throttle.waiting_since, self.throttle.waiting_since)
            waited = time.monotonic() - since if since else 0.0
            if since and waited >= limit:
                reasons.append(f"transform queue saturated for {waited:.1f} s "
                               f"(readiness_saturation_seconds = {limit:g})")
        checks = self.config.readiness_checks
        if "redis" in checks and self.shared is not None and not self.shared.available:
            reasons.append(f"shared cache tier {self.shared.endpoint}: circuit breaker open")
        if "origin" in checks and self.origin is not None:
            reason = await self._check_origin()
            if reason:
                reasons.append(reason)
        return reasons

    async def _check_origin(self) -> str:
        when, reason = self._origin_checked
        now = time.monotonic()
        if now - when < ORIGIN_MEMORY:
            return reason
        kind, where = self.origin
        if kind == "directory":
            reason = "" if os.path.isdir(where) else f"origin: the data root {where} is not a directory"
        else:
            host, port = where
            try:
                async with asyncio.timeout(self.config.upstream_connect_timeout):
                    _, writer = await asyncio.open_connection(host, port)
                writer.close()
                reason = ""
            except (OSError, TimeoutError) as exc:
                reason = f"origin {host}:{port} unreachable ({type(exc).__name__})"
        self._origin_checked = (time.monotonic(), reason)
        return reason


def _origin(app):
    """("tcp", (host, port)) for the proxy's upstream, ("directory", root) for the bundled bucket."""
    where = getattr(app, "where", None)
    if where is not None and getattr(where, "origin", None):
        parts = urlsplit(where.origin)
        return "tcp", (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    root = getattr(app, "root", None)
    if root is not None:
        return "directory", str(root)
    return None
