"""The coverage-guided fuzz targets in fuzz/ (docs/SECURITY.md) stay runnable: a few hundred
iterations each, under atheris when it is installed and always in the plain random-mutation mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["fuzz_parser.py", "fuzz_probe.py"]


def run(target: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    # cwd and TMPDIR in tmp: libFuzzer's crash artifacts and the scratch corpus land there.
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, str(ROOT / "fuzz" / target), *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("target", TARGETS)
def test_target_plain_mode(target, tmp_path):
    result = run(target, "--plain", "500", "--seed", "1", tmp=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "500 inputs, no failure" in result.stdout


@pytest.mark.parametrize("target", TARGETS)
def test_target_under_atheris(target, tmp_path):
    pytest.importorskip("atheris")
    result = run(target, "-atheris_runs=400", "-seed=1", tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done 400 runs" in result.stderr or "Done 400 in" in result.stderr, result.stderr[-2000:]
