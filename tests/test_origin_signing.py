"""A private object store as the origin (issue 16): the reverse proxy signs its own upstream requests.

Against real stores on loopback, each started here and stopped at the end:
(a) moto's S3 server with IAM authentication on: a private bucket, keys, signatures and session
    tokens checked as S3 checks them; the proxy signs with botocore (SigV4), path-style and
    virtual-host style, in process and through `imgmiddleware serve --upstream`;
(b) `imgmiddleware serve`'s own OSS-compatible bucket app with a key and a private bucket: the proxy
    signs OSS V1 and V4 with auth.py, the code that verifies it there;
(c) a recording HTTP origin: what a signed request carries and what of the client's never leaves.
Every check is what a user sees: status, dimensions, headers, the error's Code and EC.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import oss2
import pytest
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from imgmiddleware import Config, ImageMiddleware
from imgmiddleware.auth import SignedRequest, sign_v1, sign_v4, verify
from imgmiddleware.cli import build_app
from imgmiddleware.origins.proxy import ProxyApp, proxy_from_config
from imgmiddleware.origins.proxy.signing import signer_from_config

from .conftest import closed, oss_error, size_of
from .servers import free_port, start_serve, stop, wait_for

SAMPLE = Path(__file__).resolve().parent.parent / "imgmiddleware" / "samples" / "example.jpg"
BUCKET = "photos"
CLIENTS = {"client-key": "client-secret"}          # the proxy's own clients (Config.credentials)
RESIZE = "image/resize,w_100"                      # example.jpg 400x267 -> 100x67
SPACED = "dir/two  spaces.jpg"                     # a key the path encoding and signatures must agree on
# More of them, for the OSS store only: moto's signature check gets these wrong even for botocore's
# own client (the proxy's requests pass and fail exactly where botocore's do).
ODD = "dir/图片 1+2%;@=&.jpg"


def http(url: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
    """(status, headers, body) of one real HTTP request, errors included."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def xml_error(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    return {child.tag: child.text or "" for child in root}


# --- (a) moto's S3 server, IAM authentication on ---------------------------------------------------

class Moto:
    """moto's server on a free loopback port; a user with a key allowed s3:*, session credentials of
    a role, and the private bucket "photos" with example.jpg."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "moto.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)

    def client(self, service: str, key: str = "setup", secret: str = "setup"):
        """A botocore client of moto (any key works until setup() turns authentication on)."""
        from botocore.session import Session

        return Session().create_client(service, endpoint_url=self.url, region_name="us-east-1",
                                       aws_access_key_id=key, aws_secret_access_key=secret)

    def setup(self) -> None:
        wait_for(self.url + "/moto-api/", self.proc, timeout=30)
        iam = self.client("iam")
        iam.create_user(UserName="imgmw")
        access = iam.create_access_key(UserName="imgmw")["AccessKey"]
        self.key, self.secret = access["AccessKeyId"], access["SecretAccessKey"]
        allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                         "Resource": "*"}]}
        iam.put_user_policy(UserName="imgmw", PolicyName="s3", PolicyDocument=json.dumps(allow))
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"AWS": "*"}}]}
        role = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_role_policy(RoleName="reader", PolicyName="s3", PolicyDocument=json.dumps(allow))
        session = self.client("sts", self.key, self.secret).assume_role(
            RoleArn=role["Arn"], RoleSessionName="imgmw-proxy")["Credentials"]
        self.session = (session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"])
        s3 = self.client("s3")
        s3.create_bucket(Bucket=BUCKET)          # private: S3's default ACL
        for key in ("example.jpg", SPACED):
            s3.put_object(Bucket=BUCKET, Key=key, Body=SAMPLE.read_bytes(), ContentType="image/jpeg")
        # From here on every request must be signed by a known key, as on S3.
        status, _, body = http(self.url + "/moto-api/reset-auth", "POST", {"Content-Type": "text/plain"},
                               b"0")
        assert status == 200, body

    def admin(self):
        return self.client("s3", self.key, self.secret)

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    store = Moto(tmp_path_factory.mktemp("moto"))
    try:
        store.setup()
        yield store
    finally:
        store.close()


def s3_config(moto: Moto, **settings) -> Config:
    values = dict(upstream=moto.url, upstream_bucket=BUCKET, upstream_signing="s3",
                  upstream_access_key_id=moto.key, upstream_access_key_secret=moto.secret,
                  credentials=CLIENTS)
    return Config(**{**values, **settings})


def client_of(config: Config) -> Client:
    """The embedded default's app for these settings (cli.build_app), in process."""
    return Client(build_app("", config))


