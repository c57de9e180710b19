"""The docs that describe the code must stay current: docs/COMPATIBILITY.md's parameter table is
generated from the action specs; docs/ARCHITECTURE.md's module map names every module and bench script."""

import re
from pathlib import Path

from imgmiddleware.ops import ACTIONS
from imgmiddleware.ops.table import DOC, render, updated

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
ENTRY = re.compile(r"([\w.-]+/?)(?:\s{2,}(\S.*))?$")


def test_compatibility_table_matches_the_action_specs():
    text = DOC.read_text(encoding="utf-8")
    assert updated(text) == text, "run: python3 -m imgmiddleware.ops.table"


def test_every_action_appears_in_the_table():
    table = render()
    for name in ACTIONS:
        assert f"| `{name}` |" in table


def module_map() -> dict[str, str]:
    """path -> purpose of each entry of ARCHITECTURE.md's module map: the first code block under
    "## Modules", a tree two spaces a level ("ops/" then "  crop.py" is ops/crop.py). A purpose's
    continuation lines are indented deeper than the tree ever goes, so they are never entries."""
    block = ARCHITECTURE.read_text(encoding="utf-8").split("## Modules", 1)[1].split("```")[1]
    entries: dict[str, str] = {}
    parents: list[str] = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        match = ENTRY.match(line[indent:])
        if not line.strip() or indent % 2 or indent // 2 > len(parents) or not match:
            continue
        del parents[indent // 2:]
        path = "".join(parents) + match.group(1)
        entries[path] = match.group(2) or ""
        if path.endswith("/"):
            parents.append(match.group(1))
    return entries


def test_the_module_map_names_every_module_of_the_package():
    """A package's __init__.py is its directory's entry; a listed module that is gone fails too."""
    entries = module_map()
    modules = set()
    for path in (REPO / "imgmiddleware").rglob("*.py"):
        name = path.relative_to(REPO).as_posix()
        modules.add(name.removesuffix("__init__.py"))
    assert sorted(modules - set(entries)) == [], "add them to docs/ARCHITECTURE.md's module map"
    listed = {p for p in entries if p.startswith("imgmiddleware/") and p.endswith(".py")}
    assert sorted(listed - modules) == [], "gone from the package: remove them from the map"
    assert [p for p in modules if not entries[p]] == [], "each needs a one-line purpose"


def test_the_module_map_names_every_bench_script():
    entries = module_map()
    scripts = {path.relative_to(REPO).as_posix() for path in (REPO / "bench").glob("*.py")}
    assert sorted(scripts - set(entries)) == [], "add them to docs/ARCHITECTURE.md's bench list"
    listed = {p for p in entries if p.startswith("bench/") and p.endswith(".py")}
    assert sorted(listed - scripts) == [], "gone from bench/: remove them from the list"
    assert [p for p in scripts if not entries[p]] == [], "each needs what it measures"
