"""One wall clock for the whole appliance (issue 13, item 2): ``appliance.clock.now()``.

A box without a battery clock is tested by setting that clock; so every time a record, a check
or a page reads must come from it, and nowhere else."""
from __future__ import annotations

import ast
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

import appliance
from appliance import clock
from appliance.errors import UserError
from appliance.i18n.dates import check_past_date
from appliance.store import ordering

PACKAGE = Path(appliance.__file__).parent
# Calls that read the system's clock directly (each would escape ``clock.set_clock``).
CLOCK_READS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
               ("time", "time")}


def test_no_module_reads_the_system_clock_but_appliance_clock():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "clock.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if (name, node.func.attr) in CLOCK_READS:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert wrong == [], "read the time with appliance.clock.now() / clock.today()"


def test_a_box_whose_clock_says_2031_dates_and_checks_everything_by_it(store):
    moment = datetime(2031, 6, 1, 12, 0, tzinfo=timezone.utc)
    with clock.frozen(moment):
        assert clock.today() == date(2031, 6, 1)
        # A birth date after the real today is not "in the future" for this box.
        patient = store.patients.register("JU-31", "Almaz Kebede", birth_date="2030-05-01", by="nurse1")
        assert check_past_date(date(2031, 5, 31)) == date(2031, 5, 31)
        with pytest.raises(UserError, match="future"):
            check_past_date(date(2031, 6, 2))
        assert store.patients.age_today(patient) == 1
    assert patient["created_at"].startswith("2031-06-01T12:00")
    assert ordering.change_of(patient) > 0          # and its order is its change number, not that date


def test_implausible_dates_are_named_for_what_they_are():
    reference = datetime(2026, 11, 20, tzinfo=timezone.utc)
    assert clock.implausible("1970-01-01T00:05:00.000Z", reference) == "before this software existed"
    assert clock.implausible("2099-01-01T08:00:00.000Z", reference) == "in the future"
    assert clock.implausible("2026-11-20T20:00:00.000Z", reference) is None      # within a day: time zones
    assert clock.implausible("not a time", reference) is None
