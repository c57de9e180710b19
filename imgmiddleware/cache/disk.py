"""The disk tier: results, the memo and single-flight leases in diskcache, shared by every worker on
the machine (it survives worker restarts and is what a node's workers have in common).

Entries are one diskcache value each: a small JSON header followed by the body, written by a single
SQLite transaction after the file is complete, so a worker killed mid-write leaves at most an orphan
file that nothing points to, never an entry that is served. A full disk or any other storage error
degrades to "not cached" and is logged, never raised to the request.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct

from .entry import Entry, Memo

log = logging.getLogger("imgmiddleware.cache")

_HEADER = struct.Struct(">I")
FAILED = object()  # what a disk operation returns when storage failed (distinct from False/None)


class DiskTier:
    def __init__(self, directory: str, max_bytes: int) -> None:
        import diskcache

        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        # cull_limit=0: no culling inside set(); put() culls itself, to count what it evicts.
        self.cache = diskcache.Cache(directory, size_limit=max_bytes,
                                     eviction_policy="least-recently-used", cull_limit=0)
        self.evictions = 0      # results (and stale memos, lapsed leases) culled by this process

    # --- entries ---------------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        handle = self._safe(lambda: self.cache.get("r:" + key, read=True))
        if handle is None or handle is FAILED:
            return None
        try:
            (size,) = _HEADER.unpack(handle.read(_HEADER.size))
            return Entry.from_meta(json.loads(handle.read(size)), file=handle)
        except (ValueError, KeyError, struct.error, OSError):
            handle.close()
            return None

    def put(self, key: str, entry: Entry) -> bool:
        meta = json.dumps(entry.meta()).encode("utf-8")
        blob = io.BytesIO(_HEADER.pack(len(meta)) + meta + entry.body)
        if self._safe(lambda: self.cache.set("r:" + key, blob, read=True)) is FAILED:
            return False
        # Least recently used entries until the volume (results + database) is within the bound.
        culled = self._safe(self.cache.cull)
        self.evictions += culled if isinstance(culled, int) else 0
        return True

    def discard(self, key: str) -> None:
        self._safe(lambda: self.cache.delete("r:" + key))

    # --- the validator memo ----------------------------------------------------------------------------

    def memo_get(self, identity: str) -> Memo | None:
        found = self._safe(lambda: self.cache.get("memo:" + identity))
        if isinstance(found, str):          # written by a release that kept only the validator
            return Memo(found)
        if isinstance(found, tuple) and len(found) == 2:
            return Memo(*found)
        return None

    def memo_set(self, identity: str, memo: Memo) -> None:
        self._safe(lambda: self.cache.set("memo:" + identity, tuple(memo)))

    # --- leases of the machine-wide single-flight (flight.py) --------------------------------------------

    def lease_add(self, key: str, pid: int, expire: float):
        """True when this process now holds the lease; False when another does; FAILED."""
        return self._safe(lambda: self.cache.add("lease:" + key, pid, expire=expire))

    def lease_holder(self, key: str):
        return self._safe(lambda: self.cache.get("lease:" + key))

    def lease_delete(self, key: str) -> None:
        self._safe(lambda: self.cache.delete("lease:" + key))

    # --- operations ------------------------------------------------------------------------------------

    def stats(self) -> tuple[int, int, int]:
        """(entries, bytes of stored results, bytes of the SQLite index)."""
        entries = sum(1 for k in self.cache.iterkeys() if str(k).startswith("r:"))
        # diskcache's running total of the bytes it keeps in files. Results are the only values
        # stored as files (put() passes read=True, which always writes one); the memo's ETags and
        # the leases' pids live inside their SQLite rows and count 0 there. volume() adds the
        # database itself, 32 KB even when empty, which is the index, not results.
        stored = int(self.cache.reset("size"))
        return entries, stored, int(self.cache.volume()) - stored

    def usage(self) -> int:
        """Bytes of stored results, from diskcache's running total: one query, for the sampler."""
        return int(self.cache.reset("size"))

    def clear(self) -> None:
        self.cache.clear()

    def close(self) -> None:
        self.cache.close()

    @staticmethod
    def _safe(operation):
        """Run a disk operation; a storage failure (disk full, I/O error) is logged, not raised."""
        try:
            return operation()
        except Exception as exc:   # sqlite3 errors, OSError (ENOSPC), timeouts
            log.warning("result cache disk tier unavailable: %s", exc)
            return FAILED
