"""Issue 18 B with the real SDKs against ``imgmiddleware serve`` (the `server` fixture of tests/conftest.py):
what their own test set-ups and large uploads call. oss2 with V1 (Auth), V2 (AuthV2) and V4
(ProviderAuthV4); ali-oss with V1 and V4 (authorizationV4), including the three ways to point
ali-oss's signatureUrl at a local server (README): ``localhost`` (virtual-host URLs on *.localhost),
``cname: true`` with the bucket's own name, and ``sldEnable: true`` (path style)."""

from __future__ import annotations

import http.client
import json
import urllib.parse

import cv2
import numpy as np
import oss2
import pytest

from .test_sdk import AK, BUCKET, EXAMPLE, SK, error_code, fetch, image, run_node

KB = 1024


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory):
    """A 1600 x 1200 JPEG of about 1.5 MB: over both SDKs' part size below, under OSS's 20 MB."""
    rng = np.random.default_rng(18)
    y, x = np.mgrid[0:1200, 0:1600]
    pixels = np.dstack([(x / 7) % 256, (y / 5) % 256, (x + y) / 11 % 256]).astype(np.uint8)
    pixels = cv2.add(pixels, rng.integers(0, 60, pixels.shape, dtype=np.uint8))
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    path.write_bytes(data.tobytes())
    assert 600 * KB < path.stat().st_size < 20 << 20
    return path


AUTHS = {
    "v1": lambda: oss2.Auth(AK, SK),
    "v2": lambda: oss2.AuthV2(AK, SK),
    "v4": lambda: oss2.ProviderAuthV4(oss2.credentials.StaticCredentialsProvider(AK, SK)),
}


def bucket_for(server, version: str, name: str = BUCKET, region: str = "cn-hangzhou") -> oss2.Bucket:
    return oss2.Bucket(AUTHS[version](), server.base, name, region=region)


@pytest.mark.parametrize("version", ["v1", "v2", "v4"])
def test_oss2_bucket_set_up_and_tear_down(server, version):
    """What oss2's own tests do around a bucket: create it with an ACL, read its info and ACL, list
    (V2 too) and its unfinished uploads, refuse to delete it while it holds objects, delete it."""
    name = f"sdk-{version}-bucket"
    bucket = bucket_for(server, version, name)
    bucket.create_bucket(oss2.BUCKET_ACL_PUBLIC_READ)
    info = bucket.get_bucket_info()
    assert (info.name, info.acl.grant, info.location) == (name, "public-read", "oss-cn-hangzhou")
    assert bucket.get_bucket_acl().acl == "public-read"
    bucket.put_bucket_acl(oss2.BUCKET_ACL_PRIVATE)
    assert bucket.get_bucket_acl().acl == "private"
    for key in ("a.jpg", "b/c.jpg", "d.jpg"):
        bucket.put_object_from_file(key, str(EXAMPLE))
    assert [o.key for o in oss2.ObjectIteratorV2(bucket, max_keys=2)] == ["a.jpg", "b/c.jpg", "d.jpg"]
    rolled = bucket.list_objects_v2(delimiter="/", fetch_owner=True)
    assert [o.key for o in rolled.object_list] == ["a.jpg", "d.jpg"] and rolled.prefix_list == ["b/"]
    assert rolled.object_list[0].owner is not None
    assert bucket.list_multipart_uploads().upload_list == []
    with pytest.raises(oss2.exceptions.BucketNotEmpty) as refused:
        bucket.delete_bucket()
    assert refused.value.status == 409
    for key in ("a.jpg", "b/c.jpg", "d.jpg"):
        bucket.delete_object(key)
    bucket.delete_bucket()
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        bucket.get_bucket_info()


