"""Back-pressure: a bounded number of transforms at once per worker, and a bounded amount of memory
they may hold by their estimates, with a short wait for room, then 503 SlowDown with Retry-After
(OSS's code for "reduce your request rate").

Every transform takes one of ``slots``; a large source (more pixels than ``large_pixels``) also takes
one of ``large_slots``, which are fewer, so huge images can never hold every slot and small ones
always get through. Each transform also reserves its estimated peak bytes (process/budget.py) out of
``memory_bytes``: two requests that would each hold gigabytes queue instead of running side by side.
A transform alone is always admitted by memory (its own size was checked against the per-request
budget before). Cache hits take no slot at all.

The throttle keeps its own figures -- transforms running and waiting, since when some have been
waiting, 503s by reason -- which the worker's sampler reads (telemetry/: metrics, and readiness,
which turns a queue that never empties into "not ready").
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from .errors import OssError

# Why a request was answered 503 SlowDown: no slot, no large slot, no memory (worker_transform_bytes)
# within transform_wait_seconds, or another request's work on the same result (cache_wait_seconds).
REASONS = ("slots", "large_slots", "memory", "cache_wait")


class Throttle:
    def __init__(self, slots: int, large_slots: int, large_pixels: int, wait_seconds: float,
                 retry_after: int, memory_bytes: int = 0) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._large = threading.BoundedSemaphore(min(large_slots, slots))
        self.large_pixels = large_pixels
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after
        self.memory_bytes = memory_bytes          # 0: no memory bound
        self._reserved = 0
        self._memory = threading.Condition()
        self.slots = slots
        self.running = 0                          # transforms holding a slot
        self.waiting = 0                          # transforms waiting for one (or for memory)
        self.waiting_since = 0.0                  # time.monotonic() when waiting last became > 0; 0.0
        self.rejected = dict.fromkeys(REASONS, 0)  # 503 SlowDown answers by reason
        self._figures = threading.Lock()

    def _move(self, waiting: int = 0, running: int = 0) -> None:
        with self._figures:
            self.waiting += waiting
            self.running += running
            if not self.waiting:
                self.waiting_since = 0.0
            elif not self.waiting_since:
                self.waiting_since = time.monotonic()

    def busy(self, reason: str = "slots") -> OssError:
        """OSS's answer for "reduce your request rate", with the configured Retry-After; ``reason``
        (one of REASONS) is counted."""
        with self._figures:
            self.rejected[reason] += 1
        return OssError("SlowDown", "Please reduce your request rate.", status=503,
                        headers=[("Retry-After", str(self.retry_after))])

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @contextmanager
    def _reserve(self, peak_bytes: int, deadline: float):
        if not self.memory_bytes:
            yield
            return
        with self._memory:
            while self._reserved and self._reserved + peak_bytes > self.memory_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.busy("memory")
                self._memory.wait(left)
            self._reserved += peak_bytes
        try:
            yield
        finally:
            with self._memory:
                self._reserved -= peak_bytes
                self._memory.notify_all()

    @contextmanager
    def slot(self, pixels: int, peak_bytes: int = 0):
        deadline = time.monotonic() + self.wait_seconds
        large = pixels > self.large_pixels
        self._move(waiting=1)
        admitted = False
        try:
            if large and not self._large.acquire(timeout=self.wait_seconds):
                raise self.busy("large_slots")
            try:
                with self._reserve(peak_bytes, deadline):
                    if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                        raise self.busy("slots")
                    self._move(waiting=-1, running=1)
                    admitted = True
                    try:
                        yield
                    finally:
                        self._slots.release()
            finally:
                if large:
                    self._large.release()
        finally:
            if admitted:
                self._move(running=-1)
            else:
                self._move(waiting=-1)