def presigned(method: str, key: str, secret: str = "client-secret") -> tuple[str, str]:
    """(path, query) of a V1 URL oss2 signs for the proxy's bucket on its own domain (is_cname)."""
    bucket = oss2.Bucket(oss2.Auth("client-key", secret), "http://proxy.example", BUCKET, is_cname=True)
    url = urllib.parse.urlsplit(bucket.sign_url(method, key, 600))
    return url.path, url.query


def signed_call(app, method: str, path: str, key: str, query: str = "", data: bytes | None = None,
                headers: dict | None = None):
    """(status, headers, body) of a request signed V1 in its header by client-key, run in process."""
    environ = EnvironBuilder(path=path, method=method, query_string=query, data=data,
                             headers=headers).get_environ()
    date = formatdate(usegmt=True)
    environ["HTTP_DATE"] = date
    environ["HTTP_AUTHORIZATION"] = sign_v1(SignedRequest.from_environ(environ, BUCKET, key),
                                            "client-key", "client-secret", date)
    body, status, answer = run_wsgi_app(app, environ)
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return int(status.split()[0]), answer, data


def saveas_body(name: str) -> bytes:
    target = base64.urlsafe_b64encode(name.encode()).decode()
    return f"x-oss-process={RESIZE}|sys/saveas,o_{target}".encode()


def test_the_bucket_behind_the_proxy_is_private(moto):
    status, _, _ = http(f"{moto.url}/{BUCKET}/example.jpg")
    assert status == 403
    status, _, _ = http(f"http://localhost:{moto.port}/example.jpg", headers={"Host": f"{BUCKET}.localhost"})
    assert status == 403


@pytest.mark.parametrize("endpoint, addressing, host, target", [
    ("http://127.0.0.1:{port}", "auto", "127.0.0.1:{port}", "/photos/example.jpg"),   # an IP: path style
    ("http://localhost:{port}", "path", "localhost:{port}", "/photos/example.jpg"),
    ("http://localhost:{port}", "virtual", "photos.localhost:{port}", "/example.jpg"),
])
def test_processed_images_from_a_private_bucket_path_and_virtual_host(moto, endpoint, addressing, host,
                                                                     target):
    config = s3_config(moto, upstream=endpoint.format(port=moto.port), upstream_addressing=addressing)
    proxy = proxy_from_config(config)
    assert proxy.host_header == host.format(port=moto.port)
    assert proxy.target({"PATH_INFO": "/example.jpg", "QUERY_STRING": ""}) == target
    client = client_of(config)
    response = closed(client.get("/example.jpg", query_string={"x-oss-process": RESIZE}))
    assert response.status_code == 200, response.get_data()[:300]
    assert response.headers["Content-Type"] == "image/jpeg" and size_of(response.get_data()) == (100, 67)
    etag = moto.admin().head_object(Bucket=BUCKET, Key="example.jpg")["ETag"]
    assert response.headers["ETag"] == etag                      # the store's ETag, as OSS keeps it
    # the original stays private: a plain GET or HEAD needs a client's signature
    for method in ("GET", "HEAD"):
        plain = closed(client.open("/example.jpg", method=method))
        assert plain.status_code == 403
    error = oss_error(closed(client.get("/example.jpg")))
    assert (error["Code"], error["EC"]) == ("AccessDenied", "0003-00000001")
    spaced = closed(client.get("/" + urllib.parse.quote(SPACED), query_string={"x-oss-process": RESIZE}))
    assert spaced.status_code == 200 and size_of(spaced.get_data()) == (100, 67)


