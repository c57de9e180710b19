"""Acceptance: the real OSS SDKs run the user's own image-processing examples against ``imgmiddleware serve``.

The examples are the Python (oss2) and Node.js (ali-oss) code of the OSS image-processing guides in
the user's source documents, with only the endpoint, the keys and the bucket and object names filled
in. A module fixture (``server``, in tests/conftest.py) starts ``imgmiddleware serve`` (gunicorn, 2
workers) on a free loopback port over a temporary data root holding two buckets, ``examplebucket`` and ``targetbucket``, both private
(``default_acl = "private"``: as in the guides, only signed requests and signed URLs get the images),
with the credentials ``test-ak`` / ``test-sk`` and the style ``oss-pic-style-w-100 =
"image/resize,w_100"``. Every result is checked with Pillow against what OSS documents for the
process string, on tests/fixtures/example.jpg (400x267 JPEG).

ali-oss is installed by the tests themselves: ``npm ci`` of tests/node/package-lock.json (the exact
versions the suite last passed with; tools/refresh_lock.py moves them) into tests/node/.cache, redone
when the lock changes. Without node or npm, or when the install fails, the Node tests fail: they are
never skipped.

How the SDKs are pointed at us:

- oss2: ``oss2.Bucket(oss2.Auth(ak, sk), "http://127.0.0.1:PORT", bucket)``; for an IP endpoint oss2
  addresses path style (``/bucket/key``). V4: ``oss2.ProviderAuthV4(...)`` with ``region="cn-hangzhou"``.
- ali-oss: ``new OSS({region: "oss-cn-hangzhou", accessKeyId, accessKeySecret, bucket,
  endpoint: "http://127.0.0.1:PORT"})``, nothing else. For an IP endpoint ali-oss sends the request
  to the IP with the path ``/key`` and the header ``Host: <bucket>.oss-cn-hangzhou.aliyuncs.com``
  (the host of ``region``): virtual-host addressing, which the bundled bucket app follows because
  the first label names an existing bucket. ``signatureUrl`` refuses an IP endpoint ("can not get
  the object URL when endpoint is IP"), so the signed-URL examples use ``endpoint:
  "http://localhost:PORT"`` (URLs ``http://<bucket>.localhost:PORT/key?...``, fetched by connecting
  to 127.0.0.1 with that Host, as a ``*.localhost`` DNS entry would) and, for path-style URLs that
  any client can fetch as they are, ``endpoint: "http://localhost:PORT", sldEnable: true``
  (``http://localhost:PORT/<bucket>/key?...``). ``authorizationV4: true`` switches to V4 signatures.

## The C# examples (Aliyun.OSS SDK for .NET) as REST requests

The C# examples of the guides make the same REST requests as the Python and Node.js examples, which
these tests send through oss2 and ali-oss:

| C# example | REST request | sent here by |
|---|---|---|
| `client.PutObject(bucketName, objectName, localImageFilename)` | `PUT /<bucket>/<key>` with a V1 `Authorization: OSS ak:signature` header | `bucket.put_object_from_file(key, file)`, `client.put(key, file)` |
| `client.GetObject(new GetObjectRequest(bucketName, objectName, process))` | `GET /<bucket>/<key>?x-oss-process=<process>`, V1 header signature with `x-oss-process` as a signed sub-resource | `bucket.get_object_to_file(key, file, process=...)`, `client.get(key, file, {process})` |
| "Basic operations": `process` = `image/resize,m_fixed,w_100,h_100`, `image/crop,w_100,h_100,x_100,y_100,r_1`, `image/rotate,90`, `image/sharpen,100`, `image/watermark,text_SGVsbG8g5Zu-54mH5pyN5YqhIQ`, `image/format,png`, `image/info` | as above, one GET each | `test_python_basic_operations`, `test_python_image_info`, `test_node_get_with_process` |
| "Customize an image style": `process = "style/oss-pic-style-w-100"` | `GET ...?x-oss-process=style/oss-pic-style-w-100` | `test_python_style`, `test_node_get_with_process` |
| "Cascade operations": `process = "image/resize,m_fixed,w_100,h_100/rotate,90"` | `GET ...?x-oss-process=image/resize,m_fixed,w_100,h_100/rotate,90` | `test_python_single_and_cascade`, `test_node_get_with_process` |
| `client.GeneratePresignedUri(new GeneratePresignedUriRequest(bucketName, objectName, SignHttpMethod.Get) { Expiration = ..., Process = process })` | a V1 presigned URL `GET /<bucket>/<key>?x-oss-process=<process>&OSSAccessKeyId=..&Expires=..&Signature=..`, `x-oss-process` inside the signature | `bucket.sign_url("GET", key, 600, params={"x-oss-process": ...})`, `client.signatureUrl(key, {expires, process})`: `test_python_sign_url_with_process`, `test_node_signature_url` |
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import oss2
import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from .conftest import FIXTURES, SDK_AK, SDK_BUCKETS, SDK_SK

AK, SK = SDK_AK, SDK_SK
BUCKET, TARGET = SDK_BUCKETS
EXAMPLE = FIXTURES / "example.jpg"            # 400 x 267 JPEG

WATERMARK = "image/watermark,text_SGVsbG8g5Zu-54mH5pyN5YqhIQ"   # "Hello 图片服务!", black, bottom right


# The server: the module-scoped `server` fixture of tests/conftest.py.


# --- helpers ----------------------------------------------------------------------------------------

def image(path_or_bytes) -> Image.Image:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def fetch(url: str, host: str | None = None) -> tuple[int, dict, bytes]:
    """GET a URL; with ``host``, connect to the URL's port on 127.0.0.1 and send that Host (what a
    wildcard DNS entry for ``*.localhost`` would do)."""
    if host is None:
        try:
            with urllib.request.urlopen(url, timeout=20) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=20)
    try:
        conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""), headers={"Host": host})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def error_code(body: bytes) -> str:
    return ET.fromstring(body).findtext("Code")


def b64(text: str) -> str:
    """As the seeds encode saveas names: oss2.compat + base64.urlsafe_b64encode."""
    return oss2.compat.to_string(base64.urlsafe_b64encode(oss2.compat.to_bytes(text)))


def assert_watermarked(result: Image.Image, plain: Image.Image) -> None:
    """Black text at the bottom right (OSS's defaults: g_se, color 000000), the rest untouched."""
    assert result.size == plain.size
    diff = ImageChops.difference(result.convert("L"), plain.convert("L"))
    w, h = plain.size
    assert diff.crop((w // 2, h // 2, w, h)).getextrema()[1] > 100, "no text in the bottom right"
    assert diff.crop((0, 0, w // 2, h // 2)).getextrema()[1] < 40, "the top left changed"


def edge_energy(im: Image.Image) -> float:
    return ImageStat.Stat(im.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


@pytest.fixture(scope="module")
def plain() -> Image.Image:
    return image(EXAMPLE)


def v1_bucket(server, name: str = BUCKET) -> oss2.Bucket:
    # The seeds: oss2.Bucket(oss2.Auth(access_key_id, access_key_secret), endpoint, bucket_name)
    return oss2.Bucket(oss2.Auth(AK, SK), server.base, name)


# --- Python: oss2 -----------------------------------------------------------------------------------

def test_python_single_and_cascade(server, tmp_path):
    """Seeds 000/002 "use a single / multiple IMG parameters", 001 "Cascade operations"."""
    bucket = v1_bucket(server)
    key = "example/example.jpg"
    new_pic = tmp_path / "new_pic.jpg"
    assert bucket.put_object_from_file(key, str(EXAMPLE)).status == 200

    style = "image/resize,m_fixed,w_100,h_100"
    result = bucket.get_object_to_file(key, str(new_pic), process=style)
    assert result.status == 200 and result.headers["Content-Type"] == "image/jpeg"
    im = image(new_pic)
    assert (im.size, im.format) == ((100, 100), "JPEG")

    style = "image/resize,m_fixed,w_100,h_100/rotate,90"
    bucket.get_object_to_file(key, str(new_pic), process=style)
    im = image(new_pic)
    assert (im.size, im.format) == ((100, 100), "JPEG")
    # the rotation really happened: a fixed resize of the 90-degree-rotated source, compared
    unrotated = image(bucket.get_object(key, process="image/resize,m_fixed,w_100,h_100").read())
    rotated_here = unrotated.transpose(Image.Transpose.ROTATE_270)   # 90 degrees clockwise
    assert ImageStat.Stat(ImageChops.difference(im.convert("L"), rotated_here.convert("L"))).mean[0] < 8
    assert ImageStat.Stat(ImageChops.difference(im.convert("L"), unrotated.convert("L"))).mean[0] > 15

    # "After the IMG is complete, you can delete the source image ..."
    bucket.delete_object(key)
    assert not bucket.object_exists(key)
    os.remove(new_pic)


def test_python_style(server, tmp_path):
    """Seeds 000/001/002: style = 'style/oss-pic-style-w-100' (the configured resize,w_100)."""
    bucket = v1_bucket(server)
    key, new_pic = "example.jpg", tmp_path / "example-new.jpg"
    bucket.put_object_from_file(key, str(EXAMPLE))
    bucket.get_object_to_file(key, str(new_pic), process="style/oss-pic-style-w-100")
    im = image(new_pic)
    assert (im.size, im.format) == ((100, 67), "JPEG")


def test_python_basic_operations(server, tmp_path, plain):
    """Seed 001 "Basic operations", verbatim order: upload, six processes, delete, remove."""
    bucket = v1_bucket(server)
    key, new_pic = "basic/example.jpg", str(tmp_path / "example-new.jpg")
    bucket.put_object_from_file(key, str(EXAMPLE))

    bucket.get_object_to_file(key, new_pic, process="image/resize,m_fixed,w_100,h_100")
    assert (image(new_pic).size, image(new_pic).format) == ((100, 100), "JPEG")

    bucket.get_object_to_file(key, new_pic, process="image/crop,w_100,h_100,x_100,y_100,r_1")
    im = image(new_pic)
    assert (im.size, im.format) == ((100, 100), "JPEG")
    expected = plain.crop((100, 100, 200, 200)).convert("L")
    assert ImageStat.Stat(ImageChops.difference(im.convert("L"), expected)).mean[0] < 6

    bucket.get_object_to_file(key, new_pic, process="image/rotate,90")
    im = image(new_pic)
    assert (im.size, im.format) == ((267, 400), "JPEG")
    expected = plain.transpose(Image.Transpose.ROTATE_270).convert("L")     # clockwise
    assert ImageStat.Stat(ImageChops.difference(im.convert("L"), expected)).mean[0] < 6

    bucket.get_object_to_file(key, new_pic, process="image/sharpen,100")
    im = image(new_pic)
    assert (im.size, im.format) == ((400, 267), "JPEG")
    assert edge_energy(im) > edge_energy(plain) * 1.05

    bucket.get_object_to_file(key, new_pic, process=WATERMARK)
    im = image(new_pic)
    assert im.format == "JPEG"
    assert_watermarked(im, plain)

    bucket.get_object_to_file(key, new_pic, process="image/format,png")
    im = image(new_pic)
    assert (im.size, im.format) == ((400, 267), "PNG")

    bucket.delete_object(key)
    assert not bucket.object_exists(key)
    os.remove(new_pic)


def test_python_conditional_download(server):
    """oss2's conditional download, as OSS answers it: a failed If-Match or an If-Unmodified-Since
    before the object's time raises PreconditionFailed (EC 0017-00001001), a matching If-None-Match
    NotModified, and the conditions that hold give the object."""
    bucket = v1_bucket(server)
    key = "conditional/example.jpg"
    bucket.put_object_from_file(key, str(EXAMPLE))
    meta = bucket.get_object_meta(key)
    with pytest.raises(oss2.exceptions.PreconditionFailed) as failed:
        bucket.get_object(key, headers={"If-Match": '"0123"'})
    assert (failed.value.code, failed.value.ec) == ("PreconditionFailed", "0017-00001001")
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object(key, headers={"If-Unmodified-Since": oss2.utils.http_date(meta.last_modified - 3600)})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object(key, headers={"If-None-Match": f'"{meta.etag}"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object(key, headers={"If-Modified-Since": oss2.utils.http_date(meta.last_modified)})
    held = {"If-Match": f'"{meta.etag}"', "If-Unmodified-Since": oss2.utils.http_date(meta.last_modified)}
    assert bucket.get_object(key, headers=held).read() == EXAMPLE.read_bytes()
    bucket.delete_object(key)


def test_python_image_info(server):
    """The C# "Obtain image information" example (process = "image/info"), through oss2."""
    bucket = v1_bucket(server)
    bucket.put_object_from_file("info.jpg", str(EXAMPLE))
    result = bucket.get_object("info.jpg", process="image/info")
    assert result.headers["Content-Type"].startswith("application/json")
    info = json.loads(result.read())
    assert info["ImageWidth"]["value"] == "400" and info["ImageHeight"]["value"] == "267"
    assert info["Format"]["value"] == "jpg"
    assert info["FileSize"]["value"] == str(EXAMPLE.stat().st_size)


def test_python_object_and_bucket_iterators(server):
    """oss2's ObjectIterator pages through ListObjects (marker, max-keys, delimiter, url-encoded keys)
    and BucketIterator through ListBuckets, as a client picking objects would."""
    bucket = v1_bucket(server)
    keys = ["listing/a.jpg", "listing/b c.jpg", "listing/sub/c.jpg", "listing/中.jpg"]
    for key in keys:
        bucket.put_object_from_file(key, str(EXAMPLE))
    found = list(oss2.ObjectIterator(bucket, prefix="listing/", max_keys=2))
    assert [o.key for o in found] == keys
    assert all(o.size == EXAMPLE.stat().st_size and o.etag and o.last_modified > 0 for o in found)
    rolled = list(oss2.ObjectIterator(bucket, prefix="listing/", delimiter="/", max_keys=1))
    assert [(o.key, o.is_prefix()) for o in rolled] == [
        ("listing/a.jpg", False), ("listing/b c.jpg", False), ("listing/sub/", True), ("listing/中.jpg", False)]
    service = oss2.Service(oss2.Auth(AK, SK), server.base)
    assert [b.name for b in oss2.BucketIterator(service)] == [BUCKET, TARGET]


def saveas(style: str, target_image_name: str, taget_bucket_name: str) -> str:
    # the seeds' own formatting of the ProcessObject body
    return "{0}|sys/saveas,o_{1},b_{2}".format(style, b64(target_image_name), b64(taget_bucket_name))


def test_python_process_object_into_another_bucket(server):
    """Seeds 000/002 "IMG persistence": saveas into <yourTargetBucketName>."""
    bucket = v1_bucket(server)
    source_image_name = "example/source.jpg"
    bucket.put_object_from_file(source_image_name, str(EXAMPLE))
    target_image_name = "example/example-resize.jpg"
    result = bucket.process_object(source_image_name,
                                   saveas("image/resize,m_fixed,w_100,h_100", target_image_name, TARGET))
    print(result)
    assert result.status == 200
    assert (result.bucket, result.object, result.process_status) == (TARGET, target_image_name, "OK")
    saved = v1_bucket(server, TARGET).get_object(target_image_name)
    body = saved.read()
    assert result.fileSize == len(body)
    im = image(body)
    assert (im.size, im.format) == ((100, 100), "JPEG")
    assert not bucket.object_exists(target_image_name)     # not in the source bucket


PERSISTENCE = [   # seed 001 "Image processing persistence": (style, target, size, format)
    ("image/resize,m_fixed,w_100,h_100", "example-resize.jpg", (100, 100), "JPEG"),
    ("image/crop,w_100,h_100,x_100,y_100,r_1", "example-crop.jpg", (100, 100), "JPEG"),
    ("image/rotate,90", "example-rotate.jpg", (267, 400), "JPEG"),
    ("image/sharpen,100", "example-sharpen.jpg", (400, 267), "JPEG"),
    (WATERMARK, "example-watermark.jpg", (400, 267), "JPEG"),
    ("image/format,png", "example-formatconvert.png", (400, 267), "PNG"),
]


def test_python_process_object_same_bucket(server, plain):
    """Seed 001: "source_bucket_name and taget_bucket_name are the same bucket", six saveas."""
    bucket = v1_bucket(server)
    source_image_name = "example.jpg"
    bucket.put_object_from_file(source_image_name, str(EXAMPLE))
    for style, target_image_name, size, fmt in PERSISTENCE:
        result = bucket.process_object(source_image_name, saveas(style, target_image_name, BUCKET))
        assert result.status == 200, style
        assert (result.bucket, result.object, result.process_status) == (BUCKET, target_image_name, "OK")
        body = bucket.get_object(target_image_name).read()
        assert result.fileSize == len(body)
        im = image(body)
        assert (im.size, im.format) == (size, fmt), style
        if style == WATERMARK:
            assert_watermarked(im, plain)


def test_python_sign_url_with_process(server):
    """Seeds 000/001/002 "Generate a signed object URL that includes IMG parameters"."""
    bucket = v1_bucket(server)
    key = "example.jpg"
    bucket.put_object_from_file(key, str(EXAMPLE))
    style = "image/resize,m_fixed,w_100,h_100/rotate,90"
    url = bucket.sign_url("GET", key, 10 * 60, params={"x-oss-process": style})
    print(url)
    status, headers, body = fetch(url)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    im = image(body)
    assert (im.size, im.format) == ((100, 100), "JPEG")

    # "OSS does not allow you to add IMG parameters to a signed URL": another process -> 403
    quoted = urllib.parse.quote(style, safe="")
    assert quoted in url
    status, _, body = fetch(url.replace(quoted, urllib.parse.quote("image/resize,w_300", safe="")))
    assert status == 403 and error_code(body) == "SignatureDoesNotMatch"
    plain_url = bucket.sign_url("GET", key, 10 * 60)
    status, _, body = fetch(plain_url + "&x-oss-process=" + quoted)
    assert status == 403 and error_code(body) == "SignatureDoesNotMatch"
    status, _, body = fetch(plain_url)                                # the signed URL as issued
    assert status == 200 and body == EXAMPLE.read_bytes()
    # and the bucket is private: unsigned, with or without a process, is refused
    for unsigned in (f"{server.base}/{BUCKET}/{key}", f"{server.base}/{BUCKET}/{key}?x-oss-process={quoted}"):
        status, _, body = fetch(unsigned)
        assert status == 403 and error_code(body) == "AccessDenied"


def test_python_v4_signatures(server, tmp_path):
    """The same examples with ProviderAuthV4 and a region (oss2's V4 signing)."""
    auth = oss2.ProviderAuthV4(oss2.credentials.StaticCredentialsProvider(AK, SK))
    bucket = oss2.Bucket(auth, server.base, BUCKET, region="cn-hangzhou")
    key, new_pic = "v4/example.jpg", tmp_path / "v4.jpg"
    assert bucket.put_object_from_file(key, str(EXAMPLE)).status == 200
    bucket.get_object_to_file(key, str(new_pic), process="image/resize,m_fixed,w_100,h_100/rotate,90")
    assert (image(new_pic).size, image(new_pic).format) == ((100, 100), "JPEG")
    bucket.get_object_to_file(key, str(new_pic), process="style/oss-pic-style-w-100")
    assert image(new_pic).size == (100, 67)

    result = bucket.process_object(key, saveas("image/resize,m_fixed,w_100,h_100", "v4/saved.jpg", TARGET))
    assert result.status == 200 and result.process_status == "OK"
    assert image(v1_bucket(server, TARGET).get_object("v4/saved.jpg").read()).size == (100, 100)

    style = "image/resize,m_fixed,w_100,h_100/rotate,90"
    url = bucket.sign_url("GET", key, 10 * 60, params={"x-oss-process": style})
    assert "x-oss-signature-version=OSS4-HMAC-SHA256" in url
    status, _, body = fetch(url)
    assert status == 200 and image(body).size == (100, 100)
    quoted = urllib.parse.quote(style, safe="")
    status, _, body = fetch(url.replace(quoted, urllib.parse.quote("image/resize,w_300", safe="")))
    assert status == 403 and error_code(body) == "SignatureDoesNotMatch"


# --- Node.js: ali-oss --------------------------------------------------------------------------------

NODE_PRELUDE = r"""
const OSS = require(process.env.ALI_OSS);
const fs = require('fs');
const http = require('http');
const PORT = Number(process.env.PORT);
const OUT = process.env.OUT;
const accessKeyId = 'test-ak', accessKeySecret = 'test-sk';
const results = {};
// GET a URL by connecting to 127.0.0.1:PORT with the URL's own Host header (a *.localhost DNS entry).
function fetchTo(url, file) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.get({ host: '127.0.0.1', port: PORT, path: u.pathname + u.search, headers: { Host: u.host } },
      res => {
        const chunks = [];
        res.on('data', c => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          if (file) fs.writeFileSync(OUT + '/' + file, body);
          resolve({ status: res.statusCode, type: res.headers['content-type'],
                    text: res.statusCode === 200 ? '' : body.toString() });
        });
      });
    req.on('error', reject);
  });
}
"""

NODE_EPILOGUE = r"""
main().then(() => console.log('RESULTS ' + JSON.stringify(results)))
  .catch(e => { console.error('FAILED', e && e.stack || e);
                if (e && e.status) console.error('status', e.status, 'code', e.code, 'requestId', e.requestId);
                process.exit(1); });
"""


def run_node(ali_oss: Path, server, tmp_path: Path, body: str) -> dict:
    """Run one Node script (prelude + body defining async main() + epilogue); its results object."""
    script = tmp_path / "example.js"
    script.write_text(NODE_PRELUDE + body + NODE_EPILOGUE)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, ALI_OSS=str(ali_oss), PORT=str(server.port), OUT=str(out),
               FIXTURE=str(EXAMPLE))
    done = subprocess.run([shutil.which("node") or "node", str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    report = (f"node exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n"
              f"--- server log (tail)\n{server.output()}")
    assert done.returncode == 0, report
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, report
    return json.loads(lines[-1][len("RESULTS "):])


def test_node_get_with_process(ali_oss, server, tmp_path, plain):
    """client.put, then client.get(key, localFile, {process}) with the guides' process strings."""
    results = run_node(ali_oss, server, tmp_path, r"""
const client = new OSS({
  region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
  bucket: 'examplebucket',
  endpoint: `http://127.0.0.1:${PORT}`,
});
const processes = {
  'resize.jpg': 'image/resize,m_fixed,w_100,h_100',
  'cascade.jpg': 'image/resize,m_fixed,w_100,h_100/rotate,90',
  'style.jpg': 'style/oss-pic-style-w-100',
  'crop.jpg': 'image/crop,w_100,h_100,x_100,y_100,r_1',
  'rotate.jpg': 'image/rotate,90',
  'sharpen.jpg': 'image/sharpen,100',
  'watermark.jpg': 'image/watermark,text_SGVsbG8g5Zu-54mH5pyN5YqhIQ',
  'format.png': 'image/format,png',
  'info.json': 'image/info',
};
async function main() {
  const put = await client.put('node/example.jpg', process.env.FIXTURE);
  results.put = put.res.status;
  for (const [file, processStr] of Object.entries(processes)) {
    const r = await client.get('node/example.jpg', OUT + '/' + file, { process: processStr });
    results[file] = { status: r.res.status, type: r.res.headers['content-type'] };
  }
  const del = await client.delete('node/example.jpg');
  results.delete = del.res.status;
}
""")
    out = tmp_path / "out"
    assert results["put"] == 200 and results["delete"] == 204
    expected = {"resize.jpg": ((100, 100), "JPEG"), "cascade.jpg": ((100, 100), "JPEG"),
                "style.jpg": ((100, 67), "JPEG"), "crop.jpg": ((100, 100), "JPEG"),
                "rotate.jpg": ((267, 400), "JPEG"), "sharpen.jpg": ((400, 267), "JPEG"),
                "watermark.jpg": ((400, 267), "JPEG"), "format.png": ((400, 267), "PNG")}
    for file, (size, fmt) in expected.items():
        assert results[file]["status"] == 200, file
        assert results[file]["type"] == ("image/png" if fmt == "PNG" else "image/jpeg"), file
        im = image(out / file)
        assert (im.size, im.format) == (size, fmt), file
    assert_watermarked(image(out / "watermark.jpg"), plain)
    info = json.loads((out / "info.json").read_text())
    assert (info["ImageWidth"]["value"], info["ImageHeight"]["value"], info["Format"]["value"]) == \
        ("400", "267", "jpg")


def test_node_signature_url(ali_oss, server, tmp_path):
    """Seed 003: the four signatureUrl examples (scale, resize + rotate, style, signUrl w_300)."""
    results = run_node(ali_oss, server, tmp_path, r"""
// The guide's client, endpoint changed. signatureUrl refuses an IP endpoint, so: localhost.
const client = new OSS({
  region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
  bucket: 'examplebucket',
  endpoint: `http://localhost:${PORT}`,
});
// The same with path-style URLs (http://localhost:PORT/examplebucket/key?...).
const pathStyle = new OSS({
  region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
  bucket: 'examplebucket',
  endpoint: `http://localhost:${PORT}`,
  sldEnable: true,
});
const uploader = new OSS({
  region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
  bucket: 'examplebucket',
  endpoint: `http://127.0.0.1:${PORT}`,
});
async function scale () {
  let result = await client.signatureUrl('example.jpg', {expires: 3600, process: 'image/resize,m_fixed,w_100,h_100'});
  return result;
}
async function resize () {
  let result = await client.signatureUrl('example.jpg', {expires: 3600, process: 'image/resize,m_fixed,w_100,h_100/rotate,90'});
  return result;
}
async function style () {
  let result = await client.signatureUrl('example.jpg', {expires: 3600, process: 'style/oss-pic-style-w-100'});
  return result;
}
async function main() {
  results.ipError = '';
  try { uploader.signatureUrl('example.jpg', {expires: 600}); } catch (e) { results.ipError = e.message; }
  await uploader.put('example.jpg', process.env.FIXTURE);
  const urls = {
    scale: await scale(), resize: await resize(), style: await style(),
    signUrl: client.signatureUrl('example.jpg', {expires: 600, 'process' : 'image/resize,w_300'}),
    pathStyle: pathStyle.signatureUrl('example.jpg', {expires: 600, 'process' : 'image/resize,w_300'}),
  };
  console.log("signUrl=" + urls.signUrl);
  results.urls = urls;
  for (const [name, url] of Object.entries(urls)) results[name] = await fetchTo(url, name);
}
""")
    out = tmp_path / "out"
    assert "endpoint is IP" in results["ipError"]
    urls = results["urls"]
    assert urls["scale"].startswith(f"http://{BUCKET}.localhost:{server.port}/example.jpg?")
    assert urls["pathStyle"].startswith(f"http://localhost:{server.port}/{BUCKET}/example.jpg?")
    expected = {"scale": (100, 100), "resize": (100, 100), "style": (100, 67), "signUrl": (300, 200),
                "pathStyle": (300, 200)}
    for name, size in expected.items():
        assert results[name]["status"] == 200, (name, results[name])
        im = image(out / name)
        assert (im.size, im.format) == (size, "JPEG"), name

    # fetched by Python as well: the path-style URL as it is, the virtual-host one through its Host
    status, _, body = fetch(urls["pathStyle"])
    assert status == 200 and image(body).size == (300, 200)
    host = urllib.parse.urlsplit(urls["resize"]).netloc
    status, _, body = fetch(urls["resize"], host=host)
    assert status == 200 and image(body).size == (100, 100)

    # the process string is part of the signature: changing it -> 403
    for name in ("resize", "pathStyle"):
        url = urls[name]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        original = urllib.parse.quote(query["x-oss-process"][0], safe="")
        assert original in url
        tampered = url.replace(original, urllib.parse.quote("image/resize,w_50", safe=""))
        status, _, body = fetch(tampered, host=urllib.parse.urlsplit(url).netloc)
        assert status == 403 and error_code(body) == "SignatureDoesNotMatch", name


def test_node_process_object_save(ali_oss, server, tmp_path):
    """Seed 003 "Permanent store a processed image": processObjectSave into TargetBucketName (and
    into the source bucket, targetBucket omitted)."""
    results = run_node(ali_oss, server, tmp_path, r"""
let client = new OSS({
  bucket: 'examplebucket',
  endpoint: `http://127.0.0.1:${PORT}`,
  accessKeyId, accessKeySecret,
});
let sourceImage = 'node/source.jpg';
let targetImage = 'node/target.jpg';
async function processImage(processStr, targetBucket) {
  let result = await client.processObjectSave(
    sourceImage,
    targetImage,
    processStr,
    targetBucket
  );
  console.log(result.res.status);
  return result;
}
async function main() {
  await client.put(sourceImage, process.env.FIXTURE);
  let r = await processImage("image/resize,m_fixed,w_100,h_100", "targetbucket");
  results.other = { status: r.status, body: JSON.parse(r.res.data.toString()) };
  targetImage = 'node/target-same+bucket.png';
  r = await processImage("image/resize,m_fixed,w_100,h_100/rotate,90/format,png");
  results.same = { status: r.status, body: JSON.parse(r.res.data.toString()) };
}
""")
    assert results["other"]["status"] == 200
    body = results["other"]["body"]
    assert (body["bucket"], body["object"], body["status"]) == (TARGET, "node/target.jpg", "OK")
    saved = v1_bucket(server, TARGET).get_object("node/target.jpg").read()
    assert body["fileSize"] == len(saved)
    assert (image(saved).size, image(saved).format) == ((100, 100), "JPEG")
    assert not v1_bucket(server).object_exists("node/target.jpg")

    assert results["same"]["status"] == 200
    body = results["same"]["body"]
    assert (body["object"], body["status"]) == ("node/target-same+bucket.png", "OK")
    saved = v1_bucket(server).get_object("node/target-same+bucket.png").read()
    assert body["fileSize"] == len(saved)
    assert (image(saved).size, image(saved).format) == ((100, 100), "PNG")


def test_node_v4_signatures(ali_oss, server, tmp_path):
    """ali-oss with authorizationV4: put, get with process, processObjectSave, signatureUrlV4."""
    results = run_node(ali_oss, server, tmp_path, r"""
const client = new OSS({
  region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
  bucket: 'examplebucket',
  endpoint: `http://127.0.0.1:${PORT}`,
  authorizationV4: true,
});
const signer = new OSS({
  region: 'oss-cn-hangzhou', accessKeyId, accessKeySecret,
  bucket: 'examplebucket',
  endpoint: `http://localhost:${PORT}`,
  sldEnable: true,
  authorizationV4: true,
});
async function main() {
  results.put = (await client.put('node4/example.jpg', process.env.FIXTURE)).res.status;
  const r = await client.get('node4/example.jpg', OUT + '/cascade.jpg',
                             { process: 'image/resize,m_fixed,w_100,h_100/rotate,90' });
  results.get = r.res.status;
  const s = await client.processObjectSave('node4/example.jpg', 'node4/saved.jpg',
                                           'image/resize,m_fixed,w_100,h_100', 'targetbucket');
  results.save = { status: s.status, body: JSON.parse(s.res.data.toString()) };
  const url = await signer.signatureUrlV4('GET', 600,
    { queries: { 'x-oss-process': 'image/resize,w_300' } }, 'node4/example.jpg');
  results.url = url;
  results.signed = await fetchTo(url, 'signed.jpg');
}
""")
    out = tmp_path / "out"
    assert results["put"] == 200 and results["get"] == 200
    assert image(out / "cascade.jpg").size == (100, 100)
    assert results["save"]["status"] == 200 and results["save"]["body"]["status"] == "OK"
    assert image(v1_bucket(server, TARGET).get_object("node4/saved.jpg").read()).size == (100, 100)
    assert "x-oss-signature-version=OSS4-HMAC-SHA256" in results["url"]
    assert results["signed"]["status"] == 200 and image(out / "signed.jpg").size == (300, 200)
    tampered = results["url"].replace("image%2Fresize%2Cw_300", "image%2Fresize%2Cw_50")
    assert tampered != results["url"]
    status, _, body = fetch(tampered)
    assert status == 403 and error_code(body) == "SignatureDoesNotMatch"
