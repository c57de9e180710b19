"""Prometheus metrics: what is counted, and how gunicorn's workers add up to one instance.

- gunicorn runs several worker processes and a scrape reaches only one of them (or the master, with
  ``metrics_bind``), so under ``imgmiddleware serve`` every value lives in prometheus_client's
  multiprocess files (PROMETHEUS_MULTIPROC_DIR, which master.py prepares): counters and histograms
  add up over every process the instance ever ran, so they survive a worker's restart (master.py
  folds a dead worker's files into one archive); gauges count live workers only ("livesum",
  "livemax", "liveall"). Without that directory (another WSGI server, one process) the values live in
  a registry of this process.
- The hot paths call little: the server layer records each finished request (and a transform's
  times and sizes by output format) and the proxy each upstream call; what the throttle and the cache
  tiers already count is read once a second by the worker's sampler (sampler.py) and published here.
- prometheus_client is imported only when metrics are enabled: ``metrics = false`` costs a no-op call.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from contextlib import contextmanager

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = "fold.lock"        # shared while a scrape reads the files, exclusive while master.py folds

# Buckets: request and transform times from a cached hit (~1 ms) to the worker timeout; sizes from a
# thumbnail to the 20 MB source limit.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BYTES = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

# Label values known in advance: zeros are written at start so that rates and dashboards see every
# series from the first scrape (a series that appears later looks like a jump, not a rate).
SLOWDOWN_REASONS = ("slots", "large_slots", "memory", "cache_wait")
METHODS = frozenset(("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"))


class Recorder:
    """The recorder while metrics are off: every call does nothing."""

    enabled = False

    def request(self, method: str, status: int, ec: str, cache: str, kind: str, seconds: float) -> None:
        pass

    def transform(self, facts: dict) -> None:
        pass

    def origin(self, method: str, outcome: str, seconds: float) -> None:
        pass

    def counter(self, name: str, labels: tuple, total: float) -> None:
        pass

    def gauge(self, name: str, labels: tuple, value: float) -> None:
        pass


# The recorder of this process; hooks read it at each call, so enabling takes effect at once.
recorder: Recorder = Recorder()


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to and scrapes from, if there is one."""
    path = os.environ.get(ENV_DIR)
    return path if path and os.path.isdir(path) else None


def enable() -> Recorder:
    """Metrics on for this process (idempotent): in the multiprocess directory when there is one,
    else in a registry of this process."""
    global recorder
    if not recorder.enabled:
        recorder = Prometheus()
    return recorder


