"""The shared tier: results, the validator memo and the cross-node single-flight lock in Redis (or
Valkey, which speaks the same protocol), for every node behind a load balancer.

Why: each node's memory and disk tiers are its own, so N nodes would compute every variant up to N
times and each would learn an object's version by itself. Here one node's result is every node's hit.

How it stays harmless:
- Every call goes through :meth:`SharedTier._call`: short socket and connect timeouts, redis-py's
  retry bounded to one reconnect (a pooled connection that a Redis restart closed), any error counted
  and logged, never raised, and a circuit breaker (breaker.py) that stops calling a failing Redis for
  a cool-down and probes it again by itself. A request that loses the tier is served by the local
  tiers or computed; it never fails for it.
- An entry is one value written by one SET (header, body and a CRC-32 of both, with its TTL), so a
  reader sees all of it or nothing; a value that does not check out (length, magic, checksum) is a miss.
- Results over ``max_entry_bytes`` stay local: large values stall a single-threaded server for
  everyone and are the first to be evicted anyway.

Keys (``prefix`` is ``cache_redis_prefix``; ``K`` is the 64-hex result key of entry.result_key):
  prefix{K}:r      the entry                 prefix{K}:lock   the single-flight lock (token, PX)
  prefix{K}:done   the pub/sub channel the lock's holder announces its outcome on
  prefix m:<sha256 of the object identity>   the memo: "<confirmed epoch seconds> <validator>"
The braces are a Redis Cluster hash tag: an entry, its lock and its channel live in one slot, so the
script that reads the entry's existence and the lock's time left together runs on a cluster.

Waiting for another node's leader is pub/sub, not BLPOP: one PUBLISH wakes every waiter on every node
(a popped list element wakes one), the wait is a select() on the subscribed socket bounded by our own
deadline (a BLPOP longer than the socket timeout would need a second pool with long timeouts, which
would then also wait out a stalled server), and a waiter subscribes before it looks at the entry and
the lock, so a result stored between the two is never missed. A message lost with a dropped
connection is covered too: the waiter also wakes when the lock's time runs out, and at least once a
second to notice a server that stopped answering.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import struct
import threading
import time
import zlib
from urllib.parse import unquote

from .breaker import CircuitBreaker
from .entry import Entry, Memo

log = logging.getLogger("imgmiddleware.cache")

SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
UNAVAILABLE = object()      # what a call returns when Redis failed or the breaker is open
MAX_SLICE = 1.0             # longest a waiter goes without looking at the lock itself (seconds)

# An entry's value: magic, format, header length, body length, CRC-32 of header and body; then the
# JSON header (Entry.meta()) and the body.
_BLOB = struct.Struct(">4sBIQI")
MAGIC, FORMAT = b"IMGW", 1

# Compare-and-delete: a leader whose lock ran out never deletes the next leader's. Then announce the
# outcome ("stored", "local" or "failed") to the waiters of every node.
RELEASE = """
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return released
"""
# Whether the entry exists, and the lock's milliseconds left (-2: no lock), in one round trip.
PEEK = """
return {redis.call('EXISTS', KEYS[1]), redis.call('PTTL', KEYS[2])}
"""

COUNTERS = ("hits", "misses", "stored", "too_big", "store_errors", "corrupt", "errors", "skipped",
            "memo_hits", "memo_stored", "led", "followed", "woken", "lapsed", "wait_timeouts")


def pack(entry: Entry) -> bytes:
    header = json.dumps(entry.meta(), separators=(",", ":")).encode("utf-8")
    body = entry.body
    checksum = zlib.crc32(body, zlib.crc32(header))
    return b"".join((_BLOB.pack(MAGIC, FORMAT, len(header), len(body), checksum), header, body))


def unpack(blob: bytes) -> Entry | None:
    """The entry of a stored value, or None when it is not a whole, intact one."""
    if len(blob) < _BLOB.size:
        return None
    magic, version, header_length, body_length, checksum = _BLOB.unpack_from(blob)
    if magic != MAGIC or version != FORMAT or len(blob) != _BLOB.size + header_length + body_length:
        return None
    view = memoryview(blob)
    header = view[_BLOB.size:_BLOB.size + header_length]
    body = view[_BLOB.size + header_length:]
    if zlib.crc32(body, zlib.crc32(header)) != checksum:
        return None
    try:
        entry = Entry.from_meta(json.loads(bytes(header)), body=bytes(body))
    except (ValueError, KeyError, TypeError):
        return None
    return entry if entry.length == body_length else None


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str, str, bool]:
    """``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS) ->
    (startup nodes, username, password, tls). Any one node is enough; more survive one being down."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):                     # [::1]:7000
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"a cluster node without a host in the Redis URL ({describe(url)})")
        nodes.append((host, int(port or 6379)))
    if not nodes:
        raise ValueError("a cluster Redis URL names no node: redis+cluster://host:port[,host:port...]")
    return nodes, unquote(username), unquote(password), scheme == "rediss+cluster"