class Recorder:
    """A WSGI layer between the middleware and the proxy: what each subrequest asked and got."""

    def __init__(self, app) -> None:
        self.app, self.seen = app, []

    def __call__(self, environ, start_response):
        def recording(status, headers, exc_info=None):
            self.seen.append((environ.get("HTTP_IF_NONE_MATCH"), int(status.split()[0])))
            return start_response(status, headers, exc_info)
        return self.app(environ, recording)


def test_the_bucket_name_keys_acl_and_source_image_protection(moto):
    """The OSS surface applies to the proxied bucket by its name, as to a bundled bucket."""
    protected = client_of(s3_config(moto, protected={BUCKET: {"prefixes": [""]}},
                                    styles={"small": RESIZE}))
    error = oss_error(closed(protected.get("/example.jpg", query_string={"x-oss-process": RESIZE})))
    assert (error["status"], error["Code"], error["EC"]) == (403, "AccessDenied", "0040-00000031")
    styled = closed(protected.get("/example.jpg", query_string={"x-oss-process": "style/small"}))
    assert styled.status_code == 200 and size_of(styled.get_data()) == (100, 67)
    private = client_of(s3_config(moto, bucket_acl={BUCKET: "private"}))
    error = oss_error(closed(private.get("/example.jpg", query_string={"x-oss-process": RESIZE})))
    assert (error["status"], error["Code"], error["EC"]) == (403, "AccessDenied", "0003-00000001")
    path, query = presigned("GET", "example.jpg")      # a signed client still gets the original
    assert closed(private.get(path, query_string=query)).get_data() == SAMPLE.read_bytes()
    public = client_of(s3_config(moto, upstream_originals="public-read"))
    assert closed(public.get("/example.jpg")).get_data() == SAMPLE.read_bytes()


def test_the_cache_revalidates_with_a_signed_conditional_get(moto):
    config = s3_config(moto, cache_memory_bytes=16 << 20)
    proxy = proxy_from_config(config)
    recorder = Recorder(proxy)
    client = Client(ImageMiddleware(recorder, config, addressing=proxy.addressing))
    first = closed(client.get("/example.jpg", query_string={"x-oss-process": "image/resize,w_80"}))
    assert first.status_code == 200 and first.headers["x-imgmw-cache"] == "miss"
    recorder.seen.clear()
    second = closed(client.get("/example.jpg", query_string={"x-oss-process": "image/resize,w_80"}))
    assert second.status_code == 200 and second.headers["x-imgmw-cache"] == "revalidated"
    assert second.get_data() == first.get_data()
    assert recorder.seen == [(first.headers["ETag"], 304)]      # the store's 304 to our signed If-None-Match
    # the client's own conditional GET: the store's 304 is the answer
    third = closed(client.get("/example.jpg", query_string={"x-oss-process": "image/resize,w_80"},
                              headers={"If-None-Match": first.headers["ETag"]}))
    assert third.status_code == 304


def test_wrong_credentials_are_a_clean_oss_error(moto):
    cases = [
        (dict(upstream_access_key_secret="not-the-secret"), "SignatureDoesNotMatch", "0002-00000040"),
        (dict(upstream_access_key_id="AKIAUNKNOWNKEY000000"), "InvalidAccessKeyId", None),
        # a role's key without its session token
        (dict(upstream_access_key_id=moto.session[0], upstream_access_key_secret=moto.session[1]),
         "InvalidAccessKeyId", None),
    ]
    for settings, code, ec in cases:
        client = client_of(s3_config(moto, **settings))
        # a processed GET by anyone, a plain GET by a signed client
        for path, query in (("/example.jpg", {"x-oss-process": RESIZE}), presigned("GET", "example.jpg")):
            response = closed(client.get(path, query_string=query))
            error = oss_error(response)
            assert (error["status"], error["Code"], error.get("EC")) == (403, code, ec), (settings, path)
            assert "refused the request it signed" in error["Message"]
            assert response.headers["Cache-Control"] == "no-store"
            body = response.get_data()
            # nothing of the store's answer: neither our key id nor its canonical request
            for leak in (b"AWSAccessKeyId", b"StringToSign", b"CanonicalRequest",
                         (settings.get("upstream_access_key_id") or moto.key).encode()):
                assert leak not in body
        path, query = presigned("HEAD", "example.jpg")
        head = closed(client.head(path, query_string=query))
        assert head.status_code == 403 and head.get_data() == b""