class Prometheus(Recorder):
    """The metrics themselves. Sampled counters arrive as totals (what the tiers count since the
    worker started) and are added as the increase since the last sample."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode values go to the files only; a registry would be this worker's alone.
        self.registry = None if self.multiprocess else CollectorRegistry()
        reg = {"registry": self.registry}
        self.requests = Counter("imgmw_requests", "Requests answered, by method, status, OSS EC, cache "
                                "outcome (x-imgmw-cache) and kind", ["method", "status", "ec", "cache", "kind"],
                                **reg)
        self.duration = Histogram("imgmw_request_duration_seconds", "Time from a request's arrival to its "
                                  "last byte written, by kind", ["kind"], buckets=SECONDS, **reg)
        self.transform_seconds = Histogram("imgmw_transform_seconds", "Time of a transform once admitted "
                                           "(decode, actions, encode), by output format", ["format"],
                                           buckets=SECONDS, **reg)
        self.decode_seconds = Histogram("imgmw_decode_seconds", "Time decoding the source, by output "
                                        "format", ["format"], buckets=SECONDS, **reg)
        self.encode_seconds = Histogram("imgmw_encode_seconds", "Time encoding the result, by output "
                                        "format", ["format"], buckets=SECONDS, **reg)
        self.wait_seconds = Histogram("imgmw_transform_wait_seconds", "Time a transform waited for a "
                                      "slot", buckets=SECONDS, **reg)
        self.source_bytes = Histogram("imgmw_source_bytes", "Size of the sources transformed",
                                      buckets=BYTES, **reg)
        self.output_bytes = Histogram("imgmw_output_bytes", "Size of the results made, by output format",
                                      ["format"], buckets=BYTES, **reg)
        self.origin_seconds = Histogram("imgmw_origin_request_seconds", "Time the proxy origin took to "
                                        "answer (its headers), by method and outcome: 2xx..5xx, timeout, "
                                        "unreachable", ["method", "outcome"], buckets=SECONDS, **reg)
        counters = {
            "slowdown": ("imgmw_slowdown", "503 SlowDown answers, by reason: slots, large_slots, memory "
                         "(worker_transform_bytes), cache_wait (another request's work)", ["reason"]),
            "cache_hits": ("imgmw_cache_hits", "Result cache lookups found, by tier", ["tier"]),
            "cache_misses": ("imgmw_cache_misses", "Result cache lookups not found, by tier", ["tier"]),
            "cache_evictions": ("imgmw_cache_evictions", "Results evicted to stay within a tier's bound",
                                ["tier"]),
            "cache_stored": ("imgmw_cache_stored", "Results stored, by tier", ["tier"]),
            "cache_events": ("imgmw_cache_events", "Everything else a cache tier counts (errors, "
                             "too_big, corrupt, skipped, memo and single-flight events), by tier and event",
                             ["tier", "event"]),
        }
        gauges = {
            "slots": ("imgmw_transform_slots", "Transform slots of the live workers", [], "livesum"),
            "slots_busy": ("imgmw_transform_slots_busy", "Transforms running", [], "livesum"),
            "slots_queued": ("imgmw_transform_slots_queued", "Transforms waiting for a slot", [], "livesum"),
            "memory_bytes": ("imgmw_cache_memory_bytes", "Bytes of results in the workers' memory tiers",
                             [], "livesum"),
            "disk_bytes": ("imgmw_cache_disk_bytes", "Bytes of results in this machine's disk tier",
                           [], "livemax"),
            "breaker_open": ("imgmw_cache_breaker_open", "1 while some worker's circuit breaker keeps "
                             "the shared tier off", [], "livemax"),
            "rss": ("imgmw_worker_resident_bytes", "Resident memory of each worker (RSS)", [], "liveall"),
            "workers": ("imgmw_workers", "Live workers", [], "livesum"),
        }
        self._counters = {key: Counter(name, doc, labels, **reg) for key, (name, doc, labels) in counters.items()}
        self._gauges = {key: Gauge(name, doc, labels, multiprocess_mode=mode, **reg)
                        for key, (name, doc, labels, mode) in gauges.items()}
        self._children: dict = {}
        self._last: dict = {}
        self._lock = threading.Lock()
        for reason in SLOWDOWN_REASONS:
            self._counters["slowdown"].labels(reason).inc(0)

    def _child(self, metric, labels: tuple):
        """``metric.labels(*labels)``, kept: prometheus_client's lookup takes a lock and a dict each time."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    def request(self, method, status, ec, cache, kind, seconds) -> None:
        method = method if method in METHODS else "other"
        self._child(self.requests, (method, str(status), ec or "none", cache or "none", kind)).inc()
        self._child(self.duration, (kind,)).observe(seconds)

    def transform(self, facts: dict) -> None:
        fmt = facts.get("format") or "unknown"
        self._child(self.transform_seconds, (fmt,)).observe(facts.get("transform", 0.0))
        if fmt != "json":                   # info and average-hue: a header, or no encode
            self._child(self.decode_seconds, (fmt,)).observe(facts.get("decode", 0.0))
            self._child(self.encode_seconds, (fmt,)).observe(facts.get("encode", 0.0))
        self.wait_seconds.observe(facts.get("wait", 0.0))
        self.source_bytes.observe(facts.get("source_bytes", 0))
        self._child(self.output_bytes, (fmt,)).observe(facts.get("output_bytes", 0))

    def origin(self, method, outcome, seconds) -> None:
        self._child(self.origin_seconds, (method if method in METHODS else "other", outcome)).observe(seconds)

    def counter(self, name, labels, total) -> None:
        """A total the sampler read (since this worker started): the increase since the last one."""
        key = (name, labels)
        with self._lock:
            increase = total - self._last.get(key, 0)
            self._last[key] = total
        if increase > 0:
            self._child(self._counters[name], labels).inc(increase)
        elif key not in self._children:
            self._child(self._counters[name], labels).inc(0)       # the series exists from the start

    def gauge(self, name, labels, value) -> None:
        self._child(self._gauges[name], labels).set(value)


@contextmanager
def _folding_lock(path: str, exclusive: bool):
    """flock on the directory's lock file: a scrape never reads a dead worker's files and the archive
    they were just folded into (that would count them twice)."""
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def render() -> tuple[bytes, str]:
    """(the exposition text, its Content-Type): every process's values in the multiprocess directory,
    else this process's registry (empty while metrics are off)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        for attempt in range(3):
            try:
                with _folding_lock(path, exclusive=False):
                    return generate_latest(registry), CONTENT_TYPE_LATEST
            except (struct.error, ValueError, OSError):
                # A worker that has just started may be creating its file (empty for an instant).
                if attempt == 2:
                    raise
                time.sleep(0.01)
    registry = getattr(recorder, "registry", None) or CollectorRegistry()
    return generate_latest(registry), CONTENT_TYPE_LATEST
