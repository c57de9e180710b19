"""Where the objects of ``root/<bucket>/`` live on disk, and their metadata.

Metadata (ETag, CRC-64, Content-Type, x-oss-meta-*, Normal or Multipart) is stored on the data file
itself, in the extended attribute ``user.imgmw.meta``, written to the temporary file before the
rename: a reader takes the metadata of the very file it opened, so a concurrent PUT shows it the old
object or the new one, never a mix. Where the file system has no user extended attributes, it lives
beside the data under ``root/.imgmw/meta/`` (no bucket can be named ``.imgmw``), or, where that name
cannot be a file (``x`` and ``x.json/y`` want a file and a directory of one name there; a name too
long), under ``root/.imgmw/keyed/`` by the key's SHA-256. Either way it is keyed to the data file's
identity (inode, mtime, size), so a stale one is never taken. Files dropped into a bucket directory
by hand are served too; their ETag and CRC are computed on first read and remembered in that sidecar
(the file itself is left untouched).

OSS's namespace is flat, a directory tree is not: ``a`` and ``a/b`` can both be objects, a key may have
a segment longer than NAME_MAX (OSS limits only the whole key, 1023 bytes), or an empty segment
(``a//b``). An object whose own path cannot hold it is stored under
``root/.imgmw/spill/<bucket>/<sha256 of the key>/``: the data in ``object``, the key in ``key``.
Reads look at the key's own path first, then at its spill entry; listings merge both. A delete removes
the directories it leaves empty (up to the bucket's, never above).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import mimetypes
import os
import re
import tempfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from werkzeug.security import safe_join

from ...errors import OssError
from .addressing import BUCKET_NAME, is_dir
from .crc64 import Crc64
from .wire import CHUNK, no_such_bucket

META_DIR = ".imgmw"
PUT_TEMP = re.compile(r"\.put-[A-Za-z0-9_]{8}\Z")   # a PUT in flight (tempfile.mkstemp's names)
MAX_KEY_BYTES = 1023                 # OSS: 1 to 1023 bytes of UTF-8; no limit on a segment
SPILL = "spill"                      # root/.imgmw/spill/<bucket>/<sha256 of key>/{key,object}
KEYED_META = "keyed"                 # root/.imgmw/keyed/<bucket>/<sha256 of key>.json
XATTR = "user.imgmw.meta"
# What stops a key from living at its own path: a file where a directory is needed (ENOTDIR,
# EEXIST), a directory where the file is needed (EISDIR, ENOTEMPTY), a path over PATH_MAX.
BLOCKED = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY, errno.ENAMETOOLONG})
ABSENT = BLOCKED | {errno.ENOENT}
RETRIES = 5                          # a PUT racing a DELETE that removes the directory it just made

log = logging.getLogger("imgmiddleware.bucket")


@dataclass(frozen=True)
class Stored:
    """Where one key of a bucket lives: its own path in the bucket's tree (``natural``; None when the
    name can never be a path there), else its spill entry under ``spill_root``."""
    bucket: str
    key: str
    natural: Path | None
    spill_root: Path

    @cached_property
    def entry(self) -> Path:
        """The key's spill entry; made when first asked, as a read of a key found at its own path
        never needs it (the key's digest and the joins are a tenth of a GET's time otherwise)."""
        return self.spill_root / self.bucket / digest(self.key)

    @property
    def spilled(self) -> Path:
        return self.entry / "object"


class ObjectStore:
    """The objects of every bucket under ``root``: locate, open, describe, write, delete, enumerate."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._spill_root = self.root / META_DIR / SPILL
        self._meta_root = self.root / META_DIR / "meta"
        self._keyed_root = self.root / META_DIR / KEYED_META
        self._name_max: dict[str, int] = {}

    # --- names ----------------------------------------------------------------------------------------

    def bucket_dir(self, bucket: str) -> Path:
        path = self.root / bucket
        if not BUCKET_NAME.match(bucket) or not is_dir(path):
            raise no_such_bucket(bucket)
        return path

    def locate(self, bucket_dir: Path, key: str) -> Stored:
        """Where ``key`` lives, or InvalidObjectName: NUL, a trailing or leading '/', a '.' or '..'
        segment (never outside the bucket, and never two names for one file), over 1023 bytes."""
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise OssError("InvalidObjectName", "The Length of Object name must be less than 1024.",
                           "0016-00000003", status=400)
        segments = key.split("/")
        if "\0" in key or key.startswith("/") or key.endswith("/") or \
                any(s in (".", "..") for s in segments) or safe_join(str(bucket_dir), key) is None:
            raise OssError("InvalidObjectName", "The specified object is not valid.", status=400)
        name_max = self._name_max_of(bucket_dir)
        if "" in segments or PUT_TEMP.match(segments[-1]) or \
                any(len(os.fsencode(s)) > name_max for s in segments):
            return Stored(bucket_dir.name, key, None, self._spill_root)
        return Stored(bucket_dir.name, key, bucket_dir.joinpath(*segments), self._spill_root)

    def _name_max_of(self, directory: Path) -> int:
        """The longest file name (bytes) the file system of ``directory`` takes (255 nearly everywhere)."""
        found = self._name_max.get(str(directory))
        if found is None:
            try:
                found = os.pathconf(directory, "PC_NAME_MAX")
            except (OSError, ValueError, AttributeError):
                found = 255
            self._name_max[str(directory)] = found = max(14, min(found, 4096))
        return found

    def _meta_paths(self, stored: Stored):
        """Where a sidecar of the key's metadata may be, in the order they are tried: beside the data
        under .imgmw/meta/ when the key is a path and the name fits, then by the key's digest (made
        only when the first is passed over)."""
        if stored.natural is not None:
            name_max = self._name_max_of(self.root / stored.bucket)
            if len(os.fsencode(stored.natural.name + ".json")) <= name_max:
                yield self._meta_root / stored.bucket / (stored.key + ".json")
        yield self._keyed_root / stored.bucket / (digest(stored.key) + ".json")

    # --- reading --------------------------------------------------------------------------------------

    @staticmethod
    def open(stored: Stored):
        """The key's data opened for reading (its own path first, then its spill entry), or None."""
        return (stored.natural is not None and _open_if_there(stored.natural)) or \
            _open_if_there(stored.spilled)     # the spill entry only made when the first is absent

    def meta_for(self, stored: Stored, handle) -> dict:
        """The metadata of the file behind ``handle``: from the attribute or a sidecar when it
        describes this very file, else computed from the open file (and remembered). A record from
        before CRCs were kept gets its CRC the same way, and keeps its ETag (a multipart ETag is no
        MD5 of the content)."""
        st = os.fstat(handle.fileno())
        identity = [st.st_ino, st.st_mtime_ns, st.st_size]
        found = None
        meta = _read_xattr(handle.fileno())
        if meta is not None and meta.get("identity") == identity:
            found = meta
        if found is None or "crc64" not in found:
            for meta_path in self._meta_paths(stored):
                try:
                    meta = json.loads(meta_path.read_text("utf-8"))
                except (OSError, ValueError):
                    continue
                if meta.get("identity") == identity and (found is None or "crc64" in meta):
                    found = meta
                    break
        if found is not None and "crc64" in found:
            return found
        md5, crc = hashlib.md5(), Crc64()
        while chunk := handle.read(CHUNK):
            md5.update(chunk)
            crc.update(chunk)
        handle.seek(0)
        meta = {"identity": identity, "etag": md5.hexdigest().upper(),
                "content_type": mimetypes.guess_type(stored.key)[0] or "application/octet-stream",
                "mtime": st.st_mtime, "user_meta": {}}
        meta.update(found or {})
        meta["crc64"] = crc.value
        try:   # files by hand stay untouched; remembering is optional (a full or read-only disk)
            self._write_meta(stored, json.dumps(meta).encode("utf-8"))
        except OSError:
            pass
        return meta

    def info(self, bucket_dir: Path, key: str):
        """(size, mtime, ETag, type) of one listed object, or None when it went away meanwhile (or
        cannot be an object: a file by hand with a name no request can address)."""
        try:
            stored = self.locate(bucket_dir, key)
        except OssError:
            return None
        handle = self.open(stored)
        if handle is None:
            return None
        with handle:
            meta = self.meta_for(stored, handle)
            return (os.fstat(handle.fileno()).st_size, meta["mtime"], meta["etag"],
                    meta.get("object_type", "Normal"))

    # --- writing --------------------------------------------------------------------------------------

    def _write_meta(self, stored: Stored, data: bytes) -> None:
        """The sidecar, beside the data when it can be, else by the key's digest."""
        paths = list(self._meta_paths(stored))
        for meta_path in paths:
            try:
                write_atomically(meta_path, data)
                return
            except OSError as err:
                if err.errno not in BLOCKED or meta_path == paths[-1]:
                    raise

    def _target(self, stored: Stored) -> Path:
        """The file an upload is renamed to, its directory made: the key's own path when the tree
        allows it (an empty directory of that name, left by hand or by an older version, is removed),
        else its spill entry."""
        if stored.natural is not None:
            try:
                stored.natural.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rmdir(stored.natural)       # only ever an empty directory
                except OSError as err:
                    if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise
                return stored.natural
            except OSError as err:
                if err.errno not in BLOCKED:
                    raise
        stored.entry.mkdir(parents=True, exist_ok=True)
        self._write_key(stored)
        return stored.spilled

    @staticmethod
    def _write_key(stored: Stored) -> None:
        """The spill entry's ``key`` file, which listings read (the entry's name is a digest)."""
        if not (stored.entry / "key").is_file():
            write_atomically(stored.entry / "key", stored.key.encode("utf-8", "surrogatepass"))

    def new_upload(self, stored: Stored) -> tuple[Path, int, str]:
        """(target, fd, temp): a temporary file beside where the object will be renamed to."""
        for attempt in range(RETRIES):
            try:
                target = self._target(stored)
                fd, temp = tempfile.mkstemp(prefix=".put-", dir=target.parent)
                return target, fd, temp
            except FileNotFoundError:           # a DELETE pruned a directory just made: again
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def commit(self, temp: str, target: Path, stored: Stored, meta: dict) -> None:
        """Put a finished upload in place with its metadata (``meta`` without ``identity`` and
        ``mtime``, which are this file's): atomic, readers see the old object or the new one."""
        try:
            os.chmod(temp, 0o644)
            # The identity of *this* file (a rename keeps inode, mtime and size): stat(path) after the
            # rename could be another writer's file, and would get this body's ETag.
            st = os.stat(temp)
            meta = dict(meta, identity=[st.st_ino, st.st_mtime_ns, st.st_size], mtime=st.st_mtime)
            data = json.dumps(meta).encode("utf-8")
            on_file = _write_xattr(temp, data)      # travels with the file through the rename
            target = self._rename(temp, target, stored)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        if target != stored.spilled:
            self._remove_spill(stored)       # an older copy from when its own path was taken
        else:
            self._write_key(stored)          # again, in case a DELETE removed it meanwhile
        if not on_file:
            self._write_meta(stored, data)

    def _rename(self, temp: str, target: Path, stored: Stored) -> Path:
        """Rename the upload into place; when another PUT made a directory of that name meanwhile
        (``a/b`` while this was ``a``), into the spill entry instead. Where it went."""
        try:
            os.replace(temp, target)
            return target
        except OSError as err:
            if target == stored.spilled or err.errno not in BLOCKED:
                raise
        spilled = self._target(replace(stored, natural=None))
        os.replace(temp, spilled)
        return spilled

    def delete(self, stored: Stored) -> None:
        bucket_dir = self.root / stored.bucket
        if stored.natural is not None and unlink(stored.natural):
            prune(stored.natural.parent, bucket_dir)
        self._remove_spill(stored)
        for meta_path in self._meta_paths(stored):
            if unlink(meta_path):
                prune(meta_path.parent, self.root / META_DIR / "meta" / stored.bucket)

    @staticmethod
    def _remove_spill(stored: Stored) -> None:
        if unlink(stored.spilled):
            unlink(stored.entry / "key")
            prune(stored.entry, stored.entry.parent)

    # --- enumerating ----------------------------------------------------------------------------------

    def keys(self, bucket_dir: Path, prefix: str = "") -> list[str]:
        """Every key of the bucket under ``prefix`` (its tree and its spill entries), in UTF-8 byte
        order, as OSS lists them."""
        found = set(self._keys_under(bucket_dir, prefix)) | set(self._spilled_keys(bucket_dir.name))
        return sorted((k for k in found if k.startswith(prefix)), key=lambda k: k.encode("utf-8"))

    def has_objects(self, bucket_dir: Path) -> bool:
        return any(True for _ in self._keys_under(bucket_dir, "")) or \
            any(True for _ in self._spilled_keys(bucket_dir.name))

    @staticmethod
    def _keys_under(bucket_dir: Path, prefix: str):
        """Every key whose file lies under the deepest directory ``prefix`` names (PUTs in flight
        left out)."""
        start = bucket_dir
        folder = prefix.rpartition("/")[0]
        if folder:
            joined = safe_join(str(bucket_dir), folder)
            if joined is None or not os.path.isdir(joined):
                return
            start = Path(joined)
        base = len(str(bucket_dir)) + 1
        for dirpath, dirnames, filenames in os.walk(start):
            for name in filenames:
                if not PUT_TEMP.match(name):
                    key = os.path.join(dirpath, name)[base:].replace(os.sep, "/")
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:   # a name by hand that is not UTF-8: never a key
                        continue
                    yield key

    def _spilled_keys(self, bucket: str):
        """The keys stored in the bucket's spill entries."""
        try:
            entries = list(os.scandir(self.root / META_DIR / SPILL / bucket))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            try:
                if not os.path.isfile(os.path.join(entry.path, "object")):
                    continue
                with open(os.path.join(entry.path, "key"), "rb") as handle:
                    key = handle.read(4 * MAX_KEY_BYTES).decode("utf-8", "surrogatepass")
            except (OSError, UnicodeDecodeError):
                continue                          # removed meanwhile, or not ours
            if digest(key) == entry.name:
                yield key



