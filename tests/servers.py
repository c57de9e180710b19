"""Real servers for integration tests: free loopback ports, nginx (installed when missing), gunicorn
through `imgmiddleware serve`. Every process started here is stopped by the fixture that started it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Until ``url`` answers at all (any HTTP status), or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}):\n{_output(proc)}")
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout} s" + (f":\n{_output(proc)}" if proc else ""))


def _output(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=5)
        return out or ""
    except Exception:
        return ""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def ensure_debian_packages(*packages: str) -> None:
    """Install Debian packages that are missing (CI runs as root on a fresh machine), with one
    ``apt-get update`` when the first try fails; fail the test run with apt's words otherwise."""
    missing = [name for name in packages
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True,
                                 text=True).stdout != "install ok installed"]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"could not install {' '.join(missing)}: " + result.stderr[-2000:])


def nginx_binary() -> str:
    """nginx, installed from Debian's packages when the machine has none."""
    found = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if found:
        return found
    ensure_debian_packages("nginx")
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(found), "nginx was installed but is not on the PATH"
    return found


def start_nginx(workdir: Path, server_block: str) -> subprocess.Popen:
    """nginx in the foreground with one ``http { ... }`` holding ``server_block``; its own prefix,
    logs and temp paths under ``workdir``. Stop it with :func:`stop`."""
    binary = nginx_binary()
    for sub in ("logs", "tmp", "cache"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/logs/access.log;
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    types {{ image/jpeg jpg jpeg; image/png png; image/gif gif; image/webp webp; }}
    default_type application/octet-stream;
{server_block}
}}
""")
    return subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_serve(args: list[str], config: Path | None = None, env: dict | None = None,
                cwd: Path | None = None) -> subprocess.Popen:
    """`imgmiddleware [--config FILE] serve ARGS...` as a child process (gunicorn), in ``cwd``."""
    command = shutil.which("imgmiddleware")
    argv = [command] if command else [sys.executable, "-m", "imgmiddleware.cli"]
    if config is not None:
        argv += ["--config", str(config)]
    clean = {k: v for k, v in (env or os.environ).items() if not k.startswith("IMGMW_")}
    return subprocess.Popen(argv + ["serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=clean, cwd=cwd)


def child_pids(parent: int) -> set[int]:
    """Pids of a process's children (a gunicorn master's workers), from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.add(int(entry))
    return found
