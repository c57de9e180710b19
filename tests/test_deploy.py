"""deploy/: the shipped files themselves, exercised.

deploy/nginx-front.conf runs under a real nginx in front of a real `imgmiddleware serve`; only its
listen address, upstream address, cache directory and access log path are substituted, against the
file's own lines. The systemd unit is verified with systemd-analyze where it exists and parsed in any
case; the Containerfile (no container engine here) is checked statically, and its health check is run
for real against gunicorn. The deploy files must also agree with each other (ports, timeouts).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from imgmiddleware import Config, cli

from .conftest import FONT_PACKAGES, size_of
from .servers import free_port, nginx_binary, start_nginx, start_serve, stop, wait_for

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
FRONT = DEPLOY / "nginx-front.conf"
UNIT = DEPLOY / "imgmiddleware.service"
CONTAINERFILE = DEPLOY / "Containerfile"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"

PROCESSED = "/examplebucket/example.jpg?x-oss-process=image/resize,w_100"   # example.jpg: 400 x 267
# What the test's imgmiddleware sends as Cache-Control of results: short, so an entry expires in the
# test and nginx's stale-on-error path can be seen.
MAX_AGE = 2


# --- helpers ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Answer:
    status: int
    headers: object     # http.client.HTTPMessage: case-insensitive get()
    body: bytes


def fetch(url: str, headers: dict | None = None) -> Answer:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.headers, err.read())


def swap(text: str, old: str, new: str) -> str:
    """Replace a line of a shipped file that must be there exactly once."""
    assert text.count(old) == 1, f"expected exactly one {old!r} in the shipped file"
    return text.replace(old, new)


def render_front(listen_port: int, upstream_port: int, work: Path) -> str:
    text = FRONT.read_text(encoding="utf-8")
    text = swap(text, "\n    listen 80;\n", f"\n    listen 127.0.0.1:{listen_port};\n")
    text = swap(text, "\n    server 127.0.0.1:8080;\n", f"\n    server 127.0.0.1:{upstream_port};\n")
    text = swap(text, "proxy_cache_path /var/cache/nginx/imgmiddleware ",
                f"proxy_cache_path {work}/cache/front ")
    text = swap(text, "access_log /var/log/nginx/imgmiddleware.access.log ",
                f"access_log {work}/logs/front.access.log ")
    settings = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in settings if "/var/" in line or "/etc/" in line], \
        "the front site names a system path the test does not substitute"
    return text


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited ({proc.returncode}):\n{proc.stdout.read()}")
            time.sleep(0.05)
    pytest.fail(f"nothing listens on {port} after {timeout} s")


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file: section -> [(key, value)] in order (keys repeat, as Environment= does;
    a trailing backslash continues a line)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"not a unit file line: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def assignments(values) -> dict[str, str]:
    """NAME=value words (shell-quoted) of systemd Environment= and Containerfile ENV lines."""
    env = {}
    for value in values:
        for assignment in shlex.split(value):
            name, _, val = assignment.partition("=")
            env[name] = val
    return env


def unit_environment(service: list[tuple[str, str]]) -> dict[str, str]:
    return assignments(value for key, value in service if key == "Environment")


def container_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def container_env(instructions) -> dict[str, str]:
    return assignments(rest for word, rest in instructions if word == "ENV")


def parse_cli(argv: list[str], monkeypatch) -> object:
    """argv (without the program) through imgmiddleware's real argument parser; the namespace that
    `serve` would have been called with."""
    seen = []
    monkeypatch.setattr(cli, "serve", lambda args: seen.append(args) or 0)
    assert cli.main(argv) == 0
    assert len(seen) == 1, "the command line does not run `serve`"
    return seen[0]


def cli_help(*argv: str) -> str:
    command = shutil.which("imgmiddleware")
    prefix = [command] if command else [sys.executable, "-m", "imgmiddleware.cli"]
    result = subprocess.run(prefix + [*argv, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_options_exist(argv: list[str]) -> None:
    """Every --option of an `imgmiddleware [global] serve [serve options]` command line is one the
    installed command documents in its --help."""
    split = argv.index("serve")
    global_help, serve_help = cli_help(), cli_help("serve")
    for option in (a.split("=")[0] for a in argv[:split] if a.startswith("--")):
        assert re.search(rf"(^|[\s\[,]){re.escape(option)}\b", global_help), f"imgmiddleware has no {option}"
    for option in (a.split("=")[0] for a in argv[split + 1:] if a.startswith("--")):
        assert re.search(rf"(^|[\s\[,]){re.escape(option)}\b", serve_help), f"serve has no {option}"


def nginx_duration(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, value
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match.group(2)]


def nginx_directive(text: str, name: str) -> str:
    found = re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)
    assert len(found) == 1, f"{name}: {found}"
    return found[0].strip()


# --- nginx in front of gunicorn, for real -----------------------------------------------------------

@dataclasses.dataclass
class Front:
    work: Path
    url: str                 # nginx
    gunicorn_url: str
    gunicorn: subprocess.Popen
    nginx: subprocess.Popen

    def log(self, path: str) -> list[tuple[str, str]]:
        """(cache status, upstream address) of each access-log line for ``path``."""
        lines = (self.work / "logs" / "front.access.log").read_text().splitlines()
        return [re.search(r" cache=(\S+) upstream=(\S+) ", line).groups()
                for line in lines if f'"GET {path} HTTP/' in line]


@pytest.fixture(scope="module")
def front():
    # Not under pytest's tmp_path: run as root, nginx's workers are "nobody" and must reach the cache
    # directory; pytest's base directory is private to root.
    work = Path(tempfile.mkdtemp(prefix="imgmw-deploy-"))
    work.chmod(0o755)
    config = work / "imgmiddleware.toml"
    config.write_text(f'cache_control = "public, max-age={MAX_AGE}"\n')
    gport, nport = free_port(), free_port()
    gunicorn = start_serve(["--root", str(work / "data"), "--bind", f"127.0.0.1:{gport}",
                            "--workers", "1"], config)
    nginx = None
    try:
        wait_for(f"http://127.0.0.1:{gport}/", gunicorn)
        nginx = start_nginx(work, render_front(nport, gport, work))
        wait_port(nport, nginx)
        yield Front(work, f"http://127.0.0.1:{nport}", f"http://127.0.0.1:{gport}", gunicorn, nginx)
    finally:
        if nginx is not None:
            stop(nginx)
        stop(gunicorn)
        shutil.rmtree(work, ignore_errors=True)


def test_nginx_accepts_the_rendered_front_site(front):
    conf = front.work / "nginx.conf"
    assert "proxy_cache_lock on;" in conf.read_text()     # the shipped site is what nginx loaded
    result = subprocess.run([nginx_binary(), "-t", "-p", str(front.work), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def test_containerfile_health_check_runs_against_real_gunicorn(front):
    """The HEALTHCHECK command of the Containerfile, as the engine would run it (exec form), with its
    URL pointed at this test's gunicorn (the liveness path); and it fails on a path that is a 404."""
    assert front.gunicorn.poll() is None, "this test must run before the stale-on-error test"
    instructions = container_instructions(CONTAINERFILE.read_text(encoding="utf-8"))
    (health,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3:])
    assert command[0] == "python"
    url = container_env(instructions)["HEALTHCHECK_URL"]
    assert url == "http://127.0.0.1:8080/_healthz"
    local = url.replace("127.0.0.1:8080", front.gunicorn_url.removeprefix("http://"))
    run = [sys.executable, *command[1:]]
    assert subprocess.run(run, env={"HEALTHCHECK_URL": local}, capture_output=True, timeout=30).returncode == 0
    missing = local.replace("/_healthz", "/examplebucket/no-such-object.jpg")
    assert subprocess.run(run, env={"HEALTHCHECK_URL": missing}, capture_output=True, timeout=30).returncode != 0


