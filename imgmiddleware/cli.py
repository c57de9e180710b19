"""The ``imgmiddleware`` command: ``serve`` (gunicorn in front of the middleware), ``process`` and
``cache``."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import itertools
import logging
import os
import sys
import tomllib
from pathlib import Path
from urllib.parse import quote

from .config import Config, packaged_config_file
from .memory import tune_malloc

SAMPLES = Path(__file__).resolve().parent / "samples"
# The examples printed at start, per kind of image, each doing what it says. An animation keeps its
# frames only through resize, crop and watermark (docs/COMPATIBILITY.md, "What keeps an animation"):
# rotate, blur or circle on a GIF would quietly answer with one still frame, so it gets none of them.
STILL_PROCESSES = (
    "image/resize,w_200",
    "image/resize,m_fill,w_160,h_160/circle,r_80/format,png",
    "image/crop,w_200,h_200,g_center/rotate,90",
    "image/resize,w_300/blur,r_3,s_2/format,webp",
    "image/info",
)
WATERMARK_TEXT = base64.urlsafe_b64encode(b"imgmiddleware").decode().rstrip("=")
ANIMATION_PROCESSES = (
    "image/resize,w_200",
    "image/crop,w_200,h_200,g_center",
    "image/resize,w_200/format,webp",
    f"image/resize,w_300/watermark,text_{WATERMARK_TEXT},color_FFFFFF,size_24",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif")
MAX_FILES_SCANNED = 1000   # files looked at for examples: bounds the master's start on a large root
LOCAL_CONFIG = Path("conf") / "imgmiddleware.toml"


class UsageError(Exception):
    """A mistake in the command line or the files it names: one line on stderr and exit status 2,
    never a traceback."""


def config_file(explicit: str | None) -> Path:
    """The file every command loads: ``--config PATH``, else ./conf/imgmiddleware.toml when the working
    directory has one (an operator's copy), else the copy shipped inside the package, so the embedded
    default is the same from any directory."""
    if explicit:
        return Path(explicit)
    if LOCAL_CONFIG.is_file():
        return LOCAL_CONFIG
    return packaged_config_file()


def load_config(path: str | None) -> Config:
    chosen = config_file(path)
    try:
        return Config.load(chosen)
    except OSError as err:
        raise UsageError(f"cannot read the configuration {chosen}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, ValueError) as err:
        raise UsageError(f"the configuration {chosen} is not valid: {err}") from None


def describe_config(path: str | None) -> str:
    """Which configuration a command runs with, for the start-up log."""
    chosen = config_file(path)
    why = ("--config" if path else "the working directory's conf/" if chosen == LOCAL_CONFIG
           else "the packaged default")
    env = sorted(name for name in os.environ if name.startswith("IMGMW_") and
                 name[6:].lower() in Config.__dataclass_fields__)
    overrides = f"; overridden by {', '.join(env)}" if env else ""
    return f"configuration: {os.path.abspath(chosen)} ({why}{overrides})"


EXAMPLE_BUCKET = "examplebucket"
DEFAULT_ROOT = "oss-data"


def build_app(root: str, config: Config, static: bool = False):
    """The embedded default: the middleware over the bundled OSS-compatible bucket app on ``root``
    (``root/<bucket>/<key>``), or over a plain static folder when ``static``."""
    from .middleware import ImageMiddleware
    from .origins.bucket import META_DIR, BucketApp
    from .origins.static import static_app
    from .styles import StyleStore

    if config.upstream:
        from .origins.proxy import proxy_from_config

        # A public origin, or a private bucket the proxy signs for (upstream_bucket, upstream_signing)
        proxy = proxy_from_config(config)
        store = StyleStore(config.styles_file or None, inline=config.styles)
        return ImageMiddleware(proxy, config, addressing=proxy.addressing, style_store=store)
    if static:
        store = StyleStore(config.styles_file or None, inline=config.styles)
        return ImageMiddleware(static_app(root), config, style_store=store)
    store = StyleStore(config.styles_file or None, Path(root) / META_DIR / "styles", config.styles)
    bucket = BucketApp(root, config.credentials, config.bucket_acl, config.default_acl, styles=store,
                       region=config.region)
    return ImageMiddleware(bucket, config, addressing=bucket.addressing, style_store=store)


def seed_example_bucket(root: str) -> None:
    """A fresh data root gets one bucket with the sample images, so the URLs printed work."""
    path = Path(root)
    if path.exists() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return
    bucket = path / EXAMPLE_BUCKET
    bucket.mkdir(parents=True, exist_ok=True)
    for sample in SAMPLES.iterdir():
        if sample.is_file():
            (bucket / sample.name).write_bytes(sample.read_bytes())


def _visible(names: list[str]) -> list[str]:
    """Names in order, without the hidden ones (the bucket app's .imgmw/ metadata, uploads in flight)."""
    return sorted(name for name in names if not name.startswith("."))


def is_animation(path: Path) -> bool:
    """A GIF or WebP with more than one frame (Pillow reads the headers; the master never runs OpenCV)."""
    if path.suffix.lower() not in (".gif", ".webp"):
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:   # unreadable or not an image at all: not an example
        return False


def _files(top: Path):
    """Visible files under ``top``, in name order, a directory's own files before its subdirectories'."""
    for directory, dirs, files in os.walk(top):
        dirs[:] = _visible(dirs)
        for name in _visible(files):
            yield Path(directory) / name


def find_samples(root: str, static: bool = False) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """([(bucket, key, animated)], buckets): the first still image and the first animation of the data
    root, taken from the first buckets that have images, in name order, so the printed URLs name
    objects that exist. ``bucket`` is "" for a plain folder."""
    folder = Path(root)
    if not folder.is_dir():
        return [], []
    buckets = [] if static else [name for name in _visible(os.listdir(folder)) if (folder / name).is_dir()]
    tops = [("", folder)] if static else [(bucket, folder / bucket) for bucket in buckets]
    files = ((bucket, top, path) for bucket, top in tops for path in _files(top))
    found: dict[bool, tuple[str, str, bool]] = {}
    for bucket, top, path in itertools.islice(files, MAX_FILES_SCANNED):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            animated = is_animation(path)
            found.setdefault(animated, (bucket, path.relative_to(top).as_posix(), animated))
            if len(found) == 2:
                break
    return sorted(found.values(), key=lambda sample: sample[2]), buckets


def example_urls(base: str, samples: list[tuple[str, str, bool]]) -> list[str]:
    """URLs to try: each sample object as it is, then the examples of its kind (still or animated)."""
    urls = []
    for bucket, key, animated in samples:
        url = f"{base}/{bucket}/{quote(key)}" if bucket else f"{base}/{quote(key)}"
        urls.append(url)
        urls += [f"{url}?x-oss-process={p}" for p in (ANIMATION_PROCESSES if animated else STILL_PROCESSES)]
    return urls


def tune_worker_malloc(config: Config) -> bool:
    """The worker's glibc malloc settings from the config (imgmiddleware/memory.py says why)."""
    return tune_malloc(config.malloc_mmap_threshold, config.malloc_trim_threshold,
                       config.malloc_arena_max)


def log_fonts(config: Config, handlers: list | None = None) -> None:
    """Which font file serves each OSS font name, once, from the master: the workers inherit the
    resolved table through fork. Errors (a name with no face, a face without Chinese) are loud.
    The package's log goes to ``handlers`` (gunicorn's error log, from deploy/gunicorn.conf.py), or
    to standard output in gunicorn's format, unless the application has set up its own."""
    from .imaging.fonts import font_table_for

    logger = logging.getLogger("imgmiddleware")
    if not logger.handlers:
        if not handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter(
                "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
            handlers = [handler]
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    font_table_for(config)


def exposure_warning(bind: str) -> str | None:
    """A warning when ``bind`` reaches beyond this machine. Slow clients are cut off by the worker's
    own timeouts (server/, issue 15), but nothing here limits connections per client or speaks TLS:
    on loopback only a local front (nginx, a CDN's agent) reaches the server."""
    if bind.startswith(("unix:", "fd://")):
        return None
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if local:
        return None
    return (f"WARNING: imgmiddleware is bound to {bind}, beyond loopback. Slow clients are cut off "
            "(the client_* timeouts), but nothing limits connections per client and there is no TLS: "
            "on a public network put a front before it (nginx with deploy/nginx-front.conf).")


def serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    config = load_config(args.config)
    # Printed by the master, once, before gunicorn starts any worker.
    print(f"imgmiddleware {describe_config(args.config)}", flush=True)
    log_fonts(config)
    from .imaging import png
    logging.getLogger("imgmiddleware").info(png.decoders())
    overrides = {name: getattr(args, name) for name in
                 ("bind", "workers", "threads", "timeout", "max_requests", "upstream")
                 if getattr(args, name, None) is not None}
    if getattr(args, "metrics", None) is not None:
        overrides["metrics"] = args.metrics == "on"
    if getattr(args, "metrics_bind", None) is not None:
        overrides["metrics_bind"] = args.metrics_bind
    config = config.replace(**overrides)
    warning = exposure_warning(config.bind)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    static = args.static is not None
    root = args.static if static else args.root
    if not static and not config.upstream:
        seed_example_bucket(root)
    cv_threads = config.opencv_threads or max(1, (os.cpu_count() or 1) // config.workers)
    # Operations (telemetry/master.py): metrics_bind is bound now, so a taken address fails here;
    # the instance's directory (metrics of every worker, the readiness board) before any worker.
    from .server.preload import share_before_fork
    from .telemetry import master

    exporter = None
    if config.metrics and config.metrics_bind:
        try:
            exporter = master.listen(config.metrics_bind)
        except OSError as err:
            raise UsageError(f"cannot listen on metrics_bind {config.metrics_bind}: "
                             f"{err.strerror or err}") from None
    directory = master.Directory()

    def when_ready(server):
        print_urls(server, root, static, config.upstream, config.viewer_path)
        if exporter is not None:
            master.start(exporter)
            print(f"metrics (from gunicorn's master): http://{config.metrics_bind}/metrics", flush=True)

    def post_fork(server, worker):
        # malloc settings first, before the worker has threads (their arenas would already exist).
        tune_worker_malloc(config)
        # OpenCV's thread pool is made per process on first use; size it for this worker's share
        # of the cores (the master never runs OpenCV, so nothing is inherited across the fork).
        import cv2
        cv2.setNumThreads(cv_threads)

    class Server(BaseApplication):
        def load_config(self):
            settings = {
                # gunicorn's event loop reads requests, the app runs in `threads` threads once one
                # has arrived whole: slow clients hold connections, not threads (server/, issue 15).
                "bind": config.bind, "workers": config.workers,
                "worker_class": "imgmiddleware.server.worker.EventLoopWorker",
                "threads": config.threads, "timeout": config.timeout, "graceful_timeout": 30,
                "keepalive": config.keepalive, "max_requests": config.max_requests,
                "max_requests_jitter": config.max_requests_jitter, "post_fork": post_fork,
                # The workers' libraries loaded once, in the master, and shared (server/preload.py).
                "pre_fork": lambda server, worker: share_before_fork(),
                "when_ready": when_ready,
                # A worker gone (exit, crash, SIGKILL): its live gauges dropped, its counts folded
                # into the instance's archive, so they add up across restarts.
                "child_exit": lambda server, worker: directory.worker_exited(worker.pid),
                "on_exit": lambda server: directory.remove(),
                # Our own access log (telemetry/accesslog.py, access_log) replaces gunicorn's.
                "accesslog": None,
                # gunicorn 25.1+ opens a control socket for gunicornc at one path per user
                # (~/.gunicorn/gunicorn.ctl): a second instance on the host takes it over, and removes
                # it when it stops. None, unless IMGMW_CONTROL_SOCKET names this instance's own.
                "control_socket_disable": not os.environ.get("IMGMW_CONTROL_SOCKET"),
                "control_socket": os.environ.get("IMGMW_CONTROL_SOCKET") or None,
            }
            for name, value in settings.items():
                if name.startswith("control_socket") and (value is None or name not in self.cfg.settings):
                    continue   # no path of its own (disabled), or a gunicorn before 25.1 (none at all)
                self.cfg.set(name, value)

        def load(self):
            # Built in each worker, after the fork: caches, SQLite connections and pools are per
            # process, never shared through fork.
            from .server.bridge import BufferedWSGI

            return BufferedWSGI(build_app(root, config, static), config)

    master_pid = os.getpid()
    try:
        Server().run()
    finally:
        if os.getpid() == master_pid:     # a worker leaves run() too, by SystemExit, when it ends
            directory.remove()
    return 0


def print_urls(server, root: str, static: bool = False, upstream: str = "", viewer_path: str = "") -> None:
    """What to try, naming objects the data root really has (or saying it has none)."""
    samples, buckets = ([], []) if upstream else find_samples(root, static)
    for sock in server.LISTENERS:
        host, port = sock.sock.getsockname()[:2]
        base = f"http://{host}:{port}"
        what = "the folder" if static else "OSS-compatible buckets in"
        if upstream:
            print(f"imgmiddleware is serving {upstream} (reverse proxy) at {base}", flush=True)
        elif samples:
            print(f"imgmiddleware is serving {what} {root} at {base}; try:", flush=True)
            for url in example_urls(base, samples):
                print("  " + url, flush=True)
        else:
            where = f"{root}/<file>" if static else f"{root}/<bucket>/<key>, or upload them with an OSS SDK"
            print(f"imgmiddleware is serving {what} {root} at {base}; there are no images in it yet "
                  f"(put some at {where})", flush=True)
        if viewer_path:
            page = "/" + viewer_path.strip("/") + "/"
            # The bucket of the first example, else the first bucket; none when there is no bucket.
            bucket = samples[0][0] if samples else (buckets[0] if buckets else "")
            query = f"?bucket={quote(bucket)}" if bucket else ""
            print(f"the style viewer (try process strings, save styles): {base}{page}{query}", flush=True)


def process(args: argparse.Namespace) -> int:
    """Run one process string on a local file, offline; for trying and scripting."""
    from .errors import OssError
    from .process import parse, run

    config = load_config(args.config)
    try:
        data = Path(args.input).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {args.input}: {err.strerror or err}") from None
    output = Path(args.output)
    if not output.parent.is_dir():   # before the work, not after it
        raise UsageError(f"cannot write {args.output}: {output.parent} is not a directory")
    try:
        result = run(parse(args.process, config), data, config)
    except OssError as err:
        # What the HTTP answer would say: status, Code and EC.
        ec = f" EC {err.ec}" if err.ec else ""
        print(f"imgmiddleware process: {err.status} {err.code}{ec}: {err.message}", file=sys.stderr)
        return 1
    mismatch = extension_mismatch(output, result.content_type)
    if mismatch:
        print(f"imgmiddleware process: warning: {mismatch}", file=sys.stderr)
    try:
        output.write_bytes(result.body)
    except OSError as err:
        raise UsageError(f"cannot write {args.output}: {err.strerror or err}") from None
    print(f"{args.output}: {result.content_type}, {len(result.body)} bytes")
    return 0


# What each output is called, and the file extensions that name it (jpg/jpeg, tif/tiff: synonyms).
OUTPUT_NAMES = {
    "image/jpeg": ("JPEG", (".jpg", ".jpeg")), "image/png": ("PNG", (".png",)),
    "image/webp": ("WebP", (".webp",)), "image/gif": ("GIF", (".gif",)), "image/bmp": ("BMP", (".bmp",)),
    "image/tiff": ("TIFF", (".tif", ".tiff")), "image/avif": ("AVIF", (".avif",)),
    "image/heic": ("HEIC", (".heic", ".heif")), "application/json": ("JSON", (".json",)),
}
# The format action that makes an output match its name.
FORMAT_OF_EXTENSION = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".gif": "gif",
                       ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff", ".avif": "avif", ".heic": "heic"}


def extension_mismatch(output: Path, content_type: str) -> str:
    """Why the output's name and its bytes disagree ("" when they agree or the name has no extension):
    an x.png that holds a JPEG misleads whatever opens it later."""
    suffix = output.suffix.lower()
    name, suffixes = OUTPUT_NAMES.get(content_type, (content_type, ()))
    if not suffix or suffix in suffixes:
        return ""
    wanted = FORMAT_OF_EXTENSION.get(suffix)
    hint = f" (/format,{wanted} would make one)" if wanted and content_type.startswith("image/") else ""
    return (f"{output.name} is named {suffix} but the result is {name} ({content_type}); "
            f"written as it is{hint}")


def cache_command(args: argparse.Namespace) -> int:
    """Statistics or clearing of the disk tier this machine's workers share and, with
    cache_redis_url, of the tier every node shares (each worker's memory tier lives and dies with
    the worker; entries are revalidated on hits, so they are never served stale past
    validator_trust_seconds)."""
    from .cache import ResultCache

    config = load_config(args.config)
    if not config.cache_dir and not config.cache_redis_url:
        print("no disk cache: cache_dir is not set in the configuration", file=sys.stderr)
        return 1
    cache = ResultCache(0, config.cache_dir, config.cache_disk_bytes)
    shared = None
    if config.cache_redis_url:
        from .cache.shared import SharedTier
        shared = SharedTier.from_config(config)
    try:
        if config.cache_dir:
            _disk_command(args.action, cache, config)
        if shared is not None:
            try:
                _shared_command(args.action, shared, config)
            except Exception as exc:       # redis errors: one line, never a traceback or a password
                print(f"shared tier {shared.endpoint}: {shared._scrub(exc)}", file=sys.stderr)
                return 1
    finally:
        cache.close()
        if shared is not None:
            shared.close()
    return 0


def _disk_command(action: str, cache, config: Config) -> None:
    if action == "clear":
        before = cache.stats()
        cache.clear()
        print(f"cleared {before.disk_entries} results ({before.disk_bytes} bytes) from {config.cache_dir}")
        return
    stats = cache.stats()
    print(f"directory: {os.path.abspath(config.cache_dir)}")
    print(f"results:   {stats.disk_entries}")
    print(f"bytes:     {stats.disk_bytes} of {config.cache_disk_bytes} "
          f"({100 * stats.disk_bytes / max(config.cache_disk_bytes, 1):.1f}%)")
    # The bound counts the index too (diskcache culls by its whole volume).
    print(f"index:     {stats.disk_index_bytes} (the SQLite database of the entries)")


def _shared_command(action: str, shared, config: Config) -> None:
    if action == "clear":
        deleted = shared.clear()
        print(f"cleared {deleted} keys under {config.cache_redis_prefix} from {shared.endpoint} (every node)")
        return
    import hashlib

    from .cache import engine_version
    from .imaging.fonts import font_table_for

    held = shared.inventory()
    print(f"shared:    {shared.endpoint} (prefix {config.cache_redis_prefix}, "
          f"{held['nodes']} node{'s' if held['nodes'] != 1 else ''})")
    print(f"  results: {held['entries']} ({held['entry_bytes']} bytes; "
          f"at most {config.cache_redis_max_entry_bytes} each, {config.cache_redis_ttl_seconds} s TTL)")
    print(f"  memos:   {held['memos']}")
    limit = held["maxmemory"] or "no maxmemory"
    print(f"  server:  {held['used_memory']} bytes used of {limit} ({held['policy']})")
    # Nodes share a result only when they compute the same key: the engine (versions), the output
    # settings and the font table must agree. Compare this line across nodes.
    fingerprint = "\n".join((engine_version(), config.output_fingerprint(),
                             font_table_for(config).fingerprint))
    print(f"  keys:    {hashlib.sha256(fingerprint.encode()).hexdigest()[:12]} (engine, output settings "
          "and fonts: the same on every node that shares results)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgmiddleware", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: ./conf/imgmiddleware.toml if present, "
                                         "else the packaged default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="serve a folder through the middleware with gunicorn")
    p_serve.add_argument("--root", default=DEFAULT_ROOT,
                         help="data root of the bundled bucket app: ROOT/<bucket>/<key> (default: "
                              f"./{DEFAULT_ROOT}, created with an '{EXAMPLE_BUCKET}' of samples)")
    p_serve.add_argument("--static", metavar="DIR", help="serve a plain folder instead of buckets")
    p_serve.add_argument("--upstream", metavar="URL",
                         help="reverse-proxy this HTTP origin (nginx, S3, OSS, a CDN origin) instead")
    p_serve.add_argument("--bind", help="HOST:PORT (default: the config's bind, 127.0.0.1:8080)")
    p_serve.add_argument("--workers", type=int, help="worker processes (default: config, 2)")
    p_serve.add_argument("--threads", type=int, help="threads per worker (default: config, 4)")
    p_serve.add_argument("--timeout", type=int, help="seconds before a silent worker is restarted")
    p_serve.add_argument("--metrics", choices=("on", "off"),
                         help="Prometheus metrics (default: config, on); off costs nothing per request")
    p_serve.add_argument("--metrics-bind", metavar="HOST:PORT", dest="metrics_bind",
                         help="serve the metrics from gunicorn's master there too (default: config, none)")
    p_serve.add_argument("--max-requests", type=int, dest="max_requests",
                         help="recycle a worker after this many requests (with jitter)")
    p_serve.set_defaults(func=serve)

    p_proc = sub.add_parser("process", help="apply a process string to a local file")
    p_proc.add_argument("input")
    p_proc.add_argument("process", help="e.g. image/resize,w_100/format,webp")
    p_proc.add_argument("output")
    p_proc.set_defaults(func=process)

    p_cache = sub.add_parser("cache", help="show statistics of the disk cache (and of the shared Redis "
                                           "tier, when configured), or clear them")
    p_cache.add_argument("action", choices=("stats", "clear"))
    p_cache.set_defaults(func=cache_command)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"imgmiddleware {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
