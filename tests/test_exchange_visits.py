"""Visits, referrals and follow-ups on the USB stick: a round trip to the supervisor, merged once
however often it is imported; checked like exams; and nothing identifying in a research bundle."""
from __future__ import annotations

import json
from datetime import date

import pytest

from appliance.exchange import importer, layout, stats
from appliance.exchange.container import BundleRefused
from appliance.exchange.export import export_bundle

from pathway_support import checklist, visit_answers
from test_exchange_support import craft_bundle, gz_lines, snapshot, tar_member, world  # noqa: F401

NAME, PHONE, PID = "Almaz Zerihun Kebede", "0911223344", "JU-000777"
NOTE = "her husband Abebe asked us to call at noon"


def _import(w, path):
    (result,) = importer.import_bundles(w.supervisor.store, w.supervisor.cfg, [path])
    if isinstance(result, BundleRefused):
        raise result
    return result


def _screen_and_refer(w):
    """At the post: a Pap smear and a cervix type exam, a VIA-positive visit linking them, its
    referral and its follow-up."""
    woman, cervix = w.add_exam(PID, NAME, analysis="cervix_type", label="type_3", phone=PHONE,
                               birth_date="1984-02-11", decide="type_3")
    _, pap = w.add_exam(PID, NAME, decide="abnormal")
    today = date.today()
    done = w.post.store.care.save_visit(visit_answers(
        woman, today, via="positive", hiv="positive", exam_uuids=[cervix["uuid"], pap["uuid"]],
        colposcopy={"result": "abnormal"}, eligibility=checklist("needs_excision", no=("tz_fully_visible",)),
        note=NOTE), by="nurse1", today=today,
        referral={"facility_name": "Jimma University Medical Center", "reason": "excision", "note": NOTE},
        follow_up={"due_date": date(today.year + 1, 1, 15).isoformat(), "purpose": "return_for_treatment"})
    return woman, done


def test_round_trip_merges_once_and_then_follows_the_changes(world):
    w = world
    woman, done = _screen_and_refer(w)
    post, sup = w.post.store, w.supervisor.store
    first = export_bundle(post, w.post.cfg, w.stick)
    assert first.counts["visits"] == first.counts["referrals"] == first.counts["followups"] == 1
    report = _import(w, first.path)
    assert report.merged["visits"]["inserted"] == 1 and report.merged["referrals"]["inserted"] == 1
    assert report.merged["followups"]["inserted"] == 1
    for kind, record in (("visits", done["visit"]), ("referrals", done["referral"]), ("followups", done["followup"])):
        assert getattr(sup, kind).get(record["uuid"]) == getattr(post, kind).get(record["uuid"])
    visit = sup.visits.get(done["visit"]["uuid"])
    assert visit["colposcopy"]["clinician_tz"] == "type_3" and visit["cytology"]["result"] == "abnormal"
    assert sup.care.summary(by_post=True)["by_post"][post.post_id]["referral_completion"]["denominator"] == 1
    assert stats.cross_post(sup)["screening"]["indicators"]["screen_positive_via"]["numerator"] == 1

    before = snapshot(w.supervisor.cfg.data_dir)
    again = _import(w, first.path)                                      # the same stick, imported again
    assert again.already_imported and not again.changed
    assert all(again.merged[k]["unchanged"] == 1 for k in ("visits", "referrals", "followups"))
    assert {k: v for k, v in snapshot(w.supervisor.cfg.data_dir).items() if not k.startswith("store/meta")} == \
           {k: v for k, v in before.items() if not k.startswith("store/meta")}

    # Back at the post: the hospital's answer and a phone call.
    post.care.record_referral_outcome(done["referral"]["uuid"], {"status": "attended", "treatment": "leep"},
                                      by="nurse1")
    post.care.followup_action(done["followup"]["uuid"], "contacted", method="phone", note="treated at JUMC",
                              by="nurse1")
    second = export_bundle(post, w.post.cfg, w.stick)
    assert second.counts.get("visits", 0) == 0 and second.counts["referrals"] == 1 and second.counts["followups"] == 1
    report = _import(w, second.path)
    assert report.merged["referrals"]["updated"] == 1 and report.merged["followups"]["updated"] == 1
    assert sup.referrals.get(done["referral"]["uuid"])["outcome"]["treatment"] == "leep"
    assert [v["outcome"]["status"] for v in sup.history.versions(done["referral"]["uuid"])] == ["pending"]
    figures = sup.care.summary()["indicators"]
    assert figures["referral_completion"]["numerator"] == 1 and figures["treated_eligible"]["numerator"] == 1