def test_session_credentials_are_sent_with_their_token(moto):
    key, secret, token = moto.session
    client = client_of(s3_config(moto, upstream_access_key_id=key, upstream_access_key_secret=secret,
                                 upstream_session_token=token))
    response = closed(client.get("/example.jpg", query_string={"x-oss-process": RESIZE}))
    assert response.status_code == 200 and size_of(response.get_data()) == (100, 67)


def test_signed_clients_read_originals_and_write(moto):
    config = s3_config(moto)
    client = client_of(config)
    path, query = presigned("GET", "example.jpg")
    original = closed(client.get(path, query_string=query))
    assert original.status_code == 200 and original.get_data() == SAMPLE.read_bytes()
    path, query = presigned("GET", "example.jpg", secret="wrong")
    assert oss_error(closed(client.get(path, query_string=query)))["Code"] == "SignatureDoesNotMatch"
    # PUT: a signed client writes through our credentials, an anonymous one cannot
    path, query = presigned("PUT", "uploads/new.jpg")
    put = closed(client.put(path, query_string=query, data=SAMPLE.read_bytes()))
    assert put.status_code == 200, put.get_data()
    admin = moto.admin()
    assert admin.get_object(Bucket=BUCKET, Key="uploads/new.jpg")["Body"].read() == SAMPLE.read_bytes()
    denied = oss_error(closed(client.put("/uploads/anonymous.jpg", data=b"x")))
    assert (denied["status"], denied["Code"], denied["EC"]) == (403, "AccessDenied", "0003-00000001")
    # saveas: a signed client's result is stored; an anonymous one's is refused at the PUT
    status, _, body = signed_call(build_app("", config), "POST", "/example.jpg", "example.jpg",
                                  "x-oss-process", saveas_body("uploads/saved.jpg"))
    assert status == 200, body
    saved = admin.get_object(Bucket=BUCKET, Key="uploads/saved.jpg")["Body"].read()
    assert size_of(saved) == (100, 67)
    refused = closed(client.post("/example.jpg", query_string="x-oss-process",
                                 data=saveas_body("uploads/anonymous-saved.jpg")))
    assert refused.status_code == 403
    with pytest.raises(admin.exceptions.ClientError, match="404"):
        admin.head_object(Bucket=BUCKET, Key="uploads/anonymous-saved.jpg")
    # no listing of the bucket through our keys
    assert oss_error(closed(client.get("/")))["Code"] == "InvalidObjectName"


def test_imgmiddleware_serve_in_front_of_a_private_s3_bucket(moto, tmp_path):
    """The real command: settings from a file, the session credentials from AWS_* in the
    environment (botocore's chain), one gunicorn worker; URLs signed by an OSS SDK for originals."""
    key, secret, token = moto.session
    config = tmp_path / "imgmiddleware.toml"
    config.write_text(f'upstream_bucket = "{BUCKET}"\nupstream_signing = "s3"\n'
                      '[credentials]\nclient-key = "client-secret"\n')
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=token,
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = start_serve(["--upstream", moto.url, "--bind", f"127.0.0.1:{port}", "--workers", "1",
                         "--threads", "2"], config, env=env)
    try:
        wait_for(base + "/example.jpg", serve)
        url = base + "/example.jpg?x-oss-process=" + RESIZE
        status, headers, body = http(url)
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and size_of(body) == (100, 67)
        status, headers, _ = http(url)
        assert status == 200 and headers["x-imgmw-cache"] == "revalidated"
        status, headers, body = http(base + "/example.jpg")
        assert status == 403 and xml_error(body)["Code"] == "AccessDenied"
        assert headers["x-oss-ec"] == "0003-00000001"
        # URLs oss2 signs for the bucket on its own domain (an SDK treats an IP endpoint as path style)
        path, query = presigned("GET", "example.jpg")
        status, _, body = http(f"{base}{path}?{query}")
        assert status == 200 and body == SAMPLE.read_bytes()
        path, query = presigned("HEAD", "example.jpg")
        status, headers, _ = http(f"{base}{path}?{query}", "HEAD")
        assert status == 200 and headers["Content-Length"] == str(SAMPLE.stat().st_size)
    finally:
        stop(serve)


