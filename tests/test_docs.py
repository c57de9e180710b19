"""docs/COMPATIBILITY.md's parameter table is generated from the action specs; it must be current."""

from imgmiddleware.ops import ACTIONS
from imgmiddleware.ops.table import DOC, render, updated


def test_compatibility_table_matches_the_action_specs():
    text = DOC.read_text(encoding="utf-8")
    assert updated(text) == text, "run: python3 -m imgmiddleware.ops.table"


def test_every_action_appears_in_the_table():
    table = render()
    for name in ACTIONS:
        assert f"| `{name}` |" in table
