"""Merges that survive a wrong clock (issue 13, item 2), on real data folders with real keys.

A post's box without a battery clock is reset to 1970, then set to 2099 by a mistyped date, and
exports after each; the supervisor must end with the post's latest edits whatever order the
bundles arrive in, because versions are ordered by the post's change numbers, not by dates.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest

from appliance import clock
from appliance.config import load_config
from appliance.exchange import importer, keys, layout
from appliance.exchange.container import BundleRefused
from appliance.exchange.export import export_bundle
from appliance.store import Store, ordering

from test_exchange_support import Box, craft_bundle, gz_lines, tar_member, world  # noqa: F401

UTC = timezone.utc
NOVEMBER = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RESET = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)             # a cold boot without a battery clock
TYPO = datetime(2099, 1, 1, 8, 0, tzinfo=UTC)              # 'date -s 2099-01-01'
FIXED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)           # the technician set it right
OFFICE = FIXED + timedelta(days=2)                         # the supervisor's own (right) clock


def _export(w, box=None):
    box = box or w.post
    return export_bundle(box.store, box.cfg, w.stick).path


def _import_each(store, cfg, paths):
    reports = []
    for path in paths:
        (report,) = importer.import_bundles(store, cfg, [path])
        if isinstance(report, BundleRefused):
            raise report
        reports.append(report)
    return reports


def _second_supervisor(w, tmp_path) -> Box:
    """Another office box holding the same supervisor key (so it can open the same bundles)."""
    cfg = load_config(data_dir=tmp_path / "supervisor-2", environ={})
    cfg.post.name = "Zone office"
    target = keys.supervisor_key_path(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(keys.supervisor_key_path(w.supervisor.cfg), target)
    cfg.exchange.known_posts = dict(w.supervisor.cfg.exchange.known_posts)
    return Box(cfg, Store.open(cfg))


def _same_records(post: Store, supervisor: Store, uuids: dict[str, list[str]]) -> None:
    for kind, ids in uuids.items():
        getter = (post.patients if kind == "patients" else post.exams).get
        theirs = (supervisor.patients if kind == "patients" else supervisor.exams).get
        for uuid in ids:
            assert theirs(uuid) == getter(uuid), f"{kind} {uuid}: the supervisor does not have the post's latest edit"


@pytest.fixture
def wrong_clock_bundles(world):
    """Four bundles of one post: clock right, reset to 1970, set to 2099, set right again."""
    w = world
    with clock.frozen(NOVEMBER):
        p1, e1 = w.add_exam("JU-1", "Almaz Kebede")
        p2, e2 = w.add_exam("JU-2", "Hana Girma")
        first = _export(w)
    with clock.frozen(RESET):
        w.post.store.exams.decide(e1["uuid"], "abnormal", by="doctor1")
        w.post.store.patients.update(p2["uuid"], phone="0911223344", by="nurse1")
        p3, e3 = w.add_exam("JU-3", "Tigist Alemu")
        reset = _export(w)
    with clock.frozen(TYPO):
        w.post.store.exams.decide(e1["uuid"], "normal", note="second look", by="doctor1")
        w.post.store.exams.decide(e3["uuid"], "abnormal", by="doctor1")
        p4, e4 = w.add_exam("JU-4", "Meron Assefa")
        typo = _export(w)
    with clock.frozen(FIXED):
        w.post.store.exams.decide(e3["uuid"], "normal", note="reviewed", by="doctor1")
        w.post.store.patients.update(p1["uuid"], address="Kebele 7", by="nurse1")
        later = _export(w)
    uuids = {"patients": [p["uuid"] for p in (p1, p2, p3, p4)], "exams": [e["uuid"] for e in (e1, e2, e3, e4)]}
    return w, [first, reset, typo, later], uuids


def test_edits_are_ordered_by_change_numbers_whatever_the_clock_said(wrong_clock_bundles):
    w, _, uuids = wrong_clock_bundles
    post = w.post.store
    e1 = post.exams.get(uuids["exams"][0])
    assert e1["decision"]["note"] == "second look" and e1["updated_at"].startswith("2099")
    p3 = post.patients.get(uuids["patients"][2])
    assert p3["created_at"].startswith("1970"), "dates stay what the box's clock said: information only"
    versions = [post.exams.get(u) for u in uuids["exams"]] + [post.patients.get(u) for u in uuids["patients"]]
    assert all(ordering.change_of(v) > 0 for v in versions)
    e3 = post.exams.get(uuids["exams"][2])
    assert ordering.change_of(e3) > ordering.change_of(e1), "the edit after the clock was fixed is the later one"


def test_bundles_given_together_merge_to_the_posts_latest_edits(wrong_clock_bundles, tmp_path):
    w, bundles, uuids = wrong_clock_bundles
    first, reset, typo, later = bundles
    office = _second_supervisor(w, tmp_path)
    try:
        with clock.frozen(OFFICE):
            results = importer.import_bundles(office.store, office.cfg, [typo, later, first, reset])
        assert not [r for r in results if isinstance(r, BundleRefused)]
        assert [r.path for r in results] == [first, reset, typo, later]
        _same_records(w.post.store, office.store, uuids)
    finally:
        office.store.close()


def test_bundles_arriving_newest_first_still_end_with_the_posts_latest_edits(wrong_clock_bundles):
    """One stick at a time, in the wrong order: each bundle is merged record by record by change
    number, so the 1970 and 2099 dates never decide, and nothing blocks the next bundle."""
    w, bundles, uuids = wrong_clock_bundles
    first, reset, typo, later = bundles
    sup = w.supervisor.store
    with clock.frozen(OFFICE):
        reports = dict(zip(("typo", "first", "reset", "later"),
                           _import_each(sup, w.supervisor.cfg, [typo, first, reset, later])))
    _same_records(w.post.store, sup, uuids)
    e1 = sup.exams.get(uuids["exams"][0])
    assert e1["decision"]["note"] == "second look"
    # The older versions that arrived after the later ones are kept, not lost.
    kept = sup._history.versions(uuids["exams"][0])
    assert {v["final_label"] for v in kept} >= {"normal", "abnormal"}
    assert any("older than the versions already here" in line for line in reports["first"].warnings)
    # The wrong dates are named in the reports, with the record and its date.
    reset_lines = " ".join(reports["reset"].warnings)
    assert "1970-01-01" in reset_lines and "before this software existed" in reset_lines
    assert uuids["patients"][2] in reset_lines or uuids["exams"][2] in reset_lines
    typo_lines = " ".join(reports["typo"].warnings)
    assert "2099-01-01" in typo_lines and "in the future" in typo_lines
    # Edits after the clock was set right carry the right date (dates are the clock's word, not
    # bent to keep an order); only the creation date of the exam made in 1970 is still odd.
    later_lines = " ".join(reports["later"].warnings)
    assert "2099" not in later_lines and f"exam {uuids['exams'][2]} created on 1970-01-01" in later_lines
    assert sup.exams.get(uuids["exams"][2])["updated_at"].startswith("2026-11-20")


def test_a_version_dated_2099_no_longer_blocks_the_posts_later_bundles(world):
    """The attack run's finding: one signed record dated 2099 made every later bundle of its post
    'older than records already imported'. The post's next change now goes in."""
    w = world
    with clock.frozen(NOVEMBER):
        patient, exam = w.add_exam("JU-1", "Almaz Kebede")
        _import_each(w.supervisor.store, w.supervisor.cfg, [_export(w)])
    stored = w.post.store.exams.get(exam["uuid"])
    dated_2099 = dict(stored, updated_at="2099-01-01T00:00:00.000Z", final_label="abnormal",
                      decision={"label": "abnormal", "agrees": False, "note": "", "by": "doctor1",
                                "at": "2099-01-01T00:00:00.000Z"}, status="decided")
    crafted = craft_bundle(w, [tar_member(layout.EXAMS, gz_lines([dated_2099]))], name="dated-2099.bccdms",
                           header={"bundle_id": "6a0c7f3e-2d1b-4c5a-8e9f-0a1b2c3d4e5f", "full": False})
    with clock.frozen(FIXED):
        (report,) = _import_each(w.supervisor.store, w.supervisor.cfg, [crafted])
        assert any("2099-01-01" in line and "in the future" in line for line in report.warnings)
        w.post.store.exams.decide(exam["uuid"], "normal", note="checked again", by="doctor1")
        genuine = _export(w)
        (after,) = _import_each(w.supervisor.store, w.supervisor.cfg, [genuine])
    assert after.merged["exams"]["updated"] == 1
    assert w.supervisor.store.exams.get(exam["uuid"]) == w.post.store.exams.get(exam["uuid"])
    assert w.supervisor.store.exams.get(exam["uuid"])["decision"]["note"] == "checked again"


