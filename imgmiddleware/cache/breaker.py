"""A circuit breaker for the shared tier: after ``failures`` consecutive failures Redis is not called
for ``cooldown`` seconds; then one call goes through as a probe (half-open), and its outcome closes the
breaker or opens it for another cool-down.

Why: a Redis that is down costs a refused connection, but one that is stalled or unreachable costs a
whole socket timeout on every call. Without the breaker every request would pay that while the local
tiers could answer at once; with it, a bad Redis costs ``failures`` timeouts per worker and then one
probe per cool-down, and the tier comes back by itself when the probe succeeds.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, failures: int = 5, cooldown: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, failures)
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.opened = 0          # times it opened
        self.rejected = 0        # calls refused while open or while a probe was out

    def allow(self) -> bool:
        """Whether a call may go to Redis now. In half-open state only the first caller (the probe)."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() >= self.opened_at + self.cooldown:
                self.state = HALF_OPEN
                return True
            self.rejected += 1
            return False

    def success(self) -> bool:
        """Record a call that worked; True when it closed the breaker (the tier is back)."""
        with self._lock:
            self.consecutive = 0
            if self.state == CLOSED:
                return False
            self.state = CLOSED
            return True

    def failure(self) -> bool:
        """Record a failed call; True when it opened the breaker."""
        with self._lock:
            self.consecutive += 1
            if self.state == HALF_OPEN or (self.state == CLOSED and self.consecutive >= self.threshold):
                self.state = OPEN
                self.opened_at = self.clock()
                self.opened += 1
                return True
            return False

    def stats(self) -> dict:
        with self._lock:
            return {"state": self.state, "opened": self.opened, "rejected": self.rejected,
                    "consecutive_failures": self.consecutive}
