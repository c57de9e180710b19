"""Render the parameter table of docs/COMPATIBILITY.md from the action specs (the single source).

    python3 -m imgmiddleware.ops.table            # rewrite the generated part of docs/COMPATIBILITY.md
    python3 -m imgmiddleware.ops.table --check    # exit 1 if the document is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import ACTIONS
from .base import Param

BEGIN = "<!-- BEGIN GENERATED: python3 -m imgmiddleware.ops.table -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "COMPATIBILITY.md"


def _default(param: Param) -> str:
    value = param.default
    if value is None:
        return ""
    if isinstance(value, tuple):
        return param.kind.canon(value)
    return str(value)


def _row(action: str, label: str, param: Param) -> str:
    ec = param.ec or "—"
    if param.range_ec:
        ec += f"; out of range or too long: {param.range_ec}"
    if param.missing_ec:
        ec += f"; no value: {param.missing_ec}"
    return (f"| `{action}` | {label} | {param.kind.describe()} | {_default(param)} | "
            f"{ec} | {param.doc} |")


def render() -> str:
    lines = ["| action | parameter | accepted values | default | EC when invalid | meaning |",
             "|---|---|---|---|---|---|"]
    for name, spec in ACTIONS.items():
        if spec.positional is not None:
            lines.append(_row(name, "(value)", spec.positional))
        for param in spec.params:
            lines.append(_row(name, f"`{param.key}`", param))
        if not spec.params and spec.positional is None:
            lines.append(f"| `{name}` | — | — | — | — | {spec.doc} |")
        if spec.required:
            lines.append(f"| `{name}` | (none given) | | | {spec.missing_ec or '—'} | "
                         f"a value is required |")
        if spec.many_values_ec:
            lines.append(f"| `{name}` | (several values) | | | {spec.many_values_ec} | "
                         f"one value only |")
    return "\n".join(lines)


def updated(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in argv:
        return 0 if new == text else 1
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
