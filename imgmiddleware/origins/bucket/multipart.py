"""Multipart upload: InitiateMultipartUpload, UploadPart, CompleteMultipartUpload,
AbortMultipartUpload, ListParts and ListMultipartUploads, which ``oss2.resumable_upload`` and
ali-oss's ``multipartUpload`` use for a file over their part threshold.

State lives under ``root/.imgmw/multipart/<bucket>/<upload id>/`` (like the spill area, out of every
bucket's tree): ``upload.json`` (the key, when, the object's Content-Type and user metadata), each
part's data in its own file and a ``<part number>.json`` record naming it with its MD5, CRC-64 and
size. A record is renamed into place after its data is fsynced, so a part is whole or absent; a part
uploaded again replaces the record, then its old data goes. Complete claims the directory by
renaming it (a second Complete, an Abort or an UploadPart meanwhile finds no upload), checks the
list, copies the parts into a temporary file beside the object (copy_file_range: no bytes through
Python), renames it into place as a PutObject does, and removes the directory; Abort removes it.

OSS's rules: part numbers 1..10000; every part but the last at least 100 KB (checked at Complete,
when the last is known); the list in ascending order; each ETag as UploadPart returned it. The
object's ETag is the MD5 of the parts' binary MD5s, upper-case hex, then ``-`` and the part count;
its CRC-64 is the parts' CRCs combined (crc64.combine), as OSS reports it and the SDKs check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from ...errors import OssError
from .addressing import Located
from .crc64 import combine
from .objects import DEFAULT_CONTENT_TYPE, MAX_OBJECT_BYTES, user_meta
from .store import META_DIR, ObjectStore, Stored, write_atomically
from .wire import empty, iso, malformed, max_keys, read_xml, receive, text, xml_response

UPLOADS = "multipart"
UPLOAD_ID = re.compile(r"[0-9A-F]{32}\Z")
MIN_PART_BYTES = 100 * 1024          # OSS: every part but the last >= 100 KB
MAX_PART_NUMBER = 10_000


def no_such_upload(upload_id: str) -> OssError:
    return OssError("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                    "or the upload may have been aborted or completed.", status=404, UploadId=upload_id)


def _part_number(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PART_NUMBER:
        raise OssError("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive.",
                       "0017-00000220", ArgumentName="PartNumber", ArgumentValue=raw)
    return int(raw)


class Multipart:
    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.root, self.store = root, store

    def _dir(self, bucket: str, upload_id: str) -> Path:
        if not UPLOAD_ID.match(upload_id or ""):
            raise no_such_upload(upload_id)
        return self.root / META_DIR / UPLOADS / bucket / upload_id

    def _upload(self, where: Located, upload_id: str) -> tuple[Path, dict]:
        """The upload's directory and description; NoSuchUpload when it is gone or is another key's."""
        folder = self._dir(where.bucket, upload_id)
        try:
            upload = json.loads((folder / "upload.json").read_text("utf-8"))
        except (OSError, ValueError):
            raise no_such_upload(upload_id) from None
        if upload.get("key") != where.key:
            raise no_such_upload(upload_id)
        return folder, upload

    @staticmethod
    def _parts(folder: Path) -> dict[int, dict]:
        parts = {}
        for entry in os.scandir(folder):
            name = entry.name
            if name.endswith(".json") and name[:-5].isdigit():
                try:
                    parts[int(name[:-5])] = json.loads(Path(entry.path).read_text("utf-8"))
                except (OSError, ValueError):
                    continue                      # replaced meanwhile
        return parts

    def has_uploads(self, bucket: str) -> bool:
        try:
            return any(UPLOAD_ID.match(e.name) for e in os.scandir(self.root / META_DIR / UPLOADS / bucket))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def forget_bucket(self, bucket: str) -> None:
        shutil.rmtree(self.root / META_DIR / UPLOADS / bucket, ignore_errors=True)

    # --- InitiateMultipartUpload ----------------------------------------------------------------------

    def initiate(self, environ, where: Located, params: dict):
        upload_id = secrets.token_hex(16).upper()
        upload = {"key": where.key, "initiated": time.time(),
                  "content_type": environ.get("CONTENT_TYPE") or DEFAULT_CONTENT_TYPE,
                  "user_meta": user_meta(environ)}
        write_atomically(self._dir(where.bucket, upload_id) / "upload.json",
                         json.dumps(upload).encode("utf-8"))
        enc = _encoder(params)
        return xml_response(
            f"<InitiateMultipartUploadResult><Bucket>{where.bucket}</Bucket><Key>{text(enc(where.key))}"
            f"</Key><UploadId>{upload_id}</UploadId>" + _encoding_tag(params)
            + "</InitiateMultipartUploadResult>")

    # --- UploadPart -----------------------------------------------------------------------------------

    def upload_part(self, environ, where: Located, params: dict):
        number = _part_number(params.get("partNumber", ""))
        upload_id = params.get("uploadId", "")
        folder, _ = self._upload(where, upload_id)
        try:
            fd, data = _mkstemp(folder, f"{number:05d}-")
        except FileNotFoundError:                 # aborted or completed meanwhile
            raise no_such_upload(upload_id) from None
        try:
            with os.fdopen(fd, "wb") as out:
                got = receive(environ, out, MAX_OBJECT_BYTES)
                out.flush()
                os.fsync(out.fileno())
            record_path = folder / f"{number:05d}.json"
            try:
                old = json.loads(record_path.read_text("utf-8")).get("file")
            except (OSError, ValueError):
                old = None
            record = {"file": os.path.basename(data), "etag": got.etag, "crc64": got.crc.value,
                      "size": got.size, "mtime": time.time()}
            write_atomically(record_path, json.dumps(record).encode("utf-8"))
        except FileNotFoundError:
            raise no_such_upload(upload_id) from None
        except BaseException:
            if os.path.exists(data):
                os.unlink(data)
            raise
        if old and old != record["file"]:
            try:
                os.unlink(folder / old)
            except FileNotFoundError:
                pass
        response = empty(200)
        response.headers["ETag"] = f'"{got.etag}"'
        response.headers["x-oss-hash-crc64ecma"] = str(got.crc.value)
        return response

    # --- CompleteMultipartUpload ----------------------------------------------------------------------

    def complete(self, environ, where: Located, stored: Stored, params: dict):
        upload_id = params.get("uploadId", "")
        folder, upload = self._upload(where, upload_id)
        complete_all = environ.get("HTTP_X_OSS_COMPLETE_ALL", "").lower() == "yes"
        listed = None if complete_all else _listed_parts(read_xml(environ))
        claimed = folder.with_name(f"{folder.name}.completing-{secrets.token_hex(4)}")
        try:
            os.rename(folder, claimed)
        except FileNotFoundError:
            raise no_such_upload(upload_id) from None
        try:
            chosen = self._check(claimed, listed, upload_id)
        except BaseException:
            os.rename(claimed, folder)            # the upload stays, as on OSS
            raise
        md5s, crc, size = b"", 0, 0
        target, fd, temp = self.store.new_upload(stored)
        try:
            with os.fdopen(fd, "wb") as out:
                for record in chosen:
                    _append(claimed / record["file"], out)
                    md5s += bytes.fromhex(record["etag"])
                    crc = combine(crc, record["crc64"], record["size"])
                    size += record["size"]
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            os.rename(claimed, folder)
            raise
        etag = f"{hashlib.md5(md5s).hexdigest().upper()}-{len(chosen)}"
        self.store.commit(temp, target, stored, {
            "etag": etag, "crc64": crc, "object_type": "Multipart",
            "content_type": upload.get("content_type") or DEFAULT_CONTENT_TYPE,
            "user_meta": upload.get("user_meta", {})})
        shutil.rmtree(claimed, ignore_errors=True)
        enc = _encoder(params)
        host = environ.get("HTTP_HOST", "")
        location = f"http://{host}/{where.bucket}/{quote(where.key)}"
        response = xml_response(
            "<CompleteMultipartUploadResult>" + _encoding_tag(params)
            + f"<Location>{text(location)}</Location><Bucket>{where.bucket}</Bucket>"
            f"<Key>{text(enc(where.key))}</Key><ETag>&quot;{etag}&quot;</ETag>"
            "</CompleteMultipartUploadResult>")
        response.headers["ETag"] = f'"{etag}"'
        response.headers["x-oss-hash-crc64ecma"] = str(crc)
        return response

    def _check(self, folder: Path, listed, upload_id: str) -> list[dict]:
        """The part records to join, in order, after OSS's checks."""
        parts = self._parts(folder)
        if listed is None:                        # x-oss-complete-all: every part uploaded, in order
            listed = [(n, parts[n]["etag"]) for n in sorted(parts)]
            if not listed:
                raise malformed()
        chosen, previous = [], 0
        for number, etag in listed:
            if number <= previous:
                raise OssError("InvalidPartOrder", "The list of parts was not in ascending order. Parts "
                               "list must be specified in order by part number.", "0042-00000209",
                               UploadId=upload_id)
            previous = number
            record = parts.get(number)
            if record is None or etag.strip().strip('"').upper() != record["etag"]:
                raise OssError("InvalidPart", "One or more of the specified parts could not be found or "
                               "the specified entity tag might not have matched the part's entity tag.",
                               ETag=etag, PartNumber=str(number), UploadId=upload_id)
            chosen.append(record)
        for number, record in zip((n for n, _ in listed), chosen[:-1]):
            if record["size"] < MIN_PART_BYTES:
                raise OssError("EntityTooSmall", "Your proposed upload is smaller than the minimum "
                               "allowed size.", "0042-00000213", PartNumber=str(number),
                               MinSizeAllowed=str(MIN_PART_BYTES), ProposedSize=str(record["size"]))
        return chosen

    # --- AbortMultipartUpload -------------------------------------------------------------------------

    def abort(self, where: Located, params: dict):
        upload_id = params.get("uploadId", "")
        folder, _ = self._upload(where, upload_id)
        claimed = folder.with_name(f"{folder.name}.aborting-{secrets.token_hex(4)}")
        try:
            os.rename(folder, claimed)
        except FileNotFoundError:
            raise no_such_upload(upload_id) from None
        shutil.rmtree(claimed, ignore_errors=True)
        return empty(204)

    # --- ListParts ------------------------------------------------------------------------------------

    def list_parts(self, where: Located, params: dict):
        upload_id = params.get("uploadId", "")
        folder, _ = self._upload(where, upload_id)
        limit = max_keys(params, "max-parts", 1000, 1000)
        marker_raw = params.get("part-number-marker", "")
        if marker_raw and not marker_raw.isdigit():
            raise OssError("InvalidArgument", "part-number-marker must be an integer.")
        marker = int(marker_raw or 0)
        try:
            parts = self._parts(folder)
        except FileNotFoundError:
            raise no_such_upload(upload_id) from None
        numbers = [n for n in sorted(parts) if n > marker]
        page, truncated = numbers[:limit], len(numbers) > limit
        items = "".join(
            f"<Part><PartNumber>{n}</PartNumber><LastModified>{iso(parts[n]['mtime'])}</LastModified>"
            f"<ETag>&quot;{parts[n]['etag']}&quot;</ETag><HashCrc64ecma>{parts[n]['crc64']}</HashCrc64ecma>"
            f"<Size>{parts[n]['size']}</Size></Part>" for n in page)
        enc = _encoder(params)
        return xml_response(
            f"<ListPartsResult><Bucket>{where.bucket}</Bucket><Key>{text(enc(where.key))}</Key>"
            f"<UploadId>{upload_id}</UploadId><StorageClass>Standard</StorageClass>"
            f"<PartNumberMarker>{marker}</PartNumberMarker>"
            f"<NextPartNumberMarker>{page[-1] if page else marker}</NextPartNumberMarker>"
            f"<MaxParts>{limit}</MaxParts><IsTruncated>{str(truncated).lower()}</IsTruncated>"
            + _encoding_tag(params) + f"{items}</ListPartsResult>")

    # --- ListMultipartUploads -------------------------------------------------------------------------

    def list_uploads(self, bucket: str, params: dict):
        """Unfinished uploads by key (UTF-8 order), then when they began, then upload id; markers,
        prefix and delimiter as ListObjects has them."""
        prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
        key_marker, id_marker = params.get("key-marker", ""), params.get("upload-id-marker", "")
        limit = max_keys(params, "max-uploads", 1000, 1000)
        uploads = []
        try:
            entries = list(os.scandir(self.root / META_DIR / UPLOADS / bucket))
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        for entry in entries:
            if not UPLOAD_ID.match(entry.name):
                continue
            try:
                upload = json.loads(Path(entry.path, "upload.json").read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if upload.get("key", "").startswith(prefix):
                uploads.append((upload["key"].encode("utf-8"), upload.get("initiated", 0.0), entry.name,
                                upload["key"]))
        uploads.sort()
        marker = key_marker.encode("utf-8")
        shown, prefixes, last = [], [], None
        truncated = False
        for key_bytes, initiated, upload_id, key in uploads:
            if key_bytes < marker or (key_bytes == marker and (not id_marker or upload_id <= id_marker)):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            rolled = key[:cut + len(delimiter)] if cut >= 0 else None
            if rolled is not None and rolled in prefixes:
                continue
            if len(shown) + len(prefixes) == limit:
                truncated = True
                break
            if rolled is not None:
                prefixes.append(rolled)
                last = (rolled, "")
            else:
                shown.append((key, upload_id, initiated))
                last = (key, upload_id)
        enc = _encoder(params)
        next_key, next_id = (last if truncated and last else ("", ""))
        items = "".join(f"<Upload><Key>{text(enc(k))}</Key><UploadId>{u}</UploadId>"
                        f"<StorageClass>Standard</StorageClass><Initiated>{iso(t)}</Initiated></Upload>"
                        for k, u, t in shown)
        items += "".join(f"<CommonPrefixes><Prefix>{text(enc(p))}</Prefix></CommonPrefixes>" for p in prefixes)
        return xml_response(
            f"<ListMultipartUploadsResult><Bucket>{bucket}</Bucket>" + _encoding_tag(params)
            + f"<KeyMarker>{text(enc(key_marker))}</KeyMarker><UploadIdMarker>{text(id_marker)}</UploadIdMarker>"
            f"<NextKeyMarker>{text(enc(next_key))}</NextKeyMarker>"
            f"<NextUploadIdMarker>{next_id}</NextUploadIdMarker>"
            f"<Delimiter>{text(enc(delimiter))}</Delimiter><Prefix>{text(enc(prefix))}</Prefix>"
            f"<MaxUploads>{limit}</MaxUploads><IsTruncated>{str(truncated).lower()}</IsTruncated>"
            f"{items}</ListMultipartUploadsResult>")


def _listed_parts(root) -> list[tuple[int, str]]:
    if root is None or root.tag != "CompleteMultipartUpload":
        raise malformed()
    listed = []
    for part in root.findall("Part"):
        number, etag = (part.findtext("PartNumber") or "").strip(), part.findtext("ETag")
        if etag is None:
            raise malformed()
        listed.append((_part_number(number), etag))
    if not listed:
        raise malformed()
    return listed


def _append(source: Path, out) -> None:
    """Append a part's bytes to ``out`` in the kernel where it can (copy_file_range), else by blocks."""
    out.flush()                                   # the descriptor's offset is the end of what is written
    with open(source, "rb") as src:
        size, done = os.fstat(src.fileno()).st_size, 0
        copy = getattr(os, "copy_file_range", None)
        try:
            while copy is not None and done < size:
                sent = copy(src.fileno(), out.fileno(), size - done)
                if sent == 0:
                    break
                done += sent
        except OSError:                           # another file system, or no support: by blocks
            pass
        if done < size:
            src.seek(done)
            os.lseek(out.fileno(), 0, os.SEEK_END)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()


def _mkstemp(folder: Path, prefix: str):
    return tempfile.mkstemp(prefix=prefix, dir=folder)


def _encoder(params: dict):
    return (lambda t: quote(t, safe="/")) if params.get("encoding-type") == "url" else (lambda t: t)


def _encoding_tag(params: dict) -> str:
    return "<EncodingType>url</EncodingType>" if params.get("encoding-type") == "url" else ""