@pytest.mark.parametrize("version", ["v1", "v2", "v4"])
def test_oss2_resumable_upload_of_a_photo(server, big_photo, tmp_path, version):
    """oss2.resumable_upload over its part threshold: multipart, with oss2's CRC-64 checks on every
    part and on Complete (enable_crc is oss2's default), then processed like any object."""
    bucket = bucket_for(server, version)
    key = f"multipart/{version}.jpg"
    oss2.resumable_upload(bucket, key, str(big_photo), store=oss2.ResumableStore(root=str(tmp_path)),
                          multipart_threshold=200 * KB, part_size=200 * KB, num_threads=2)
    head = bucket.head_object(key)
    size = big_photo.stat().st_size
    parts = -(-size // (200 * KB))
    assert head.etag.endswith(f"-{parts}") and head.object_type == "Multipart"
    assert head.content_length == size and head.headers["Content-Type"] == "image/jpeg"
    assert bucket.get_object(key).read() == big_photo.read_bytes()     # oss2 checks the CRC here too
    thumb = image(bucket.get_object(key, process="image/resize,w_160").read())
    assert thumb.size == (160, 120)
    assert bucket.list_multipart_uploads(prefix="multipart/").upload_list == []
    # an upload abandoned half way is listed, and aborted
    upload_id = bucket.init_multipart_upload(key + ".part").upload_id
    bucket.upload_part(key + ".part", upload_id, 1, b"x" * (100 * KB))
    assert [u.upload_id for u in bucket.list_multipart_uploads(prefix="multipart/").upload_list] == [upload_id]
    assert [p.part_number for p in bucket.list_parts(key + ".part", upload_id).parts] == [1]
    bucket.abort_multipart_upload(key + ".part", upload_id)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.list_parts(key + ".part", upload_id)


def test_oss2_auth_v2_header_and_presigned_urls(server):
    bucket = bucket_for(server, "v2")
    bucket.put_object_from_file("v2/example.jpg", str(EXAMPLE))
    got = bucket.get_object("v2/example.jpg", process="image/resize,m_fixed,w_100,h_100")
    assert image(got.read()).size == (100, 100)
    assert bucket.get_object("v2/example.jpg", byte_range=(0, 9)).read() == EXAMPLE.read_bytes()[:10]
    url = bucket.sign_url("GET", "v2/example.jpg", 600, params={"x-oss-process": "image/resize,w_300"})
    assert "x-oss-signature-version=OSS2" in url
    status, _, body = fetch(url)
    assert status == 200 and image(body).size == (300, 200)
    quoted = urllib.parse.quote("image/resize,w_300", safe="")
    status, _, body = fetch(url.replace(quoted, urllib.parse.quote("image/resize,w_50", safe="")))
    assert status == 403 and error_code(body) == "SignatureDoesNotMatch"


def test_oss2_v4_of_another_region_is_refused(server):
    bucket = bucket_for(server, "v4", region="cn-beijing")
    with pytest.raises(oss2.exceptions.ServerError) as refused:
        bucket.get_object("example.jpg", process="image/resize,w_10")
    err = refused.value
    assert (err.status, err.code, err.ec) == (400, "InvalidArgument", "0002-00000226")
    url = bucket.sign_url("GET", "example.jpg", 600)
    status, _, body = fetch(url)
    assert status == 400 and error_code(body) == "InvalidArgument"


def encoded(img: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, img)
    assert ok
    return data.tobytes()


def test_oss2_sees_the_size_and_damage_ecs_of_oss_pages(server):
    """Issue 18's source and output limits, as an oss2 V4 client meets them (process/limits.py)."""
    bucket = bucket_for(server, "v4")
    strip = np.full((2, 16_385), 128, np.uint8)
    photo = encoded(cv2.imread(str(EXAMPLE)), ".webp")
    bucket.put_object("limits/wide.tif", encoded(strip, ".tif"))
    bucket.put_object("limits/wide.png", encoded(strip, ".png"))
    bucket.put_object("limits/damaged.webp", photo[: len(photo) // 2])
    cases = [("limits/wide.tif", "image/resize,w_100", "0040-00000018"),     # TIFF's decoder side
             ("limits/wide.png", "image/format,webp", "0040-00000011"),      # WebP's encoder side
             ("limits/damaged.webp", "image/resize,w_100", "0040-00000010")]  # a damaged WebP
    for key, process, ec in cases:
        with pytest.raises(oss2.exceptions.ServerError) as refused:
            bucket.get_object(key, process=process)
        assert (refused.value.status, refused.value.ec) == (400, ec), key
    assert image(bucket.get_object("limits/wide.png", process="image/format,jpg").read()).size == (
        16_385, 2)


@pytest.mark.parametrize("version", ["v1", "v2", "v4"])
def test_oss2_styles_range_and_presigned_put(server, version):
    bucket = bucket_for(server, version)
    bucket.put_bucket_style("aaa", "csdar5324")
    assert bucket.get_bucket_style("aaa").content == "csdar5324"
    with pytest.raises(oss2.exceptions.ServerError) as refused:
        bucket.put_bucket_style("imagestyle", "")
    assert refused.value.details["Message"] == "Style content is invalid."
    names = [s.name for s in bucket.list_bucket_style().styles]
    assert "aaa" in names and "oss-pic-style-w-100" not in names      # the operator's [all] style
    bucket.delete_bucket_style("aaa")

    data = EXAMPLE.read_bytes()
    bucket.put_object(f"range-{version}.jpg", data)
    whole = bucket.get_object(f"range-{version}.jpg", byte_range=(0, len(data)))   # one past the end: OSS's 200
    assert whole.status == 200 and whole.read() == data
    part = bucket.get_object(f"range-{version}.jpg", byte_range=(0, len(data) - 1 - 10))
    assert part.status == 206

    url = urllib.parse.urlsplit(bucket.sign_url("PUT", "presigned.jpg", 600))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    conn.request("PUT", f"{url.path}?{url.query}", body=data)          # no Content-Type at all
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    assert bucket.head_object("presigned.jpg").content_type == "application/octet-stream"


# --- ali-oss ------------------------------------------------------------------------------------------

NODE_LOCALHOST = r"""
// *.localhost is loopback (RFC 6761): what systemd-resolved, curl and browsers do, done here for Node.
const dns = require('dns');
const lookup = dns.lookup;
dns.lookup = function (host, options, callback) {
  if (typeof host === 'string' && (host === 'localhost' || host.endsWith('.localhost'))) host = '127.0.0.1';
  return lookup.call(this, host, options, callback);
};
"""


@pytest.mark.parametrize("v4", [False, True], ids=["v1", "v4"])
def test_ali_oss_bucket_api_and_multipart_upload(ali_oss, server, tmp_path, big_photo, v4):
    name = "node-v4-bucket" if v4 else "node-v1-bucket"
    results = run_node(ali_oss, server, tmp_path, f"""
const BIG = {json.dumps(str(big_photo))};
const NAME = {json.dumps(name)};
const options = {{ region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
                  endpoint: `http://127.0.0.1:${{PORT}}`, authorizationV4: {json.dumps(v4)} }};
const client = new OSS(options);
async function main() {{
  results.put = (await client.putBucket(NAME, {{ acl: 'public-read' }})).res.status;
  client.useBucket(NAME);
  results.info = (await client.getBucketInfo(NAME)).bucket.AccessControlList.Grant;
  results.acl = (await client.getBucketACL(NAME)).acl;
  const up = await client.multipartUpload('photos/big.jpg', BIG, {{ partSize: 200 * 1024, parallel: 2 }});
  results.multipart = up.res.status;
  const head = await client.head('photos/big.jpg');
  results.etag = head.res.headers.etag;
  results.type = head.res.headers['x-oss-object-type'];
  const thumb = await client.get('photos/big.jpg', OUT + '/thumb.jpg', {{ process: 'image/resize,w_160' }});
  results.thumb = thumb.res.status;
  const size = Number(head.res.headers['content-length']);
  const past = await client.get('photos/big.jpg', {{ headers: {{ Range: `bytes=0-${{size}}` }} }});
  results.past = [past.res.status, past.content.length === size];
  const inside = await client.get('photos/big.jpg', {{ headers: {{ Range: 'bytes=0-9' }} }});
  results.inside = [inside.res.status, inside.content.length];
  const listed = await client.listV2({{ 'max-keys': 10 }});
  results.listed = listed.objects.map(o => o.name);
  results.uploads = (await client.listUploads({{}})).uploads.length;
  try {{ await client.deleteBucket(NAME); results.notEmpty = 'deleted'; }}
  catch (e) {{ results.notEmpty = e.code + ' ' + e.status; }}
  await client.delete('photos/big.jpg');
  results.deleted = (await client.deleteBucket(NAME)).res.status;
  const wrong = new OSS({{ ...options, region: 'oss-cn-beijing', authorizationV4: true, bucket: 'examplebucket' }});
  try {{ await wrong.get('example.jpg'); results.region = 'accepted'; }}
  catch (e) {{ results.region = e.code + ' ' + e.status; }}
}}
""")
    out = tmp_path / "out"
    assert (results["put"], results["info"], results["acl"]) == (200, "public-read", "public-read")
    assert results["multipart"] == 200 and results["type"] == "Multipart"
    parts = -(-big_photo.stat().st_size // (200 * KB))
    assert results["etag"].strip('"').endswith(f"-{parts}")
    assert results["thumb"] == 200 and image(out / "thumb.jpg").size == (160, 120)
    assert results["past"] == [200, True] and results["inside"] == [206, 10]     # OSS's Range rule
    assert results["listed"] == ["photos/big.jpg"] and results["uploads"] == 0
    assert results["notEmpty"] == "BucketNotEmpty 409" and results["deleted"] == 204
    assert results["region"] == "InvalidArgument 400"


@pytest.mark.parametrize("setup", ["localhost", "cname", "sldEnable"])
@pytest.mark.parametrize("v4", [False, True], ids=["v1", "v4"])
def test_ali_oss_seed_example_on_a_local_server(ali_oss, server, tmp_path, setup, v4):
    """The seed's Node example (put, get with process, the signed URLs, delete) with each endpoint
    set-up the README gives for a local server; 127.0.0.1 itself cannot sign URLs in ali-oss."""
    endpoint = {"localhost": "`http://localhost:${PORT}`",
                "cname": "`http://examplebucket.localhost:${PORT}`",
                "sldEnable": "`http://localhost:${PORT}`"}[setup]
    extra = {"localhost": "", "cname": "cname: true,", "sldEnable": "sldEnable: true,"}[setup]
    results = run_node(ali_oss, server, tmp_path, NODE_LOCALHOST + f"""
const client = new OSS({{ region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret, bucket: 'examplebucket',
                         endpoint: {endpoint}, {extra} authorizationV4: {json.dumps(v4)} }});
const key = 'setups/{setup}-{'v4' if v4 else 'v1'}.jpg';
async function main() {{
  results.put = (await client.put(key, process.env.FIXTURE)).res.status;
  results.get = (await client.get(key, OUT + '/got.jpg', {{ process: 'image/resize,m_fixed,w_100,h_100' }})).res.status;
  const url = {'client.signatureUrlV4("GET", 600, { queries: { "x-oss-process": "image/resize,w_300" } }, key)'
               if v4 else "client.signatureUrl(key, { expires: 600, process: 'image/resize,w_300' })"};
  results.url = await url;
  const u = new URL(results.url);
  results.signed = await new Promise((resolve, reject) => {{
    http.get(results.url, res => {{ const c = []; res.on('data', d => c.push(d));
      res.on('end', () => {{ fs.writeFileSync(OUT + '/signed.jpg', Buffer.concat(c)); resolve(res.statusCode); }}); }})
      .on('error', reject);
  }});
  results.deleted = (await client.delete(key)).res.status;
}}
""")
    out = tmp_path / "out"
    assert (results["put"], results["get"], results["signed"], results["deleted"]) == (200, 200, 200, 204)
    assert image(out / "got.jpg").size == (100, 100) and image(out / "signed.jpg").size == (300, 200)
    host = urllib.parse.urlsplit(results["url"]).netloc
    path = urllib.parse.urlsplit(results["url"]).path
    if setup == "sldEnable":
        assert host == f"localhost:{server.port}" and path.startswith(f"/{BUCKET}/setups/")
    else:
        assert host == f"{BUCKET}.localhost:{server.port}" and path.startswith("/setups/")
