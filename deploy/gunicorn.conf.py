# gunicorn settings for imgmiddleware:
#   gunicorn -c deploy/gunicorn.conf.py imgmiddleware.wsgi:application
# Every value can be overridden on the command line or through GUNICORN_CMD_ARGS.
# The application (imgmiddleware/wsgi.py) reads IMGMW_ROOT / IMGMW_STATIC / IMGMW_CONFIG; the
# IMGMW_BIND / IMGMW_WORKERS / IMGMW_THREADS below are read here only. `imgmiddleware serve` (what
# deploy/imgmiddleware.service and deploy/Containerfile run) does not read this file: it sets the
# same gunicorn settings itself, from its options and the config file (`imgmiddleware serve --help`).
# The numbers below are mirrored in deploy/nginx-front.conf (upstream keepalive_timeout,
# proxy_read_timeout) and deploy/imgmiddleware.service (TimeoutStopSec): change them together.
import multiprocessing
import os

# Where to listen. Behind nginx keep it on loopback (or a unix socket); nginx-front.conf's upstream
# points at 127.0.0.1:8080. gunicorn trusts X-Forwarded-Proto/-For only from forwarded_allow_ips
# (default 127.0.0.1,::1), i.e. from an nginx on the same machine.
bind = os.environ.get("IMGMW_BIND", "127.0.0.1:8080")

# Image work is CPU-bound: one process per core. Each process runs the app in a few threads because
# OpenCV releases the GIL while it decodes, resizes and encodes, so threads overlap I/O and pixels.
# Requests are read by the worker's event loop, not by those threads (imgmiddleware/server/): a client
# that sends slowly holds a connection, never a thread, and is cut off by the config's client_*
# timeouts (gthread read heads and bodies in its threads, so a few trickling clients stalled a node).
# The worker wraps the WSGI app named on the command line; `imgmiddleware serve` runs the same.
workers = int(os.environ.get("IMGMW_WORKERS", multiprocessing.cpu_count()))
worker_class = "imgmiddleware.server.worker.EventLoopWorker"
threads = int(os.environ.get("IMGMW_THREADS", 4))

# A 20 MB source at the pixel limit takes well under this; anything slower is a stuck worker.
# nginx waits a little longer (proxy_read_timeout 65s), so gunicorn's verdict comes first.
timeout = 60
# On SIGTERM, requests in flight get this long to finish (systemd's TimeoutStopSec is 35 s).
graceful_timeout = 30
# Idle keep-alive connections (nginx's upstream keepalive) are closed after 5 s; nginx drops its
# side first (keepalive_timeout 1s in the upstream block), so it never reuses one being closed.
keepalive = 5

# Recycle workers now and then so heap fragmentation from large images cannot grow without bound
# (the config's malloc_* settings, applied in each worker, keep it small in the first place).
max_requests = 2000
max_requests_jitter = 200


# gunicorn's own access log stays off: the worker writes one line per request itself (the config's
# access_log and access_log_format: JSON by default, with the request id, cache outcome and times).
accesslog = None

# Operations (imgmiddleware/telemetry/master.py): the instance's directory for the workers' metrics
# and the readiness board (PROMETHEUS_MULTIPROC_DIR, else a fresh temporary one), a dead worker's
# counts folded so they survive restarts, and the config's metrics_bind served by this master.
_telemetry = {}


def on_starting(server):
    """Once, in the master: which font file serves each OSS font name, in gunicorn's error log (loud
    where a name has no face). The workers inherit the resolved table through fork. Then the
    telemetry directory, before any worker exists, and metrics_bind's listener, bound now."""
    from imgmiddleware.cli import load_config, log_fonts
    from imgmiddleware.telemetry import master

    config = load_config(os.environ.get("IMGMW_CONFIG"))
    log_fonts(config, server.log.error_log.handlers)
    _telemetry["directory"] = master.Directory()
    if config.metrics and config.metrics_bind:
        _telemetry["exporter"] = master.listen(config.metrics_bind)


def pre_fork(server, worker):
    """In the master, before each fork: OpenCV, NumPy, Pillow and the engine loaded once here and
    shared copy-on-write by every worker (imgmiddleware/server/preload.py)."""
    from imgmiddleware.server.preload import share_before_fork

    share_before_fork()


def when_ready(server):
    from imgmiddleware.telemetry import master

    if "exporter" in _telemetry:
        master.start(_telemetry["exporter"])


def child_exit(server, worker):
    _telemetry["directory"].worker_exited(worker.pid)


def on_exit(server):
    _telemetry["directory"].remove()

# gunicorn 25.1+ opens a control socket for gunicornc at one path per user ($XDG_RUNTIME_DIR or
# ~/.gunicorn/gunicorn.ctl): a second instance on the host takes it over, and removes it when it
# stops. None here, unless IMGMW_CONTROL_SOCKET names this instance's own path (as for
# `imgmiddleware serve`); older gunicorns ignore both settings.
control_socket_disable = not os.environ.get("IMGMW_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["IMGMW_CONTROL_SOCKET"]
