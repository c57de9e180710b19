"""The result cache: an in-process LRU bounded by bytes, over a disk tier shared by every worker on
the machine, with single-flight so that concurrent requests for one result do the work once.

It knows nothing of WSGI. An entry is a processed body plus what is needed to answer with it and to
prove it is still valid: its content type, the response headers taken from the source, and the
validators (path, ETag) of every object it was made from (the source and any watermark images).

Disk entries are one diskcache value each: a small JSON header followed by the body, written by a
single SQLite transaction after the file is complete, so a worker killed mid-write leaves at most an
orphan file that nothing points to, never an entry that is served. A full disk or any other storage
error degrades to "not cached" and is logged, never raised to the request.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import PIL
from cachetools import LRUCache

log = logging.getLogger("imgmiddleware.cache")

CACHE_SCHEMA = 1   # bump when the stored layout or the meaning of a key changes
_HEADER = struct.Struct(">I")
FAILED = object()  # what a disk operation returns when storage failed (distinct from False/None)


def engine_version() -> str:
    """Everything besides the request that changes output bytes: our code and the codecs'."""
    from . import __version__
    return f"imgmiddleware {__version__}; cv2 {cv2.__version__}; Pillow {PIL.__version__}; {CACHE_SCHEMA}"


@dataclass
class Entry:
    content_type: str
    headers: list[tuple[str, str]]              # source headers the answer carries (ETag, ...)
    validators: list[tuple[str, str, str]]      # (path, query, validator) of each object it was made from
    body: bytes | None = None                   # in memory
    file: io.BufferedReader | None = None       # or an open disk file positioned at the body
    length: int = 0

    def meta(self) -> dict:
        return {"content_type": self.content_type, "headers": self.headers,
                "validators": self.validators, "length": self.length}


@dataclass
class CacheStats:
    memory_entries: int = 0
    memory_bytes: int = 0
    disk_entries: int = 0
    disk_bytes: int = 0             # bytes of the stored results: 0 when the tier is empty
    disk_index_bytes: int = 0       # the SQLite database beside them, which an empty tier has too
    counters: dict = field(default_factory=dict)