# --- (b) the bundled OSS-compatible bucket app as a private OSS upstream -----------------------------

@pytest.fixture(scope="module")
def oss_store(tmp_path_factory):
    """`imgmiddleware serve` over a root with a private bucket "photos" and one key of its own."""
    root = tmp_path_factory.mktemp("oss-root")
    (root / BUCKET / "dir").mkdir(parents=True)
    shutil.copy(SAMPLE, root / BUCKET / "example.jpg")
    shutil.copy(SAMPLE, root / BUCKET / ODD)
    config = root.parent / (root.name + ".toml")
    config.write_text('[credentials]\nupstream-key = "upstream-secret"\n'
                      f'[bucket_acl]\n{BUCKET} = "private"\n')
    port = free_port()
    serve = start_serve(["--root", str(root), "--bind", f"127.0.0.1:{port}", "--workers", "1",
                         "--threads", "2"], config)
    try:
        wait_for(f"http://127.0.0.1:{port}/", serve)
        yield {"port": port, "root": root}
    finally:
        stop(serve)


def oss_config(store, signing: str, endpoint: str, **settings) -> Config:
    values = dict(upstream=endpoint.format(port=store["port"]), upstream_bucket=BUCKET,
                  upstream_signing=signing, upstream_region="cn-hangzhou",
                  upstream_access_key_id="upstream-key", upstream_access_key_secret="upstream-secret",
                  credentials=CLIENTS)
    return Config(**{**values, **settings})


def test_the_oss_bucket_is_private(oss_store):
    status, _, body = http(f"http://127.0.0.1:{oss_store['port']}/{BUCKET}/example.jpg")
    assert status == 403 and xml_error(body)["Code"] == "AccessDenied"


@pytest.mark.parametrize("signing, endpoint, addressing", [
    ("oss-v1", "http://127.0.0.1:{port}", "auto"),          # path style
    ("oss-v4", "http://localhost:{port}", "virtual"),       # Host: photos.localhost
    ("oss-v4", "http://127.0.0.1:{port}", "path"),
    ("oss-v1", "http://localhost:{port}", "virtual"),
])
def test_oss_v1_and_v4_signing(oss_store, signing, endpoint, addressing):
    config = oss_config(oss_store, signing, endpoint, upstream_addressing=addressing)
    client = client_of(config)
    response = closed(client.get("/example.jpg", query_string={"x-oss-process": RESIZE}))
    assert response.status_code == 200, response.get_data()[:300]
    assert size_of(response.get_data()) == (100, 67)
    again = closed(client.get("/example.jpg", query_string={"x-oss-process": RESIZE}))
    assert again.headers["x-imgmw-cache"] == "revalidated"            # the bucket's 304, signed
    odd = closed(client.get("/" + urllib.parse.quote(ODD), query_string={"x-oss-process": RESIZE}))
    assert odd.status_code == 200 and size_of(odd.get_data()) == (100, 67)
    path, query = presigned("GET", "example.jpg")
    original = closed(client.get(path, query_string=query))
    assert original.status_code == 200 and original.get_data() == SAMPLE.read_bytes()
    ranged = closed(client.get(path, query_string=query, headers={"Range": "bytes=0-99"}))
    assert ranged.status_code == 206 and ranged.get_data() == SAMPLE.read_bytes()[:100]
    # a write through the OSS signature: saveas by a signed client lands in the private bucket
    name = f"saved-{signing}-{addressing}.jpg"
    status, _, body = signed_call(build_app("", config), "POST", "/example.jpg", "example.jpg",
                                  "x-oss-process", saveas_body(name))
    assert status == 200, body
    assert size_of((oss_store["root"] / BUCKET / name).read_bytes()) == (100, 67)