def _open_if_there(path: Path):
    """``path`` opened for reading, or None when nothing is there to read (ABSENT)."""
    try:
        return open(path, "rb")
    except OSError as err:
        if err.errno not in ABSENT:
            raise
        return None


def _read_xattr(fd: int) -> dict | None:
    try:
        return json.loads(os.getxattr(fd, XATTR))
    except (OSError, ValueError, AttributeError):   # none, not supported, not Linux
        return None


def _write_xattr(target, data: bytes) -> bool:
    try:
        os.setxattr(target, XATTR, data)
        return True
    except (OSError, AttributeError):
        return False


def write_atomically(path: Path, data: bytes) -> None:
    for attempt in range(RETRIES):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            break
        except FileNotFoundError:       # a DELETE pruned the directory just made
            if attempt == RETRIES - 1:
                raise
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def unlink(path: Path) -> bool:
    """Remove a file; False when there was none (or a directory is there)."""
    try:
        os.unlink(path)
        return True
    except OSError as err:
        if err.errno in ABSENT or err.errno == errno.EPERM and path.is_dir():
            return False
        raise


def prune(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents while they are empty, up to ``stop`` (kept). A PUT that
    made one of them meanwhile retries (ObjectStore.new_upload)."""
    while directory != stop and stop in directory.parents:
        try:
            os.rmdir(directory)
        except OSError:                 # not empty (another object, a PUT in flight), or gone
            return
        directory = directory.parent
