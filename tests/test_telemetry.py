"""Operations (issue 17) against a real gunicorn: `imgmiddleware serve` with two workers.

Metrics are scraped from a worker (metrics_path) and from the master (metrics_bind) and parsed with
prometheus_client's own parser; their counts must match the requests sent across both workers, and
survive a worker killed with SIGKILL. Readiness turns 503 while a deliberately saturated transform
queue (one slot per worker, many slow transforms) stays saturated, and 200 again after, while
liveness keeps answering; the access log's lines parse as JSON, match the requests, and hold no
secret of a signed request. The dashboard's queries name only metrics a real scrape has. No test
asserts a time: every wait is for a state, with a generous deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imgmiddleware import Config
from imgmiddleware.telemetry.accesslog import scrub

from .servers import child_pids, free_port, start_serve, stop, wait_for

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "imgmiddleware" / "samples"
SECRET, TOKEN = "Tel3metry-S3cret-Never-Logged", "STS-T0ken-Never-Logged"
SLOW = "image/blur,r_50,s_{}"          # ~0.3 s each on the noise image below, one core


class Server:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.log = work / "access.log"
        self.dir = work / "telemetry"
        self.proc = None

    def get(self, path: str, headers: dict | None = None):
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("telemetry")
    srv = Server(work)
    data = work / "data" / "examplebucket"
    data.mkdir(parents=True)
    shutil.copy(SAMPLES / "example.jpg", data / "example.jpg")
    noise = (np.random.default_rng(7).random((1500, 2000, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(data / "noise.jpg"), noise, [cv2.IMWRITE_JPEG_QUALITY, 90])
    config = work / "imgmiddleware.toml"
    config.write_text(f"""
transform_slots = 1
transform_wait_seconds = 60.0
threads = 8
readiness_saturation_seconds = 0.5
metrics_bind = "127.0.0.1:{srv.metrics_port}"
access_log = "{srv.log}"
access_log_format = "json"
cache_dir = "{work / 'cache'}"

[credentials]
telemetry-key = "{SECRET}"
""")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(srv.dir))     # "unless configured"
    srv.dir.mkdir()
    (srv.dir / "counter_999999.db").write_bytes(b"stale")             # a previous run's: removed
    srv.proc = start_serve(["--root", str(work / "data"), "--bind", f"127.0.0.1:{srv.port}",
                            "--workers", "2"], config, env=env)
    try:
        wait_for(srv.url + "/_healthz", srv.proc)
        wait_for(srv.master_url, srv.proc)
        wait_until(lambda: total(scrape(srv.master_url), "imgmw_workers") == 2, "two workers serving")
        yield srv
    finally:
        stop(srv.proc)


def wait_until(condition, what: str, deadline: float = 30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"never: {what}")


def scrape(url: str) -> dict[str, list]:
    """sample name -> [(labels, value)] of one scrape, through prometheus_client's parser."""
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict, name: str, **labels) -> float:
    return sum(value for got, value in samples.get(name, [])
               if all(got.get(k) == v for k, v in labels.items()))


def requests_by_kind(url: str) -> dict[str, float]:
    samples = scrape(url)
    return {kind: total(samples, "imgmw_requests_total", kind=kind) for kind in ("processed", "plain")}


