"""Sharing one listening socket's connections among gunicorn's workers.

Every worker waits on the socket gunicorn's master opened. asyncio accepts up to 100 waiting
connections each time that socket is ready, and at idle the kernel wakes the same worker first (the
first to wait on it), so every connection of a burst (a client's pool, nginx's upstream keepalive, a
load generator) landed in one worker and stayed there: its threads did all the work while the other
worker idled, half the node's rate for as long as those connections lived.

FairAcceptLoop takes one connection per wakeup, and a worker holding more connections than it has
threads (counting those accepted whose protocol is not made yet) leaves the socket to the others for
a millisecond, so the connections of a burst alternate between the workers. That care is spent only
where it buys something: while this worker's connections carry several requests each (keep-alive:
the requests served since the 256th-last accept, per accept). Without keep-alive a connection
carries one request, an imbalance lasts no longer, and a pause after every accept capped such
traffic at about one accept a millisecond a worker (half the rate of cached hits); there the loop
accepts as asyncio does. tests/test_gunicorn.py fails when a burst of keep-alive connections is not
shared; the A/B figures are in the commit that brought this module.

The loop also listens with gunicorn's ``backlog`` (asyncio's create_server re-listened the shared
socket with 100, so a burst past 100 waiting connections lost SYNs to one-second retransmits).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

# How long a worker over its share leaves the socket to the others (asyncio's timers have a
# millisecond's resolution): a connection arriving meanwhile goes to a worker with room.
ACCEPT_PAUSE_SECONDS = 0.001
# Requests served per connection accepted, over the last ACCEPT_WINDOW accepts, from which where
# each connection goes is worth placing: 1 without keep-alive, far more with it (a health probe a
# second barely moves it beside a client's pool).
KEEPALIVE_REQUESTS = 1.5
ACCEPT_WINDOW = 256
STOCK_ACCEPT_BATCH = 100     # what asyncio accepts a wakeup (it passes the listen backlog, 100)


class ConnectionShare:
    """The connections one worker holds, and how many requests its connections have been carrying
    lately (``requests()``: the requests this worker has served so far)."""

    def __init__(self, share: int, requests: Callable[[], int]):
        self.share = share                     # connections the worker can serve at once: its threads
        self.requests = requests
        self.held = 0                          # connections whose protocol is made, until lost
        self.arriving = 0                      # accepted, their transport not yet made
        self.served_at_accept: deque[int] = deque(maxlen=ACCEPT_WINDOW)

    def opened(self) -> None:
        self.held += 1
        self.served_at_accept.append(self.requests())

    def closed(self) -> None:
        self.held -= 1

    def kept_alive(self) -> bool:
        """Whether connections here carry several requests each: then where each one goes is worth
        placing. Assumed until ACCEPT_WINDOW have come, as when a pool opens its connections at start."""
        window = self.served_at_accept
        if len(window) < ACCEPT_WINDOW:
            return True
        return (self.requests() - window[0]) / ACCEPT_WINDOW >= KEEPALIVE_REQUESTS

    def over(self) -> bool:
        """Whether this worker holds more connections than it can serve at once."""
        return self.held + self.arriving > self.share


class FairAcceptLoop(asyncio.SelectorEventLoop):
    """The stdlib event loop, listening with gunicorn's backlog. While ``share.kept_alive()`` it takes
    one connection each time the listening socket is ready and, once ``share.over()``, leaves the
    socket to the other workers for ``pause`` seconds; otherwise it accepts as asyncio does (up to
    STOCK_ACCEPT_BATCH a wakeup: cheaper per connection when many wait)."""

    def __init__(self, listen_backlog: int, share: ConnectionShare, pause: float):
        super().__init__()
        self.listen_backlog = listen_backlog
        self.share = share
        self.pause = pause

    async def create_server(self, *args, backlog=None, **kwargs):
        return await super().create_server(*args, backlog=self.listen_backlog, **kwargs)

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                           *args, **kwargs):
        placing = self.pause and self.share.kept_alive()
        super()._accept_connection(protocol_factory, sock, sslcontext, server,
                                   1 if placing else min(backlog, STOCK_ACCEPT_BATCH), *args, **kwargs)
        if placing and sock.fileno() != -1 and self.share.over():
            self._remove_reader(sock.fileno())
            self.call_later(self.pause, self._accept_again, protocol_factory, sock, sslcontext,
                            server, backlog, *args)

    def _accept_again(self, protocol_factory, sock, *args) -> None:
        if sock.fileno() != -1 and not self.is_closed():     # not closed by a shutdown meanwhile
            self._add_reader(sock.fileno(), self._accept_connection, protocol_factory, sock, *args)

    def _accept_connection2(self, *args, **kwargs):
        # Called as each connection is accepted; the protocol is made a few loop turns later, and
        # until then the connection must count, or a burst outruns over().
        self.share.arriving += 1
        return self._arrived(super()._accept_connection2(*args, **kwargs))

    async def _arrived(self, making):
        try:
            return await making
        finally:
            self.share.arriving -= 1