def test_front_keeps_metrics_private_and_passes_health_checks_from_private_networks(front):
    """The front never serves the metrics (deploy/prometheus.yml scrapes the master's own port);
    liveness and readiness reach gunicorn from loopback (this test) and private networks only."""
    assert front.gunicorn.poll() is None, "this test must run before the stale-on-error test"
    assert fetch(front.gunicorn_url + "/_metrics").status == 200      # gunicorn itself has them
    assert fetch(front.url + "/_metrics").status == 403
    for path, body in (("/_healthz", b"ok\n"), ("/_readyz", b"ready\n")):
        answer = fetch(front.url + path)
        assert (answer.status, answer.body) == (200, body)
        assert answer.headers["Cache-Control"] == "no-store"
        assert not front.log(path)                                       # access_log off
    assert "allow 10.0.0.0/8;" in FRONT.read_text() and "deny all;" in FRONT.read_text()


def test_front_caches_results_and_serves_stale_when_gunicorn_is_down(front):
    # Must be the module's last test: it stops gunicorn.
    url = front.url + PROCESSED
    first = fetch(url)
    assert first.status == 200, first.body[:300]
    assert first.headers["Content-Type"] == "image/jpeg"
    assert size_of(first.body) == (100, 67)
    assert first.headers["X-Cache-Status"] == "MISS"

    # The same request again: nginx's copy. gunicorn gives each request its own x-oss-request-id; the
    # HIT repeats the MISS's, and the access log shows no upstream for it.
    second = fetch(url)
    assert second.status == 200 and second.body == first.body
    assert second.headers["X-Cache-Status"] == "HIT"
    assert second.headers["x-oss-request-id"] == first.headers["x-oss-request-id"]
    assert second.headers["x-imgmw-cache"] == first.headers["x-imgmw-cache"]
    direct = fetch(front.gunicorn_url + PROCESSED)
    assert direct.status == 200 and direct.headers["x-oss-request-id"] != first.headers["x-oss-request-id"]
    assert front.log(PROCESSED) == [("MISS", front.gunicorn_url.removeprefix("http://")), ("HIT", "-")]

    # Another query is another entry.
    other = fetch(front.url + PROCESSED.replace("w_100", "w_120"))
    assert other.status == 200 and size_of(other.body) == (120, 80)
    assert other.headers["X-Cache-Status"] == "MISS"
    assert other.headers["x-oss-request-id"] != first.headers["x-oss-request-id"]

    # Virtual-host addressing: the bucket is in the Host header, which nginx must pass on.
    hosted = fetch(front.url + "/example.jpg?x-oss-process=image/resize,w_60",
                   {"Host": "examplebucket.img.example.test"})
    assert hosted.status == 200 and size_of(hosted.body) == (60, 40), hosted.body[:300]
    assert hosted.headers["X-Cache-Status"] == "MISS"

    # Signed requests never use the cache (header or presigned-URL signature).
    signed = fetch(url, {"Authorization": "OSS imgmw-demo-key:bm90LWEtc2lnbmF0dXJl"})
    assert signed.headers["X-Cache-Status"] == "BYPASS"
    presigned = fetch(url + "&OSSAccessKeyId=imgmw-demo-key&Expires=4102444800&Signature=abc")
    assert presigned.headers["X-Cache-Status"] == "BYPASS"

    # gunicorn goes away: a URL nginx never cached is a 502, the cached one is still served, as STALE
    # once its max-age has run out (nginx tries gunicorn, fails, and keeps the old copy).
    stop(front.gunicorn)
    never = fetch(front.url + PROCESSED.replace("w_100", "w_140"))
    assert never.status == 502
    deadline = time.monotonic() + MAX_AGE + 6
    while True:
        answer = fetch(url)
        assert answer.status == 200 and answer.body == first.body
        assert answer.headers["Content-Type"] == "image/jpeg"
        if answer.headers["X-Cache-Status"] == "STALE":
            break
        assert answer.headers["X-Cache-Status"] == "HIT"
        assert time.monotonic() < deadline, "the expired entry was never served stale"
        time.sleep(0.2)
    assert "Connection refused" in (front.work / "logs" / "error.log").read_text()


