"""ConnectionShare (imgmiddleware/server/accept.py): when a worker places each new connection with
care (keep-alive traffic) and when it accepts as asyncio does (a request a connection)."""

from __future__ import annotations

from imgmiddleware.server.accept import ACCEPT_WINDOW, ConnectionShare


class Worker:
    """The requests a worker has served (gunicorn's ``nr``) and its ConnectionShare."""

    def __init__(self, threads: int = 4):
        self.served = 0
        self.share = ConnectionShare(threads, lambda: self.served)

    def connection(self, requests: int) -> None:
        self.share.opened()
        self.served += requests
        self.share.closed()


def test_connections_are_placed_until_the_traffic_is_known():
    worker = Worker()
    assert worker.share.kept_alive()            # a pool opening its connections at start
    for _ in range(ACCEPT_WINDOW - 1):
        worker.connection(1)
    assert worker.share.kept_alive()


def test_a_request_a_connection_is_accepted_as_asyncio_does():
    worker = Worker()
    for _ in range(ACCEPT_WINDOW * 2):
        worker.connection(1)
    assert not worker.share.kept_alive()
    worker.connection(1)
    assert not worker.share.kept_alive()


def test_a_pool_beside_health_probes_is_keep_alive():
    worker = Worker()
    for _ in range(ACCEPT_WINDOW * 2):          # no keep-alive so far
        worker.connection(1)
    for _ in range(ACCEPT_WINDOW):              # a probe a second beside a pool's 50 requests
        worker.connection(1)
        worker.served += 50
    assert worker.share.kept_alive()


def test_a_worker_is_over_its_share_past_its_threads_counting_connections_still_arriving():
    worker = Worker(threads=2)
    worker.share.opened()
    worker.share.opened()
    assert not worker.share.over()
    worker.share.arriving += 1                 # accepted, its protocol not made yet
    assert worker.share.over()
    worker.share.arriving -= 1
    worker.share.closed()
    assert not worker.share.over()