def describe(url: str) -> str:
    """The URL without its user and password: what logs and `cache stats` may show."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path.split('?', 1)[0]}"


class SharedTier:
    """Results and the memo in Redis, and the lock and wake-up of the cross-node single-flight."""

    def __init__(self, url: str, *, password: str = "", prefix: str = "imgmw:",
                 ttl_seconds: int = 86_400, max_entry_bytes: int = 2 << 20, timeout: float = 0.25,
                 connect_timeout: float = 0.25, breaker_failures: int = 5,
                 breaker_seconds: float = 5.0) -> None:
        if importlib.util.find_spec("redis") is None:     # one clear error at start, not per request
            raise RuntimeError("cache_redis_url is set but redis-py is not installed: "
                               "pip install 'imgmiddleware[redis]'")
        if not url.startswith(SCHEMES + CLUSTER_SCHEMES):
            raise ValueError(f"cache_redis_url must start with one of {', '.join(SCHEMES + CLUSTER_SCHEMES)}")
        self._url = url
        self._password = password
        self.cluster = url.startswith(CLUSTER_SCHEMES)
        if self.cluster:
            parse_cluster_url(url)            # a malformed URL is an error at start, not per request
        self.endpoint = describe(url)
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.max_entry_bytes = max_entry_bytes
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.breaker = CircuitBreaker(breaker_failures, breaker_seconds)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._counter_lock = threading.Lock()
        self._client = None
        self._client_lock = threading.Lock()
        self._failing = False

    @classmethod
    def from_config(cls, config) -> "SharedTier":
        return cls(config.cache_redis_url, password=config.cache_redis_password,
                   prefix=config.cache_redis_prefix, ttl_seconds=config.cache_redis_ttl_seconds,
                   max_entry_bytes=config.cache_redis_max_entry_bytes,
                   timeout=config.cache_redis_timeout, connect_timeout=config.cache_redis_connect_timeout,
                   breaker_failures=config.cache_redis_breaker_failures,
                   breaker_seconds=config.cache_redis_breaker_seconds)

    # --- the client ------------------------------------------------------------------------------------

    def _connect(self):
        """The client, made on first use: a cluster client asks the cluster for its slots when it is
        made, which must count as a call (it can fail) rather than break the worker's start."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    client = self._make_client()
                    self._release = client.register_script(RELEASE)
                    self._peek = client.register_script(PEEK)
                    self._client = client
        return self._client

    def _make_client(self):
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        # One reconnect, at once, and only for a connection that failed (a pooled socket that a Redis
        # restart closed); never for a timeout, so a stalled server costs one timeout, not several.
        # redis-py's own default retries up to ten times with backoff.
        common = {"socket_timeout": self.timeout, "socket_connect_timeout": self.connect_timeout,
                  "client_name": "imgmiddleware"}
        if self.cluster:
            from redis.cluster import ClusterNode, RedisCluster

            nodes, username, password, tls = parse_cluster_url(self._url)
            return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                                username=username or None, password=password or self._password or None,
                                ssl=tls, retry=Retry(NoBackoff(), 1), require_full_coverage=False,
                                **common)
        return redis.Redis.from_url(self._url, password=self._password or None,
                                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                                    **common)

    def _call(self, operation):
        """``operation(client)``, or UNAVAILABLE when the breaker is open or the call failed. Nothing
        is raised: the shared tier is an optimisation, never a reason for a request to fail."""
        if not self.breaker.allow():
            self._count("skipped")
            return UNAVAILABLE
        try:
            result = operation(self._connect())
        except Exception as exc:     # redis errors (timeouts, refused, OOM, READONLY...), cluster errors
            self._count("errors")
            opened = self.breaker.failure()
            if opened or not self._failing:
                self._failing = True
                what = (f"off for {self.breaker.cooldown:g} s after {self.breaker.consecutive} failures"
                        if opened else "failing")
                log.warning("shared cache tier %s %s: %s", self.endpoint, what, self._scrub(exc))
            return UNAVAILABLE
        self.breaker.success()
        if self._failing:
            self._failing = False
            log.warning("shared cache tier %s answers again", self.endpoint)
        return result

    def _scrub(self, exc: Exception) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in (self._password, parse_cluster_url(self._url)[2] if self.cluster else ""):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _count(self, name: str, by: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] += by

    @property
    def available(self) -> bool:
        """Whether calls go to Redis at all right now (false while the breaker is open)."""
        return self.breaker.state != "open"

    # --- keys --------------------------------------------------------------------------------------------

    def _entry_key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}:r"

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}:lock"

    def _channel(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}:done"

    def _memo_key(self, identity: str) -> str:
        return f"{self.prefix}m:{hashlib.sha256(identity.encode('utf-8')).hexdigest()}"

    # --- entries -----------------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        found = self._call(lambda client: client.get(self._entry_key(key)))
        if found is UNAVAILABLE:
            return None
        if found is None:
            self._count("misses")
            return None
        entry = unpack(found)
        if entry is None:
            self._count("corrupt")
            log.warning("shared cache tier %s: a damaged entry was ignored (%d bytes)", self.endpoint,
                        len(found))
            return None
        self._count("hits")
        return entry

    def put(self, key: str, entry: Entry) -> bool:
        """Whether the entry is now in Redis (False: too big, or Redis failed; it stays local)."""
        if _BLOB.size + entry.length > self.max_entry_bytes:      # before building the blob
            self._count("too_big")
            return False
        blob = pack(entry)
        if len(blob) > self.max_entry_bytes:
            self._count("too_big")
            return False
        done = self._call(lambda client: client.set(self._entry_key(key), blob, ex=self.ttl_seconds))
        if done is UNAVAILABLE or not done:
            self._count("store_errors")
            return False
        self._count("stored")
        return True

    def discard(self, key: str) -> None:
        self._call(lambda client: client.delete(self._entry_key(key)))

    # --- the validator memo ------------------------------------------------------------------------------

    def memo_get(self, identity: str) -> Memo | None:
        raw = self._call(lambda client: client.get(self._memo_key(identity)))
        if raw is UNAVAILABLE or raw is None:
            return None
        try:
            confirmed, _, validator = raw.decode("utf-8").partition(" ")
            memo = Memo(validator, float(confirmed))
        except (UnicodeDecodeError, ValueError):
            return None
        self._count("memo_hits")
        return memo if validator else None

    def memo_set(self, identity: str, memo: Memo) -> None:
        value = f"{memo.confirmed:.3f} {memo.validator}"
        if self._call(lambda client: client.set(self._memo_key(identity), value,
                                                ex=self.ttl_seconds)) is not UNAVAILABLE:
            self._count("memo_stored")

    # --- the cross-node single-flight (flight.py drives it) ----------------------------------------------

    def lock(self, key: str, token: str, ttl_ms: int) -> bool | None:
        """SET NX PX: True when this caller now leads, False when another does, None when Redis
        cannot say (the caller computes alone). The lock lapses by itself after ``ttl_ms``, so a
        leader that died holds nobody up for longer."""
        got = self._call(lambda client: client.set(self._lock_key(key), token, nx=True, px=ttl_ms))
        if got is UNAVAILABLE:
            return None
        self._count("led" if got else "followed")
        return bool(got)

    def unlock(self, key: str, token: str, outcome: str) -> bool:
        """Delete the lock if it is still ours and announce ``outcome``; True when it was ours."""
        released = self._call(lambda client: self._release(
            keys=[self._lock_key(key)], args=[token, self._channel(key), outcome], client=client))
        return released is not UNAVAILABLE and bool(released)

    def wait(self, key: str, deadline: float) -> str | None:
        """Until the leader of ``key`` (on any node) is done, its lock lapses, or ``deadline``
        (time.monotonic()). "stored": the entry is in Redis; "local": the leader kept it to itself
        (too big for the tier), so compute here; "failed" / "lapsed": lead now; "busy": the deadline
        passed while the leader still works; None: Redis failed (compute here)."""
        entry_key, lock_key, channel = self._entry_key(key), self._lock_key(key), self._channel(key)

        def operation(client):
            if self.cluster:      # the node of the key's slot (PUBLISH reaches every node of a cluster)
                client = client.get_redis_connection(client.get_node_from_key(lock_key))
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(channel)
                self._await_subscription(pubsub)
                while True:
                    exists, pttl = self._peek(keys=[entry_key, lock_key], client=self._client)
                    if exists:
                        return "stored"
                    if pttl == -2:
                        return "lapsed"
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return "busy"
                    left = pttl / 1000 + 0.002 if pttl > 0 else MAX_SLICE
                    message = pubsub.get_message(timeout=min(remaining, left, MAX_SLICE))
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        return data.decode() if isinstance(data, bytes) else str(data)
            finally:
                pubsub.close()

        outcome = self._call(operation)
        if outcome is UNAVAILABLE:
            return None
        self._count({"busy": "wait_timeouts", "lapsed": "lapsed"}.get(outcome, "woken"))
        return outcome

    def _await_subscription(self, pubsub) -> None:
        """Read until Redis confirms the subscription, so that what is looked at next is seen after
        it: a leader that finishes from now on will be heard."""
        deadline = time.monotonic() + max(self.timeout, 0.05)
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message.get("type") == "subscribe":
                return
        from redis.exceptions import TimeoutError as RedisTimeoutError
        raise RedisTimeoutError("no subscription confirmation")

    # --- operations ------------------------------------------------------------------------------------

    def stats(self) -> dict:
        with self._counter_lock:
            counters = dict(self.counters)
        return {"endpoint": self.endpoint, **counters, "breaker": self.breaker.stats()}

    def inventory(self) -> dict:
        """What the tier holds under our prefix, and the server's memory (for `cache stats`). Scans
        every key of the prefix: an operator's command, not a request's. Raises on errors."""
        client = self._connect()
        entries = entry_bytes = memos = 0
        batch: list = []

        def measure() -> int:
            pipe = client.pipeline(transaction=False) if not self.cluster else client.pipeline()
            for name in batch:
                pipe.strlen(name)
            total = sum(int(n or 0) for n in pipe.execute())
            batch.clear()
            return total

        entry_prefix, memo_prefix = (self.prefix + "{").encode(), (self.prefix + "m:").encode()
        for name in client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
            if name.startswith(entry_prefix) and name.endswith(b":r"):
                entries += 1
                batch.append(name)
                if len(batch) >= 500:
                    entry_bytes += measure()
            elif name.startswith(memo_prefix):
                memos += 1
        if batch:
            entry_bytes += measure()
        # a cluster answers per primary ({node: fields}); one server with its fields
        info = client.info("memory", target_nodes=client.PRIMARIES) if self.cluster else client.info("memory")
        nodes = [info] if "used_memory" in info else [v for v in info.values() if isinstance(v, dict)]
        return {"entries": entries, "entry_bytes": entry_bytes, "memos": memos,
                "used_memory": sum(int(n.get("used_memory", 0)) for n in nodes),
                "maxmemory": sum(int(n.get("maxmemory", 0)) for n in nodes),
                "policy": ",".join(sorted({str(n.get("maxmemory_policy", "?")) for n in nodes})),
                "nodes": len(nodes)}

    def clear(self) -> int:
        """Delete every key under the prefix (entries, memos, locks); how many. Raises on errors."""
        client = self._connect()
        deleted = 0
        batch: list = []
        for name in client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
            batch.append(name)
            if len(batch) >= 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
