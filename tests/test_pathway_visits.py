"""The screening visit on a real store: defaults, the exams it links, the ablation checklist,
treatment, referral and the next visit; every bad input a sentence with nothing changed."""
from __future__ import annotations

from datetime import date

import pytest

from appliance.errors import NotFound, UserError
from appliance.i18n import error_text
from appliance.store.visits import DuplicateVisit

from pathway_support import checklist, save, visit_answers
from test_store_support import register, save_exam

DAY = date(2026, 3, 12)


def everything(store) -> dict:
    """What a user could see of the pathway's records, for "nothing changed" checks."""
    return {kind: sorted((getattr(store, kind).get(u) for u in getattr(store, kind).index.by_uuid),
                         key=lambda r: r["uuid"])
            for kind in ("visits", "referrals", "followups")} | {"audit": store.audit.query(limit=1000)[1],
                                                                 "seq": store.change_seq()}


def test_a_visit_with_nothing_entered_says_not_done_and_unknown_never_a_guess(store):
    woman = register(store)
    saved = save(store, woman, DAY, visit_type="first_screening")["visit"]
    assert saved["hiv_status"] == "unknown"
    assert saved["hpv"] == {"result": "not_done", "genotype": "not_done", "sample": "not_recorded"}
    assert saved["via"] == {"result": "not_done"} and saved["cytology"] == {"result": "not_done", "exam_uuid": None}
    assert saved["colposcopy"]["result"] == "not_done" and saved["colposcopy"]["tz_type"] == "not_done"
    assert saved["eligibility"]["outcome"] == "not_assessed"
    assert saved["treatment"]["status"] == "not_done" and saved["treatment"]["method"] == "not_done"
    assert saved["patient_pid"] == woman["pid"] and saved["post_id"] == store.post_id
    assert store.visits.get(saved["uuid"]) == saved
    entries, _ = store.audit.query(action="visit.save")
    assert entries[0]["target_id"] == saved["uuid"] and entries[0]["actor"] == "nurse1"


def test_the_form_fills_in_the_exams_and_suggests_without_deciding(store):
    woman = register(store)
    pap = save_exam(store, woman, "pap_smear", "abnormal", seed=1)
    cervix = save_exam(store, woman, "cervix_type", "type_3", seed=2)
    form = store.care.visit_form(woman["uuid"], [pap["uuid"], cervix["uuid"]], today=DAY)
    visit = form["visit"]
    assert visit["cytology"] == {"result": "awaiting_decision", "exam_uuid": pap["uuid"]}
    assert visit["colposcopy"]["model_tz"] == "type_3" and visit["colposcopy"]["clinician_tz"] is None
    assert visit["colposcopy"]["tz_type"] == "not_done"          # the model's class is a suggestion only
    first = visit["eligibility"]["items"]["tz_fully_visible"]
    assert first == {"value": "no", "suggested": "no", "suggested_by": "model", "confirmed": False}
    assert visit["eligibility"]["outcome"] == "not_assessed"
    assert form["suggestions"]["visit_type"] == "first_screening" and form["suggestions"]["hiv_status"] is None

    store.exams.decide(pap["uuid"], "abnormal", by="doctor1")
    store.exams.decide(cervix["uuid"], "type_2", by="doctor1")      # the clinician reads another type
    visit = store.care.visit_form(woman["uuid"], [pap["uuid"], cervix["uuid"]], today=DAY)["visit"]
    assert visit["cytology"]["result"] == "abnormal"
    assert visit["colposcopy"]["tz_type"] == "type_2" and visit["colposcopy"]["clinician_tz"] == "type_2"
    assert visit["eligibility"]["items"]["tz_fully_visible"]["suggested_by"] == "exam_decision"
    assert visit["eligibility"]["items"]["tz_fully_visible"]["value"] == "yes"


