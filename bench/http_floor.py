"""The OpenCV floor over HTTP: the thinnest Python serving of the floor's work, for bench/peers.py.

    gunicorn -k gthread -w 2 --threads 4 --chdir bench http_floor:application   (IMGMW_FLOOR_ROOT=DIR)

``GET /fit<N>/<path>`` reads DIR/<path> and answers what bench/inproc.py's floor makes of it at
fit N: the same output bytes as imgmiddleware's ``resize,m_lfit,w_N,h_N``. No probe, no plan, no
cache, no telemetry, no OSS errors: what a server costs when it does nothing but parse the request,
read the file, run OpenCV and write the answer. Between the in-process floor and this, the cost of
HTTP itself (and of the load generator on the same cores); between this and imgmiddleware, ours.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from inproc import floor_fn

ROOT = os.path.realpath(os.environ.get("IMGMW_FLOOR_ROOT", "."))
ROUTE = re.compile(r"^/fit(\d+)/(.+)$")
TYPES = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png", b"RI": "image/webp"}


@lru_cache(maxsize=None)
def transform(size: int):
    return floor_fn(size)


def application(environ, start_response):
    match = ROUTE.match(environ.get("PATH_INFO", ""))
    path = match and os.path.realpath(os.path.join(ROOT, match.group(2)))
    if not match or not path.startswith(ROOT + os.sep) or not os.path.isfile(path):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    with open(path, "rb") as fh:
        body = transform(int(match.group(1)))(fh.read())
    start_response("200 OK", [("Content-Type", TYPES.get(body[:2], "application/octet-stream")),
                              ("Content-Length", str(len(body)))])
    return [body]
