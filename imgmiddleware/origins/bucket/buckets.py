"""The buckets themselves: PutBucket (CreateBucket, with ``x-oss-acl``), DeleteBucket, PutBucketAcl,
GetBucketAcl, GetBucketInfo and GetBucketLocation, the calls SDK set-ups make around images.

A bucket is a directory of the data root. What the API sets (its ACL, storage class, creation time)
is a record under ``root/.imgmw/buckets/<bucket>.json``; a directory made by hand has none, and its
ACL is the configured one (``bucket_acl``, else ``default_acl``). A record's ACL wins over the
configuration: as on OSS, a bucket's ACL is what its owner set last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ...errors import OssError
from .addressing import BUCKET_NAME, is_dir
from .store import META_DIR, write_atomically
from .wire import OWNER, empty, iso, read_xml, text, xml_response

ACLS = ("private", "public-read", "public-read-write")
STORAGE_CLASSES = ("Standard", "IA", "Archive", "ColdArchive", "DeepColdArchive")
RECORDS = "buckets"
RECORDS_KEPT = 1024                  # parsed records kept, each checked by a stat before use


class Buckets:
    """Bucket records and the bucket operations. ``acl``: the configured bucket -> ACL."""

    def __init__(self, root: Path, acl: dict, default_acl: str, region: str) -> None:
        self.root, self.acl, self.default_acl, self.region = root, acl, default_acl, region
        self._records = root / META_DIR / RECORDS
        self._parsed: dict[str, tuple[tuple, dict]] = {}

    # --- records --------------------------------------------------------------------------------------

    def _record_path(self, bucket: str) -> Path:
        return self._records / f"{bucket}.json"

    def record(self, bucket: str) -> dict:
        """The bucket's record ({} without one). Every GET asks for its ACL, so a parsed record is
        kept while its file's identity (inode, mtime, size) stays the same: a stat, not a read and a
        parse; records are replaced by rename, so another worker's change is seen at once."""
        path = self._record_path(bucket)
        try:
            st = os.stat(path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
            kept = self._parsed.get(bucket)
            if kept is not None and kept[0] == identity:
                return dict(kept[1])         # a copy: put_acl changes what it is given
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            return {}
        if not isinstance(record, dict):
            return {}
        if len(self._parsed) >= RECORDS_KEPT:
            self._parsed.clear()
        self._parsed[bucket] = (identity, record)
        return dict(record)

    def _save(self, bucket: str, record: dict) -> None:
        write_atomically(self._record_path(bucket), json.dumps(record).encode("utf-8"))

    def acl_of(self, bucket: str) -> str:
        return self.record(bucket).get("acl") or self.acl.get(bucket, self.default_acl)

    def created(self, bucket: str) -> float:
        found = self.record(bucket).get("created")
        return found if found is not None else (self.root / bucket).stat().st_mtime

    # --- operations -----------------------------------------------------------------------------------

    def put_bucket(self, environ, bucket: str):
        """CreateBucket: 200 for a new bucket; OSS answers 409 BucketAlreadyExists for a name taken,
        and creating a bucket one already owns leaves it as it is (200). Without x-oss-acl a new
        bucket is private, OSS's default."""
        if not BUCKET_NAME.match(bucket):
            raise OssError("InvalidBucketName", "The specified bucket is not valid.", BucketName=bucket)
        acl = _acl_header(environ, "private")
        body = read_xml(environ, required=False)
        storage = "Standard"
        if body is not None:
            found = (body.findtext("StorageClass") or "Standard").strip()
            if found not in STORAGE_CLASSES:
                raise OssError("InvalidArgument", "Invalid storage class.")
            storage = found
        path = self.root / bucket
        try:
            os.mkdir(path)
        except FileExistsError:
            if not is_dir(path):
                raise OssError("BucketAlreadyExists", "The requested bucket name is not available.",
                               status=409, BucketName=bucket) from None
            return empty(200)
        self._save(bucket, {"acl": acl, "storage_class": storage, "created": time.time()})
        response = empty(200)
        response.headers["Location"] = "/" + bucket
        return response

    def delete_bucket(self, bucket: str, bucket_dir: Path, not_empty: bool):
        """DeleteBucket: 409 BucketNotEmpty while it holds objects or unfinished multipart uploads
        (OSS asks for both to go first); its record and style file go with it."""
        if not_empty:
            raise OssError("BucketNotEmpty", "The bucket you tried to delete is not empty.", status=409,
                           BucketName=bucket)
        shutil.rmtree(bucket_dir)    # empty of objects; directories left by hand go too
        for leftover in (self._record_path(bucket), self.root / META_DIR / "styles" / f"{bucket}.json"):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
        return empty(204)

    def put_acl(self, environ, bucket: str):
        acl = _acl_header(environ, None)
        if acl is None:
            raise OssError("InvalidArgument", "no valid acl header.")
        record = self.record(bucket)
        record["acl"] = acl
        record.setdefault("created", self.created(bucket))
        self._save(bucket, record)
        return empty(200)

    def get_acl(self, bucket: str):
        return xml_response(f"<AccessControlPolicy>{OWNER}<AccessControlList><Grant>{self.acl_of(bucket)}"
                            f"</Grant></AccessControlList></AccessControlPolicy>")

    def get_info(self, bucket: str, host: str):
        record = self.record(bucket)
        return xml_response(
            f"<BucketInfo><Bucket><AccessMonitor>Disabled</AccessMonitor>"
            f"<CreationDate>{iso(self.created(bucket))}</CreationDate>"
            f"<ExtranetEndpoint>{text(host)}</ExtranetEndpoint><IntranetEndpoint>{text(host)}"
            f"</IntranetEndpoint><Location>oss-{text(self.region)}</Location>"
            f"<StorageClass>{record.get('storage_class', 'Standard')}</StorageClass>"
            f"<TransferAcceleration>Disabled</TransferAcceleration>"
            f"<CrossRegionReplication>Disabled</CrossRegionReplication><Name>{bucket}</Name>"
            f"<Owner><DisplayName>imgmiddleware</DisplayName><ID>imgmiddleware</ID></Owner>"
            f"<AccessControlList><Grant>{self.acl_of(bucket)}</Grant></AccessControlList>"
            f"<DataRedundancyType>LRS</DataRedundancyType><Versioning>Suspended</Versioning>"
            f"<Comment></Comment></Bucket></BucketInfo>")

    def get_location(self):
        return xml_response(f"<LocationConstraint>oss-{text(self.region)}</LocationConstraint>")


def _acl_header(environ, default):
    value = environ.get("HTTP_X_OSS_ACL")
    if value is None:
        return default
    if value not in ACLS:
        raise OssError("InvalidArgument", "no such bucket access control exists",
                       ArgumentName="x-oss-acl", ArgumentValue=value)
    return value

