"""docs/pathway-codes.md prints the pathway's code table: a supervisor or a DHIS2 mapper reads the
page, so every value set and code the store accepts is on it, with its SMART element."""
from __future__ import annotations

from pathlib import Path

from appliance.pathway.codes import VALUE_SETS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "pathway-codes.md"


def test_every_value_set_and_code_is_on_the_page_with_its_references():
    page = PAGE.read_text(encoding="utf-8")
    missing = []
    for vs in VALUE_SETS.values():
        if f"## `{vs.id}` — {vs.name}" not in page or f"Default: `{vs.default}`" not in page:
            missing.append(vs.id)
        for c in vs.codes:
            if f"| `{c.id}` | {c.name} | {c.smart} | {c.ethiopia} |" not in page:
                missing.append(f"{vs.id}.{c.id}")
    assert not missing, f"docs/pathway-codes.md is behind appliance/pathway/codes.py: {missing}"
