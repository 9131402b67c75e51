"""The self-check's clock against the records (issue 13, item 2): a box whose clock is behind the
newest record it made, or implausibly far ahead of it, is told so, in ``appliance doctor`` and in
the report the kiosk's Admin page and ``/healthz`` show (``HealthMonitor``), and in a banner on every
kiosk page."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from appliance import clock, doctor
from appliance.store import Store

from test_store_support import register
from webutil import NURSE, live_server, staffed_server, web_cfg  # noqa: F401

NOW = datetime.now(timezone.utc)
LAST_WEEK = NOW - timedelta(days=7)


@pytest.fixture
def box(cfg):
    with clock.frozen(LAST_WEEK):
        store = Store.open(cfg)
        register(store, "JU-1", "Almaz Kebede")
        store.audit.log("nurse1", "login", "user", "nurse1")
    yield cfg, store
    store.close()


def _clock(cfg, store, now):
    (check,) = doctor.check_clock(cfg, now=now, store=store)
    return check, " ".join(check.details)


def test_a_clock_right_after_the_last_record_is_fine(box):
    cfg, store = box
    check, _ = _clock(cfg, store, NOW + timedelta(minutes=1))
    assert check.status == doctor.OK


def test_a_clock_behind_the_newest_record_warns(box):
    """A box without a battery clock that booted at its last shutdown time, days back."""
    cfg, store = box
    check, details = _clock(cfg, store, LAST_WEEK - timedelta(days=3))
    assert check.status == doctor.WARN and "too early" in check.message
    assert "behind the newest record made on this box" in details and LAST_WEEK.strftime("%Y-%m-%d") in details
    assert "sudo date -s" in details


def test_a_clock_years_ahead_warns(box):
    cfg, store = box
    check, details = _clock(cfg, store, datetime(2099, 1, 1, 8, tzinfo=timezone.utc))
    assert check.status == doctor.WARN and "implausibly far ahead" in check.message
    assert "more than a year ahead of the newest record" in details


def test_a_jump_to_2099_is_still_seen_after_records_were_saved_at_that_date(box):
    cfg, store = box
    typo = datetime(2099, 1, 1, 8, tzinfo=timezone.utc)
    with clock.frozen(typo):
        store.audit.log("nurse1", "login", "user", "nurse1")
        register(store, "JU-2", "Hana Girma")
    check, details = _clock(cfg, store, typo + timedelta(hours=2))
    assert check.status == doctor.WARN and "implausibly far ahead" in check.message
    assert "jumped from" in details and "2099-01-01" in details
    # Set right again: behind the 2099 records until the next record is saved at the right date.
    check, details = _clock(cfg, store, NOW + timedelta(minutes=1))
    assert check.status == doctor.WARN and "behind the newest record" in details
    with clock.frozen(NOW):
        store.audit.log("nurse1", "login", "user", "nurse1")
    check, _ = _clock(cfg, store, NOW + timedelta(minutes=1))
    assert check.status == doctor.OK


def test_the_kiosks_report_carries_the_clock_warning(box):
    """The Admin page's Self-check panel and /healthz show HealthMonitor.report()."""
    cfg, store = box
    monitor = doctor.HealthMonitor(cfg, store=store)
    with clock.frozen(datetime(2099, 1, 1, 8, tzinfo=timezone.utc)):
        report = monitor.report()
    (check,) = [c for c in report.checks if c.name == "clock"]
    assert check.status == doctor.WARN and "implausibly far ahead" in check.message
    assert report.to_json()["status"] in ("warn", "fail")


def test_appliance_doctor_compares_the_clock_with_the_records(box):
    """``appliance doctor`` (run_checks without a store) opens the store once for the clock and
    the data checks."""
    cfg, store = box
    typo = datetime(2099, 1, 1, 8, tzinfo=timezone.utc)
    with clock.frozen(typo):
        store.audit.log("nurse1", "login", "user", "nurse1")
    report = doctor.run_checks(cfg, include_server=False).to_json()
    (check,) = [c for c in report["checks"] if c["name"] == "clock"]
    assert check["status"] == "WARN" and "behind the newest record made on this box" in " ".join(check["details"])


def test_every_kiosk_page_says_when_the_clock_looks_wrong(staffed_server):
    """A nurse never opens the Admin page: the banner is on every page while the clock is off."""
    live = staffed_server
    nurse = live.logged_in(NURSE)
    assert 'id="clock-banner"' not in nurse.get("/").text
    typo = datetime(2099, 1, 1, 8, tzinfo=timezone.utc)
    with clock.frozen(typo):
        live.ctx.health_monitor.clock(max_age_s=0)        # the banner's check is at most a minute old
        page = nurse.get("/diagnose").text
    assert 'id="clock-banner"' in page and "2099-01-01 08:00" in page and "set the date and time" in page
    live.ctx.health_monitor.clock(max_age_s=0)
    assert 'id="clock-banner"' not in nurse.get("/").text
