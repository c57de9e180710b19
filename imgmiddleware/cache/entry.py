"""What a cached result is, what it is stored under, and what is remembered about an object.

Kept apart from the tiers because every tier (memory, disk, Redis) stores the same Entry under the
same key, and nodes can only share results when they compute identical keys.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import PIL

CACHE_SCHEMA = 1   # bump when the stored layout or the meaning of a key changes


def engine_version() -> str:
    """Everything besides the request that changes output bytes: our code and the codecs'."""
    from .. import __version__
    return f"imgmiddleware {__version__}; cv2 {cv2.__version__}; Pillow {PIL.__version__}; {CACHE_SCHEMA}"


def result_key(identity: str, validator: str, canonical: str, settings: str) -> str:
    """The key of one result in every tier: the object, its version, the canonical process string,
    the output settings and the engine. Nodes share a result only when all of these agree."""
    raw = "\n".join((identity, validator, canonical, settings, engine_version()))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


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

    @classmethod
    def from_meta(cls, meta: dict, **where) -> "Entry":
        return cls(meta["content_type"], [tuple(h) for h in meta["headers"]],
                   [tuple(v) for v in meta["validators"]], length=meta["length"], **where)


class Memo(NamedTuple):
    """What the validator memo knows of one object: the version seen last (its ETag, or the derived
    validator) and when an anonymous request last had it confirmed by the wrapped app (epoch seconds,
    shared across nodes; 0.0 when no anonymous confirmation counts, see validator_trust_seconds)."""
    validator: str
    confirmed: float = 0.0
