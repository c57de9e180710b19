"""Single-flight: concurrent requests for one uncached result compute it once, at three scopes.

- threads of one worker: an in-process claim (_Flight) the others wait on;
- workers of one machine: a diskcache lease naming the leader's pid (when the disk tier is on);
- nodes sharing Redis: a lock with a random token (SET NX PX), released by compare-and-delete, its
  outcome published to the waiters of every node (shared.py says why pub/sub).

Each scope's leader goes on to the next, so at most one request per machine takes part across nodes.
Whatever the scope, a leader that fails or dies is replaced at once (or when its claim lapses), a
waiter gives up after ``wait_seconds`` with :class:`LeaderBusy` (503 SlowDown) while a live leader
still works, and a fault of the shared tier means computing here, never an error.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import TYPE_CHECKING, Callable

from .disk import FAILED
from .entry import Entry

if TYPE_CHECKING:
    from .tiers import ResultCache


class LeaderBusy(Exception):
    """Another request has been computing this result for longer than the wait allows."""


class _Flight:
    """An in-process leader's claim on a key: set when it is done; others may lead after expires."""
    __slots__ = ("done", "expires")

    def __init__(self, expires: float) -> None:
        self.done = threading.Event()
        self.expires = expires


class SingleFlight:
    def __init__(self, cache: "ResultCache", wait_seconds: float) -> None:
        self.cache = cache
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def run(self, key: str, compute: Callable[[], Entry]) -> tuple[Entry, bool]:
        """(entry, computed_here). One caller per key computes, in this process, across processes
        sharing the disk tier and across nodes sharing Redis; the others wait for its result. A
        leader that fails, or whose worker was killed, is replaced at once by one of them. A leader's
        claim lasts ``wait_seconds`` (the in-process flight as the disk lease and the Redis lock):
        after that the next caller leads instead, so a stuck leader (a wrapped app that hangs) holds
        up its key for that long at most. A caller that has waited ``wait_seconds`` itself while a
        leader still works gets :class:`LeaderBusy` (503 SlowDown for the client) instead of piling
        onto the same stuck work."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            now = time.monotonic()
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None or flight.expires <= now
                if leader:
                    flight = self._flights[key] = _Flight(now + self.wait_seconds)
            if leader:
                try:
                    return self._lead(key, compute, deadline)
                finally:
                    with self._lock:
                        if self._flights.get(key) is flight:
                            del self._flights[key]
                    flight.done.set()
            flight.done.wait(max(0.0, min(deadline, flight.expires) - time.monotonic()))
            entry = self.cache.get(key)
            if entry is not None:
                return entry, False
            with self._lock:
                current = self._flights.get(key)
                claim_over = current is None or current.expires <= time.monotonic()
            # A caller woken because the leader's claim ran out (or the leader failed) leads even if
            # its own wait ran out in the same moment, as a thread woken late on a busy machine
            # does: otherwise every waiter of a stuck key could get 503 and nobody take it over.
            if time.monotonic() >= deadline and not claim_over:
                raise LeaderBusy(key)
            # the leader finished without a result (it failed) or its claim ran out: lead

    # --- workers of this machine: the disk lease ---------------------------------------------------------

    def _lead(self, key: str, compute: Callable[[], Entry], deadline: float) -> tuple[Entry, bool]:
        # Looks before leading are at this machine's tiers: _lead_nodes looks at the shared tier
        # itself once it holds the lock, which is the look that counts across nodes.
        disk = self.cache.disk
        if disk is None:
            entry = self.cache.get(key, local=True)   # a leader that finished just before we led
            if entry is not None:
                return entry, False
            return self._lead_nodes(key, compute, deadline)
        while True:
            # diskcache.add is atomic across processes: the first worker to add the lease leads. The
            # lease expires by itself, so a worker killed while leading blocks nobody for long.
            won = disk.lease_add(key, os.getpid(), self.wait_seconds)
            if won is FAILED:
                return self._compute(key, compute)            # no shared storage: work unshared
            if won:
                try:
                    entry = self.cache.get(key, local=True)   # another worker finished meanwhile
                    if entry is not None:
                        return entry, False
                    return self._lead_nodes(key, compute, deadline)
                finally:
                    disk.lease_delete(key)
            entry = self.cache.get(key, local=True)
            if entry is not None:
                return entry, False
            if time.monotonic() >= deadline:
                raise LeaderBusy(key)          # another live worker holds the lease and works on
            holder = disk.lease_holder(key)
            if isinstance(holder, int) and not _alive(holder):
                disk.lease_delete(key)         # its worker was killed: take over now
                continue
            time.sleep(0.005)                  # the leader is working, or just failed: ask again

    # --- nodes sharing Redis: the lock ------------------------------------------------------------------

    def _lead_nodes(self, key: str, compute: Callable[[], Entry], deadline: float) -> tuple[Entry, bool]:
        """This machine's leader for ``key``: lead across nodes too, or wait for the node that does."""
        shared = self.cache.shared
        if shared is None:
            return self._compute(key, compute)
        token = secrets.token_hex(16)
        lock_ms = max(1, int(self.wait_seconds * 1000))
        while True:
            won = shared.lock(key, token, lock_ms)
            if won is None:
                return self._compute(key, compute)            # Redis cannot say: work unshared
            if won:
                outcome = "failed"
                try:
                    entry = self.cache.get(key)   # a node that finished between our look and the lock
                    if entry is not None:
                        outcome = "stored"
                        return entry, False
                    entry = compute()
                    outcome = "stored" if self.cache.put(key, entry) else "local"
                    self.cache.count("computed")
                    return entry, True
                finally:
                    shared.unlock(key, token, outcome)
            outcome = shared.wait(key, deadline)
            if outcome is None or outcome == "local":
                # Redis failed while we waited, or the leader's result is too big for the shared
                # tier: each machine makes its own (still once per machine).
                return self._compute(key, compute)
            if outcome == "busy":
                raise LeaderBusy(key)
            if outcome == "stored":
                entry = self.cache.get(key)
                if entry is not None:
                    return entry, False
            # "failed", "lapsed" (its node died or it ran past the lock), or stored and gone: lead

    def _compute(self, key: str, compute: Callable[[], Entry]) -> tuple[Entry, bool]:
        entry = compute()
        self.cache.put(key, entry)
        self.cache.count("computed")
        return entry, True


def _alive(pid: int) -> bool:
    """Whether a process of this machine still runs (leases are per machine, like the disk tier)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
