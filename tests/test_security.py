"""Security checks not covered elsewhere (docs/SECURITY.md maps each defence to its tests).

Already covered, not repeated here: plain traversal of object keys (test_bucket.py::test_traversal_*),
watermark keys escaping the root (test_watermark.py::test_keys_cannot_escape_the_root), saveas
targets with '..' (test_oss_surface.py::test_saveas_bad_requests), signature tampering and expiry at
the verifier (test_auth.py).
"""

from __future__ import annotations

import base64
import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

from imgmiddleware import ImageMiddleware
from imgmiddleware.origins.static import static_app

from .conftest import FIXTURES, get, make_client
from .test_bucket import (
    SECRET,
    client_for,
    files_under,
    make_root,
    send,
    v1_headers,
    v1_presigned,
)
from .test_oss_surface import post_saveas, saveas_body

pytestmark = [pytest.mark.filterwarnings("ignore:Content-Length and the number of bytes")]

BUCKET = "examplebucket"
CREDS = {"ak": "sk"}


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def xml_error(response) -> ET.Element:
    """The body must be well-formed XML whatever the client sent."""
    assert response.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(response.get_data())
    assert root.tag == "Error"
    return root


# ---------------------------------------------------------------------------------------------------
# Error bodies escape user text

HOSTILE_TEXT = ["<script>alert(1)</script>", "]]>", "a&b&amp;", "\"'quotes'\"", "<![CDATA[x]]>",
                "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;"]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_error_bodies_escape_the_process_string(text):
    client = make_client()
    for process in (text, f"image/{text}", f"image/resize,m_{text}", f"style/{text}"):
        response = get(client, "example.jpg", process)
        assert 400 <= response.status_code < 500
        message = xml_error(response).findtext("Message")
        assert message
        if process.startswith("image/resize,m_"):    # the value up to the next '/' is echoed
            # (the test client sends a space as '+', which x-oss-process keeps literally: base64)
            echoed = text.split("/")[0].replace(" ", "+")
            assert f"The value: {echoed} of parameter: m" in message, (process, message)
        assert b"<script>" not in response.get_data()


def test_error_bodies_round_trip_the_rejected_value():
    client = make_client()
    value = "<b>&\"']]>"
    message = xml_error(get(client, "example.jpg", f"image/resize,m_{value}")).findtext("Message")
    assert message == f"The value: {value} of parameter: m is invalid."


def test_control_characters_in_the_process_string_keep_the_xml_well_formed():
    """Found by tests/test_fuzz.py: a %08 in x-oss-process was echoed raw and broke the XML body."""
    client = make_client()
    for char in ("\x00", "\x08", "\x1b", "\x0c", "\ufffe"):
        response = get(client, "example.jpg", f"image/resize,m_a{char}b")
        message = xml_error(response).findtext("Message")
        assert message == "The value: a\ufffdb of parameter: m is invalid.", repr(message)


@pytest.mark.parametrize("key", ["<script>.jpg", "a&b.jpg", "]]>.jpg", "q\"'.jpg"])
def test_error_bodies_escape_the_key(tmp_path, key):
    root = make_root(tmp_path)
    client = client_for(root, lint=False)
    response = send(client, "GET", BUCKET, key, query=[("x-oss-process", "image/resize,w_10")])
    element = xml_error(response)
    assert element.findtext("Code") == "NoSuchKey"
    key_text = element.findtext("Key")
    assert key_text is None or key_text == key


# ---------------------------------------------------------------------------------------------------
# Style names

@pytest.mark.parametrize("name", ["../thumb", "thumb/../x", "<script>", "thumb|style/../x", "thumb%00",
                                  "a" * 5000, "image/resize,w_10", "style/thumb"])
def test_style_name_injection(name):
    client = make_client(styles={"thumb": "image/resize,w_10"})
    response = get(client, "example.jpg", f"style/{name}")
    assert response.status_code in (400, 404), (name, response.status_code)
    element = xml_error(response)
    assert element.findtext("Code") in ("NoSuchStyle", "InvalidArgument"), name