@pytest.mark.parametrize("signing", ["oss-v1", "oss-v4"])
def test_a_wrong_oss_secret_is_a_clean_signature_error(oss_store, signing):
    client = client_of(oss_config(oss_store, signing, "http://127.0.0.1:{port}",
                                  upstream_access_key_secret="not-the-secret"))
    response = closed(client.get("/example.jpg", query_string={"x-oss-process": RESIZE}))
    error = oss_error(response)
    assert (error["status"], error["Code"], error["EC"]) == (403, "SignatureDoesNotMatch", "0002-00000040")
    assert b"StringToSign" not in response.get_data() and b"upstream-key" not in response.get_data()


# --- (c) what a signed request carries ---------------------------------------------------------------

class Seen(BaseHTTPRequestHandler):
    """Records each request's line and headers; answers 200 with the sample image."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        data = SAMPLE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("ETag", '"sample"')
        self.send_header("Content-Length", "0" if self.command == "PUT" else str(len(data)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = answer


@pytest.fixture(scope="module")
def recording_origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Seen)
    server.daemon_threads = True
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# The client's own signing and copy headers, metadata of both dialects, a conditional and a range.
CLIENT_HEADERS = {"x-amz-copy-source": "/other-bucket/secret.jpg", "x-amz-security-token": "theirs",
                  "x-oss-security-token": "theirs", "x-amz-meta-who": "client", "x-oss-meta-who": "client",
                  "If-None-Match": '"abc"', "Range": "bytes=0-9", "Cookie": "session=1"}


@pytest.mark.parametrize("signing", ["s3", "oss-v1", "oss-v4"])
def test_a_signed_request_carries_our_signature_and_nothing_of_the_clients(recording_origin, signing):
    origin = recording_origin
    config = Config(upstream=f"http://localhost:{origin.server_port}", upstream_bucket=BUCKET,
                    upstream_addressing="virtual", upstream_signing=signing, upstream_region="eu-west-1",
                    upstream_access_key_id="PROXYKEY", upstream_access_key_secret="proxy-secret",
                    upstream_session_token="proxy-token", credentials=CLIENTS)
    app = proxy_from_config(config)
    key = "dir/a b+c.jpg"
    for method in ("GET", "HEAD", "PUT"):
        del origin.seen[:]
        # a signed client; sub-resources and signature parameters of other schemes in the query
        query = "versionId=v%2B1&acl&X-Amz-Credential=theirs&x-oss-process=image/info"
        status, _, _ = signed_call(app, method, "/dir/a%20b%2Bc.jpg", key, query,
                                   b"body" if method == "PUT" else None, CLIENT_HEADERS)
        assert status == 200
        [(sent_method, target, headers)] = origin.seen
        assert (sent_method, target) == (method, "/dir/a%20b%2Bc.jpg?versionId=v%2B1")
        assert headers["host"] == f"{BUCKET}.localhost:{origin.server_port}"
        assert "x-amz-copy-source" not in headers and "cookie" not in headers
        assert headers["if-none-match"] == '"abc"' and headers["range"] == "bytes=0-9"
        kept, dropped = ("x-amz-meta-who", "x-oss-meta-who") if signing == "s3" else \
            ("x-oss-meta-who", "x-amz-meta-who")
        assert (kept in headers) == (method == "PUT") and dropped not in headers
        assert not headers["authorization"].startswith("OSS client-key")     # ours, never the client's
        if signing == "s3":
            auth = headers["authorization"]
            assert auth.startswith("AWS4-HMAC-SHA256 Credential=PROXYKEY/")
            assert "/eu-west-1/s3/aws4_request" in auth
            signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
            assert {"host", "if-none-match", "range", "x-amz-date", "x-amz-security-token"} <= set(signed)
            assert headers["x-amz-security-token"] == "proxy-token" and "x-oss-security-token" not in headers
            # a GET's empty body is hashed; a PUT's streams through unhashed
            empty = hashlib.sha256(b"").hexdigest()
            assert headers["x-amz-content-sha256"] == ("UNSIGNED-PAYLOAD" if method == "PUT" else empty)
            assert "date" not in headers                          # the client's Date is not passed on
        else:
            assert headers["x-oss-security-token"] == "proxy-token" and "x-amz-security-token" not in headers
            # the store's own check: auth.verify, as the bundled bucket app runs it
            request = SignedRequest(method, headers, [("versionId", "v+1")], BUCKET, key)
            assert verify(request, {"PROXYKEY": "proxy-secret"}) == "PROXYKEY"
            if signing == "oss-v4":
                assert headers["authorization"].startswith("OSS4-HMAC-SHA256 Credential=PROXYKEY/")
                assert "AdditionalHeaders=if-none-match;range," in headers["authorization"]
            else:
                assert headers["authorization"].startswith("OSS PROXYKEY:")


def test_signing_matches_the_spec_vectors_both_ways():
    """auth.sign_v1 / sign_v4 are the verifier's functions: spec §10 #33 and #38."""
    date = "Sun, 12 Nov 2023 16:42:40 GMT"
    v1 = SignedRequest("GET", {"date": date}, [("x-oss-process", "image/resize,w_100")], "bucket",
                       "example.jpg")
    assert sign_v1(v1, "ak", "sk", date) == "OSS ak:1LjiIjjjgvNcIsa2f1Hui6pzM4s="
    v4 = SignedRequest("PUT", {"x-oss-head1": "value", "content-type": "text/plain",
                               "x-oss-content-sha256": "UNSIGNED-PAYLOAD", "x-oss-date": "20231216T162057Z"},
                       [("param1", "value1"), ("+param1", "value3"), ("|param1", "value4"), ("+param2", ""),
                        ("|param2", ""), ("param2", "")], "bucket", "1234+-/123/1.txt")
    assert sign_v4(v4, "ak", "sk", "cn-hangzhou", "20231216T162057Z") == (
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe")


# --- settings --------------------------------------------------------------------------------------

def test_settings_that_do_not_fit_are_refused():
    for bad in (dict(upstream_signing="s3"),                                  # no bucket
                dict(upstream_bucket=BUCKET, upstream_signing="sigv2"),
                dict(upstream_bucket="Not_A_Bucket"),
                dict(upstream_bucket=BUCKET, upstream_signing="oss-v4"),       # no region
                dict(upstream_addressing="dns"), dict(upstream_originals="public"),
                dict(upstream_access_key_id="AK")):                            # no secret
        with pytest.raises(ValueError):
            Config(**bad)
    # an endpoint with a bucket takes no path; missing credentials are named, never a secret shown
    with pytest.raises(ValueError, match="without a path"):
        ProxyApp("http://127.0.0.1:9000/photos", bucket=BUCKET)
    config = Config(upstream="http://127.0.0.1:9000", upstream_bucket=BUCKET, upstream_signing="oss-v1")
    with pytest.raises(ValueError, match="OSS_ACCESS_KEY_ID"):
        signer_from_config(config, environ={})
    signer = signer_from_config(config, environ={"OSS_ACCESS_KEY_ID": "envkey",
                                                 "OSS_ACCESS_KEY_SECRET": "env-secret",
                                                 "OSS_SESSION_TOKEN": "env-token"})
    credentials = signer.credentials()
    assert (credentials.access_key, credentials.token) == ("envkey", "env-token")
    assert "env-secret" not in repr(credentials) and "env-token" not in repr(credentials)
    secret = Config(upstream_access_key_id="AK", upstream_access_key_secret="the-secret",
                    upstream_session_token="the-token")
    assert "the-secret" not in repr(secret) and "the-token" not in repr(secret)
    loaded = Config.load(None, environ={"IMGMW_UPSTREAM_ACCESS_KEY_ID": "AK",
                                        "IMGMW_UPSTREAM_ACCESS_KEY_SECRET": "from-env"})
    assert loaded.upstream_access_key_secret == "from-env"
