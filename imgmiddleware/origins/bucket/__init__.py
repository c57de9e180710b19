"""The bundled OSS-compatible bucket over a local directory, ``root/<bucket>/<key>``: the embedded
default that ``imgmiddleware serve`` wraps. One module per concern:

- addressing.py   path style and virtual-host style; where another object of a bucket lives
- app.py          BucketApp: dispatch, signatures (V1, V2, V4; the region), ACLs, disk errors as XML
- store.py        objects on disk: paths, the spill area for odd keys, metadata, atomic writes
- objects.py      GetObject, HeadObject, PutObject, DeleteObject (ETag, CRC-64, user metadata)
- ranges.py       OSS's Range rule (an invalid range is the whole object, 200)
- listing.py      ListBuckets, ListObjects, ListObjectsV2
- buckets.py      PutBucket, DeleteBucket, bucket ACL, GetBucketInfo, GetBucketLocation
- multipart.py    multipart upload, its state under root/.imgmw/multipart/
- styles_api.py   PutStyle, GetStyle, ListStyle, DeleteStyle
- crc64.py        CRC-64/ECMA-182 and its combination
- wire.py         XML answers, dates, bounded and streamed request bodies
"""

from .addressing import BucketAddressing, Located
from .app import DEFAULT_REGION, BucketApp, storage_error
from .store import META_DIR

__all__ = ["BucketAddressing", "BucketApp", "DEFAULT_REGION", "Located", "META_DIR", "storage_error"]
