"""The worker's sampler: once a second, what the throttle and the cache tiers count, as metrics, and
since when the transform queue has been waiting, on the readiness board.

Why a sampler instead of a call at every event: the throttle and the tiers already count what
matters (`imgmiddleware cache stats` reads the same figures), so their hot paths stay free of any
telemetry; a figure reaches the metrics within a second, which is far below a scrape interval. What
a worker killed with SIGKILL counted in its last second is lost; requests themselves are counted
when they end (telemetry.Telemetry.finish), never sampled.
"""

from __future__ import annotations

import logging
import os

from . import metrics
from .health import Board, find

log = logging.getLogger("imgmiddleware.telemetry")

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SHARED_COUNTERS = ("hits", "misses", "stored")      # the rest of the shared tier's go to cache_events


def resident_bytes() -> int:
    """This process's resident memory (RSS), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Sampler:
    def __init__(self, app, board: Board) -> None:
        middleware = find(app, "throttle")
        self.throttle = getattr(middleware, "throttle", None)
        self.cache = getattr(middleware, "cache", None)
        self.board = board
        self._failing = False

    def sample(self) -> None:
        try:
            if self.throttle is not None:
                self.board.publish(self.throttle.waiting_since)
            recorder = metrics.recorder
            if recorder.enabled:
                self._publish(recorder)
            self._failing = False
        except Exception:
            if not self._failing:          # once, not every second
                log.exception("telemetry: sampling failed")
            self._failing = True

    def _publish(self, rec) -> None:
        rec.gauge("workers", (), 1)
        rec.gauge("rss", (), resident_bytes())
        throttle = self.throttle
        if throttle is not None:
            rec.gauge("slots", (), throttle.slots)
            rec.gauge("slots_busy", (), throttle.running)
            rec.gauge("slots_queued", (), throttle.waiting)
            for reason, count in list(throttle.rejected.items()):
                rec.counter("slowdown", (reason,), count)
        cache = self.cache
        if cache is None:
            return
        with cache._counter_lock:
            counts = dict(cache.counters)
        if cache.memory.enabled:
            rec.counter("cache_hits", ("memory",), counts["memory_hits"])
            rec.counter("cache_misses", ("memory",), counts["memory_misses"])
            rec.counter("cache_evictions", ("memory",), cache.memory.evictions)
            rec.gauge("memory_bytes", (), cache.memory.stats()[1])
        if cache.disk is not None:
            rec.counter("cache_hits", ("disk",), counts["disk_hits"])
            rec.counter("cache_misses", ("disk",), counts["disk_misses"])
            rec.counter("cache_evictions", ("disk",), cache.disk.evictions)
            rec.counter("cache_stored", ("disk",), counts["stored"])
            rec.counter("cache_events", ("disk", "store_errors"), counts["store_errors"])
            rec.gauge("disk_bytes", (), cache.disk.usage())
        shared = cache.shared
        if shared is None:
            rec.gauge("breaker_open", (), 0)
        else:
            figures = shared.stats()
            breaker = figures.pop("breaker")
            figures.pop("endpoint", None)
            for name, count in figures.items():
                if name in SHARED_COUNTERS:
                    rec.counter(f"cache_{name}", ("shared",), count)
                else:
                    rec.counter("cache_events", ("shared", name), count)
            rec.counter("cache_events", ("shared", "breaker_opened"), breaker["opened"])
            rec.gauge("breaker_open", (), 1 if breaker["state"] == "open" else 0)