def test_a_style_cannot_name_another_style_or_saveas():
    client = make_client(styles={"thumb": "image/resize,w_10", "loop": "style/thumb",
                                 "save": "image/resize,w_10|sys/saveas,o_eC5qcGc"})
    assert get(client, "example.jpg", "style/thumb").status_code == 200
    assert get(client, "example.jpg", "style/loop").status_code >= 400
    assert get(client, "example.jpg", "style/save").status_code >= 400


# ---------------------------------------------------------------------------------------------------
# Encoding tricks on keys: object GET, watermark image keys, saveas targets

RAW_TRICKS = [
    "%252e%252e/secret.txt",                 # double encoding: the key is literally '%2e%2e'
    "%252e%252e%252fsecret.txt",
    "%c0%ae%c0%ae/secret.txt",               # overlong UTF-8 '.'
    "%c0%ae%c0%ae%c0%afsecret.txt",
    "..%5csecret.txt", "%2e%2e%5csecret.txt", "..\\secret.txt",   # backslashes
    "%e2%80%a4%e2%80%a4/secret.txt",         # U+2024 ONE DOT LEADER
    "%ef%bc%8e%ef%bc%8e/secret.txt",         # U+FF0E FULLWIDTH FULL STOP
    "%ef%bc%8e%ef%bc%8e%ef%bc%8fsecret.txt",  # ... and FULLWIDTH SOLIDUS
    "%2e%2e%2f%2e%2e%2fsecret.txt",
]


@pytest.mark.parametrize("trick", RAW_TRICKS)
def test_encoded_traversal_on_object_get(tmp_path, trick):
    root = make_root(tmp_path)
    client = client_for(root, lint=False, default_acl="public-read-write")
    for query in ("", "?x-oss-process=image/info"):
        response = client.get(f"/{BUCKET}/{trick}{query}")
        body = response.get_data()
        response.close()
        assert response.status_code in (400, 404), (trick, response.status_code)
        assert SECRET not in body
        xml_error(response)
    assert (tmp_path / "secret.txt").read_bytes() == SECRET


UNICODE_TRICKS = ["%2e%2e/secret.png", "%252e%252e/secret.png", "\u2024\u2024/secret.png",
                  "\uff0e\uff0e/secret.png", "\uff0e\uff0e\uff0fsecret.png", "..\\secret.png",
                  "\xc0\xae\xc0\xae/secret.png", "..%c0%afsecret.png", "http://127.0.0.1:1/x.png",
                  "//evil.example/x.png", "file:///etc/passwd"]


class Recorder:
    def __init__(self, app):
        self.app, self.paths = app, []

    def __call__(self, environ, start_response):
        self.paths.append(environ.get("PATH_INFO", ""))
        return self.app(environ, start_response)


def test_encoded_watermark_keys_stay_in_the_wrapped_app(tmp_path):
    root = tmp_path / "bucket"
    root.mkdir()
    (root / "example.jpg").write_bytes((FIXTURES / "example.jpg").read_bytes())
    (tmp_path / "secret.png").write_bytes((FIXTURES / "nodejs-1024x768.png").read_bytes())
    recorder = Recorder(LintMiddleware(static_app(root)))
    client = Client(LintMiddleware(ImageMiddleware(recorder)))
    for key in UNICODE_TRICKS:
        response = get(client, "example.jpg", f"image/watermark,image_{b64(key)}")
        assert 400 <= response.status_code < 500, (key, response.status_code)
        xml_error(response)
    resolved = root.resolve()
    for path in recorder.paths:
        assert (resolved / path.lstrip("/")).resolve().is_relative_to(resolved), path


@pytest.mark.parametrize("target", ["%2e%2e/x.jpg", "\uff0e\uff0e/x.jpg", "\u2024\u2024/x.jpg",
                                    "..\\x.jpg", "a\\..\\..\\x.jpg", "\x00x.jpg", "\xc0\xae\xc0\xae/x.jpg"])
