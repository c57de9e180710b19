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
        # The reverse-proxy origin (origins/proxy.py): a pooled, timeout-bounded HTTP client that
        # streams bodies both ways (preload_content=False, generator bodies, urllib3.Timeout); 2.0
        # for its HTTPResponse.stream() and NameResolutionError/NewConnectionError split.
        "urllib3>=2.0",
    ],
    extras_require={
        # HEIC/HEIF input and output (OpenCV has no HEVC codec).
        "heif": ["pillow-heif>=1.0"],
        # The OSS Python SDK, for the README's oss2 examples against the server.
        "sdk": ["oss2>=2.18"],
        # The test suite exercises HEIC too, so it installs the heif extra.
        # The suite also runs the real OSS Python SDK against the server (acceptance tests).
        # Django and Flask: tests/test_frameworks.py wraps a real Django project and a real Flask app
        # exactly as the README shows and drives them through their own request cycle.
        # hypothesis: property-based fuzzing of the process language (tests/test_fuzz.py); atheris:
        # the coverage-guided fuzz targets in fuzz/ (docs/SECURITY.md), smoke-run by
        # tests/test_fuzz_targets.py (which falls back to their plain mutation mode without it).
        # selenium: tests/test_viewer_browser.py drives the style viewer in headless Chromium (the
        # test installs Debian's chromium and chromium-driver itself).
        "test": ["pytest>=8.0", "pillow-heif>=1.0", "oss2>=2.18", "Django>=5.0", "Flask>=3.0",
                 "hypothesis>=6.100", "atheris>=2.3", "selenium>=4.20"],
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