def counted_by(path: Path) -> float:
    """Requests one worker counted, from its own file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return sum(s.value for m in MultiProcessCollector.merge([str(path)]) if m.name == "imgmw_requests"
               for s in m.samples)


def test_counts_add_up_across_workers_and_survive_a_killed_worker(server):
    before = requests_by_kind(server.master_url)
    workers = child_pids(server.proc.pid)
    sent = {"processed": 0, "plain": 0}
    with ThreadPoolExecutor(8) as pool:     # concurrent connections, until both workers took some
        for wave in range(10):
            processed = list(pool.map(lambda w: server.get(
                f"/examplebucket/example.jpg?x-oss-process=image/resize,w_{w}"), range(100 + 8 * wave, 108 + 8 * wave)))
            plain = list(pool.map(lambda _: server.get("/examplebucket/example.jpg"), range(8)))
            assert {status for status, _, _ in processed + plain} == {200}
            sent["processed"] += 8
            sent["plain"] += 8
            files = [server.dir / f"counter_{pid}.db" for pid in workers]
            if all(f.exists() and counted_by(f) > 0 for f in files):
                break
        else:
            pytest.fail("one worker took no request in 10 waves of 16")
    expected = {kind: before[kind] + sent[kind] for kind in sent}
    # The master's scrape (metrics_bind) and a worker's (metrics_path) say the same.
    wait_until(lambda: requests_by_kind(server.master_url) == expected, "the master counts every request")
    assert requests_by_kind(server.url + "/_metrics") == expected
    samples = scrape(server.master_url)
    assert total(samples, "imgmw_requests_total", kind="processed", cache="miss", status="200") >= sent["processed"]
    assert total(samples, "imgmw_transform_seconds_count", format="jpg") >= sent["processed"]
    assert total(samples, "imgmw_workers") == 2
    assert len(samples["imgmw_worker_resident_bytes"]) == 2
    assert not (server.dir / "counter_999999.db").exists()

    # SIGKILL one worker: gunicorn starts another; the dead worker's counts stay.
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(child_pids(server.proc.pid)) == 2 and victim not in child_pids(server.proc.pid),
               "gunicorn replaced the killed worker")
    wait_until(lambda: (server.dir / "counter_archive.db").exists(), "the dead worker's counts folded")
    assert not (server.dir / f"counter_{victim}.db").exists()
    assert requests_by_kind(server.master_url) == expected
    wait_until(lambda: total(scrape(server.master_url), "imgmw_workers") == 2, "two live workers again")
    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(lambda _: server.get("/examplebucket/example.jpg")[0], range(6))) == {200}
    expected["plain"] += 6
    wait_until(lambda: requests_by_kind(server.master_url) == expected, "counts go on after the restart")
    assert requests_by_kind(server.url + "/_metrics") == expected


def test_readiness_follows_a_saturated_queue_while_liveness_answers(server):
    status, _, body = server.get("/_readyz")
    assert (status, body) == (200, b"ready\n")
    results: list = []

    def slow(i):
        results.append(server.get(f"/examplebucket/noise.jpg?x-oss-process={SLOW.format(30 + i)}")[0])

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    seen_live = 0

    def not_ready():
        nonlocal seen_live
        live = server.get("/_healthz")
        assert live[0] == 200 and live[2] == b"ok\n"        # never queued behind the transforms
        seen_live += 1
        ready = server.get("/_readyz")
        return ready if ready[0] == 503 else None

    status, headers, body = wait_until(not_ready, "readiness turns 503 under a saturated queue", 60)
    assert body.startswith(b"not ready\n") and b"transform queue saturated" in body
    assert headers["Cache-Control"] == "no-store"
    assert len(results) < 12          # it said so while the work was still queued
    for thread in threads:
        thread.join(120)
    assert results == [200] * 12
    wait_until(lambda: server.get("/_readyz")[0] == 200, "ready again once the queue drained")
    assert seen_live >= 1
    samples = scrape(server.master_url)
    assert total(samples, "imgmw_transform_slots") == 2
    assert total(samples, "imgmw_transform_wait_seconds_count") >= 12
    # Probes are neither counted nor logged (access_log_probes = false).
    assert total(samples, "imgmw_requests_total", kind="health") == 0
    assert "/_healthz" not in server.log.read_text() and '"_readyz"' not in server.log.read_text()


def test_access_log_lines_are_json_and_hold_no_secret(server):
    import oss2

    bucket = oss2.Bucket(oss2.StsAuth("telemetry-key", SECRET, TOKEN), server.url, "examplebucket")
    signed_url = bucket.sign_url("GET", "example.jpg", 300,
                                 params={"x-oss-process": "image/resize,w_77"})
    status, headers, _ = server.get(signed_url[len(server.url):])
    presigned_id = headers["x-oss-request-id"]
    header_signed = bucket.get_object("example.jpg", process="image/resize,w_78")
    header_id = header_signed.request_id
    header_signed.read()
    forged = server.get("/examplebucket/example.jpg?x-oss-process=image/resize,w_79"
                        f"&OSSAccessKeyId=telemetry-key&Expires=9999999999&Signature=Forged{SECRET}",
                        headers={"x-oss-security-token": TOKEN, "Authorization": f"OSS telemetry-key:{SECRET}"})
    assert forged[0] in (400, 403)     # both a query and a header signature: refused either way
    forged_code = re.search(rb"<Code>(\w+)</Code>", forged[2]).group(1).decode()
    wanted = {presigned_id, header_id, forged[1]["x-oss-request-id"]}

    def logged():
        records = [json.loads(line) for line in server.log.read_text().splitlines()]
        return records if wanted <= {r["request_id"] for r in records} else None

    records = wait_until(logged, "the signed requests are logged")
    text = server.log.read_text()
    for secret in (SECRET, TOKEN, "Signature", "OSSAccessKeyId", "security-token", "Authorization"):
        assert secret not in text, secret
    signed_url_sig = re.search(r"Signature=([^&]+)", signed_url).group(1)
    assert urllib.request.unquote(signed_url_sig) not in text and signed_url_sig not in text
    by_id = {r["request_id"]: r for r in records}
    assert by_id[presigned_id]["status"] == status == 200
    assert by_id[presigned_id]["process"].startswith("image/resize,") and by_id[presigned_id]["kind"] == "processed"
    assert (by_id[forged[1]["x-oss-request-id"]]["status"], by_id[forged[1]["x-oss-request-id"]]["code"]) \
        == (forged[0], forged_code)
    for record in records:       # every line has every field, of the right kind
        assert set(record) >= {"time", "request_id", "method", "bucket", "key", "process", "status", "ec",
                               "cache", "bytes_in", "bytes_out", "read_ms", "wait_ms", "transform_ms",
                               "total_ms", "client"}
        assert record["client"] == "127.0.0.1" and isinstance(record["status"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    miss = next(r for r in records if r["cache"] == "miss")
    assert miss["bucket"] == "examplebucket" and miss["key"] in ("example.jpg", "noise.jpg")
    assert miss["transform_ms"] is not None and miss["bytes_out"] > 0


def test_the_dashboard_names_only_metrics_a_real_scrape_has(server, tmp_path):
    server.get("/examplebucket/example.jpg?x-oss-process=image/resize,w_33")   # at least one transform
    # The origin's metrics come from a proxy: a second server, in front of the first.
    port = free_port()
    (tmp_path / "proxy.toml").write_text('access_log = ""\n')
    proxy = start_serve(["--upstream", server.url, "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                        tmp_path / "proxy.toml", cwd=tmp_path)
    try:
        wait_for(f"http://127.0.0.1:{port}/_healthz", proxy)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/examplebucket/example.jpg"
                                    "?x-oss-process=image/resize,w_34", timeout=30) as response:
            assert response.status == 200
        scraped = set(scrape(server.master_url)) | set(scrape(f"http://127.0.0.1:{port}/_metrics"))
    finally:
        stop(proxy)
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    exprs.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    named = {name for expr in exprs for name in re.findall(r"\b(imgmw_[a-z0-9_]+)\b", expr)}
    assert len(named) >= 15
    assert sorted(named - scraped) == [], "the dashboard names metrics the service does not export"
    # Every other identifier of the queries is PromQL, a label or a Grafana variable, not a metric.
    queries = [re.sub(r'"[^"]*"', '""', e) for e in exprs if "(" in e]       # label values out
    words = {w for q in queries for w in re.findall(r"(?<![$\w.])([a-z_][a-z0-9_]*)\b(?!\s*[=~!])", q)}
    promql = {"sum", "max", "by", "rate", "histogram_quantile", "le", "label_values"}
    labels = {"kind", "cache", "status", "ec", "format", "reason", "tier", "event", "outcome", "instance",
              "job", "pid"}
    assert sorted(words - named - promql - labels) == []
    # The scrape config points at the metrics_bind of deploy/imgmiddleware.service.
    import yaml
    scrape_config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    job = scrape_config["scrape_configs"][0]
    unit = (REPO / "deploy" / "imgmiddleware.service").read_text()
    bind = re.search(r"^ExecStart=.* --metrics-bind (\S+)", unit, re.M).group(1)
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [bind]
    assert Config(metrics_bind=bind).metrics_bind == bind


# --- in one process --------------------------------------------------------------------------------

def test_instrument_serves_probes_counts_and_logs_under_another_wsgi_server(tmp_path):
    from werkzeug.test import Client

    from imgmiddleware import ImageMiddleware
    from imgmiddleware.origins.static import static_app
    from imgmiddleware.telemetry import metrics
    from imgmiddleware.telemetry.wsgi import instrument

    shutil.copy(SAMPLES / "example.jpg", tmp_path / "example.jpg")
    log = tmp_path / "access.log"
    config = Config(access_log=str(log), access_log_format="text", metrics_path="/_m")
    client = Client(instrument(ImageMiddleware(static_app(tmp_path), config), config))
    assert client.get("/_healthz").status_code == 200
    assert client.get("/_readyz").get_data() == b"ready\n"
    assert client.post("/_healthz").status_code == 405
    response = client.get("/example.jpg?x-oss-process=image/resize,w_50&Signature=abc")
    assert response.status_code == 200 and response.headers["x-imgmw-cache"] == "miss"
    response.close()
    text = client.get("/_m").get_data(as_text=True)
    assert metrics.recorder.enabled
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "imgmw_requests" in families and "imgmw_transform_seconds" in families
    line = log.read_text().splitlines()[-1]
    assert " GET - \"example.jpg\" \"image/resize," in line and " processed 200 " in line
    assert "abc" not in line


def test_scrub_and_config_checks():
    assert scrub("a?Signature=x/y+z=&OSSAccessKeyId=k&x-oss-security-token=t") == \
        "a?Signature=***&OSSAccessKeyId=***&x-oss-security-token=***"
    assert len(scrub("k" * 5000)) < 400
    for bad in ({"health_path": "healthz"}, {"health_path": "/a", "ready_path": "/a"},
                {"metrics_bind": "9464"}, {"readiness_checks": ("disk",)}, {"access_log_format": "xml"},
                {"readiness_saturation_seconds": -1}, {"viewer_path": "/_v/", "metrics_path": "/_v/m"}):
        with pytest.raises(ValueError):
            Config(**bad)
    assert Config.load(None, environ={"IMGMW_READINESS_CHECKS": "origin,redis"}).readiness_checks == \
        ("origin", "redis")