def test_encoded_saveas_targets_stay_in_the_bucket(tmp_path, target):
    root = make_root(tmp_path)
    client = client_for(root, credentials=CREDS, bucket_acl={BUCKET: "private"})
    before = files_under(tmp_path)
    response = post_saveas(client, BUCKET, "example.jpg", saveas_body("image/resize,w_10", target))
    assert response.status_code in (200, 400), (target, response.get_data())
    bucket_dir = (root / BUCKET).resolve()
    for new in files_under(tmp_path) - before:
        if "/.imgmw" in "/" + new:
            continue
        assert (tmp_path / new).resolve().is_relative_to(bucket_dir), (target, new)
    assert (tmp_path / "secret.txt").read_bytes() == SECRET


# ---------------------------------------------------------------------------------------------------
# Signatures through the server

@pytest.fixture
def private_client(tmp_path):
    root = make_root(tmp_path)
    return client_for(root, lint=False, credentials=CREDS, bucket_acl={BUCKET: "private"})


def test_signed_url_replayed_after_expiry_is_refused(private_client):
    process = [("x-oss-process", "image/resize,w_10")]
    now = int(datetime.now(UTC).timestamp())
    fresh = v1_presigned("GET", BUCKET, "example.jpg", process, expires=now + 600)
    assert send(private_client, "GET", BUCKET, "example.jpg", query=fresh).status_code == 200
    stale = v1_presigned("GET", BUCKET, "example.jpg", process, expires=now - 1)
    response = send(private_client, "GET", BUCKET, "example.jpg", query=stale)
    assert response.status_code == 403
    assert xml_error(response).findtext("Code") == "AccessDenied"


def test_process_string_appended_to_a_signed_url_is_refused(private_client):
    signed = v1_presigned("GET", BUCKET, "example.jpg")
    assert send(private_client, "GET", BUCKET, "example.jpg", query=signed).status_code == 200
    for extra in ([("x-oss-process", "image/resize,w_10")], [("x-oss-process", "image/info")]):
        for query in (signed + extra, extra + signed):
            response = send(private_client, "GET", BUCKET, "example.jpg", query=query)
            assert response.status_code == 403, query
            assert xml_error(response).findtext("Code") == "SignatureDoesNotMatch"


def test_header_and_url_signature_together_is_400(private_client):
    process = [("x-oss-process", "image/resize,w_10")]
    query = v1_presigned("GET", BUCKET, "example.jpg", process)
    headers = v1_headers("GET", BUCKET, "example.jpg", query=process)
    response = send(private_client, "GET", BUCKET, "example.jpg", query=query, headers=headers)
    assert response.status_code == 400
    assert xml_error(response).findtext("Code") == "InvalidArgument"


# ---------------------------------------------------------------------------------------------------
# SSRF: the server fetches nothing it was not configured for

def test_watermark_urls_are_keys_of_the_wrapped_app_never_fetched(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        root = tmp_path / "bucket"
        root.mkdir()
        (root / "example.jpg").write_bytes((FIXTURES / "example.jpg").read_bytes())
        recorder = Recorder(LintMiddleware(static_app(root)))
        client = Client(LintMiddleware(ImageMiddleware(recorder)))
        urls = [f"http://127.0.0.1:{port}/x.png", f"https://127.0.0.1:{port}/x.png",
                f"//127.0.0.1:{port}/x.png", f"http:127.0.0.1:{port}/x.png"]
        for target in urls:
            response = get(client, "example.jpg", f"image/watermark,image_{b64(target)}")
            assert 400 <= response.status_code < 500, target
        with pytest.raises(socket.timeout):
            listener.accept()                 # nobody connected to the URL's host
        assert recorder.paths and all(p.startswith("/") and not p.startswith("//") for p in recorder.paths)
    finally:
        listener.close()