def test_screen_and_treat_same_day_proposes_the_12_month_follow_up(store):
    woman = register(store)
    cervix = save_exam(store, woman, "cervix_type", "type_1", seed=3)
    store.exams.decide(cervix["uuid"], "type_1", by="nurse1")
    done = save(store, woman, DAY, via="positive", exam_uuids=[cervix["uuid"]], treated=True)
    visit, follow = done["visit"], done["followup"]
    assert visit["treatment"]["date"] == DAY.isoformat() and visit["treatment"]["offered"] == "yes"
    assert visit["eligibility"]["suggested"] == visit["eligibility"]["outcome"] == "eligible_ablation"
    assert follow["due_date"] == "2027-03-12" and follow["purpose"] == "post_treatment_followup"
    assert follow["rule"] == "post_treatment" and follow["proposed_date"] == follow["due_date"]
    assert follow["state"] == "due" and follow["events"][0]["action"] == "created"


@pytest.mark.parametrize("hiv, hpv, via, due, rule", [
    ("negative", "negative", None, "2031-03-12", "rescreen_hpv_general"),
    ("positive", "negative", None, "2029-03-12", "rescreen_hpv_hiv"),
    ("unknown", "negative", None, "2029-03-12", "rescreen_hpv_hiv"),       # the shorter interval
    ("negative", None, "negative", "2029-03-12", "rescreen_via_cytology"),
    ("negative", "positive", "negative", "2028-03-12", "hpv_retest_general"),
    ("positive", "positive", "negative", "2027-03-12", "hpv_retest_hiv"),
    ("negative", None, "positive", "2026-04-12", "return_for_treatment"),
])
def test_the_rules_table_proposes_the_who_interval(store, hiv, hpv, via, due, rule):
    woman = register(store)
    answers = {"hiv": hiv, **({"hpv": hpv} if hpv else {}), **({"via": via} if via else {})}
    follow = save(store, woman, DAY, **answers)["followup"]
    assert (follow["due_date"], follow["rule"]) == (due, rule)


def test_the_nurse_may_change_the_date_and_no_test_proposes_nothing(store):
    woman = register(store)
    chosen = save(store, woman, DAY, via="negative", follow_up={"due_date": "2028-01-05"})["followup"]
    assert chosen["due_date"] == "2028-01-05" and chosen["proposed_date"] == "2029-03-12"
    other = register(store, "JU-000002", "Hana Bekele")
    assert save(store, other, DAY)["followup"] is None


def test_a_later_visit_closes_her_open_follow_up_as_attended(store):
    woman = register(store)
    first = save(store, woman, DAY, via="negative")
    second = save(store, woman, date(2029, 3, 1), visit_type="rescreening", via="negative")
    assert second["closed_followups"] == [first["followup"]["uuid"]]
    closed = store.followups.get(first["followup"]["uuid"])
    assert closed["state"] == "attended" and closed["events"][-1]["visit_uuid"] == second["visit"]["uuid"]
    assert store.care.visit_form(woman["uuid"], today=date(2029, 3, 1))["suggestions"]["visit_type"] == "rescreening"


def test_treatment_at_a_later_visit_is_recorded_on_the_screening_visit(store):
    woman = register(store)
    screened = save(store, woman, DAY, via="positive", eligibility=checklist())
    assert screened["followup"]["purpose"] == "return_for_treatment"
    later = date(2026, 4, 2)
    done = store.care.record_treatment(screened["visit"]["uuid"], {"status": "received", "method": "cryotherapy",
                                                                   "date": later.isoformat()},
                                       by="nurse1", today=later)
    assert done["visit"]["treatment"]["date"] == "2026-04-02"
    assert done["closed_followups"] == [screened["followup"]["uuid"]]
    assert done["followup"]["due_date"] == "2027-04-02"            # 12 months from the treatment day
    versions = store.history.versions(screened["visit"]["uuid"])
    assert versions[-1]["treatment"]["status"] == "not_done"         # the earlier version is kept
    assert store.audit.query(action="visit.update")[1] == 1


