#!/usr/bin/env python3
"""Peak memory of one in-flight transform, by source kind: measured, and what admission reserves.

    python3 bench/transform_memory_bench.py [--megapixels MP] [--photo PATH]

Each row runs one request through the engine (process.engine.run, the worker's malloc settings
applied first) in a fresh process, on a photo-like source of about --megapixels (a real photo,
bench/core_bench.py's, enlarged, with fine noise so that it compresses like a photo), and reports
the growth of the process's peak resident set (VmHWM) over a warmed-up process: the memory the
transform itself needed. Beside it, the estimate process/budget.py makes from the header before any
work, which is what the transform slots admit against (`worker_transform_bytes` per worker) and so
the bound a deployment can plan with: in-flight transforms never hold more than their estimates'
sum. Both per source pixel, so they carry over to other sizes. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

KINDS = ("jpeg-baseline", "jpeg-progressive", "png", "webp")
PROCESSES = ("image/resize,m_lfit,w_200,h_200", "image/resize,m_lfit,w_512,h_512",
             "image/format,jpg", "image/rotate,90")

# One measurement, in a fresh process: argv = [source path, process]; prints JSON.
CHILD = r"""
import json, sys
from pathlib import Path
from imgmiddleware.cli import tune_worker_malloc
from imgmiddleware.config import Config
config = Config(max_transform_ms=10**9, max_source_bytes=1 << 30)
tune_worker_malloc(config)
import cv2
cv2.setNumThreads(1)
from imgmiddleware.process import budget
from imgmiddleware.process.engine import inspect, run
from imgmiddleware.process.parser import parse
from imgmiddleware.process.plan import make_plan

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

small = Path(sys.argv[3]).read_bytes()
for process in ("image/resize,w_32", "image/format,png"):      # warm up: libraries, first arenas
    run(parse(process, config), small, config)
data = Path(sys.argv[1]).read_bytes()
pipeline = parse(sys.argv[2], config)
info = inspect(data, config, pipeline.resizes)
estimate = budget.estimate(make_plan(pipeline, info, len(data), config), info).peak_bytes
before = hwm()
run(pipeline, data, config, info=info)
print(json.dumps({"peak": hwm() - before, "estimate": estimate, "pixels": info.pixels,
                  "size": [info.width, info.height], "source_bytes": len(data)}))
"""


def make_sources(photo: Path, megapixels: float, out: Path) -> dict[str, Path]:
    import cv2
    import numpy as np
    img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    scale = (megapixels * 1e6 / (img.shape[0] * img.shape[1])) ** 0.5
    img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                     interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(19).integers(-6, 7, img.shape, dtype=np.int16)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    params = {"jpeg-baseline": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
              "jpeg-progressive": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
              "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 6]),
              "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90])}
    paths = {"small": out / "small.jpg"}
    if not paths["small"].exists():
        paths["small"].write_bytes(cv2.imencode(".jpg", cv2.resize(img, (64, 48)))[1].tobytes())
    for kind, (ext, p) in params.items():
        path = out / f"{kind}{ext}"
        if not path.exists():
            path.write_bytes(cv2.imencode(ext, img, p)[1].tobytes())
        paths[kind] = path
    return paths


def measure(source: Path, process: str, small: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(source), process, str(small)],
                         capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode != 0:
        sys.exit(f"{source.name} {process}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, default=12.0, help="source size (default 12 MP)")
    ap.add_argument("--photo", type=Path, help="a JPEG photo to build the sources from "
                    "(default: bench/core_bench.py's wallpaper, fetched on first use)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per row; the largest peak is kept")
    args = ap.parse_args()
    if args.photo is None:
        sys.path.insert(0, str(HERE))
        from core_bench import fetch_photo
        args.photo = fetch_photo().path
    started = time.monotonic()
    sources = make_sources(args.photo, args.megapixels, HERE / ".cache" / f"memory-{args.megapixels:g}mp")
    small = sources["small"]
    print(f"Sources: {args.photo.name} enlarged to about {args.megapixels:g} MP with fine noise; "
          f"each row the largest of {args.repeat} fresh processes.\n")
    print("| source | process | source MB | peak MB | bytes / source px | estimate MB | estimate / px | estimate >= peak |")
    print("|---|---|---|---|---|---|---|---|")
    worst: dict[str, float] = {}
    for kind in KINDS:
        for process in PROCESSES:
            runs = [measure(sources[kind], process, small) for _ in range(args.repeat)]
            peak = max(r["peak"] for r in runs)
            r = runs[0]
            px = r["pixels"]
            worst[kind] = max(worst.get(kind, 0.0), r["estimate"] / px)
            print(f"| {kind} {r['size'][0]}x{r['size'][1]} | `{process}` | {r['source_bytes'] / 2**20:.1f} | "
                  f"{peak / 2**20:.0f} | {peak / px:.2f} | {r['estimate'] / 2**20:.0f} | "
                  f"{r['estimate'] / px:.2f} | {'yes' if r['estimate'] >= peak else '**no**'} |")
    print("\nBound per in-flight transform (the largest estimate per source pixel, over these processes): "
          + ", ".join(f"{k} {v:.1f} B/px" for k, v in worst.items())
          + f". ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
