#!/usr/bin/env python3
"""Move the lock to today's newest releases, and keep it only if the whole suite passes with them.

    python3 tools/refresh_lock.py

The README's two commands install exactly what ``constraints.txt`` names (pip's ``-c``), and the SDK
tests ``npm ci`` exactly what ``tests/node/package-lock.json`` names, so a new upstream release cannot
turn main red by itself. This script is the one way those files move:

1. a new virtual environment gets ``pip install -e '.[test]'`` with no constraints: the newest
   releases within setup.py's ranges;
2. a scratch copy of tests/node takes the newest ali-oss of the major version package.json pins;
3. the whole suite runs with that environment first on the PATH and that ali-oss;
4. only when it passes are ``constraints.txt`` (``pip freeze`` of the environment, the project itself
   left out) and tests/node's package.json and package-lock.json rewritten. Commit them with the
   change that needed them; when it fails, nothing is written and the failures are shown.

``--keep`` leaves the environment in .venv-lock/ for a look afterwards; ``-- ARGS`` passes ARGS to
pytest (``-- -x tests/test_fonts.py`` for a quick look; the lock is written only after a full run).

``--lowest`` checks the other end instead: every direct requirement of setup.py (the test extra's
too) at its lower bound, the rest resolved by pip, and the whole suite run with them. It writes
nothing; a failure means a lower bound in setup.py is no longer honest and must rise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
NODE_LOCK_DIR = ROOT / "tests" / "node"
HEADER = """\
# The exact releases the whole test suite last passed with (tools/refresh_lock.py, {day}).
# The README's commands install with `pip install -c constraints.txt`; setup.py keeps the ranges.
# Refresh: python3 tools/refresh_lock.py (it rewrites this file only when the suite passes).
"""


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(str(a) for a in argv), flush=True)
    return subprocess.run([str(a) for a in argv], **kwargs)


def newest_ali_oss(scratch: Path) -> None:
    """Re-pin ali-oss in a scratch copy of tests/node to the newest release of its major version."""
    package = json.loads((scratch / "package.json").read_text())
    major = package["dependencies"]["ali-oss"].split(".")[0]
    done = run(["npm", "install", "--package-lock-only", "--save-exact", "--no-audit", "--no-fund",
                f"ali-oss@{major}"], cwd=scratch)
    if done.returncode != 0:
        sys.exit("npm could not resolve ali-oss")


def lowest_pins() -> list[str]:
    """``name==bound.*`` for each direct requirement of setup.py (install_requires and the test
    extra) with a ``>=`` bound: the oldest release line we claim to support."""
    import ast

    from packaging.requirements import Requirement

    tree = ast.parse((ROOT / "setup.py").read_text())
    keywords = {kw.arg: kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                for kw in node.keywords if kw.arg in ("install_requires", "extras_require")}
    texts = list(ast.literal_eval(keywords["install_requires"]))
    texts += ast.literal_eval(keywords["extras_require"])["test"]
    pins = []
    for text in texts:
        req = Requirement(text)
        bounds = [spec.version for spec in req.specifier if spec.operator == ">="]
        if bounds:
            pins.append(f"{req.name}=={bounds[0]}.*")
    return sorted(set(pins), key=str.lower)


def check_lowest(args) -> int:
    """Install the lower bounds in .venv-lock/ and run the suite; write nothing."""
    env_dir = ROOT / ".venv-lock"
    if env_dir.exists():
        shutil.rmtree(env_dir)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pins = lowest_pins()
    print("lower bounds: " + ", ".join(pins), flush=True)
    if run([python, "-m", "pip", "install", "-q", "-e", ".[test]", *pins], cwd=ROOT).returncode != 0:
        print("the lower bounds cannot be installed together", file=sys.stderr)
        return 1
    env = dict(os.environ, PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               VIRTUAL_ENV=str(env_dir))
    tests = run([python, "-m", "pytest", "-q", *args.pytest_args], cwd=ROOT, env=env)
    if not args.keep:
        shutil.rmtree(env_dir)
    print("the suite " + ("passed" if tests.returncode == 0 else "FAILED") + " at the lower bounds")
    return tests.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the environment in .venv-lock/")
    parser.add_argument("--lowest", action="store_true",
                        help="run the suite at setup.py's lower bounds instead; writes nothing")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args()
    if args.lowest:
        return check_lowest(args)

    env_dir = ROOT / ".venv-lock"
    if env_dir.exists():
        shutil.rmtree(env_dir)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    if run([python, "-m", "pip", "install", "-q", "-e", ".[test]"], cwd=ROOT).returncode != 0:
        sys.exit("the install of the newest releases failed; the lock is unchanged")

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "node"
        scratch.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NODE_LOCK_DIR / name, scratch / name)
        newest_ali_oss(scratch)
        # The SDK tests npm ci whatever tests/node holds: put the candidate there for the run,
        # and put the old files back unless the suite passes.
        saved = {name: (NODE_LOCK_DIR / name).read_bytes() for name in ("package.json", "package-lock.json")}
        for name in saved:
            shutil.copyfile(scratch / name, NODE_LOCK_DIR / name)
        env = dict(os.environ, PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                   VIRTUAL_ENV=str(env_dir))
        env.pop("PIP_CONSTRAINT", None)
        tests = run([python, "-m", "pytest", "-q", *args.pytest_args], cwd=ROOT, env=env)
        if tests.returncode != 0 or args.pytest_args:
            for name, data in saved.items():
                (NODE_LOCK_DIR / name).write_bytes(data)
            if not args.keep:
                shutil.rmtree(env_dir)
            if tests.returncode != 0:
                print("the suite failed with the newest releases: the lock is unchanged", file=sys.stderr)
                return 1
            print("a partial run: the lock is unchanged")
            return 0

    frozen = run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                 check=True).stdout
    pins = sorted((line for line in frozen.splitlines() if line and not line.startswith("#")),
                  key=str.lower)
    CONSTRAINTS.write_text(HEADER.format(day=date.today().isoformat()) + "\n".join(pins) + "\n")
    print(f"wrote {CONSTRAINTS.name} ({len(pins)} releases) and tests/node's lock; commit them")
    if not args.keep:
        shutil.rmtree(env_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