def test_an_old_bundle_imported_again_is_refused_with_a_hint_that_helps(world):
    w = world
    _, exam = w.add_exam("JU-1", "Almaz Kebede")
    old = _export(w)
    w.post.store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
    new = export_bundle(w.post.store, w.post.cfg, w.stick, full=True).path
    _import_each(w.supervisor.store, w.supervisor.cfg, [new])
    with pytest.raises(BundleRefused) as err:
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, old)
    assert "its change" in err.value.message and exam["uuid"] in err.value.message
    assert "nothing is missing" in err.value.hint and "deleted from the stick" in err.value.hint


def test_versions_without_change_numbers_still_merge_by_date(world, tmp_path):
    """Bundles and stores of older software have no change numbers: between two such versions the
    later date still decides, and any numbered version is later than an unnumbered one."""
    w = world
    with Store.open(load_config(data_dir=tmp_path / "office", environ={})) as office:
        with clock.frozen(NOVEMBER):
            patient = w.post.store.patients.register("JU-9", "Selam Tadesse", by="nurse1")
        old = {k: v for k, v in patient.items() if k != ordering.FIELD}
        assert office.merge("patients", old) == "inserted"
        newer = dict(old, phone="+251911000000", updated_at="2026-11-30T00:00:00.000Z")
        assert office.merge("patients", newer) == "updated"
        assert office.merge("patients", dict(old, full_name="Selam T.")) == "older"
        numbered = dict(old, full_name="Selam Tadesse Bekele", post_seq=1, updated_at="2020-01-01T00:00:00.000Z")
        assert office.merge("patients", numbered) == "updated"
        assert office.patients.get(old["uuid"])["full_name"] == "Selam Tadesse Bekele"
        with pytest.raises(Exception, match="change number"):
            office.merge("patients", dict(old, post_seq="7"))
