"""The ``imgmiddleware`` command: ``serve`` (gunicorn in front of the middleware) and ``process``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import Config
from .memory import tune_malloc

SAMPLES = Path(__file__).resolve().parent / "samples"
TRY_PROCESSES = (
    "image/resize,w_200",
    "image/resize,m_fill,w_160,h_160/circle,r_80/format,png",
    "image/crop,w_200,h_200,g_center/rotate,90",
    "image/resize,w_300/blur,r_3,s_2/format,webp",
    "image/info",
)


def load_config(path: str | None) -> Config:
    if path:
        return Config.load(path)
    local = Path("conf") / "imgmiddleware.toml"
    return Config.load(local if local.is_file() else None)


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
        from .origins.proxy import ProxyApp

        proxy = ProxyApp(config.upstream, config.upstream_connect_timeout, config.upstream_read_timeout,
                         config.upstream_pool_size)
        store = StyleStore(config.styles_file or None, inline=config.styles)
        return ImageMiddleware(proxy, config, style_store=store)
    if static:
        store = StyleStore(config.styles_file or None, inline=config.styles)
        return ImageMiddleware(static_app(root), config, style_store=store)
    store = StyleStore(config.styles_file or None, Path(root) / META_DIR / "styles", config.styles)
    bucket = BucketApp(root, config.credentials, config.bucket_acl, config.default_acl, styles=store)
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


def example_urls(base: str, root: str, static: bool = False) -> list[str]:
    folder = Path(root) if static else Path(root) / EXAMPLE_BUCKET
    prefix = base if static else f"{base}/{EXAMPLE_BUCKET}"
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in
                   (".jpg", ".jpeg", ".png", ".gif", ".webp"))[:2]
    urls = [f"{prefix}/{name}" for name in names[:1]]
    for name in names:
        urls += [f"{prefix}/{name}?x-oss-process={p}" for p in TRY_PROCESSES]
    return urls


def tune_worker_malloc(config: Config) -> bool:
    """The worker's glibc malloc settings from the config (imgmiddleware/memory.py says why)."""
    return tune_malloc(config.malloc_mmap_threshold, config.malloc_trim_threshold,
                       config.malloc_arena_max)


def serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    config = load_config(args.config)
    overrides = {name: getattr(args, name) for name in
                 ("bind", "workers", "threads", "timeout", "max_requests", "upstream")
                 if getattr(args, name, None) is not None}
    config = config.replace(**overrides)
    static = args.static is not None
    root = args.static if static else args.root
    if not static and not config.upstream:
        seed_example_bucket(root)
    cv_threads = config.opencv_threads or max(1, (os.cpu_count() or 1) // config.workers)

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
                "bind": config.bind, "workers": config.workers, "worker_class": "gthread",
                "threads": config.threads, "timeout": config.timeout, "graceful_timeout": 30,
                "keepalive": config.keepalive, "max_requests": config.max_requests,
                "max_requests_jitter": config.max_requests_jitter, "post_fork": post_fork,
                "when_ready": lambda server: print_urls(server, root, static, config.upstream,
                                                        config.viewer_path),
            }
            for name, value in settings.items():
                self.cfg.set(name, value)

        def load(self):
            # Built in each worker, after the fork: caches, SQLite connections and pools are per
            # process, never shared through fork.
            return build_app(root, config, static)

    Server().run()
    return 0


def print_urls(server, root: str, static: bool = False, upstream: str = "", viewer_path: str = "") -> None:
    for sock in server.LISTENERS:
        host, port = sock.sock.getsockname()[:2]
        base = f"http://{host}:{port}"
        if upstream:
            print(f"imgmiddleware is serving {upstream} (reverse proxy) at {base}", flush=True)
        else:
            what = "the folder" if static else "OSS-compatible buckets in"
            print(f"imgmiddleware is serving {what} {root} at {base}; try:", flush=True)
            for url in example_urls(base, root, static):
                print("  " + url, flush=True)
        if viewer_path:
            page = "/" + viewer_path.strip("/") + "/"
            query = "" if static or upstream else f"?bucket={EXAMPLE_BUCKET}"
            print(f"the style viewer (try process strings, save styles): {base}{page}{query}", flush=True)


def process(args: argparse.Namespace) -> int:
    """Run one process string on a local file, offline; for trying and scripting."""
    from .errors import OssError
    from .process import parse, run

    config = load_config(args.config)
    data = Path(args.input).read_bytes()
    try:
        result = run(parse(args.process, config), data, config)
    except OssError as err:
        print(f"{err.status} {err.code} {err.ec or ''}: {err.message}", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(result.body)
    print(f"{args.output}: {result.content_type}, {len(result.body)} bytes")
    return 0


def cache_command(args: argparse.Namespace) -> int:
    """Statistics or clearing of the shared disk tier (each worker's memory tier lives and dies with
    the worker; its entries are revalidated on every hit, so they are never stale)."""
    from .cache import ResultCache

    config = load_config(args.config)
    if not config.cache_dir:
        print("no disk cache: cache_dir is not set in the configuration", file=sys.stderr)
        return 1
    cache = ResultCache(0, config.cache_dir, config.cache_disk_bytes)
    try:
        if args.action == "clear":
            before = cache.stats()
            cache.clear()
            print(f"cleared {before.disk_entries} results ({before.disk_bytes} bytes) from {config.cache_dir}")
        else:
            stats = cache.stats()
            print(f"directory: {os.path.abspath(config.cache_dir)}")
            print(f"results:   {stats.disk_entries}")
            print(f"bytes:     {stats.disk_bytes} of {config.cache_disk_bytes} "
                  f"({100 * stats.disk_bytes / max(config.cache_disk_bytes, 1):.1f}%)")
    finally:
        cache.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgmiddleware", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: conf/imgmiddleware.toml if present)")
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
    p_serve.add_argument("--max-requests", type=int, dest="max_requests",
                         help="recycle a worker after this many requests (with jitter)")
    p_serve.set_defaults(func=serve)

    p_proc = sub.add_parser("process", help="apply a process string to a local file")
    p_proc.add_argument("input")
    p_proc.add_argument("process", help="e.g. image/resize,w_100/format,webp")
    p_proc.add_argument("output")
    p_proc.set_defaults(func=process)

    p_cache = sub.add_parser("cache", help="show statistics of the shared disk cache, or clear it")
    p_cache.add_argument("action", choices=("stats", "clear"))
    p_cache.set_defaults(func=cache_command)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