def test_a_research_bundle_has_no_identifying_field(world):
    w = world
    woman, done = _screen_and_refer(w)
    result = export_bundle(w.post.store, w.post.cfg, w.stick, deidentified=True)
    out = importer.extract_bundle(w.supervisor.cfg, result.path, w.tmp / "research").extracted_to
    visit = done["visit"]
    secrets = [NAME, "Almaz", PHONE, "911223344", PID, NOTE, "Abebe", "1984-02-11", woman["uuid"],
               visit["uuid"], done["referral"]["uuid"], done["followup"]["uuid"], "nurse1", *visit["exam_uuids"]]
    # The days of the visit and of the next one are in no record (the bundle's own header and
    # manifest say when it was made, which is today here).
    days = [visit["date"], done["followup"]["due_date"]]
    for path in [p for p in out.rglob("*") if p.is_file()] + [result.path]:
        data = path.read_bytes()
        for secret in secrets + (days if "records" in path.parts else []):
            assert secret.encode("utf-8") not in data, f"{secret!r} found in {path.name}"
    [row] = [json.loads(line) for line in (out / "records" / "visits.jsonl").read_text().splitlines()]
    assert row["month"] == visit["date"][:7] and row["age_group"] == "40-49" and row["hiv_status"] == "positive"
    assert row["via"] == {"result": "positive"} and row["eligibility"]["outcome"] == "needs_excision"
    assert row["colposcopy"]["clinician_tz"] == "type_3" and len(row["exams"]) == 2
    exams = [json.loads(line) for line in (out / "records" / "exams.jsonl").read_text().splitlines()]
    assert set(row["exams"]) == {e["id"] for e in exams}              # the pseudonyms link them
    [referral] = [json.loads(line) for line in (out / "records" / "referrals.jsonl").read_text().splitlines()]
    assert referral["visit"] == row["id"] and referral["reason"] == "excision" and "facility" not in referral
    [follow] = [json.loads(line) for line in (out / "records" / "followups.jsonl").read_text().splitlines()]
    assert follow["visit"] == row["id"] and follow["due_month"] == done["followup"]["due_date"][:7]


@pytest.fixture
def guarded(world):
    w = world
    before = snapshot(w.supervisor.cfg.data_dir)
    yield w
    assert snapshot(w.supervisor.cfg.data_dir) == before, "a refused bundle changed the store"


def _bundle_with(w, **records):
    """A bundle of the post holding these records (kind -> list) as JSON lines members."""
    members = [tar_member(member, gz_lines(records[kind])) for member, kind in layout.RECORD_MEMBERS.items()
               if kind in records]
    return craft_bundle(w, members)


def test_a_visit_with_an_unknown_code_is_refused(guarded):
    w = guarded
    _, done = _screen_and_refer(w)
    visit = {**w.post.store.visits.get(done["visit"]["uuid"]), "via": {"result": "probably"}}
    with pytest.raises(BundleRefused) as refused:
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, _bundle_with(w, visits=[visit]))
    assert "'probably' is not a possible answer for VIA" in refused.value.message


def test_a_visit_of_a_woman_neither_here_nor_in_the_bundle_is_refused(guarded):
    w = guarded
    _, done = _screen_and_refer(w)
    visit = w.post.store.visits.get(done["visit"]["uuid"])
    with pytest.raises(BundleRefused) as refused:
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, _bundle_with(w, visits=[visit]))
    assert "names a patient that is neither in this bundle nor on this box" in refused.value.message


def test_a_treatment_without_a_positive_screen_is_refused_on_import_too(guarded):
    w = guarded
    woman, done = _screen_and_refer(w)
    post = w.post.store
    visit = post.visits.get(done["visit"]["uuid"])
    visit.update(via={"result": "negative"}, colposcopy={**visit["colposcopy"], "result": "normal"},
                 cytology={"result": "normal", "exam_uuid": visit["cytology"]["exam_uuid"]},
                 treatment={**visit["treatment"], "status": "received", "method": "leep", "date": visit["date"]})
    exams = [post.exams.get(u) for u in visit["exam_uuids"]]
    with pytest.raises(BundleRefused) as refused:
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg,
                               _bundle_with(w, patients=[post.patients.get(woman["uuid"])], exams=exams,
                                            visits=[visit]))
    assert "without a positive screening test" in refused.value.message