# --- systemd ----------------------------------------------------------------------------------------

def test_systemd_unit(monkeypatch, tmp_path):
    text = UNIT.read_text(encoding="utf-8")
    sections = unit_sections(text)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    assert one(sections["Unit"], "Description")
    assert one(sections["Install"], "WantedBy") == "multi-user.target"
    # Its install notes bring the font packages of OSS's font names and the lock's releases.
    notes = " ".join(line.lstrip("#").strip().rstrip("\\") for line in text.splitlines()
                     if line.startswith("#"))
    assert set(FONT_PACKAGES) - {"fonts-dejavu-core"} <= set(notes.split())
    assert "pip install -c constraints.txt ." in notes

    # What it runs: the real CLI accepts the command line, and documents each option.
    argv = shlex.split(one(service, "ExecStart"))
    assert argv[0].startswith("/") and Path(argv[0]).name == "imgmiddleware"
    args = parse_cli(argv[1:], monkeypatch)
    assert_options_exist(argv[1:])
    assert args.config == "/etc/imgmiddleware/imgmiddleware.toml"
    assert args.root == "/var/lib/imgmiddleware" and args.static is None
    assert args.bind == "127.0.0.1:8080"

    # Who runs it, and what it may write.
    assert one(service, "User") not in ("root", "0") and one(service, "Group") not in ("root", "0")
    assert one(service, "Type") == "notify"       # gunicorn's master calls sd_notify(READY=1)
    writable = set(one(service, "ReadWritePaths").split())
    env = unit_environment(service)
    assert {args.root, env["IMGMW_CACHE_DIR"]} <= writable
    assert one(service, "StateDirectory") == Path(args.root).name
    assert one(service, "CacheDirectory") == Path(env["IMGMW_CACHE_DIR"]).name
    config_fields = {f.name for f in dataclasses.fields(Config)}
    for name in env:
        if name.startswith("IMGMW_"):
            assert name[6:].lower() in config_fields, f"{name} is no config key"
    # malloc settings come from the config, applied by each worker (tests/test_memory.py)
    assert not any(name.startswith("MALLOC_") for name in env)
    assert env["IMGMW_VIEWER_PATH"] == ""                    # no style viewer in production

    # Hardening and restarts.
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                "PrivateTmp": "yes", "PrivateDevices": "yes", "Restart": "on-failure",
                "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes"}
    for key, value in expected.items():
        assert one(service, key) == value, key
    gunicorn = _gunicorn_conf()
    timeout_stop = float(one(service, "TimeoutStopSec").removesuffix("s"))
    assert timeout_stop > gunicorn["graceful_timeout"]

    # systemd's own parser, where this machine has it (CI images without systemd get the checks above).
    analyze = shutil.which("systemd-analyze")
    if analyze:
        binary = shutil.which("imgmiddleware")
        real = binary if binary else f"{sys.executable} -m imgmiddleware.cli"
        unit = tmp_path / "imgmiddleware.service"
        unit.write_text(swap(text, f"ExecStart={argv[0]} ", f"ExecStart={real} "))
        result = subprocess.run([analyze, "verify", "--man=no", str(unit)],
                                capture_output=True, text=True, timeout=60)
        complaints = [line for line in (result.stdout + result.stderr).splitlines()
                      if "imgmiddleware.service" in line]
        assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# --- the container file -----------------------------------------------------------------------------

