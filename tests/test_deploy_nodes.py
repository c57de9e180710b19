"""deploy/ for many nodes (issue 16): the load balancer's upstream block and the systemd template unit.

deploy/nginx-lb.conf is used as it says: in place of deploy/nginx-front.conf's upstream block, with
two real `imgmiddleware serve` nodes behind a real nginx. Its consistent hash must send every request
for one URL to one node (so each node keeps its own slice of the variants), spread the URLs over both,
and move a dead node's URLs to the other. deploy/imgmiddleware@.service must be deploy/imgmiddleware.service
except for the lines that make it one instance among several.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from .servers import ensure_debian_packages, free_port, start_nginx, start_serve, stop, wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
FRONT = DEPLOY / "nginx-front.conf"
LB = DEPLOY / "nginx-lb.conf"
UNIT = DEPLOY / "imgmiddleware.service"
TEMPLATE = DEPLOY / "imgmiddleware@.service"
UPSTREAM_BLOCK = re.compile(r"^upstream imgmiddleware_gunicorn \{.*?^\}", re.S | re.M)


def swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected exactly one {old!r} in the shipped file"
    return text.replace(old, new)


def render(listen: int, nodes: list[int], work: Path) -> str:
    """The front site with the load balancer's upstream block, its servers our nodes, the front's
    own cache off (every request reaches a node, so the node each one reached can be seen)."""
    block = UPSTREAM_BLOCK.search(LB.read_text()).group(0)
    servers = re.findall(r"^    server \S+ (.*);$", block, re.M)
    assert len(servers) >= 2 and len(set(servers)) == 1, "the block lists its nodes alike"
    lines = [line for line in block.splitlines() if not line.startswith("    server ")]
    lines[1:1] = [f"    server 127.0.0.1:{port} {servers[0]};" for port in nodes]
    text = FRONT.read_text()
    text = text.replace(UPSTREAM_BLOCK.search(text).group(0), "\n".join(lines))
    text = swap(text, "\n    listen 80;\n", f"\n    listen 127.0.0.1:{listen};\n")
    text = swap(text, "proxy_cache_path /var/cache/nginx/imgmiddleware ", f"proxy_cache_path {work}/cache/lb ")
    text = swap(text, "access_log /var/log/nginx/imgmiddleware.access.log ", f"access_log {work}/logs/lb.log ")
    text = swap(text, "proxy_cache imgmiddleware_front;", "proxy_cache off;")
    return text


@pytest.fixture
def balanced(tmp_path):
    nodes, procs = [free_port(), free_port()], []
    try:
        for i, port in enumerate(nodes):
            root = tmp_path / f"node{i}"
            root.mkdir()
            procs.append(start_serve(["--root", str(root / "data"), "--bind", f"127.0.0.1:{port}",
                                      "--workers", "1", "--threads", "2"], cwd=root))
        for port, proc in zip(nodes, procs):
            wait_for(f"http://127.0.0.1:{port}/examplebucket/example.jpg", proc)
        listen = free_port()
        nginx = start_nginx(tmp_path / "nginx", render(listen, nodes, tmp_path / "nginx"))
        procs.append(nginx)
        wait_for(f"http://127.0.0.1:{listen}/examplebucket/example.jpg", nginx)
        yield f"http://127.0.0.1:{listen}", nodes, procs, tmp_path / "nginx" / "logs" / "lb.log"
    finally:
        for proc in procs:
            stop(proc)


def width_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR).shape[1]


def upstreams(log: Path) -> dict[str, set[str]]:
    """URL -> the node addresses nginx sent it to, from the front's access log."""
    time.sleep(0.2)                    # nginx writes its log line once the answer is sent
    seen: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        found = re.search(r'"GET (\S+) HTTP/1\.1" (\d+) .* upstream=(.*?) upstream_time=', line)
        if found and found.group(2) == "200":
            seen.setdefault(found.group(1), set()).update(found.group(3).split(", "))
    return seen


def test_each_url_goes_to_one_node_and_a_dead_nodes_urls_move(balanced):
    base, nodes, procs, log = balanced
    urls = [f"/examplebucket/example.jpg?x-oss-process=image/resize,w_{100 + i}" for i in range(16)]
    for _ in range(3):
        for i, url in enumerate(urls):
            assert width_of(base + url) == 100 + i
    seen = upstreams(log)
    assert all(len(seen[url]) == 1 for url in urls), seen        # one node per URL, every time
    owners = {url: next(iter(seen[url])) for url in urls}
    assert set(owners.values()) == {f"127.0.0.1:{port}" for port in nodes}   # both nodes used

    stop(procs[0])                      # node 0 goes away: its URLs are answered by node 1
    log.write_text("")
    for i, url in enumerate(urls):
        assert width_of(base + url) == 100 + i
    moved = [url for url in urls if owners[url] == f"127.0.0.1:{nodes[0]}"]
    assert moved
    seen = upstreams(log)
    for url in moved:
        assert f"127.0.0.1:{nodes[1]}" in seen[url]


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_template_unit_is_the_unit_but_for_its_instance():
    unit, template = unit_lines(UNIT.read_text()), unit_lines(TEMPLATE.read_text())
    differences = [line for line in template if line not in unit]
    assert sorted(differences) == sorted([
        "Description=imgmiddleware instance %i: OSS image processing (x-oss-process) on gunicorn",
        next(line for line in template if line.startswith("ExecStart=")),
        "EnvironmentFile=-/etc/imgmiddleware/nodes.env"]), differences
    assert [line for line in unit if line not in template] == [
        next(line for line in unit if line.startswith("Description=")),
        next(line for line in unit if line.startswith("ExecStart="))]
    exec_start = shlex.split(next(line for line in template if line.startswith("ExecStart="))[10:])
    assert exec_start[exec_start.index("--bind") + 1] == "127.0.0.1:%i"


def test_systemd_accepts_an_instance_of_the_template(tmp_path):
    if not shutil.which("systemd-analyze"):
        ensure_debian_packages("systemd")
    analyze = shutil.which("systemd-analyze")
    binary = shutil.which("imgmiddleware")
    assert binary, "the imgmiddleware command is installed by the README's pip install"
    text = TEMPLATE.read_text().replace("ExecStart=/usr/local/bin/imgmiddleware ", f"ExecStart={binary} ")
    template = tmp_path / "imgmiddleware@.service"
    template.write_text(text)
    instance = tmp_path / "imgmiddleware@8081.service"
    instance.symlink_to(template)
    result = subprocess.run([analyze, "verify", "--man=no", str(instance)], capture_output=True,
                            text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "imgmiddleware" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
