"""The peer benchmark harness (bench/peers.py) in its smoke mode: imgmiddleware under gunicorn and
the in-process OpenCV floor on two generated images, one round of 1 s per load, so that the harness
does not rot. Peers (thumbor, nginx image_filter, pyvips) are out of the smoke mode by design. No
time is asserted: only that every workload produced its rows and the report was written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_peers_harness_smoke(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peers.py"), "--smoke", "--duration", "1",
         "--report", str(report), "--chart", str(tmp_path / "chart.png"), "--work", str(work)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = report.read_text()
    assert "## Targets" in text and "## Corpus" in text
    for row in ("| jpeg-baseline fit 200 | imgmiddleware |", "| jpeg-baseline fit 200 | OpenCV floor |",
                "| png fit 200 | imgmiddleware |", "| png fit 200 | OpenCV floor |",
                "| cached hit fit 200 | imgmiddleware (cached) |", "| cached hit fit 200 | raw object |",
                "| mixed Zipf | imgmiddleware |", "| jpeg-baseline fit 200 | OpenCV floor over HTTP |",
                "### The floor gap, split"):
        assert row in text, row
    assert "| baseline JPEGs, req/s vs the OpenCV floor (the same output bytes) |" in text
    results = json.loads((work / "peers.json").read_text())
    for name, entry in results["workloads"].items():
        for server, figures in entry["servers"].items():
            assert figures["runs"], (name, server)
            assert all(run["rps"] > 0 for run in figures["runs"]), (name, server, figures["runs"])
            if server.startswith("imgmiddleware"):     # the tree's memory, shared pages counted once
                assert all(0 < run["pss_tree"] < run["rss_tree"] for run in figures["runs"]), figures
            if server in ("imgmiddleware", "OpenCV floor over HTTP"):   # where the cores went
                assert all(run["cpu_ms"] > 0 and run["client_cores"] > 0 for run in figures["runs"]), figures
            if "ssim" in figures:     # thumbnails of smooth gradients: close to the reference
                assert 0.9 < figures["ssim"] <= 1.0, (name, server, figures["ssim"])
    assert any("ssim" in figures for entry in results["workloads"].values()
               for figures in entry["servers"].values())
    # The floor makes the same bytes as imgmiddleware, so the floor share compares the same work.
    for name, entry in results["workloads"].items():
        if entry["kind"] in ("jpeg-baseline", "png"):
            servers = entry["servers"]
            assert servers["OpenCV floor"]["bytes"] == servers["imgmiddleware"]["bytes"], name
            if entry["kind"] == "jpeg-baseline":     # and so does the thinnest server around it
                assert servers["OpenCV floor over HTTP"]["bytes"] == servers["imgmiddleware"]["bytes"]
    assert "Errors\n\nnone" in text, text


CHILD_THAT_IGNORES_SIGTERM = """
import os, signal, sys, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # like a forked server process left behind
    open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""


def test_stopping_a_peer_stops_every_process_it_forked(tmp_path):
    """thumbor's --processes children outlived their parent and sat through every later load:
    stopping a server must take its whole process group."""
    sys.path.insert(0, str(ROOT / "bench"))
    import peers

    pid_file = tmp_path / "child.pid"
    server = peers.Proc("forking", [sys.executable, "-c", CHILD_THAT_IGNORES_SIGTERM, str(pid_file)],
                        "http://127.0.0.1:1/", tmp_path / "log", tmp_path)
    server._fh = open(server.log, "wb")
    server.proc = subprocess.Popen(server.cmd, start_new_session=True)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    server.stop()
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_text_renderer_benchmark_smoke():
    """bench/text_bench.py runs and prints both renderers for every face behind an OSS font name."""
    from imgmiddleware.imaging.fonts import FONT_NAMES

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "text_bench.py"), "--runs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "renderer" not in line]
    assert len([r for r in rows if "Pillow FreeType" in r]) == len([r for r in rows if "OpenCV FontFace" in r])
    for name in FONT_NAMES:
        assert any(name in row for row in rows), name


def test_request_path_benchmark_smoke():
    """bench/request_path_bench.py measures this tree beside another revision (a git worktree it
    removes again) and prints a row per request kind with both trees' figures."""
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "request_path_bench.py"), "--base", "HEAD",
                           "--rounds", "1", "--repeat", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in done.stdout.splitlines()
            if line.startswith("| ") and "request" not in line}
    assert list(rows) == ["GET object", "GET 304", "cached hit", "uncached fit 200"]
    for cells in rows.values():
        figures = [float(c.strip(" |x")) for c in cells]
        assert len(figures) == 5 and all(f > 0 for f in figures)
    assert subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                          text=True).stdout == worktrees
