"""ListBuckets, ListObjects (V1: what oss2's ObjectIterator and ali-oss's list() send) and
ListObjectsV2 (``list-type=2``: oss2's ObjectIteratorV2, ali-oss's listV2): keys in UTF-8 byte
order after a marker, under a prefix, rolled up at a delimiter into CommonPrefixes."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

from ...errors import OssError
from .addressing import BUCKET_NAME
from .store import ObjectStore
from .wire import OWNER, iso, max_keys, text, xml_response


def list_buckets(root: Path, params: dict, host: str, region: str, created) -> object:
    """ListBuckets on ``/`` (the caller has checked it is signed, as OSS wants)."""
    prefix, marker = params.get("prefix", ""), params.get("marker", "")
    limit = max_keys(params)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and BUCKET_NAME.match(p.name)
                   and p.name.startswith(prefix) and p.name > marker)
    page = names[:limit]
    items = "".join(
        f"<Bucket><CreationDate>{iso(created(n))}</CreationDate>"
        f"<ExtranetEndpoint>{text(host)}</ExtranetEndpoint><IntranetEndpoint>{text(host)}"
        f"</IntranetEndpoint><Location>oss-{text(region)}</Location><Name>{n}</Name>"
        f"<Region>{text(region)}</Region><StorageClass>Standard</StorageClass></Bucket>" for n in page)
    truncated = len(names) > limit
    more = f"<NextMarker>{page[-1]}</NextMarker>" if truncated else ""
    return xml_response(
        f"<ListAllMyBucketsResult><Prefix>{text(prefix)}</Prefix><Marker>{text(marker)}</Marker>"
        f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>{more}"
        f"{OWNER}<Buckets>{items}</Buckets></ListAllMyBucketsResult>")


def _page(keys: list[str], prefix: str, after: str, delimiter: str, limit: int):
    """(contents, common prefixes, last name, truncated) of one page of ``keys`` after ``after``."""
    bound = after.encode("utf-8")
    contents, prefixes, last = [], [], None
    for key in keys:
        if key.encode("utf-8") <= bound:
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        rolled = key[:cut + len(delimiter)] if cut >= 0 else None
        if rolled is not None and (rolled == last or rolled.encode("utf-8") <= bound):
            continue
        if len(contents) + len(prefixes) == limit:
            return contents, prefixes, last, True
        if rolled is not None:
            prefixes.append(rolled)
            last = rolled
        else:
            contents.append(key)
            last = key
    return contents, prefixes, last, False


def _check(params: dict) -> tuple[str, str]:
    delimiter, encoding = params.get("delimiter", ""), params.get("encoding-type", "")
    if encoding not in ("", "url"):
        raise OssError("InvalidArgument", "The encoding-type parameter must be url.")
    if len(delimiter.encode("utf-8")) > 1:
        raise OssError("InvalidArgument", "The delimiter must be one character.")
    return delimiter, encoding


def _items(store: ObjectStore, bucket_dir: Path, contents, prefixes, enc, owner: bool) -> str:
    items = []
    for key in contents:
        info = store.info(bucket_dir, key)
        if info is None:                  # deleted since the walk
            continue
        size, mtime, etag, kind = info
        items.append(f"<Contents><Key>{text(enc(key))}</Key><LastModified>{iso(mtime)}</LastModified>"
                     f"<ETag>&quot;{etag}&quot;</ETag><Type>{kind}</Type><Size>{size}</Size>"
                     f"<StorageClass>Standard</StorageClass>{OWNER if owner else ''}</Contents>")
    items += [f"<CommonPrefixes><Prefix>{text(enc(p))}</Prefix></CommonPrefixes>" for p in prefixes]
    return "".join(items)


def _encoder(encoding: str):
    return (lambda t: quote(t, safe="/")) if encoding else (lambda t: t)


def list_objects(store: ObjectStore, bucket: str, bucket_dir: Path, params: dict):
    """ListObjects (V1)."""
    prefix, marker = params.get("prefix", ""), params.get("marker", "")
    delimiter, encoding = _check(params)
    limit = max_keys(params)
    contents, prefixes, last, truncated = _page(store.keys(bucket_dir, prefix), prefix, marker,
                                                delimiter, limit)
    enc = _encoder(encoding)
    head = (f"<Name>{bucket}</Name><Prefix>{text(enc(prefix))}</Prefix><Marker>{text(enc(marker))}"
            f"</Marker><MaxKeys>{limit}</MaxKeys><Delimiter>{text(enc(delimiter))}</Delimiter>"
            + ("<EncodingType>url</EncodingType>" if encoding else "")
            + f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
            + (f"<NextMarker>{text(enc(last))}</NextMarker>" if truncated else ""))
    body = _items(store, bucket_dir, contents, prefixes, enc, owner=True)
    return xml_response(f"<ListBucketResult>{head}{body}</ListBucketResult>")


def list_objects_v2(store: ObjectStore, bucket: str, bucket_dir: Path, params: dict):
    """ListObjectsV2: ``continuation-token`` (ours: the last name of the page before, base64url,
    opaque to clients as OSS's is), ``start-after`` (used when there is no token), ``fetch-owner``
    (Owner only when true), ``KeyCount``."""
    prefix, start_after = params.get("prefix", ""), params.get("start-after", "")
    token = params.get("continuation-token", "")
    delimiter, encoding = _check(params)
    limit = max_keys(params)
    owner = params.get("fetch-owner", "").lower() == "true"
    after = _untoken(token) if token else start_after
    contents, prefixes, last, truncated = _page(store.keys(bucket_dir, prefix), prefix, after,
                                                delimiter, limit)
    enc = _encoder(encoding)
    body = _items(store, bucket_dir, contents, prefixes, enc, owner)
    head = (f"<Name>{bucket}</Name><Prefix>{text(enc(prefix))}</Prefix>"
            + (f"<StartAfter>{text(enc(start_after))}</StartAfter>" if start_after else "")
            + (f"<ContinuationToken>{text(token)}</ContinuationToken>" if token else "")
            + f"<MaxKeys>{limit}</MaxKeys><Delimiter>{text(enc(delimiter))}</Delimiter>"
            + ("<EncodingType>url</EncodingType>" if encoding else "")
            + f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
            + (f"<NextContinuationToken>{_token(last)}</NextContinuationToken>" if truncated else "")
            + f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
    return xml_response(f"<ListBucketResult>{head}{body}</ListBucketResult>")


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii")


def _untoken(token: str) -> str:
    try:
        raw = token.encode("ascii") + b"=" * (-len(token) % 4)
        return base64.b64decode(raw, altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        raise OssError("InvalidArgument", "The continuation token provided is incorrect.") from None
