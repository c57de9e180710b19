"""docs/BENCHMARKS.md and docs/benchmarks.png from bench/peers.py's results.

``write_report`` runs in the project's interpreter (standard library only); the chart is drawn by
``python report.py chart RESULTS.json OUT.png`` in bench/.venv-bench, where matplotlib lives.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

OURS = "imgmiddleware"


def med(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return statistics.median(vals) if vals else float("nan")


def maxv(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return max(vals) if vals else float("nan")


def geomean(vals):
    vals = [v for v in vals if v and not math.isnan(v) and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in vals)) if vals else float("nan")


def f(v, fmt="{:.2f}"):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def ratio(a, b):
    return a / b if b and not math.isnan(b) and not math.isnan(a) else float("nan")


def targets(res) -> list[tuple[str, str, float, bool | None, str]]:
    """(name, goal, measured, met, why not measured); the goals of issues 9 and 19."""
    wl = res["workloads"]
    have_thumbor = any("thumbor" in e["servers"] for e in wl.values())
    have_vips = any("pyvips" in e["servers"] for e in wl.values())

    def rps(e, s):
        return med(e["servers"][s]["runs"], "rps") if s in e["servers"] else float("nan")

    def against(peer, pred, key="rps", agg=med, combine=geomean):
        vals = []
        for e in wl.values():
            if pred(e) and OURS in e["servers"] and peer in e["servers"]:
                vals.append(ratio(agg(e["servers"][OURS]["runs"], key), agg(e["servers"][peer]["runs"], key)))
        vals = [v for v in vals if not math.isnan(v)]
        return combine(vals) if vals else float("nan")

    def worst(vals):
        return max(vals)

    uncached = lambda e: e["kind"] not in ("cached", "mixed")  # noqa: E731
    jpeg = against("thumbor", lambda e: e["kind"].startswith("jpeg"))
    floor = geomean([ratio(rps(e, OURS), rps(e, "OpenCV floor")) for e in wl.values()
                     if e["kind"] == "jpeg-baseline"])
    progressive_512 = against("thumbor", lambda e: e["kind"] == "jpeg-progressive" and e.get("size") == 512)
    png_vips = against("pyvips", lambda e: e["kind"] == "png", combine=min)
    webp_vips = against("pyvips", lambda e: e["kind"] == "webp", combine=min)
    pngwebp = against("thumbor", lambda e: e["kind"] in ("png", "webp"))
    p99 = against("thumbor", uncached, "p99")
    pss = against("thumbor", uncached, "pss_tree", maxv, worst)
    c = wl.get("cached hit fit 200", {"servers": {}})
    cached = ratio(rps(c, "imgmiddleware (cached)"), rps(c, "raw object")) if c["servers"] else float("nan")

    def row(name, target, value, ok_fn, why_missing):
        if math.isnan(value):
            return (name, target, value, None, why_missing)
        return (name, target, value, ok_fn(value), "")
    no_t = "thumbor not measured in this run" if not have_thumbor else "no data"
    no_v = "pyvips not measured in this run" if not have_vips else "no data"
    return [
        row(JPEG_T, ">= 1.25x", jpeg, lambda v: v >= 1.25, no_t),
        row(FLOOR_T, ">= 0.95x", floor, lambda v: v >= 0.95, "no data"),
        row(PROGRESSIVE_T, ">= 2.5x", progressive_512, lambda v: v >= 2.5, no_t),
        row(PNG_VIPS_T, ">= 1.0x", png_vips, lambda v: v >= 1.0, no_v),
        row(WEBP_VIPS_T, ">= 1.0x", webp_vips, lambda v: v >= 1.0, no_v),
        row(PNGWEBP_T, ">= 1.5x", pngwebp, lambda v: v >= 1.5, no_t),
        row(P99_T, "<= 0.7x", p99, lambda v: v <= 0.7, no_t),
        row(PSS_T, "<= 0.5x", pss, lambda v: v <= 0.5, no_t),
        row(CACHED_T, ">= 0.90x", cached, lambda v: v >= 0.90, "no data"),
    ]


JPEG_T = "uncached JPEG thumbnails, req/s vs thumbor fit-in"
FLOOR_T = "baseline JPEGs, req/s vs the OpenCV floor (the same output bytes)"
PROGRESSIVE_T = "progressive JPEGs at fit 512, req/s vs thumbor fit-in"
PNG_VIPS_T = "PNG sources, req/s vs pyvips thumbnail_buffer (the worse of fit 200 and 512)"
WEBP_VIPS_T = "WebP sources, req/s vs pyvips thumbnail_buffer (the worse of fit 200 and 512)"
PNGWEBP_T = "PNG and WebP sources, req/s vs thumbor"
P99_T = "p99 latency vs thumbor (uncached)"
PSS_T = "peak PSS, whole tree, vs thumbor (the worst workload)"
CACHED_T = "cached hits vs the raw-object rate"


# What the malloc table above decided (Config's malloc_* defaults); keep it true to the figures.
TEXT_CHOICE = (
    "`bench/text_bench.py`: each font file that serves an OSS font name here, drawn by both "
    "renderers at three sizes; glyph PSNR is each glyph against the same renderer at 8x, reduced and "
    "centred, so it measures shapes, not pen positions. Shipped: Pillow's FreeType "
    "(imgmiddleware/imaging/text.py). OpenCV draws a cached face faster and, unhinted, closer to the "
    "raw outlines, but it cannot pick a face inside a .ttc: it draws face 0, which in Noto CJK is "
    "the Japanese face, so three names (and all seven on a pip-only machine) would draw Japanese "
    "glyph forms. FreeType picks the face and hints small sizes, and its 0.2-2.5 ms a string is small "
    "beside an image's decode and encode.")
SHRINK_CHOICE = (
    "`bench/shrink_bench.py`: a >= 12 MP photo as an opaque WebP (q85) and as its JPEG, thumbnails "
    "through the engine in one process with shrink_on_load on and off; then, on the corpus WebPs, "
    "libwebp's own scaled decode (what libvips uses; no maintained Python binding exposes it, so "
    "imaging/webp_scaled.py reaches the libwebp Pillow ships through ctypes) against OpenCV's reduced "
    "decode, which decodes the whole frame and then shrinks it with a 2-tap filter. Shipped: libwebp "
    "at 1/4 and 1/8 (about the same time, 14-38x less memory, cleaner pixels where OpenCV's filter "
    "aliases), OpenCV at 1/2 (an exact 2x2 average, about a tenth faster). The geometry is that of "
    "a full decode by construction. A WebP with alpha is decoded whole (both paths give 3 channels).")
LARGE_CHOICE = (
    "`bench/large_output_bench.py`: the encode alone of a 27 MP photo (four wallpapers stitched 2 x 2) "
    "as `format,webp` at q82, one thread: OpenCV's encoder (libwebp's simple API, method 4, what every "
    "WebP was before), Pillow's libwebp at each method, thumbor's own call (Pillow's defaults: method 4) "
    "and what `encode` does with `Config()`; the same photo with a camera's grain, and 4096 x 2304, the "
    "largest AVIF output OSS allows. Shipped: `webp_effort = \"16000000:2\"`, an output of 16 MP or "
    "more is written at method 2: a 27 MP WebP in 1.0-1.5 s instead of 2.2-3.0 s, 2.0-2.4x as fast "
    "as thumbor's encode of the same output, for 14-15% more bytes at the same SSIM (within 0.002) "
    "and 0.2-0.3 dB less PSNR. Methods 0 and 1 are faster still but 22-27% larger; method 3 saves no "
    "time. Smaller outputs keep OpenCV's bytes (Pillow's method 4, thumbor's, gives the same bytes, "
    "a little slower). `encode` takes the other methods from imagecodecs' libwebp (the same bytes as "
    "Pillow's), red and blue swapped in place: at 27 MP it holds about 50 MB beside the pixels, "
    "where OpenCV's method 4 holds 150 MB and Pillow 260 MB (two copies of the pixels). Neither "
    "Pillow's WebP encoder nor OpenCV's has a thread option; imagecodecs' numthreads gained nothing.")
PNG_CHOICE = (
    "`bench/png_decode_bench.py`: the PNG sources of the corpus below (photos converted by Pillow at "
    "compress_level 6, longest side 3000) decoded in one process by OpenCV 5's PNG reader, by the PNG "
    "decoders of well-kept PyPI packages (pyspng's libspng, imagecodecs' libspng and libpng, Wuffs "
    "through pywuffs, Pillow's own reader) and by decode.py's PNG entry, each to the array "
    "cv2.imdecode gives (BGR order: a swap is timed); every (file, decoder) once a round in a "
    "rotating order, best of the rounds; then fit-200 and fit-512 thumbnails (decode, INTER_AREA, PNG "
    "encode) with OpenCV's decoder and decode.py's. Shipped (imaging/png.py; Wuffs with the wuffs "
    "extra, which compiles its binding, published as source only): Wuffs for PNGs of up to 8 "
    "bits a sample without a colour key (interlaced too), about 2.0x OpenCV's speed and 1.4x imagecodecs' libpng "
    "(PNG thumbnails 1.4-1.9x OpenCV's), then imagecodecs' libpng for the other still, "
    "non-interlaced PNGs (16 bits, RGB colour keys), OpenCV for the rest (grey colour keys, which "
    "OpenCV ignores and libpng turns into alpha, among them); the same pixels for every kind of PNG. libpng spends "
    "about 60% of its decode in the system's zlib (perf: inflate and adler32) and 28% in its SSE2 "
    "Paeth filter; Wuffs brings its own inflate, writes BGR or BGRA directly (no swap) and releases "
    "the GIL, at the cost of holding the still-filtered image while it decodes (2 copies of the image "
    "where libpng held one; the budget's decode peak of 2.1 images covers it). Its binding skips CRC "
    "and Adler-32 checks unless told, so png.py turns them on: a damaged file is refused as libpng "
    "refuses it, and a file Wuffs refuses goes to libpng (an interlaced one to OpenCV), whose "
    "answer stands. pyspng holds the GIL "
    "through the whole decode and refuses or changes grey+alpha, tRNS and 16-bit PNGs, as imagecodecs' "
    "spng_decode does; Pillow is slower than OpenCV. OpenCV keeps APNGs (it gives the animation's "
    "first frame, not a hidden default image), the interlaced PNGs Wuffs does not take (imagecodecs' "
    "libpng warns on stderr for each) and headers over its own size caps.")
MEMORY_CHOICE = (
    "`bench/transform_memory_bench.py`: one request through the engine in a fresh process (the "
    "worker's malloc settings), on a 12 MP photo-like source of each kind, and the growth of the "
    "process's peak resident set; beside it the estimate process/budget.py makes from the header, "
    "which the transform slots admit against: a worker never holds more than the estimates of its "
    "in-flight transforms, and those never more than `worker_transform_bytes` (4 GB). So the bound "
    "per in-flight transform is its estimate, per source pixel in the last column (about 7.5 bytes a "
    "pixel plus the source's own bytes at most, for a full-size output; a thumbnail far less). The "
    "run that first measured this found the estimate priced a thumbnail of a progressive JPEG or a "
    "WebP at 1 MB where it held 35 MB (libjpeg's whole-image coefficients; OpenCV's full WebP "
    "decode before it shrinks), so the slots admitted far more than their budget: the estimate now "
    "counts both, and the source's bytes.")
SLOW_CHOICE = (
    "`bench/slow_client_bench.py`: the same app under `deploy/gunicorn.conf.py`, once with gunicorn's "
    "gthread worker (what `serve` ran before issue 15), once with the event-loop worker it runs now "
    "(imgmiddleware/server/); rates without attack, then plain GETs one after another while a dozen "
    "clients trickle heads and PUT bodies a byte at a time (docs/SECURITY.md, Slow clients).")
OPERATIONS_CHOICE = (
    "`bench/metrics_bench.py`: cached hits per second over real HTTP (`imgmiddleware serve`, 2 workers "
    "x 4 threads, wrk) with Prometheus metrics and the access log each on and off, in turns, and the "
    "same per request in one process (`Telemetry.finish()`, metrics in multiprocess files as under "
    "gunicorn). A cached hit is the cheapest request the server answers, so a fixed cost per request "
    "shows most there; beside a transform it is not measurable.")
REQUESTS_CHOICE = (
    "`bench/request_path_bench.py`: what a request costs outside OpenCV, in one process, this tree "
    "beside the revision before the request-path work of issue 19 (a git worktree, trees alternating "
    "round by round). Profiling the server under load put the bundled bucket's GetObject at a third of "
    "a cached hit and 0.4 ms of every uncached thumbnail (each one subrequests its source): werkzeug's "
    "send_file, make_conditional and Response checked and copied each header two or three times. "
    "GetObject now builds its headers once, a key at its own path no longer hashes its name for a "
    "spill entry, bucket records are kept parsed while their file's identity holds.")
PARSER_CHOICE = (
    "`bench/server_bench.py`: two gunicorn servers with the event-loop worker at once, one worker of 4 "
    "threads each, gunicorn's Python HTTP parser in one and gunicorn_h1c (its C parser) in the other, "
    "the same code otherwise; the server's CPU per small answer under wrk. The worker's subclass of "
    "gunicorn's protocol hid the C parser from gunicorn (fixed: installing it is now enough, and "
    "`http_parser = fast` works). Not a dependency: it saves 20-30 us of the 100-150 us the event loop "
    "spends on a request it answers itself, and is lost in the noise of anything that reaches the "
    "app (a thread hop and the app's own work are 0.5-1 ms).")
SHARED_CHOICE = (
    "`bench/shared_cache_bench.py`: nodes as `imgmiddleware serve --upstream` builds them in a worker "
    "(the reverse-proxy origin, real HTTP), in front of an origin on loopback that waits 30 ms before "
    "every answer, as a remote bucket does; one Redis on loopback. With validator_trust_seconds = 0 "
    "(the default) every hit waits for one conditional GET, so a hit costs the origin's round trip "
    "and a worker's threads serve threads / round trip hits a second; trusting a confirmation for 60 s "
    "takes the origin out of the hit (p50 under 0.1 ms; the p99 is 8 client threads queueing for "
    "the GIL on 2 cores, not I/O). The Redis tier adds one small memo GET to a hit when trust is off "
    "(under 1 ms) and nothing when it is on (the worker's own memo is trusted). What it buys: a node "
    "serves another node's result on its first request (one conditional GET, no source body, no "
    "transform; with trust, no origin at all), and N nodes compute each variant once instead of N "
    "times. Defaults: trust 0 for one node over its own bucket, where a conditional GET is a stat(); "
    "with a remote origin, and for N nodes behind a CDN (with the Redis tier), about 60 s.")
MALLOC_CHOICE = (
    "Shipped (Config defaults, conf/imgmiddleware.toml): mmap threshold 32 MB, trim threshold 256 MB, "
    "2 arenas. What the figures say: a low threshold is what hurts (4 MB, as memory-saving advice "
    "goes, page-faults thousands of times a request and halves progressive-JPEG throughput); glibc's "
    "own threshold rises to 32 MB after a worker's first big free, so setting it pins that from the "
    "first request on, and the trim threshold keeps freed heap for the next request. Two arenas "
    "instead of one per thread lower the peak on every kind of large source at no measurable cost "
    "in throughput (differences of a few percent between the other rows are within run-to-run "
    "noise).")


PROGRESSIVE_CHOICE = (
    "`bench/progressive_bench.py`: every progressive JPEG of the wallpaper packages decoded at 1/8 from "
    "its own bytes and from the DC-only rewrite (imgmiddleware/imaging/jpeg_scans.py), best of N; the "
    "rewritten column includes the rewrite. Exact = identical pixels.")

# The benchmarks behind the engine's choices (peers.run_extras), in the report's order:
# (extras key, section title, what the benchmark does and what it chose).
LAYOUT_CHOICE = (
    "`bench/layout_bench.py`: a fresh `gunicorn -c deploy/gunicorn.conf.py` per layout and round, "
    "uncached fit-200 thumbnails of the corpus's baseline JPEGs and PNGs under `wrk -t2 -c8`, the "
    "tree's PSS sampled as in the loads above. Kept: 2 workers x 4 threads, 2 transform slots each. "
    "Fewer threads or one worker lower the peak (2 x 2: the PNG peak by about a third; 1 x 4 with 4 "
    "slots: a quarter everywhere) at the same uncached rate, but a thread beyond the slots is what "
    "lets a cached hit or a plain GET be answered while both slots transform, and one process "
    "cannot use the second core for small answers (bench/cache_bench.py) nor answer while it is "
    "recycled. A node short of memory can take either (IMGMW_WORKERS, IMGMW_THREADS, "
    "transform_slots). Part of each extra thread's cost is the source it reads before it waits "
    "for a slot. OpenCV's own thread count made no difference on these loads.")


EXTRA_SECTIONS = (
    ("progressive", "Progressive JPEG: decoding only what 1/8 needs", PROGRESSIVE_CHOICE),
    ("malloc", "glibc malloc settings for a worker",
     "`bench/malloc_bench.py`: one process shaped like a worker (4 threads, 2 transform slots) running "
     "uncached fit-200 thumbnails of one kind of source at a time, per setting (applied with mallopt, "
     "as the server does). " + MALLOC_CHOICE),
    ("text", "Text renderers: Pillow's FreeType against OpenCV's FontFace", TEXT_CHOICE),
    ("shared", "Shared cache tier: hits against a remote origin, many nodes", SHARED_CHOICE),
    ("shrink", "Shrink-on-load for WebP", SHRINK_CHOICE),
    ("large", "Large outputs: WebP encoder effort, the largest AVIF", LARGE_CHOICE),
    ("png", "PNG decode", PNG_CHOICE),
    ("memory", "Memory of one transform, by source kind", MEMORY_CHOICE),
    ("slow", "Slow clients: gthread against the event-loop worker", SLOW_CHOICE),
    ("layout", "Worker and thread layouts: memory against throughput", LAYOUT_CHOICE),
    ("operations", "Operations: what metrics and the access log cost", OPERATIONS_CHOICE),
    ("requests", "A request outside OpenCV: the bundled bucket, cached hits", REQUESTS_CHOICE),
    ("parser", "gunicorn's C HTTP parser", PARSER_CHOICE),
)


# Why a target is missed, by target: the best reading of the figures (the profile is the authority).
WHY = {
    JPEG_T: "Baseline JPEGs are where it is lost (1.00x at fit 200, 1.07x at fit 512; progressive 1.76x "
            "and 1.06x). Thumbor on Pillow decodes JPEGs reduced too, so on baseline JPEGs what is left "
            "is the fixed cost of a request (the floor row and the split below) and the reduced decode's "
            "margin of 2, which OSS's own thumbnail bytes need (a larger decode than thumbor's draft).",
    FLOOR_T: "Split (table below): the floor's own work behind gunicorn's gthread worker and nothing "
             "else runs at 0.85-0.88x of the in-process floor, with the load generator taking 0.01 "
             "cores: serving HTTP from Python costs 1-2 ms of CPU a request, whoever does it. Against "
             "that server we are at 0.95x at fit 200 and 0.99x at fit 512 (11.9 against 11.2 ms of CPU "
             "a thumbnail at fit 200; before this round's request-path work 0.83x and 1.00x). What was "
             "ours: the bundled bucket's GetObject, which every uncached thumbnail calls for its "
             "source, took 0.3 ms in one process and twice that under load (werkzeug's response "
             "machinery; now 0.13 ms, a request outside OpenCV below). What is left is the event-loop "
             "worker's hop to a thread and back (about 0.3 ms of CPU a request: a 404 costs 0.17 ms in "
             "one process and 0.6-0.7 ms through the server, the health path answered on the loop "
             "0.12-0.14 ms), the header probe and plan (0.1-0.2 ms), telemetry (38 us). gunicorn's C "
             "HTTP parser saves 20-30 us of it (measured below, not adopted). py-spy on a worker under "
             "this load: 64 % of samples in OpenCV's decode.",
    PROGRESSIVE_T: "At fit 512 a reduced decode that covers the target twice is 1/2 or 1/4: those scales "
                   "read AC coefficients, so the DC-only rewrite (fit 200: 1.76x thumbor) does not "
                   "apply, and libjpeg entropy-decodes every scan whatever the scale; thumbor's draft "
                   "decode pays the same at a smaller scale. The margin of 2 is what OSS's bytes need; "
                   "at shrink_on_load_margin 1 (the row `imgmiddleware (margin 1)`, the same server "
                   "otherwise) the rate is 1.49x thumbor at fit 512 and 2.93x at fit 200. No rewrite "
                   "of the scans is exact there: libjpeg's reduced inverse DCTs (jidctred.c) read "
                   "coefficients up to the block's last row and column at 1/2 and at 1/4 alike.",
    PNG_VIPS_T: "0.86x at fit 200 and 0.92x at fit 512 (0.65x and 0.72x before this round's Wuffs decode, "
                "PNG decode below); we are 1.50-1.55x the OpenCV floor, pyvips 1.63-1.79x. PNG has no "
                "reduced decode, so the decode is the work. Our server spends 65.6 ms of CPU a fit-200 "
                "thumbnail, HTTP included, against pyvips' 60.7 in-process with no HTTP: our decode "
                "still gives the whole image (Wuffs holds its filtered rows too), which INTER_AREA then "
                "reads again (a quarter of a thumbnail's time in one process, the PNG decode table), "
                "where pyvips shrinks the rows as libspng (on zlib-ng) gives them. No maintained Python "
                "binding gives rows of a PNG as they are decoded.",
    WEBP_VIPS_T: "WebPs at 1/4 and 1/8 decode by libwebp's scaled decode as libvips does "
                 "(shrink-on-load, below): the same time as OpenCV's, a fraction of the memory; the "
                 "VP8 decode itself is the work for both, and what is left is the HTTP serving share "
                 "(the floor split above).",
    PNGWEBP_T: "OpenCV has no reduced decode for PNG, so every server pays a full decode.",
    P99_T: "p99 at fixed concurrency follows per-request cost and queueing behind gunicorn's threads; "
           "the misses sit in the workloads where throughput is close to thumbor's.",
    PSS_T: "The worst workloads are the baseline JPEGs (1.88x at fit 200, 1.95x at fit 512): the idle "
           "tree alone (116 MB of PSS: the master and two workers with OpenCV, NumPy, Pillow and "
           "imagecodecs, shared copy-on-write from the master; thumbor's is 43 MB) is most of our peak "
           "and more than thumbor's whole peak there (86-127 MB), so 0.5x is out of reach for an "
           "OpenCV server on those. Where images dominate: WebP 0.52-0.53x, PNG 0.86-0.88x "
           "(0.82x before Wuffs, which holds the still-filtered image while it decodes), progressive "
           "JPEG 1.01-1.02x. Each server runs every workload in turn and glibc keeps up to "
           "256 MB of freed heap a worker (the trim threshold, glibc malloc settings below), so a peak "
           "carries over from the workload before. Fewer threads a worker lower it (worker layouts, "
           "below). The memory of one transform, and what admission reserves for it, is in its own "
           "section.",
    CACHED_T: "A cached hit still revalidates with the origin (the bucket's conditional GET, 0.14 ms in "
              "one process) and looks up the cache, on top of the same path the raw object takes.",
}


def floor_split(wl) -> list[str]:
    """Where the gap between the in-process floor and us goes, on baseline JPEGs: the same work
    behind the thinnest HTTP serving (bench/http_floor.py), server CPU per answer, and the cores the
    load generator itself takes from the two the servers share."""
    rows = []
    for name, e in wl.items():
        fl, hf, ours = (e["servers"].get(k) for k in ("OpenCV floor", "OpenCV floor over HTTP", OURS))
        if e["kind"] != "jpeg-baseline" or not (fl and hf and ours):
            continue
        rates = [med(x["runs"], "rps") for x in (fl, hf, ours)]
        cpu = [med(x["runs"], "cpu_ms") for x in (fl, hf, ours)]
        rows.append(f"| {name} | {rates[0]:.1f} | {rates[1]:.1f} ({ratio(rates[1], rates[0]):.2f}x) | "
                    f"{rates[2]:.1f} ({ratio(rates[2], rates[0]):.2f}x; {ratio(rates[2], rates[1]):.2f}x "
                    f"over HTTP) | {f(cpu[0], '{:.1f}')} / {f(cpu[1], '{:.1f}')} / {f(cpu[2], '{:.1f}')} | "
                    f"{f(med(hf['runs'], 'client_cores'))} / {f(med(ours['runs'], 'client_cores'))} |")
    if not rows:
        return []
    return ["### The floor gap, split", "",
            "The floor's work in one process, behind gunicorn's gthread worker with nothing else "
            "(`bench/http_floor.py`: read the file, OpenCV, answer; the same bytes), and in imgmiddleware. "
            "CPU ms/req is the server tree's user + system time per answer (the in-process floor: its "
            "mean time per thumbnail); wrk cores is what the load generator took of the two cores the "
            "servers share with it.", "",
            "| workload | floor req/s | floor over HTTP req/s | imgmiddleware req/s | CPU ms/req floor / "
            "over HTTP / ours | wrk cores over HTTP / ours |", "|---|---|---|---|---|---|", *rows, ""]


def write_report(res, md: Path, chart: Path, venv_py: Path | None, json_path: Path) -> None:
    meta, wl = res["meta"], res["workloads"]
    lines = ["# Benchmarks", "",
             f"Generated by `python3 bench/peers.py{meta.get('argv', '')}` "
             f"({meta['mode']} run, {meta['date']}, {meta['rounds']} round(s) of {meta['duration']:g} s "
             f"per load, {meta['elapsed_s'] / 60:.1f} min in all). Do not edit by hand: run it again.", "",
             "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    misses = []
    for name, goal, value, ok, why in targets(res):
        met = "yes" if ok else ("**no**" if ok is False else f"not measured ({why})")
        lines.append(f"| {name} | {goal} | {f(value, '{:.2f}x')} | {met} |")
        if ok is False:
            misses.append(f"- **{name}**: {f(value)}x against {goal}. {WHY[name]}")
    lines.append("")
    if misses:
        lines += ["Missed, and why (best reading of the figures; the profile is the authority):", "", *misses, ""]
    lines += floor_split(wl)
    lines += ["## Setup", "",
              f"- machine: {meta['machine']}; Python {meta['python']}, OpenCV {meta['cv2']}",
              f"- load: {meta['load']}, {meta['wrk'].split(' Copyright')[0]}; servers A/B alternated each round; figures are "
              "medians over rounds (peak RSS: the maximum)",
              f"- every server: {2} processes; imgmiddleware gunicorn 2 workers x 4 threads "
              "(uncached rounds with `cache_memory_bytes = 0`, `cache_dir = \"\"`); thumbor "
              f"`--processes 2`, file loader, no storage, no result storage, `ENGINE_THREADPOOL_SIZE = 4`, "
              "fit-in URLs; nginx `image_filter resize N N`, 2 workers; pyvips `thumbnail_buffer` and the "
              "OpenCV floor in-process, 2 processes, bytes in memory",
              "- quality 90 (JPEG, WebP), PNG compression 6, everywhere",
              "- floor: OpenCV reduced decode (1/2, 1/4, 1/8) that covers the target twice, INTER_AREA, encode "
              "with imgmiddleware's settings (optimized Huffman tables, zlib's Z_RLE): the same output bytes",
              "- PSS: proportional set size (/proc/PID/smaps_rollup), each shared page divided among the "
              "processes that map it, so the tree's sum counts shared libraries once; sampled every 0.1 s",
              "- quality figure: SSIM of the output's luma against the full-decode INTER_AREA reference at "
              "the output's size (11x11 Gaussian window, sigma 1.5; 1.000 = identical), mean over the "
              "files; PSNR (dB) beside it (cv2.PSNR gives 361 dB for an identical image, so a lossless "
              "PNG path shows 361)",
              "- output sizes checked equal for every URL before each workload's loads (imgmiddleware is the "
              "reference; 1 px differences are listed below, more aborts the run)", ""]
    if res.get("idle_rss"):
        lines.append("- idle memory, whole tree, after one small thumbnail (RSS / PSS): " + ", ".join(
            f"{name} {mb[0]:.0f} / {mb[1]:.0f} MB" if isinstance(mb, (list, tuple)) else f"{name} {mb:.0f} MB"
            for name, mb in res["idle_rss"].items()))
    for k, v in sorted(res["peers"].items()):
        lines.append(f"- {k}: {v}")
    for note in res["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "## Results", "",
              "Ratios are to thumbor in the same run; floor share = req/s over the OpenCV floor's.", "",
              "| workload | server | req/s | x thumbor | floor share | p50 ms | p99 ms | p99 x thumbor "
              "| RSS/worker MB | RSS tree MB | PSS tree MB | PSS x thumbor | CPU ms/req | wrk cores "
              "| out KB | SSIM | PSNR dB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in wl.items():
        t = e["servers"].get("thumbor")
        fl = e["servers"].get("OpenCV floor")
        for s, v in e["servers"].items():
            runs = v["runs"]
            r = med(runs, "rps")
            tr = med(t["runs"], "rps") if t else float("nan")
            lines.append(
                f"| {name} | {s} | {f(r, '{:.1f}')} | {f(ratio(r, tr))} | "
                f"{f(ratio(r, med(fl['runs'], 'rps')) * 100, '{:.0f}%') if fl else 'n/a'} | "
                f"{f(med(runs, 'p50'), '{:.1f}')} | {f(med(runs, 'p99'), '{:.1f}')} | "
                f"{f(ratio(med(runs, 'p99'), med(t['runs'], 'p99')) if t else float('nan'))} | "
                f"{f(maxv(runs, 'rss_worker'), '{:.0f}')} | {f(maxv(runs, 'rss_tree'), '{:.0f}')} | "
                f"{f(maxv(runs, 'pss_tree'), '{:.0f}')} | "
                f"{f(ratio(maxv(runs, 'pss_tree'), maxv(t['runs'], 'pss_tree')) if t else float('nan'))} | "
                f"{f(med(runs, 'cpu_ms'), '{:.1f}')} | {f(med(runs, 'client_cores'))} | "
                f"{f(v.get('bytes', float('nan')) / 1024, '{:.1f}')} | {f(v.get('ssim', float('nan')), '{:.4f}')} | "
                f"{f(v.get('psnr', float('nan')), '{:.1f}')} |")
    errs = [f"{n} / {s}: {r['errors']}" for n, e in wl.items() for s, v in e["servers"].items()
            for r in v["runs"] if r.get("errors", "-") != "-"]
    mism = [m for e in wl.values() for m in e.get("mismatch", [])]
    lines += ["", "Cached hit: one URL, imgmiddleware with its cache on, against the same server's raw "
              "object (no `x-oss-process`); thumbor has no result storage here, so it recomputes. Mixed: "
              "Zipf (s = 1) over every (file, fit 200/512) URL; imgmiddleware with its cache on, as deployed.", ""]
    lines += ["### Errors", ""] + ([f"- {e}" for e in errs] or ["none"]) + [""]
    lines += ["### 1 px size differences", ""] + ([f"- {m}" for m in mism] or ["none"]) + [""]
    extras = res.get("extras", {})
    for key, title, choice in EXTRA_SECTIONS:
        if key in extras:
            lines += [f"## {title}", "", choice, "", extras[key].strip(), ""]
    lines += ["## Corpus", "",
              "Photographs from Debian's wallpaper packages, every file looked at by eye: artwork, "
              "renders and logos are left out (`ARTWORK` in bench/peers.py). PNG and WebP sources are "
              "every third photo converted by Pillow.", "",
              "| file | kind | size | source |", "|---|---|---|---|"]
    for i in res["corpus"]:
        lines.append(f"| {i['name']} | {i['kind']} | {i['w']}x{i['h']} ({i['w'] * i['h'] / 1e6:.1f} MP) | {i['source']} |")
    lines.append("")
    if venv_py and Path(venv_py).exists():
        r = subprocess.run([str(venv_py), __file__, "chart", str(json_path), str(chart)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            lines[2:2] = [f"![requests per second relative to thumbor]({chart.name})", ""]
        else:
            lines.append(f"(chart failed: {r.stderr[-300:]})")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines) + "\n")


def chart(json_path: str, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = json.loads(Path(json_path).read_text())
    wl = {n: e for n, e in res["workloads"].items() if "thumbor" in e["servers"] or n.startswith("cached")}
    names = list(wl)
    servers = [s for s in ("imgmiddleware", "imgmiddleware (cached)", "raw object", "nginx", "pyvips",
                           "OpenCV floor", "thumbor") if any(s in e["servers"] for e in wl.values())]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / max(1, len(servers))
    for k, s in enumerate(servers):
        vals = []
        for n in names:
            e = wl[n]
            base = e["servers"].get("raw object") or e["servers"].get("thumbor")
            v = e["servers"].get(s)
            vals.append(ratio(med(v["runs"], "rps"), med(base["runs"], "rps")) if v and base else 0)
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=s)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("requests/s relative to thumbor (cached: to the raw object)")
    ax.set_title(f"imgmiddleware and peers ({res['meta']['mode']} run, {res['meta']['date']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__" and sys.argv[1:2] == ["chart"]:
    chart(sys.argv[2], sys.argv[3])