def test_containerfile(monkeypatch):
    instructions = container_instructions(CONTAINERFILE.read_text(encoding="utf-8"))
    words = [word for word, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert set(words) <= {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "VOLUME",
                          "HEALTHCHECK", "CMD", "ARG", "LABEL"}

    # Everything it copies exists in the build context (the repository root), and what it installs
    # is that context's package.
    copied: dict[str, str] = {}
    for word, rest in instructions:
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            *sources, target = parts
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file in the build context"
                if target.endswith("/"):
                    copied[target + Path(source).name] = source
    runs = " && ".join(rest for word, rest in instructions if word == "RUN")
    # The package at the lock's releases, and the font packages the tests install too.
    assert re.search(r"pip install -c constraints\.txt '\.\[wuffs\]'(\s|$)", runs)
    # The wuffs extra compiles its binding: the compiler comes and goes in the same layer.
    (install,) = [rest for word, rest in instructions if word == "RUN" and "pip install" in rest]
    assert "install -y --no-install-recommends g++" in install and "purge -y --auto-remove g++" in install
    assert (REPO / "setup.py").is_file() and (REPO / "constraints.txt").is_file()
    fonts = {word for word in runs.split() if word.startswith("fonts-")}
    assert fonts == set(FONT_PACKAGES) - {"fonts-dejavu-core"}

    # Not root at run time; the port and volumes match the command.
    (user,) = [rest for word, rest in instructions if word == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert words.index("USER") > words.index("RUN")    # every RUN as root happens before
    (cmd,) = [json.loads(rest) for word, rest in instructions if word == "CMD"]
    assert cmd[0] == "imgmiddleware"
    args = parse_cli(cmd[1:], monkeypatch)
    assert_options_exist(cmd[1:])
    assert args.bind == "0.0.0.0:8080"
    assert [rest for word, rest in instructions if word == "EXPOSE"] == ["8080"]
    env = container_env(instructions)
    (volumes,) = [json.loads(rest) for word, rest in instructions if word == "VOLUME"]
    assert set(volumes) == {args.root, env["IMGMW_CACHE_DIR"]}

    # The configuration it names is one it copied, and loads with the image's environment.
    assert args.config in copied and env["IMGMW_STYLES_FILE"] in copied
    config = Config.load(REPO / copied[args.config], environ=env)
    assert config.cache_dir == env["IMGMW_CACHE_DIR"]
    for name in env:
        if name.startswith("IMGMW_"):
            assert hasattr(config, name[6:].lower()), f"{name} is no config key"

    # The health check asks for the liveness path, which is never queued behind transforms.
    (health,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "urllib" in health
    assert env["HEALTHCHECK_URL"] == "http://127.0.0.1:8080" + config.health_path
    assert env["IMGMW_VIEWER_PATH"] == ""                    # no style viewer in production


# --- the deploy files agree -------------------------------------------------------------------------

def _gunicorn_conf() -> dict:
    namespace: dict = {"__file__": str(GUNICORN_CONF)}
    exec(compile(GUNICORN_CONF.read_text(encoding="utf-8"), str(GUNICORN_CONF), "exec"), namespace)
    return namespace


def test_deploy_files_agree():
    from gunicorn.config import Config as GunicornConfig

    front = FRONT.read_text(encoding="utf-8")
    gunicorn = _gunicorn_conf()
    unit_bind = shlex.split(one(unit_sections(UNIT.read_text())["Service"], "ExecStart"))
    bind = unit_bind[unit_bind.index("--bind") + 1]
    # One address: gunicorn.conf.py's default bind, the unit's --bind, the front site's upstream.
    assert gunicorn["bind"] == bind
    assert re.search(rf"^\s*server {re.escape(bind)};", front, re.M)
    # nginx waits for gunicorn at least as long as gunicorn lets a request run.
    assert nginx_duration(nginx_directive(front, "proxy_read_timeout")) > gunicorn["timeout"]
    # nginx drops idle upstream connections before gunicorn does: under gunicorn.conf.py, under
    # `imgmiddleware serve` (the config's keepalive where it has one) and at gunicorn's default.
    idle = nginx_duration(nginx_directive(front, "keepalive_timeout"))
    assert idle < min(gunicorn["keepalive"], GunicornConfig().keepalive,
                      getattr(Config(), "keepalive", gunicorn["keepalive"]))
    # The cache key holds the query; the mandated cache behaviours are on.
    assert nginx_directive(front, "proxy_cache_key") == '"$scheme$request_method$host$request_uri"'
    assert nginx_directive(front, "proxy_set_header Host") == "$host"
    stale = nginx_directive(front, "proxy_cache_use_stale").split()
    assert {"error", "timeout", "updating", "http_500", "http_502", "http_503", "http_504"} <= set(stale)
    assert nginx_directive(front, "proxy_cache_background_update") == "on"
    assert not re.search(r"^\s*proxy_ignore_headers", front, re.M)   # Cache-Control / Expires honoured
