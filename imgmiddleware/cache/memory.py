"""The memory tier: an LRU of results bounded by bytes, and the validator memo, per worker process.

The fastest tier and the only one that needs no I/O, so it is looked at first; it lives and dies with
its worker, which is why the tiers below it exist.
"""

from __future__ import annotations

import threading

from cachetools import LRUCache

from .entry import Entry, Memo

ENTRY_OVERHEAD = 256      # what an entry's headers and bookkeeping cost besides its body, roughly
MEMO_ENTRIES = 100_000    # objects whose last validator is remembered


class _Bounded(LRUCache):
    """The LRU, counting what it evicts to stay within its bytes (cachetools' documented hook)."""

    evictions = 0

    def popitem(self):
        item = super().popitem()
        self.evictions += 1
        return item


class MemoryTier:
    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self._entries: LRUCache | None = (
            _Bounded(maxsize=max_bytes, getsizeof=lambda e: e.length + ENTRY_OVERHEAD)
            if max_bytes else None)
        self._memo: LRUCache = LRUCache(maxsize=MEMO_ENTRIES)   # object identity -> Memo

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    def get(self, key: str) -> Entry | None:
        if self._entries is None:
            return None
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        """Only entries held in memory (body, not file) that fit the bound at all."""
        if self._entries is not None and entry.body is not None \
                and entry.length + ENTRY_OVERHEAD <= self.max_bytes:
            with self._lock:
                self._entries[key] = entry

    def discard(self, key: str) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries.pop(key, None)

    @property
    def evictions(self) -> int:
        return self._entries.evictions if self._entries is not None else 0

    def memo_get(self, identity: str) -> Memo | None:
        with self._lock:
            return self._memo.get(identity)

    def memo_set(self, identity: str, memo: Memo) -> None:
        with self._lock:
            self._memo[identity] = memo

    def stats(self) -> tuple[int, int]:
        """(entries, bytes)."""
        if self._entries is None:
            return 0, 0
        with self._lock:
            return len(self._entries), int(self._entries.currsize)

    def clear(self) -> None:
        with self._lock:
            if self._entries is not None:
                self._entries.clear()
            self._memo.clear()
