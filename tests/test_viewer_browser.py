"""The style viewer in a real browser: headless Chromium (Debian's chromium and chromium-driver, the
same version, installed here when missing) driven by Selenium against ``imgmiddleware serve``.

What a user does: open the page, pick an object, type process strings and see the result or the
server's error, build a step with the form, save a style with the demo key of conf/imgmiddleware.toml
and use it from a plain HTTP client; all of it again with the server mounted under a prefix
(gunicorn's SCRIPT_NAME), where the SDK snippets must reach it too. Each wait is bounded (WAIT
seconds); the module takes about 25 s once the packages are installed.
"""

from __future__ import annotations

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

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from imgmiddleware import Config

from .conftest import FIXTURES
from .servers import free_port, start_serve, stop, wait_for

CONF = Path(__file__).resolve().parent.parent / "conf" / "imgmiddleware.toml"
BUCKET = "examplebucket"
WAIT = 20


def debian_binaries() -> tuple[str, str]:
    """(chromium, chromedriver), installed from Debian's packages when missing (CI runs as root);
    one package source for both keeps their versions equal, as chromedriver requires."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail("could not install chromium: " + result.stderr[-2000:])
    found = shutil.which("chromium"), shutil.which("chromedriver")
    assert all(found), "chromium was installed but is not on the PATH"
    return found


@pytest.fixture(scope="module")
def demo_key() -> tuple[str, str]:
    """The demo AccessKeyId and secret of the shipped config, the ones a user would type."""
    ((key, secret),) = Config.load(CONF, environ={}).credentials.items()
    return key, secret


def serving(tmp: Path, demo_key: tuple[str, str], mount: str = ""):
    """`imgmiddleware serve` on a bucket with example.jpg, the viewer on and the demo key; with
    ``mount`` ("/media") gunicorn's SCRIPT_NAME, so it answers under the prefix only (a request
    outside it is an error). Yields the base URL, the prefix included."""
    root = tmp / "data"
    (root / BUCKET).mkdir(parents=True)
    shutil.copy(FIXTURES / "example.jpg", root / BUCKET / "example.jpg")        # 400 x 267
    config = tmp / "imgmiddleware.toml"
    config.write_text(f'viewer_path = "/_viewer/"\ncache_dir = {json.dumps(str(tmp / "cache"))}\n'
                      f'[credentials]\n"{demo_key[0]}" = "{demo_key[1]}"\n')
    port = free_port()
    env = dict(os.environ, SCRIPT_NAME=mount) if mount else None
    proc = start_serve(["--root", str(root), "--bind", f"127.0.0.1:{port}", "--workers", "2"], config, env)
    base = f"http://127.0.0.1:{port}{mount}"
    try:
        wait_for(base + "/_viewer/", proc)
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_key):
    yield from serving(tmp_path_factory.mktemp("viewer"), demo_key)


@pytest.fixture(scope="module")
def mounted_server(tmp_path_factory, demo_key):
    yield from serving(tmp_path_factory.mktemp("mounted"), demo_key, mount="/media")


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = debian_binaries()
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1500", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


# --- helpers ----------------------------------------------------------------------------------------

def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def wait_text(driver, element_id: str, expected: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: text(d, element_id) == expected)
    except Exception:
        pytest.fail(f"#{element_id} shows {text(driver, element_id)!r}, not {expected!r}; "
                    f"verdict: {text(driver, 'verdict')!r}; browser log: {browser_log(driver)}")


def browser_log(driver) -> list:
    try:
        return [entry["message"] for entry in driver.get_log("browser")]
    except Exception:
        return []


def open_viewer(driver, base: str, **params) -> None:
    driver.get(base + "/_viewer/?" + urllib.parse.urlencode(params))
    WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def type_process(driver, process: str) -> None:
    field = driver.find_element(By.ID, "process")
    field.clear()
    field.send_keys(process)


def type_credentials(driver, key: str, secret: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "#credentials summary").click()
    for element_id, value in (("access-key-id", key), ("access-key-secret", secret)):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.ID, "process").click()      # leaving the field fires its change event


def http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --- the tests --------------------------------------------------------------------------------------

def test_the_page_lists_the_bucket_and_shows_a_processed_result(browser, server):
    open_viewer(browser, server, bucket=BUCKET)
    # ListObjects filled the object list and picked the only image
    options = [o.text for o in Select(browser.find_element(By.ID, "key-select")).options]
    assert "example.jpg" in options
    assert browser.find_element(By.ID, "key").get_attribute("value") == "example.jpg"
    wait_text(browser, "original-dims", "400 × 267")
    assert text(browser, "original-type") == "image/jpeg"

    type_process(browser, "image/resize,w_100")
    wait_text(browser, "result-dims", "100 × 67")
    result = browser.find_element(By.ID, "result-image")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  result) == [100, 67]
    assert browser.find_element(By.ID, "verdict-ok").is_displayed()
    assert text(browser, "result-type") == "image/jpeg"
    assert text(browser, "result-bytes").endswith(" B)") or text(browser, "result-bytes").endswith(" B")
    assert " ms" in text(browser, "result-time")

    # the URL it offers to copy gives the same image to any client
    status, content_type, body = http_get(text(browser, "snippet-url"))
    assert (status, content_type, size_of(body)) == (200, "image/jpeg", (100, 67))
    assert text(browser, "snippet-curl").startswith("curl -o result.jpg '" + server + "/")


def test_an_invalid_string_shows_the_servers_error(browser, server):
    open_viewer(browser, server, bucket=BUCKET, key="example.jpg")
    process = "image/resize,w_99999"
    type_process(browser, process)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    status, _, body = http_get(f"{server}/{BUCKET}/example.jpg?" +
                               urllib.parse.urlencode({"x-oss-process": process}))
    error = ET.fromstring(body)
    assert status == 400
    assert text(browser, "error-code") == error.findtext("Code") == "InvalidArgument"
    assert text(browser, "error-ec") == "EC " + error.findtext("EC")
    assert text(browser, "error-message") == error.findtext("Message")
    assert not browser.find_element(By.ID, "result-image").is_displayed()

    # fixing the string clears the error
    type_process(browser, "image/resize,w_50")
    wait_text(browser, "result-dims", "50 × 33")
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_the_builder_writes_steps_from_the_servers_tables(browser, server, tmp_path):
    open_viewer(browser, server, bucket=BUCKET, key="example.jpg", process="image/resize,w_100")
    wait_text(browser, "result-dims", "100 × 67")
    Select(browser.find_element(By.ID, "action")).select_by_visible_text("rotate")
    field = browser.find_element(By.ID, "field-value")
    assert (field.get_attribute("min"), field.get_attribute("max")) == ("0", "360")   # from actions.json
    field.send_keys("90")
    browser.find_element(By.ID, "add-step").click()
    assert browser.find_element(By.ID, "process").get_attribute("value") == "image/resize,w_100/rotate,90"
    wait_text(browser, "result-dims", "67 × 100")

    # a step can be loaded back into the form, changed and replaced
    browser.find_elements(By.CSS_SELECTOR, "#steps li")[0].click()
    width = browser.find_element(By.ID, "field-w")
    assert width.get_attribute("value") == "100"
    width.clear()
    width.send_keys("200")
    browser.find_element(By.ID, "replace-step").click()
    assert browser.find_element(By.ID, "process").get_attribute("value") == "image/resize,w_200/rotate,90"
    wait_text(browser, "result-dims", "134 × 200")

    # the whole page as it stands (docs/viewer.png was taken this way)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, height + 120)
    assert browser.save_screenshot(str(tmp_path / "viewer.png"))
    browser.set_window_size(1280, 1500)


def test_save_a_style_and_use_it_from_any_client(browser, server, demo_key):
    open_viewer(browser, server, bucket=BUCKET, key="example.jpg")
    type_process(browser, "image/resize,w_120/format,png")
    wait_text(browser, "result-dims", "120 × 80")
    browser.find_element(By.ID, "style-name").send_keys("viewer-thumb")

    # anonymous: the server refuses, and the page says why
    browser.find_element(By.ID, "save-style").click()
    WebDriverWait(browser, WAIT).until(lambda d: text(d, "style-status").startswith("Not saved"))
    assert "AccessDenied" in text(browser, "style-status")

    # signed with the demo key typed by the user (V1, WebCrypto)
    type_credentials(browser, *demo_key)
    browser.find_element(By.ID, "save-style").click()
    WebDriverWait(browser, WAIT).until(lambda d: text(d, "style-status").startswith("Saved"))
    assert demo_key[1] not in browser.find_element(By.ID, "snippet-oss2").text   # never echoed

    status, content_type, body = http_get(f"{server}/{BUCKET}/example.jpg?x-oss-process=style/viewer-thumb")
    assert (status, content_type, size_of(body)) == (200, "image/png", (120, 80))

    browser.find_element(By.ID, "apply-style").click()
    assert browser.find_element(By.ID, "process").get_attribute("value") == "style/viewer-thumb"
    wait_text(browser, "result-dims", "120 × 80")
    assert text(browser, "result-type") == "image/png"

    # with the key typed, ListBuckets fills the bucket suggestions
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#bucket-list option')].map(o => o.value)") == [BUCKET])


def test_the_oss2_snippet_runs(browser, server, demo_key):
    open_viewer(browser, server, bucket=BUCKET, key="example.jpg", process="image/resize,w_64")
    wait_text(browser, "result-dims", "64 × 43")
    type_credentials(browser, demo_key[0], demo_key[1])
    snippet = text(browser, "snippet-oss2")
    assert f"oss2.Auth('{demo_key[0]}', '<yourAccessKeySecret>')" in snippet
    assert "bucket.get_object('example.jpg', process='image/resize,w_64')" in snippet
    scope: dict = {}
    exec(snippet.replace("<yourAccessKeySecret>", demo_key[1]), scope)     # the user's paste
    assert size_of(scope["data"]) == (64, 43)
    assert "client.get('example.jpg', {process: 'image/resize,w_64'})" in text(browser, "snippet-alioss")


def test_mounted_under_a_prefix(browser, mounted_server, demo_key):
    """gunicorn with SCRIPT_NAME=/media, which refuses any request outside /media: every URL the
    page builds (ListObjects, the original, the result, saving a style signed in the browser, the
    snippets) carries the prefix, and the signatures name /bucket/key as the server checks them."""
    open_viewer(browser, mounted_server, bucket=BUCKET)
    assert browser.find_element(By.ID, "key").get_attribute("value") == "example.jpg"   # ListObjects
    wait_text(browser, "original-dims", "400 × 267")

    type_process(browser, "image/resize,w_100")
    wait_text(browser, "result-dims", "100 × 67")
    result = browser.find_element(By.ID, "result-image")
    assert browser.execute_script("return arguments[0].naturalWidth", result) == 100
    assert browser.find_element(By.ID, "verdict-ok").is_displayed()

    url = text(browser, "snippet-url")
    assert url.startswith(mounted_server + f"/{BUCKET}/example.jpg?")
    status, content_type, body = http_get(url)
    assert (status, content_type, size_of(body)) == (200, "image/jpeg", (100, 67))
    assert text(browser, "snippet-curl").startswith("curl -o result.jpg '" + mounted_server + "/")

    browser.find_element(By.ID, "style-name").send_keys("mounted-thumb")
    type_credentials(browser, *demo_key)
    browser.find_element(By.ID, "save-style").click()
    WebDriverWait(browser, WAIT).until(lambda d: text(d, "style-status").startswith(("Saved", "Not saved")))
    assert text(browser, "style-status") == "Saved style mounted-thumb = image/resize,w_100"
    status, _, body = http_get(f"{mounted_server}/{BUCKET}/example.jpg?x-oss-process=style/mounted-thumb")
    assert (status, size_of(body)) == (200, (100, 67))

    # the oss2 snippet, pasted with the secret, reaches the prefix too (a signed GET with the process)
    scope: dict = {}
    exec(text(browser, "snippet-oss2").replace("<yourAccessKeySecret>", demo_key[1]), scope)
    assert size_of(scope["data"]) == (100, 67)


def test_the_ali_oss_snippet_reaches_the_prefix(browser, mounted_server, demo_key, ali_oss, tmp_path):
    """ali-oss keeps only the endpoint's host; the snippet's urllib hook puts /media back."""
    open_viewer(browser, mounted_server, bucket=BUCKET, key="example.jpg", process="image/resize,w_64")
    wait_text(browser, "result-dims", "64 × 43")
    type_credentials(browser, *demo_key)
    snippet = text(browser, "snippet-alioss").replace("<yourAccessKeySecret>", demo_key[1])
    assert "urllib: mounted" in snippet
    out = tmp_path / "result.jpg"
    script = tmp_path / "snippet.js"
    save = "require('fs').writeFileSync(process.argv[2], result.content);"
    script.write_text("(async () => {\n" + snippet + "\n" + save + "\n"
                      "})().catch((e) => { console.error(e); process.exit(1); });\n")
    # require('ali-oss') and require('urllib') as from a project that installed ali-oss
    env = dict(os.environ, NODE_PATH=str(ali_oss.parent))
    done = subprocess.run([shutil.which("node") or "node", str(script), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=WAIT * 3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert size_of(out.read_bytes()) == (64, 43)
