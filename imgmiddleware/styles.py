"""Named styles (spec §1.3): ``x-oss-process=style/<name>`` and ``key!name`` run a stored process string.

Three sources, looked up in this order for a bucket:
1. styles managed through the OSS API (PutStyle / DeleteStyle) on the bundled bucket, stored as one JSON
   file per bucket under the data root;
2. the operator's file (conf/styles.toml): a ``[bucket.<name>]`` table per bucket and an ``[all]`` table
   for every bucket (and for wrapped apps that have no buckets). It is reloaded when it changes;
3. styles given in code (``Config(styles={...})``), for every bucket.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import OssError

STYLE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}\Z")
MAX_STYLES_PER_BUCKET = 50   # OSS: 50 per bucket (raisable)


@dataclass(frozen=True)
class Style:
    name: str
    content: str
    created: float
    modified: float


def check_name(name: str) -> None:
    if not STYLE_NAME.match(name or ""):
        raise OssError("InvalidArgument", f"The value: {name} of parameter: stylename is invalid.",
                       "0017-00000250")


class StyleStore:
    def __init__(self, conf_path: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, inline: dict | None = None) -> None:
        self.inline = dict(inline or {})
        self.conf_path = Path(conf_path) if conf_path else None
        self.data_dir = Path(data_dir) if data_dir else None
        self._lock = threading.Lock()
        self._conf: dict = {}
        self._conf_stamp: tuple | None = None

    # --- reading ----------------------------------------------------------------------------------

    def get(self, bucket: str, name: str) -> str | None:
        record = self.get_record(bucket, name)
        return record.content if record else None

    def get_record(self, bucket: str, name: str) -> Style | None:
        managed = self._managed(bucket).get(name)
        if managed is not None:
            return Style(**managed)
        conf = self._conf_styles(bucket)
        if name in conf:
            stamp = self._conf_stamp[0] if self._conf_stamp else 0.0
            return Style(name, conf[name], stamp, stamp)
        return None

    def list(self, bucket: str) -> list[Style]:
        names = set(self._managed(bucket)) | set(self._conf_styles(bucket))
        return [self.get_record(bucket, n) for n in sorted(names)]

    def get_own(self, bucket: str, name: str) -> Style | None:
        """A style of the bucket itself (the API's, or the operator's ``[bucket.<name>]`` table),
        as OSS's GetStyle knows it: operator-wide styles are not the bucket's."""
        managed = self._managed(bucket).get(name)
        if managed is not None:
            return Style(**managed)
        self._reload_conf()
        content = self._conf.get("bucket", {}).get(bucket, {}).get(name)
        if content is None:
            return None
        stamp = self._conf_stamp[0] if self._conf_stamp else 0.0
        return Style(name, content, stamp, stamp)

    def list_own(self, bucket: str) -> list[Style]:
        """ListStyle: the bucket's own styles only (see get_own)."""
        self._reload_conf()
        names = set(self._managed(bucket)) | set(self._conf.get("bucket", {}).get(bucket, {}))
        return [self.get_own(bucket, n) for n in sorted(names)]

    def mapping(self, bucket: str) -> "BucketStyles":
        return BucketStyles(self, bucket)

    def _conf_styles(self, bucket: str) -> dict[str, str]:
        self._reload_conf()
        styles = dict(self.inline)
        styles.update(self._conf.get("all", {}))
        styles.update(self._conf.get("bucket", {}).get(bucket, {}))
        return styles

    def _reload_conf(self) -> None:
        if self.conf_path is None:
            return
        try:
            st = self.conf_path.stat()
        except FileNotFoundError:
            self._conf, self._conf_stamp = {}, None
            return
        stamp = (st.st_mtime, st.st_size, st.st_ino)
        if stamp == self._conf_stamp:
            return
        with self._lock:
            with open(self.conf_path, "rb") as fh:
                self._conf = tomllib.load(fh)
            self._conf_stamp = stamp

    def _managed_path(self, bucket: str) -> Path | None:
        return self.data_dir / f"{bucket}.json" if self.data_dir else None

    def _managed(self, bucket: str) -> dict[str, dict]:
        path = self._managed_path(bucket)
        if path is None:
            return {}
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}

    # --- the API ----------------------------------------------------------------------------------

    def put(self, bucket: str, name: str, content: str) -> None:
        check_name(name)
        if not content:     # OSS stores any other content as it is; it fails only when used
            raise OssError("InvalidArgument", "Style content is invalid.")
        path = self._managed_path(bucket)
        if path is None:
            raise OssError("NotImplemented", "Styles cannot be stored: no data directory.")
        with self._lock:
            styles = self._managed(bucket)
            if name not in styles and len(styles) >= MAX_STYLES_PER_BUCKET:
                raise OssError("InvalidArgument", f"A bucket holds at most {MAX_STYLES_PER_BUCKET} styles.")
            now = time.time()
            created = styles.get(name, {}).get("created", now)
            styles[name] = asdict(Style(name, content, created, now))
            _write_json(path, styles)

    def delete(self, bucket: str, name: str) -> None:
        path = self._managed_path(bucket)
        if path is None:
            return
        with self._lock:
            styles = self._managed(bucket)
            if styles.pop(name, None) is not None:
                _write_json(path, styles)


class BucketStyles:
    """The styles of one bucket as a read-only mapping, for the process-string parser."""

    def __init__(self, store: StyleStore, bucket: str) -> None:
        self.store, self.bucket = store, bucket

    def get(self, name: str, default=None):
        found = self.store.get(self.bucket, name)
        return default if found is None else found

    def __contains__(self, name: str) -> bool:
        return self.store.get(self.bucket, name) is not None


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    temp.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    os.replace(temp, path)