def result_key(identity: str, validator: str, canonical: str, settings: str) -> str:
    raw = "\n".join((identity, validator, canonical, settings, engine_version()))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class ResultCache:
    """Memory LRU (bytes) + optional disk tier (bytes) + single-flight + the validator memo."""

    def __init__(self, memory_bytes: int, disk_dir: str = "", disk_bytes: int = 0,
                 wait_seconds: float = 30.0) -> None:
        self._lock = threading.Lock()
        self._memory: LRUCache | None = (
            LRUCache(maxsize=memory_bytes, getsizeof=lambda e: e.length + 256) if memory_bytes else None)
        self._memo: LRUCache = LRUCache(maxsize=100_000)    # object identity -> last validator
        self._flights: dict[str, _Flight] = {}
        self.wait_seconds = wait_seconds
        self.counters = {"hit": 0, "miss": 0, "revalidated": 0, "stored": 0, "store_errors": 0}
        self._disk = None
        if disk_dir and disk_bytes:
            import diskcache
            os.makedirs(disk_dir, exist_ok=True)
            self._disk = diskcache.Cache(disk_dir, size_limit=disk_bytes,
                                         eviction_policy="least-recently-used")

    # --- the validator memo: which ETag did this object have last time? -----------------------------

    def remembered(self, identity: str) -> str | None:
        with self._lock:
            found = self._memo.get(identity)
        if found is None and self._disk is not None:
            found = self._safe(lambda: self._disk.get("memo:" + identity))
            if found is FAILED:
                return None
            if found is not None:
                with self._lock:
                    self._memo[identity] = found
        return found

    def remember(self, identity: str, validator: str) -> None:
        with self._lock:
            self._memo[identity] = validator
        if self._disk is not None:
            self._safe(lambda: self._disk.set("memo:" + identity, validator))

    # --- entries ---------------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        if self._memory is not None:
            with self._lock:
                entry = self._memory.get(key)
            if entry is not None:
                return entry
        if self._disk is None:
            return None
        handle = self._safe(lambda: self._disk.get("r:" + key, read=True))
        if handle is None or handle is FAILED:
            return None
        try:
            (size,) = _HEADER.unpack(handle.read(_HEADER.size))
            meta = json.loads(handle.read(size))
            entry = Entry(meta["content_type"], [tuple(h) for h in meta["headers"]],
                          [tuple(v) for v in meta["validators"]], file=handle, length=meta["length"])
        except (ValueError, KeyError, struct.error, OSError):
            handle.close()
            return None
        self._promote(key, entry)
        return entry

    def _promote(self, key: str, entry: Entry) -> None:
        """Small disk hits are copied into memory so the next one costs no file open."""
        if self._memory is None or entry.length > self._memory.maxsize // 16:
            return
        position = entry.file.tell()
        body = entry.file.read(entry.length)
        entry.file.seek(position)
        if len(body) == entry.length:
            self._put_memory(key, Entry(entry.content_type, entry.headers, entry.validators,
                                        body=body, length=entry.length))

    def put(self, key: str, entry: Entry) -> None:
        if not entry.validators:
            return   # nothing to revalidate it by (an object without ETag or dates): never reused
        self._put_memory(key, entry)
        if self._disk is not None:
            meta = json.dumps(entry.meta()).encode("utf-8")
            blob = io.BytesIO(_HEADER.pack(len(meta)) + meta + entry.body)
            if self._safe(lambda: self._disk.set("r:" + key, blob, read=True)) is FAILED:
                self.counters["store_errors"] += 1
                return
        self.counters["stored"] += 1

    def _put_memory(self, key: str, entry: Entry) -> None:
        if self._memory is not None and entry.length + 256 <= self._memory.maxsize:
            with self._lock:
                self._memory[key] = entry

    def discard(self, key: str) -> None:
        with self._lock:
            if self._memory is not None:
                self._memory.pop(key, None)
        if self._disk is not None:
            self._safe(lambda: self._disk.delete("r:" + key))

    def _safe(self, operation):
        """Run a disk operation; a storage failure (disk full, I/O error) is logged, not raised."""
        try:
            return operation()
        except Exception as exc:   # sqlite3 errors, OSError (ENOSPC), timeouts
            log.warning("result cache disk tier unavailable: %s", exc)
            return FAILED

    # --- single-flight ------------------------------------------------------------------------------

    def single_flight(self, key: str, compute: Callable[[], Entry]) -> tuple[Entry, bool]:
        """(entry, computed_here). One caller per key computes, in this process and across processes
        sharing the disk tier; the others wait for its result. A leader that fails, or whose worker
        was killed, is replaced at once by one of them. A leader's claim lasts ``wait_seconds``
        (the in-process flight as the disk lease): after that the next caller leads instead, so a
        stuck leader (a wrapped app that hangs) holds up its key for that long at most. A caller that
        has waited ``wait_seconds`` itself while a leader still works gets :class:`LeaderBusy`
        (503 SlowDown for the client) instead of piling onto the same stuck work."""
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
            entry = self.get(key)
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

    def _lead(self, key: str, compute: Callable[[], Entry], deadline: float) -> tuple[Entry, bool]:
        if self._disk is None:
            entry = self.get(key)                  # a leader that finished just before we led
            if entry is not None:
                return entry, False
            return self._store(key, compute()), True
        lease = "lease:" + key
        while True:
            # diskcache.add is atomic across processes: the first worker to add the lease leads. The
            # lease expires by itself, so a worker killed while leading blocks nobody for long.
            won = self._safe(lambda: self._disk.add(lease, os.getpid(), expire=self.wait_seconds))
            if won is FAILED:
                return self._store(key, compute()), True       # no shared storage: work unshared
            if won:
                try:
                    entry = self.get(key)          # another worker may have finished meanwhile
                    if entry is not None:
                        return entry, False
                    return self._store(key, compute()), True
                finally:
                    self._safe(lambda: self._disk.delete(lease))
            entry = self.get(key)
            if entry is not None:
                return entry, False
            if time.monotonic() >= deadline:
                raise LeaderBusy(key)          # another live worker holds the lease and works on
            holder = self._safe(lambda: self._disk.get(lease))
            if isinstance(holder, int) and not _alive(holder):
                self._safe(lambda: self._disk.delete(lease))   # its worker was killed: take over now
                continue
            time.sleep(0.005)                  # the leader is working, or just failed: ask again

    def _store(self, key: str, entry: Entry) -> Entry:
        self.put(key, entry)
        return entry

    # --- operations -----------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        stats = CacheStats(counters=dict(self.counters))
        if self._memory is not None:
            with self._lock:
                stats.memory_entries = len(self._memory)
                stats.memory_bytes = int(self._memory.currsize)
        if self._disk is not None:
            stats.disk_entries = sum(1 for k in self._disk.iterkeys() if str(k).startswith("r:"))
            # diskcache's running total of the bytes it keeps in files. Results are the only values
            # stored as files (put() passes read=True, which always writes one); the memo's ETags and
            # the leases' pids live inside their SQLite rows and count 0 there. volume() adds the
            # database itself, 32 KB even when empty, which is the index, not results.
            stats.disk_bytes = int(self._disk.reset("size"))
            stats.disk_index_bytes = int(self._disk.volume()) - stats.disk_bytes
        return stats

    def clear(self) -> None:
        with self._lock:
            if self._memory is not None:
                self._memory.clear()
            self._memo.clear()
        if self._disk is not None:
            self._disk.clear()

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()


class LeaderBusy(Exception):
    """Another request has been computing this result for longer than the wait allows."""


class _Flight:
    """An in-process leader's claim on a key: set when it is done; others may lead after expires."""
    __slots__ = ("done", "expires")

    def __init__(self, expires: float) -> None:
        self.done = threading.Event()
        self.expires = expires


def _alive(pid: int) -> bool:
    """Whether a process of this machine still runs (leases are per machine, like the disk tier)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