def test_a_referral_with_the_visit_and_its_outcome_later(store):
    woman = register(store)
    done = save(store, woman, DAY, via="suspicious",
                eligibility=checklist("refer", no=("no_cancer_suspicion",)),
                referral={"facility_name": "Jimma University Medical Center", "reason": "suspected_cancer",
                          "urgency": "urgent"})
    referral = done["referral"]
    assert referral["visit_uuid"] == done["visit"]["uuid"] and referral["outcome"]["status"] == "pending"
    assert referral["facility"] == {"id": "other", "name": "Jimma University Medical Center", "registry_code": ""}
    assert done["followup"] is None                                    # followed on the referral list
    outcome = store.care.record_referral_outcome(referral["uuid"], {
        "status": "attended", "date": "2026-03-20", "hospital_result": "invasive_cancer", "treatment": "radiotherapy"},
        by="nurse1", today=date(2026, 4, 1))
    assert outcome["outcome"]["status"] == "attended" and outcome["outcome"]["by"] == "nurse1"
    again = store.care.record_referral_outcome(referral["uuid"], {"status": "attended", "date": "2026-03-21",
                                                                  "hospital_result": "hsil"},
                                               by="doctor1", today=date(2026, 4, 1))
    assert again["outcome_history"][0]["hospital_result"] == "invasive_cancer"


def test_a_breast_result_is_referred_from_its_exam(store):
    woman = register(store)
    exam = save_exam(store, woman, "breast_histopathology", "ductal_carcinoma", seed=5)
    referral = store.care.refer(exam_uuid=exam["uuid"], referral={"facility_name": "Black Lion Hospital",
                                                                  "reason": "oncology"},
                                by="doctor1", today=DAY)
    assert referral["programme"] == "breast" and referral["exam_uuid"] == exam["uuid"]
    assert referral["visit_uuid"] is None


def test_referral_facilities_come_from_the_admins_table(store, cfg, tmp_path):
    table = tmp_path / "pathway.toml"
    table.write_text('[[facility]]\nid = "jumc"\nname = "Jimma University Medical Center"\nregistry_code = "MFR-1"\n')
    cfg.pathway.rules_file = str(table)
    woman = register(store)
    done = save(store, woman, DAY, via="suspicious", eligibility=checklist("refer", no=("no_cancer_suspicion",)),
                referral={"facility_id": "jumc", "reason": "suspected_cancer"})
    assert done["referral"]["facility"] == {"id": "jumc", "name": "Jimma University Medical Center",
                                            "registry_code": "MFR-1"}
    other = register(store, "JU-2", "Hana")
    before = everything(store)
    with pytest.raises(UserError, match="not on the list of referral facilities"):
        save(store, other, DAY, via="positive", referral={"facility_id": "nowhere"})
    assert everything(store) == before


# --- bad input: a sentence, nothing changed ----------------------------------------------------------

