"""Back-pressure: a bounded number of transforms at once per worker, with a short wait for a slot,
then 503 SlowDown with Retry-After (OSS's code for "reduce your request rate").

Every transform takes one of ``slots``; a large source (more pixels than ``large_pixels``) also takes
one of ``large_slots``, which are fewer, so huge images can never hold every slot and small ones
always get through. Cache hits take no slot at all.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from .errors import OssError


class Throttle:
    def __init__(self, slots: int, large_slots: int, large_pixels: int, wait_seconds: float,
                 retry_after: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._large = threading.BoundedSemaphore(min(large_slots, slots))
        self.large_pixels = large_pixels
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after

    def busy(self) -> OssError:
        """OSS's answer for "reduce your request rate", with the configured Retry-After."""
        return OssError("SlowDown", "Please reduce your request rate.", status=503,
                        headers=[("Retry-After", str(self.retry_after))])

    @contextmanager
    def slot(self, pixels: int):
        large = pixels > self.large_pixels
        if large and not self._large.acquire(timeout=self.wait_seconds):
            raise self.busy()
        try:
            if not self._slots.acquire(timeout=self.wait_seconds):
                raise self.busy()
            try:
                yield
            finally:
                self._slots.release()
        finally:
            if large:
                self._large.release()
