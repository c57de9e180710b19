"""One typed, validated Config: every limit and default of the service, each with its OSS source.

Load order: the dataclass defaults below (OSS's published values), then a TOML file (the commands pick
one: see ``cli.config_file``), then environment variables ``IMGMW_<FIELD NAME IN UPPER CASE>``. Unknown
keys are an error, so a typo in a config file never passes silently. A relative ``styles_file`` in a file
is relative to that file's directory, so a config and its styles move together.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

MB = 1024 * 1024
# The choices of the private-bucket settings (origins/proxy/ uses the same).
UPSTREAM_ADDRESSING = ("auto", "virtual", "path")
UPSTREAM_SIGNING = ("s3", "oss-v1", "oss-v4")
UPSTREAM_ORIGINALS = ("private", "public-read")
# S3's bucket names (OSS's are the same without dots): 3 to 63 of a-z, 0-9, "-" and ".".
UPSTREAM_BUCKET_NAME = re.compile(r"(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")

# What readiness may also require (telemetry/health.py), and the access log's formats.
READINESS_CHECKS = ("origin", "redis")
ACCESS_LOG_FORMATS = ("json", "text")


@dataclass(frozen=True)
class Config:
    # --- source limits, checked on the header before any pixel is decoded (spec §2) ---
    max_source_bytes: int = 20 * MB            # OSS: source object <= 20 MB
    max_source_side: int = 30_000              # OSS: each side <= 30,000 px (ECs: process/limits.py)
    max_source_pixels: int = 250_000_000       # OSS: W x H x frames <= 250,000,000 (process/limits.py)
    max_rotate_side: int = 4096                # OSS: rotate / auto-orient source sides <= 4096 px
    max_frames: int = 1000                     # ours: frames of an animation (OSS counts them in pixels)
    # --- output limits (spec §2, §5.1) ---
    max_output_side: int = 16_384              # OSS: resize output side <= 16,384 (EC 0040-00000007)
    max_output_pixels: int = 16_777_216        # OSS: resize output W x H <= 4096^2 (EC 0040-00000007)
    # --- request language (spec §1.1) ---
    max_process_length: int = 4096             # OSS: capped, number unpublished (EC 0017-00000288)
    accept_jpeg_alias: bool = False            # OSS rejects format,jpeg (EC 0040-00000206)
    max_watermark_images: int = 3              # OSS: at most 3 distinct image watermarks per image
    # --- encoder defaults: OSS's own, to the byte (docs/COMPATIBILITY.md decision 12) ---
    jpeg_quality: int = 82                     # OSS: a fixed 82, whatever the source's quality
    webp_quality: int = 82                     # [INF] OSS's JPEG figure; none of its WebP is published
    avif_quality: int = 80
    heic_quality: int = 80                     # with the 'heif' extra
    jpeg_optimize: bool = True                 # optimized Huffman tables (OSS's outputs have them)
    png_compression: int = 6                   # zlib level (with Z_RLE every level gives the same bytes)
    png_strategy: str = "rle"                  # zlib strategy: rle (OSS's), default, filtered, huffman, fixed
    avif_speed: int = 10                       # libavif 0 (slow) .. 10 (fast): 13 MP in 0.7 s, same size and PSNR as 8 (bench/encode_bench.py)
    # libwebp's effort by output size (imaging/encode.py, WEBP_EFFORT): "PIXELS:METHOD" rows, comma
    # separated; an output of at least PIXELS is encoded at METHOD (0 fastest .. 6 smallest), the row
    # with the largest PIXELS it reaches; below every row, libwebp's method 4 (OpenCV's bytes). "" is
    # method 4 at every size. The default halves the encode of a 24-30 MP output (27 MP: 2.2-3.0 s
    # -> 1.0-1.5 s) for 14-15% more bytes at the same SSIM (bench/large_output_bench.py).
    webp_effort: str = "16000000:2"
    # --- engine ---
    shrink_on_load: bool = True                # JPEG DCT-domain reduced decode when geometry allows
    # The reduced decode must be at least this many times the resize target on each side. 2.0 (47-53 dB
    # against a full decode on a 13 MP photo) keeps OSS's own thumbnails byte for byte: OSS decoded
    # 400x267 whole for a 100x100 that a 1/2 decode covers 1.34 times (decision 12); 1.0 is the
    # fastest (38-46 dB).
    shrink_on_load_margin: float = 2.0
    # --- result cache (ours; OSS publishes nothing about its own) ---
    cache_memory_bytes: int = 64 * MB          # in-process LRU, per worker; 0 turns it off
    cache_dir: str = ""                        # disk tier shared by the workers; "" turns it off
    cache_disk_bytes: int = 1024 * MB          # disk tier bound (approximate: diskcache culls)
    cache_wait_seconds: int = 30               # longest wait for another request doing the same work
    # --- the shared result tier on Redis or Valkey, for many nodes (issue 16; cache/shared.py) ---
    # "" turns it off. redis://[user:password@]host:port/db, rediss:// (TLS), unix:///path.sock?db=0,
    # or a Redis Cluster: redis+cluster://host:port[,host:port...] (rediss+cluster:// for TLS; any one
    # node finds the others). Never logged with its password.
    cache_redis_url: str = field(default="", repr=False)
    # The password, when it is not in the URL: IMGMW_CACHE_REDIS_PASSWORD keeps it out of files.
    cache_redis_password: str = field(default="", repr=False)
    cache_redis_prefix: str = "imgmw:"         # every key of ours starts with it (cache clear deletes them)
    cache_redis_ttl_seconds: int = 86_400      # entries and memos expire after a day unless evicted first
    cache_redis_max_entry_bytes: int = 2 * MB  # larger results stay in the node's own tiers
    cache_redis_timeout: float = 0.25          # socket read/write timeout of one call (seconds)
    cache_redis_connect_timeout: float = 0.25  # connect timeout (seconds)
    cache_redis_breaker_failures: int = 5      # consecutive failures that stop calls to Redis ...
    cache_redis_breaker_seconds: float = 5.0   # ... for this long; then one call probes it again
    # How long the wrapped app's confirmation of an object's version (a 304, or the object itself) is
    # trusted, in seconds: within it a cache hit asks the app nothing. Shared through Redis when the
    # tier is on. Only for requests without Authorization, Cookie or a signature (the app's access
    # checks are what a revalidation also does). 0: ask the app on every hit (never stale).
    validator_trust_seconds: float = 0.0
    # --- HTTP caching ---
    cache_control: str = ""                    # Cache-Control of results; "" keeps the source's
    cache_control_errors: str = "no-store"     # Cache-Control of error answers: never cached long
    # Formats to choose by the Accept header when the request names none, in order ("avif,webp");
    # "" turns negotiation off. Responses then carry Vary: Accept.
    auto_format: str = ""
    # --- back-pressure: transforms at once per worker; past a short wait, 503 SlowDown ---
    transform_slots: int = 2                   # concurrent transforms per worker (cache hits need none)
    large_image_pixels: int = 16_000_000       # a source above this also needs one of the large slots
    large_transform_slots: int = 1             # so huge images can never take every slot
    transform_wait_seconds: float = 2.0        # longest wait for a slot before 503 SlowDown
    retry_after_seconds: int = 1               # Retry-After of a 503
    # --- budgets of one transform (process/budget.py, docs/SECURITY.md; issue 15) ---
    # Estimated before any pixel is decoded: work in milliseconds of one core of the reference
    # machine, and the pixel memory held at once; over either, 400 before any work.
    max_transform_ms: int = 20_000
    max_transform_bytes: int = 3 * 1024 * MB
    # What the transforms of one worker may hold at once, by their estimates: past it a transform
    # waits for a slot (transform_wait_seconds), then 503 SlowDown.
    worker_transform_bytes: int = 4 * 1024 * MB
    # Wall time a transform may run; past it the work stops (between steps and frames) with 503.
    transform_deadline_seconds: float = 30.0
    # --- the server (`imgmiddleware serve`; command-line options override) ---
    bind: str = "127.0.0.1:8080"
    workers: int = 2
    threads: int = 4                           # app threads per worker: OpenCV releases the GIL while it works
    timeout: int = 60                          # a worker silent this long is restarted
    keepalive: int = 5
    # Slow clients (imgmiddleware/server/; docs/SECURITY.md; issue 15). Heads and bodies are read by
    # the worker's event loop, so a slow client holds a connection, never an app thread; these bound
    # how long it may. A request's head must arrive whole within client_header_timeout (nginx's
    # client_header_timeout); a body gets client_body_timeout, plus one second for every
    # client_body_min_rate bytes it has sent (Apache's mod_reqtimeout body=20,MinRate=500), else
    # 400 RequestTimeout. A response the client does not read for client_send_timeout is dropped
    # (nginx's send_timeout).
    client_header_timeout: float = 10.0
    client_body_timeout: float = 20.0
    client_body_min_rate: int = 500
    client_send_timeout: float = 60.0
    max_request_body_bytes: int = 5 * 1024 * MB    # OSS: PutObject bodies <= 5 GB (EntityTooLarge)
    request_body_memory_bytes: int = 1 * MB        # a larger body waits in a temporary file
    max_requests: int = 2000                   # recycle workers now and then (heap fragmentation)
    max_requests_jitter: int = 200
    opencv_threads: int = 0                    # per worker; 0: the machine's cores / workers
    # glibc malloc in each worker (imgmiddleware/memory.py; measured by bench/malloc_bench.py): blocks
    # below the mmap threshold come from the reusable heap, freed heap up to the trim threshold stays
    # in the process, and the arenas bound how many threads keep their own; 0 keeps glibc's default.
    malloc_mmap_threshold: int = 32 * MB
    malloc_trim_threshold: int = 256 * MB
    malloc_arena_max: int = 2
    upstream: str = ""                         # serve a reverse-proxied HTTP origin instead of buckets
    upstream_connect_timeout: float = 2.0
    upstream_read_timeout: float = 10.0
    upstream_pool_size: int = 16
    # A private object store as the origin (README; docs/COMPATIBILITY.md, decisions 93-99): with a
    # bucket, `upstream` is the store's endpoint (scheme://host[:port]) and the proxy serves that one
    # bucket at /<key>, as OSS serves a bucket on a custom domain; its name keys bucket_acl and protected.
    upstream_bucket: str = ""
    # virtual (<bucket>.<endpoint>) or path (/<bucket>/<key>); auto: path for an endpoint that is an
    # IP, localhost or a name without a dot (http://minio:9000), or a bucket with a dot; else virtual
    upstream_addressing: str = "auto"
    # Sign upstream requests with the proxy's own credentials: "s3" (AWS SigV4 by botocore, the 's3'
    # extra), "oss-v1" or "oss-v4"; "" forwards the client's own Authorization instead.
    upstream_signing: str = ""
    upstream_region: str = ""                  # s3: "" is us-east-1; oss-v4 needs it ("cn-hangzhou")
    # The proxy's credentials; "" takes them from the environment: botocore's chain for s3
    # (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, profiles, roles), OSS_ACCESS_KEY_ID,
    # OSS_ACCESS_KEY_SECRET, OSS_SESSION_TOKEN for OSS. Secrets: keep them in the environment
    # (IMGMW_UPSTREAM_ACCESS_KEY_SECRET works too), never in a file you share; never logged.
    upstream_access_key_id: str = ""
    upstream_access_key_secret: str = field(default="", repr=False)
    upstream_session_token: str = field(default="", repr=False)
    # A plain GET or HEAD of an original through a signing proxy: "private" needs a client signature
    # (a key of `credentials`), "public-read" serves anyone the bucket's ACL lets read. Processed GETs
    # follow the ACL (and `protected`) alone: private originals, public processed images.
    upstream_originals: str = "private"
    # --- operations: metrics, health, readiness, access log (issue 17; imgmiddleware/telemetry/) ---
    # The paths begin with "_", which no bucket name can, so they never hide a path-style bucket (a
    # key "_healthz" at the root of a bucketless or virtual-host app is shadowed: pick other paths).
    # Prometheus metrics (prometheus_client; gunicorn's workers add up through its multiprocess mode).
    metrics: bool = True
    # Where the main listener answers a scrape ("" none), on a worker's event loop, never an app thread.
    metrics_path: str = "/_metrics"
    # Also (or instead) serve them from gunicorn's master at this address ("127.0.0.1:9464"; "" none):
    # a scrape never reaches a worker, and still answers when every worker is busy.
    metrics_bind: str = ""
    # Liveness (200 while the worker's event loop answers) and readiness (503 with the reasons when not
    # ready), both answered on the event loop; "" turns one off.
    health_path: str = "/_healthz"
    ready_path: str = "/_readyz"
    # Not ready once some worker's transform queue has had requests waiting for a slot this long
    # without a break (seconds; 0: never for that reason).
    readiness_saturation_seconds: float = 10.0
    # Dependencies readiness also requires: "origin" (the upstream answers a TCP connect; the bundled
    # bucket's root is a directory), "redis" (the shared tier's circuit breaker is not open). None by
    # default: a dependency every node shares takes every node out of service at once when it fails.
    readiness_checks: tuple = ()
    # One line per request: "-" standard output, a file path (appended), "" none; "json" or "text".
    access_log: str = "-"
    access_log_format: str = "json"
    # Whether requests for health_path, ready_path and metrics_path are logged and counted too.
    access_log_probes: bool = False
    # --- the OSS surface (spec §1.3, §1.4, §9) ---
    credentials: dict = field(default_factory=dict)   # AccessKeyId -> secret; {}: no signature checks
    bucket_acl: dict = field(default_factory=dict)    # bucket -> private | public-read | public-read-write
    default_acl: str = "public-read"
    # The region of the bundled bucket (OSS's region ID, no "oss-" prefix): V4 signatures must be
    # scoped to it (another is 400 InvalidArgument, EC 0002-00000226, as on OSS); ListBuckets and
    # GetBucketInfo report Location "oss-<region>". oss2 and ali-oss default to no region; the guides'
    # examples use "cn-hangzhou" (region="cn-hangzhou", region: "oss-cn-hangzhou").
    region: str = "cn-hangzhou"
    styles_file: str = ""                      # the operator's styles (conf/styles.toml); reloaded on change
    style_delimiters: str = ""                 # any of - _ / ! : "key!name" means style/name
    # Source-image protection (spec §1.4): bucket ("" for a bucketless app) -> {"prefixes": [...],
    # "suffixes": [...]}; anonymous requests for a matching key must go through a style.
    protected: dict = field(default_factory=dict)
    # --- the image style viewer (issue 10): a page for trying process strings and saving styles ---
    # Served under this path ("/_viewer/"); "" turns it off. A leading "_" cannot begin a bucket name,
    # so it never hides a path-style bucket.
    viewer_path: str = ""
    # --- fonts of text watermarks (imaging/fonts.py; issue 14) ---
    # Directories searched for font files before the system font paths (Debian's fonts-wqy-*,
    # fonts-noto-cjk, fonts-arphic-*, fonts-droid-fallback land there), then the packaged Noto Sans CJK.
    font_dirs: tuple = ()
    # OSS font name -> "path" or "path#N" (face N of a .ttc collection), overriding the search.
    fonts: dict = field(default_factory=dict, hash=False)
    # --- identity in error bodies (spec §7 HostId) ---
    host_id: str = ""                          # empty: the request's Host header
    styles: dict = field(default_factory=dict, hash=False, compare=False)  # name -> "image/..." (issue 6)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"config {f.name} must be a non-negative integer, got {value!r}")
        for name in ("jpeg_quality", "webp_quality", "avif_quality", "heic_quality"):
            if not 1 <= getattr(self, name) <= 100:
                raise ValueError(f"config {name} must be within 1..100")
        if not 0 <= self.png_compression <= 9:
            raise ValueError("config png_compression must be within 0..9")
        if self.png_strategy not in ("default", "filtered", "huffman", "rle", "fixed"):
            raise ValueError("config png_strategy must be one of default, filtered, huffman, rle, fixed")
        if self.transform_slots < 1 or self.large_transform_slots < 1 or self.workers < 1 or self.threads < 1:
            raise ValueError("config transform slots, workers and threads must be at least 1")
        if not isinstance(self.shrink_on_load_margin, (int, float)) or self.shrink_on_load_margin < 1:
            raise ValueError("config shrink_on_load_margin must be a number >= 1")
        if self.default_acl not in ("private", "public-read", "public-read-write") or any(
                acl not in ("private", "public-read", "public-read-write") for acl in self.bucket_acl.values()):
            raise ValueError("config ACLs must be private, public-read or public-read-write")
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", self.region) or self.region.startswith("oss-"):
            raise ValueError(f'config region must be an OSS region ID such as "cn-hangzhou", got {self.region!r}')
        if set(self.style_delimiters) - set("-_/!"):
            raise ValueError("config style_delimiters may hold only - _ / !")
        unknown = set(self.auto_formats) - {"avif", "webp", "jpg", "png", "heic"}
        if unknown:
            raise ValueError(f"config auto_format: unknown formats {', '.join(sorted(unknown))}")
        if self.viewer_path and (not self.viewer_path.startswith("/") or self.viewer_path.strip("/") == ""):
            raise ValueError('config viewer_path must be "" or a path such as "/_viewer/"')
        if isinstance(self.font_dirs, str):
            object.__setattr__(self, "font_dirs", tuple(d for d in self.font_dirs.split(os.pathsep) if d))
        object.__setattr__(self, "font_dirs", tuple(str(d) for d in self.font_dirs))
        from .imaging.fonts import FONT_NAMES
        unknown_fonts = set(self.fonts) - set(FONT_NAMES)
        if unknown_fonts:
            raise ValueError(f"config fonts: unknown font names {', '.join(sorted(unknown_fonts))} "
                             f"(OSS's are {', '.join(FONT_NAMES)})")
        if min(self.client_header_timeout, self.client_body_timeout, self.client_send_timeout) <= 0 \
                or self.client_body_min_rate < 1:
            raise ValueError("config client_* timeouts must be positive, client_body_min_rate at least 1")
        if not 0 <= self.avif_speed <= 10:
            raise ValueError("config avif_speed must be within 0..10")
        self.webp_effort_rows          # a malformed table is refused here, not at the first large WebP
        self._check_upstream_signing()
        self._check_shared_cache()
        self._check_operations()

    def _check_operations(self) -> None:
        if isinstance(self.readiness_checks, str):          # IMGMW_READINESS_CHECKS="origin,redis"
            object.__setattr__(self, "readiness_checks",
                               tuple(c.strip() for c in self.readiness_checks.split(",") if c.strip()))
        object.__setattr__(self, "readiness_checks", tuple(str(c) for c in self.readiness_checks))
        unknown = set(self.readiness_checks) - set(READINESS_CHECKS)
        if unknown:
            raise ValueError(f"config readiness_checks: unknown {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(READINESS_CHECKS)})")
        paths = [p for p in (self.metrics_path, self.health_path, self.ready_path) if p]
        if any(not p.startswith("/") or p == "/" or "?" in p for p in paths) or len(set(paths)) != len(paths):
            raise ValueError('config metrics_path, health_path and ready_path must be "" or distinct '
                             'paths such as "/_healthz"')
        if self.viewer_path and any(p.startswith(self.viewer_path.rstrip("/") + "/") for p in paths):
            raise ValueError("config metrics_path, health_path and ready_path must not be under viewer_path")
        if self.metrics_bind and not _host_port(self.metrics_bind):
            raise ValueError(f'config metrics_bind must be "" or HOST:PORT, got {self.metrics_bind!r}')
        if not isinstance(self.readiness_saturation_seconds, (int, float)) \
                or self.readiness_saturation_seconds < 0:
            raise ValueError("config readiness_saturation_seconds must be a number >= 0")
        if self.access_log_format not in ACCESS_LOG_FORMATS:
            raise ValueError(f"config access_log_format must be one of {', '.join(ACCESS_LOG_FORMATS)}")

    def _check_shared_cache(self) -> None:
        url = self.cache_redis_url
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if url and not url.startswith(schemes):
            raise ValueError(f"config cache_redis_url must start with one of {', '.join(schemes)}")
        userinfo = url.partition("://")[2].split("/", 1)[0].rpartition("@")[0]
        if self.cache_redis_password and userinfo.partition(":")[2]:
            raise ValueError("config: give the Redis password in cache_redis_url or in "
                             "cache_redis_password, not both")
        if not self.cache_redis_prefix or set("{}*?[]") & set(self.cache_redis_prefix):
            raise ValueError("config cache_redis_prefix must be non-empty, without { } * ? [ ]")
        if self.cache_redis_ttl_seconds < 1:
            raise ValueError("config cache_redis_ttl_seconds must be at least 1")
        if min(self.cache_redis_timeout, self.cache_redis_connect_timeout,
               self.cache_redis_breaker_seconds) <= 0 or self.cache_redis_breaker_failures < 1:
            raise ValueError("config cache_redis_* timeouts must be positive, breaker failures at least 1")
        if not isinstance(self.validator_trust_seconds, (int, float)) or self.validator_trust_seconds < 0:
            raise ValueError("config validator_trust_seconds must be a number >= 0")

    def _check_upstream_signing(self) -> None:
        """The private-bucket settings fit together (`upstream` itself may still come from the
        command line, so it is checked when the proxy is made: origins/proxy/)."""
        if self.upstream_bucket and not UPSTREAM_BUCKET_NAME.match(self.upstream_bucket):
            raise ValueError(f"config upstream_bucket {self.upstream_bucket!r} is not a bucket name")
        if self.upstream_addressing not in UPSTREAM_ADDRESSING:
            raise ValueError(f"config upstream_addressing must be one of {', '.join(UPSTREAM_ADDRESSING)}")
        if self.upstream_signing not in ("", *UPSTREAM_SIGNING):
            raise ValueError(f"config upstream_signing must be \"\" or one of {', '.join(UPSTREAM_SIGNING)}")
        if self.upstream_originals not in UPSTREAM_ORIGINALS:
            raise ValueError(f"config upstream_originals must be one of {', '.join(UPSTREAM_ORIGINALS)}")
        if self.upstream_signing and not self.upstream_bucket:
            raise ValueError("config upstream_signing needs upstream_bucket (the bucket it signs for)")
        if self.upstream_signing == "oss-v4" and not self.upstream_region:
            raise ValueError('config upstream_signing = "oss-v4" needs upstream_region ("cn-hangzhou")')
        if bool(self.upstream_access_key_id) != bool(self.upstream_access_key_secret):
            raise ValueError("config upstream_access_key_id and upstream_access_key_secret go together")
        if self.upstream_session_token and not self.upstream_access_key_id:
            raise ValueError("config upstream_session_token needs upstream_access_key_id")

    # Settings that change the bytes of a result, and so belong in its cache key.
    OUTPUT_SETTINGS = ("jpeg_quality", "webp_quality", "avif_quality", "heic_quality", "jpeg_optimize",
                       "png_compression", "png_strategy", "avif_speed", "webp_effort", "shrink_on_load",
                       "shrink_on_load_margin")

    def output_fingerprint(self) -> str:
        return ";".join(f"{name}={getattr(self, name)}" for name in self.OUTPUT_SETTINGS)

    @functools.cached_property
    def webp_effort_rows(self) -> tuple[tuple[int, int], ...]:
        """webp_effort as EncodeOptions.webp_effort takes it: ((pixels, method), ...); parsed once
        per Config (every plan asks for it), when __post_init__ validates it."""
        rows = []
        for row in (r.strip() for r in str(self.webp_effort).split(",")):
            if not row:
                continue
            pixels, sep, method = row.partition(":")
            if not (sep and pixels.strip().replace("_", "").isdigit() and method.strip().isdigit()
                    and 0 <= int(method) <= 6):
                raise ValueError(f'config webp_effort: {row!r} is not "PIXELS:METHOD" with a method '
                                 f'of 0..6 (e.g. "16000000:2")')
            rows.append((int(pixels.strip().replace("_", "")), int(method)))
        if len({pixels for pixels, _ in rows}) != len(rows):
            raise ValueError("config webp_effort: a pixel count appears twice")
        return tuple(sorted(rows))

    @property
    def auto_formats(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.auto_format.split(",") if f.strip())

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, environ: dict | None = None) -> "Config":
        """Defaults, then the TOML file (if any), then IMGMW_* environment variables."""
        values: dict = {}
        if path is not None:
            with open(path, "rb") as fh:
                values.update(tomllib.load(fh))
            beside = os.path.dirname(os.path.abspath(path))
            for name in FILE_RELATIVE_KEYS:
                if isinstance(values.get(name), str) and values[name] and not os.path.isabs(values[name]):
                    values[name] = os.path.join(beside, values[name])
            # Font folders and files named in a file are relative to it too ("path#N" keeps its #N).
            if isinstance(values.get("font_dirs"), list):
                values["font_dirs"] = [os.path.join(beside, d) for d in values["font_dirs"]]
            if isinstance(values.get("fonts"), dict):
                values["fonts"] = {name: os.path.join(beside, str(v)) for name, v in values["fonts"].items()}
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, typ in types.items():
            raw = env.get("IMGMW_" + name.upper())
            if raw is None:
                continue
            if typ == "int":
                values[name] = int(raw)
            elif typ == "float":
                values[name] = float(raw)
            elif typ == "bool":
                values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif typ == "str":
                values[name] = raw
            elif typ == "tuple":        # a list of paths, separated as in PATH
                values[name] = raw
        unknown = set(values) - set(types)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


def _host_port(bind: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "[v6]:port", or None."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


# Keys that name files kept beside the config file: a relative value in a file is relative to the file,
# not to the working directory (data and cache directories stay relative to the working directory).
FILE_RELATIVE_KEYS = ("styles_file",)


def packaged_config_file() -> Path:
    """The embedded default's configuration, shipped inside the package (imgmiddleware/conf/, with its
    styles.toml), so `imgmiddleware serve` behaves the same from any working directory."""
    return Path(str(resources.files(__package__) / "conf" / "imgmiddleware.toml"))