@pytest.mark.parametrize("answers, words", [
    ({"via": "negative", "treated": True}, "without a positive screening test"),
    ({"treated": True}, "without a positive screening test"),
    ({"via": "positive", "eligibility": checklist("eligible_ablation", no=("tz_fully_visible",)),
      "colposcopy": {"result": "abnormal", "tz_type": "type_3"}}, "type 3 transformation zone needs an explicit"),
    ({"via": "positive", "eligibility": checklist("eligible_ablation", no=("tz_fully_visible",), reason="seen well"),
      "colposcopy": {"result": "abnormal", "tz_type": "type_3"}}, "type 3 transformation zone needs an explicit"),
    ({"via": "positive", "eligibility": checklist("needs_excision"), "treatment": {"status": "received",
                                                                                  "method": "leep"}},
     "differs from what the checklist suggests"),
    ({"via": "positive", "eligibility": checklist("needs_excision", no=("lesion_under_75",)),
      "treatment": {"status": "received", "method": "thermal_ablation"}}, "Ablation needs the checklist"),
    ({"via": "positive", "eligibility": {"items": {}, "outcome": "eligible_ablation"}}, "must be confirmed"),
    ({"via": "maybe"}, "is not a possible answer for VIA"),
    ({"hpv": {"result": "negative", "genotype": "hpv16_18"}}, "genotype is given, but the HPV test is not positive"),
    ({"via": "positive", "treatment": {"status": "not_done", "method": "cryotherapy"}}, "not marked as received"),
    ({"date": "2026-03-13"}, "is not possible"),                     # tomorrow
    ({"follow_up": {"due_date": "2026-03-11"}, "via": "negative"}, "is before the visit"),
    ({"mood": "good"}, "unknown answer 'mood'"),
])
def test_bad_visits_are_refused_with_a_sentence_and_nothing_saved(store, answers, words):
    woman = register(store)
    before = everything(store)
    follow_up = answers.pop("follow_up", "propose")
    day = answers.pop("date", DAY.isoformat())
    with pytest.raises(UserError) as refused:
        store.care.save_visit(visit_answers(woman, day, **answers), by="nurse1", follow_up=follow_up, today=DAY)
    assert words in refused.value.message, refused.value.message
    assert refused.value.hint
    assert everything(store) == before


def test_eligible_with_type_3_is_saved_with_the_explicit_confirmation_and_reason(store):
    woman = register(store)
    answers = {"via": "positive", "colposcopy": {"result": "abnormal", "tz_type": "type_3"},
               "eligibility": checklist("eligible_ablation", no=("tz_fully_visible",), tz3_confirmed=True,
                                        reason="squamocolumnar junction seen with a speculum adjustment")}
    visit = save(store, woman, DAY, **answers)["visit"]
    assert visit["eligibility"]["outcome"] == "eligible_ablation" and visit["eligibility"]["suggested"] == "needs_excision"
    assert visit["eligibility"]["tz3_confirmed"] is True


def test_a_duplicate_visit_is_warned_not_doubled(store):
    woman = register(store)
    first = save(store, woman, DAY, via="negative")["visit"]
    before = everything(store)
    with pytest.raises(DuplicateVisit) as warned:
        save(store, woman, DAY, via="negative")
    assert warned.value.existing["uuid"] == first["uuid"]
    message, hint = error_text(warned.value, "en")
    assert "already has a visit on 2026-03-12" in message and "second visit" in hint
    assert everything(store) == before
    second = save(store, woman, DAY, via="negative", allow_duplicate=True)["visit"]  # confirmed by the nurse
    assert second["uuid"] != first["uuid"] and len(store.visits.for_patient(woman["uuid"])) == 2


def test_an_outcome_without_a_referral_is_refused(store):
    before = everything(store)
    with pytest.raises(NotFound) as refused:
        store.care.record_referral_outcome("6a3c3f7e-2b9b-4a47-8a5c-7d1f2e3a4b5c", {"status": "attended"},
                                           by="nurse1", today=DAY)
    assert "no referral to record this outcome on" in refused.value.message
    assert error_text(refused.value, "am")[0]                     # the kiosk can show it translated
    assert everything(store) == before


def test_a_visit_naming_another_womans_exam_is_refused(store):
    woman, other = register(store), register(store, "JU-000002", "Hana Bekele")
    exam = save_exam(store, other, "pap_smear", "normal", seed=7)
    before = everything(store)
    with pytest.raises(UserError, match="not one of this woman's exams"):
        save(store, woman, DAY, exam_uuids=[exam["uuid"]])
    assert everything(store) == before


def test_exams_stay_valid_without_a_visit(store):
    woman = register(store)
    exam = save_exam(store, woman, "pap_smear", "normal", seed=8)
    assert store.exams.get(exam["uuid"])["analysis"] == "pap_smear"
    assert store.care.for_patient(woman["uuid"]) == {"visits": [], "referrals": [], "followups": []}
