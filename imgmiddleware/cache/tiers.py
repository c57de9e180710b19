"""ResultCache: the tiers in order -- memory (per worker), disk (per machine), Redis (every node) --
with the single-flight and the validator memo over them.

A lookup goes down the tiers and a hit fills the tiers above it (a Redis hit lands on this machine's
disk and in this worker's memory), so each result crosses the network once per machine; a computed
result goes to every tier. It knows nothing of WSGI.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .disk import DiskTier
from .entry import Entry, Memo
from .flight import SingleFlight
from .memory import MemoryTier


@dataclass
class CacheStats:
    memory_entries: int = 0
    memory_bytes: int = 0
    disk_entries: int = 0
    disk_bytes: int = 0             # bytes of the stored results: 0 when the tier is empty
    disk_index_bytes: int = 0       # the SQLite database beside them, which an empty tier has too
    counters: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)   # the Redis tier's counters and breaker, if it is on


class ResultCache:
    """Memory LRU (bytes) + optional disk tier (bytes) + optional shared tier (Redis) + single-flight
    + the validator memo (how long a confirmed validator is trusted: ``trust_seconds``)."""

    def __init__(self, memory_bytes: int, disk_dir: str = "", disk_bytes: int = 0,
                 wait_seconds: float = 30.0, shared=None, trust_seconds: float = 0.0) -> None:
        self.memory = MemoryTier(memory_bytes)
        self.disk = DiskTier(disk_dir, disk_bytes) if disk_dir and disk_bytes else None
        self.shared = shared            # a shared.SharedTier, or None
        self.wait_seconds = wait_seconds
        self.trust_seconds = trust_seconds
        self.counters = {"memory_hits": 0, "memory_misses": 0, "disk_hits": 0, "disk_misses": 0,
                         "shared_hits": 0, "computed": 0, "stored": 0, "store_errors": 0}
        self._counter_lock = threading.Lock()
        self._flight = SingleFlight(self, wait_seconds)

    @classmethod
    def from_config(cls, config) -> "ResultCache":
        shared = None
        if config.cache_redis_url:
            from .shared import SharedTier
            shared = SharedTier.from_config(config)
        return cls(config.cache_memory_bytes, config.cache_dir, config.cache_disk_bytes,
                   config.cache_wait_seconds, shared, config.validator_trust_seconds)

    @property
    def _disk(self):
        """The diskcache.Cache of the disk tier (tools and tests reach into it), or None."""
        return self.disk.cache if self.disk is not None else None

    def count(self, name: str) -> None:
        with self._counter_lock:
            self.counters[name] += 1

    # --- the validator memo: which version did this object have last time, and when was it confirmed?

    def recall(self, identity: str) -> Memo | None:
        """The memo of an object: this worker's, else this machine's; the shared one unless the local
        one is still trusted, so every node revalidates against the newest version any node saw and
        one node's confirmation spares the others theirs."""
        memo = self.memory.memo_get(identity)
        if memo is None and self.disk is not None:
            memo = self.disk.memo_get(identity)
            if memo is not None:
                self.memory.memo_set(identity, memo)
        if self.shared is None or self.fresh(memo):
            return memo
        remote = self.shared.memo_get(identity)
        if remote is not None and remote != memo and (memo is None or remote.confirmed >= memo.confirmed):
            self.memory.memo_set(identity, remote)
            if self.disk is not None:
                self.disk.memo_set(identity, remote)
            return remote
        return memo

    def remembered(self, identity: str) -> str | None:
        memo = self.recall(identity)
        return memo.validator if memo is not None else None

    def remember(self, identity: str, validator: str, confirmed: bool = True) -> None:
        """The wrapped app just showed ``validator`` for the object. ``confirmed``: to an anonymous
        request, so the confirmation may be trusted for validator_trust_seconds by anyone; otherwise
        only the version is recorded (and nothing is written when it is the one already known)."""
        if confirmed:
            memo = Memo(validator, time.time())
        else:
            known = self.memory.memo_get(identity)
            if known is not None and known.validator == validator:
                return
            memo = Memo(validator)
        self.memory.memo_set(identity, memo)
        if self.disk is not None:
            self.disk.memo_set(identity, memo)
        if self.shared is not None:
            self.shared.memo_set(identity, memo)

    def fresh(self, memo: Memo | None) -> bool:
        """Whether a memo's confirmation is recent enough to skip asking the app (validator trust)."""
        return (memo is not None and self.trust_seconds > 0 and memo.confirmed > 0
                and 0 <= time.time() - memo.confirmed < self.trust_seconds)

    def trusted(self, memo: Memo | None, validator: str) -> bool:
        return self.fresh(memo) and memo.validator == validator

    # --- entries -------------------------------------------------------------------------------------

    def get(self, key: str, local: bool = False) -> Entry | None:
        """The entry from the first tier that has it; ``local``: this machine's tiers only."""
        entry = self.memory.get(key)
        if entry is not None:
            self.count("memory_hits")
            return entry
        if self.memory.enabled:
            self.count("memory_misses")
        if self.disk is not None:
            entry = self.disk.get(key)
            if entry is not None:
                self._promote(key, entry)
                self.count("disk_hits")
                return entry
            self.count("disk_misses")
        if self.shared is not None and not local:
            entry = self.shared.get(key)
            if entry is not None:
                self.memory.put(key, entry)        # a lower tier's hit fills the upper ones
                if self.disk is not None:
                    self.disk.put(key, entry)
                self.count("shared_hits")
                return entry
        return None

    def _promote(self, key: str, entry: Entry) -> None:
        """Small disk hits are copied into memory so the next one costs no file open."""
        if not self.memory.enabled or entry.length > self.memory.max_bytes // 16:
            return
        position = entry.file.tell()
        body = entry.file.read(entry.length)
        entry.file.seek(position)
        if len(body) == entry.length:
            self.memory.put(key, Entry(entry.content_type, entry.headers, entry.validators,
                                       body=body, length=entry.length))

    def put(self, key: str, entry: Entry) -> bool:
        """Into every tier; True when the shared tier has it (other nodes can use it)."""
        if not entry.validators:
            return False   # nothing to revalidate it by (an object without ETag or dates): never reused
        self.memory.put(key, entry)
        if self.disk is not None and not self.disk.put(key, entry):
            self.count("store_errors")
        else:
            self.count("stored")
        return self.shared is not None and self.shared.put(key, entry)

    def discard(self, key: str) -> None:
        """A result found stale (a watermark image changed): from every tier, so no node serves it."""
        self.memory.discard(key)
        if self.disk is not None:
            self.disk.discard(key)
        if self.shared is not None:
            self.shared.discard(key)

    def single_flight(self, key: str, compute: Callable[[], Entry]) -> tuple[Entry, bool]:
        """(entry, computed_here): see flight.SingleFlight.run."""
        return self._flight.run(key, compute)

    # --- operations -----------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._counter_lock:
            stats = CacheStats(counters=dict(self.counters))
        stats.memory_entries, stats.memory_bytes = self.memory.stats()
        if self.disk is not None:
            stats.disk_entries, stats.disk_bytes, stats.disk_index_bytes = self.disk.stats()
        if self.shared is not None:
            stats.shared = self.shared.stats()
        return stats

    def clear(self) -> int:
        """Empty every tier: this worker's memory, this machine's disk, and the shared tier (for every
        node); how many keys the shared tier held (0 without one)."""
        self.memory.clear()
        if self.disk is not None:
            self.disk.clear()
        return self.shared.clear() if self.shared is not None else 0

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
        if self.shared is not None:
            self.shared.close()
