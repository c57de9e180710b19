"""Which processes of a server wait for connections on its port, read from Linux's /proc.

gunicorn's workers start one after the other: until the last one waits on the shared socket, every
connection goes to the others, and a keep-alive load begun then stays where it landed (a run once
measured one worker at 1.9 cores and the other at none). Every bench that starts a multi-process
server waits here until each worker accepts, so a table compares servers, not start-up timing.
tests/test_gunicorn.py counts each worker's connections with the same reading.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LISTEN, ESTABLISHED = "0A", "01"            # /proc/net/tcp's state codes


def sockets(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 sockets on local ``port`` in ``state`` (LISTEN or ESTABLISHED)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def socket_fds(pid: int, inodes: set[str]) -> list[str]:
    """The file descriptors of process ``pid`` that are one of these sockets."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            found.append(fd)
    return found


def accepting(pid: int, port: int) -> bool:
    """Whether process ``pid`` waits for connections on ``port``: an epoll set of its holds the
    listening socket (a worker inherits the socket at fork, well before its event loop waits on it;
    a master holds it and never waits)."""
    try:
        listening = socket_fds(pid, sockets(port, LISTEN))
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            if any(f"tfd: {number:>8} " in info for number in listening):
                return True
    except OSError:                          # the process is gone
        return False
    return False


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (its children, theirs, ...), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, of in parents.items() if of == parent]
        found += children
        todo += children
    return found


def wait_until_accepting(root_pid: int, port: int, count: int, timeout: float = 60.0) -> list[int]:
    """The pids of ``count`` processes under ``root_pid`` waiting on ``port``, once there are that
    many; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        ready = [pid for pid in descendants(root_pid) if accepting(pid, port)]
        if len(ready) >= count:
            return ready
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ready)} of {count} workers accept on port {port} "
                               f"after {timeout:.0f} s")
        time.sleep(0.1)
