"""The programme's indicators on a store of three posts whose answers are known by construction:
each woman below is one case, and the expected figures are counted from the cases by hand."""
from __future__ import annotations

import json
from datetime import date

import pytest

from appliance.exchange import stats
from appliance.store.fields import new_uuid
from appliance.store.incoming import check_incoming
from appliance.store.visits import checked_visit

from pathway_support import checklist

TODAY = date(2026, 6, 1)
YEAR = {"date_from": "2025-01-01", "date_to": "2025-12-31"}
POSTS = ("post-a", "post-b", "post-c")


def _stamp(post: str, when: str, fields: dict) -> dict:
    at = f"{when}T09:00:00.000Z"
    return {"uuid": new_uuid(), "post_id": post, "created_at": at, "updated_at": at, "created_by": "nurse1", **fields}


class Cases:
    """Women, visits, referrals and follow-ups of three posts, written through the bulk path after
    the same checks an import makes."""

    def __init__(self):
        self.patients, self.visits, self.referrals, self.followups = [], [], [], []

    def woman(self, post: str, pid: str, *, birth_date=None, age_years=None, registered="2024-01-05") -> dict:
        patient = _stamp(post, registered, {"pid": pid, "full_name": f"Woman {pid}", "address": "", "phone": "",
                                            "birth_date": birth_date, "age_years": age_years, "sex": "F"})
        self.patients.append(patient)
        return patient

    def visit(self, patient: dict, day: str, *, hiv="unknown", model_assisted=False, eligibility=None,
              treated_on=None, method="thermal_ablation", **tests) -> dict:
        answers = {"date": day, "visit_type": "first_screening", "hiv_status": hiv, "model_assisted": model_assisted,
                   **{test: {"result": result} for test, result in tests.items()}}
        if eligibility:
            answers["eligibility"] = eligibility
        if treated_on:
            answers["treatment"] = {"status": "received", "method": method, "date": treated_on}
        record = _stamp(patient["post_id"], day, {"patient_uuid": patient["uuid"], "patient_pid": patient["pid"],
                                                  **checked_visit(answers)})
        self.visits.append(record)
        return record

    def referral(self, visit: dict, reason: str, outcome: dict | None = None) -> dict:
        record = _stamp(visit["post_id"], visit["date"], {
            "patient_uuid": visit["patient_uuid"], "patient_pid": visit["patient_pid"], "programme": "cervical",
            "visit_uuid": visit["uuid"], "exam_uuid": None, "date": visit["date"],
            "facility": {"id": "other", "name": "Jimma University Medical Center", "registry_code": ""},
            "reason": reason, "urgency": "routine", "note": "",
            "outcome": {"status": "pending", "date": None, "hospital_result": "not_recorded", "result_exam_uuid": None,
                        "treatment": "not_recorded", "note": "", **(outcome or {})}, "outcome_history": []})
        self.referrals.append(record)
        return record

    def followup(self, visit: dict, due: str, state: str, **extra) -> dict:
        record = _stamp(visit["post_id"], visit["date"], {
            "patient_uuid": visit["patient_uuid"], "patient_pid": visit["patient_pid"], "programme": "cervical",
            "visit_uuid": visit["uuid"], "referral_uuid": None, "purpose": "rescreen", "due_date": due,
            "proposed_date": due, "rule": "rescreen_via_cytology", "state": state, "lost_reason": None,
            "events": [{"action": "created", "at": f"{visit['date']}T09:00:00.000Z", "by": "nurse1"}], **extra})
        self.followups.append(record)
        return record

    def write(self, store) -> None:
        for kind in ("patients", "visits", "referrals", "followups"):
            store.bulk_insert(kind, [check_incoming(kind, r) for r in getattr(self, kind)])


@pytest.fixture
def cases(store) -> Cases:
    c = Cases()
    a, b, cc = POSTS
    eligible = checklist("eligible_ablation")
    excision = checklist("needs_excision", no=("lesion_under_75",))
    refer = checklist("refer", no=("no_cancer_suspicion",))
    # post A
    w1 = c.woman(a, "A1", birth_date="1990-01-10")
    v1 = c.visit(w1, "2025-03-01", hiv="positive", model_assisted=True, via="negative")          # 35
    w2 = c.woman(a, "A2", birth_date="1975-06-15")
    c.visit(w2, "2025-06-14", hpv="negative")                                                   # 49: 30-49
    w3 = c.woman(a, "A3", birth_date="1975-06-15")
    c.visit(w3, "2025-06-15", hpv="positive", via="positive", model_assisted=True,                # 50 that day
            eligibility=eligible, treated_on="2025-06-15")
    w11 = c.woman(a, "A11", birth_date="1992-03-01")
    c.visit(w11, "2024-11-01", via="positive", eligibility=eligible, treated_on="2024-11-01")
    c.visit(w11, "2025-01-15", via="negative")                                                   # too early
    # post B
    w4 = c.woman(b, "B4", age_years=40, registered="2020-03-01")                                  # 45 in 2025
    c.visit(w4, "2025-05-01", hiv="negative", via="positive", eligibility=eligible, treated_on="2025-07-01")
    w5 = c.woman(b, "B5")                                                                       # age unknown
    v5 = c.visit(w5, "2025-04-10", hiv="negative", via="positive", eligibility=excision)
    c.referral(v5, "excision", {"status": "attended", "date": "2025-05-02", "treatment": "leep"})
    w6 = c.woman(b, "B6", birth_date="1997-02-01")
    v6 = c.visit(w6, "2025-09-09", hiv="positive", via="suspicious", eligibility=refer)               # 28
    c.referral(v6, "suspected_cancer")
    # post C
    w7 = c.woman(cc, "C7", birth_date="1965-01-01")
    c.visit(w7, "2025-02-20", via="positive", eligibility=eligible, model_assisted=True)                # 60, refused
    w8 = c.woman(cc, "C8", birth_date="1994-01-01")
    v8 = c.visit(w8, "2025-02-01", hiv="negative", via="negative")                                  # 31
    c.visit(w8, "2025-08-01", hiv="negative", hpv="negative")
    w9 = c.woman(cc, "C9", birth_date="1984-01-01")
    c.visit(w9, "2024-03-10", hiv="negative", via="positive", eligibility=eligible, treated_on="2024-03-10")
    c.visit(w9, "2025-03-20", hiv="negative", via="negative")                                       # 41, came back
    w10 = c.woman(cc, "C10", birth_date="1980-01-01")
    c.visit(w10, "2024-05-01", via="positive", eligibility=eligible, treated_on="2024-05-01")      # never came back
    # follow-ups due in 2025: one lost, one still open (overdue), one attended; one in 2026 to come
    c.followup(v1, "2025-04-01", "lost", lost_reason="moved")
    c.followup(v5, "2025-05-01", "due")
    c.followup(v8, "2025-10-01", "attended")
    c.followup(v8, "2026-09-01", "due")
    c.write(store)
    return c


def _ind(store, **period):
    return store.care.summary(today=TODAY, **period)["indicators"]


def test_the_year_figures_are_the_ones_counted_by_hand(store, cases):
    ind = _ind(store, **YEAR)
    screened = ind["screened"]
    assert screened["numerator"] == 10 and screened["denominator"] is None      # w8 counted once
    assert screened["by_hiv"] == {"positive": 2, "negative": 4, "unknown": 4}   # the unknown ones are not dropped
    assert screened["by_age_group"] == {"<20": 0, "20-29": 1, "30-39": 3, "40-49": 3, "50-59": 1, "60-69": 1,
                                        "70+": 0, "unknown": 1, "30-49": 6}
    assert screened["by_age_and_hiv"]["40-49/unknown"] == 1 and screened["by_age_and_hiv"]["unknown/negative"] == 1
    assert (ind["screen_positive_via"]["numerator"], ind["screen_positive_via"]["denominator"]) == (5, 9)
    assert (ind["screen_positive_hpv"]["numerator"], ind["screen_positive_hpv"]["denominator"]) == (1, 3)
    assert (ind["screen_positive_model_assisted"]["numerator"],
            ind["screen_positive_model_assisted"]["denominator"]) == (2, 3)
    treated = ind["treated_eligible"]
    assert (treated["numerator"], treated["denominator"], treated["percent"]) == (3, 4, 75.0)
    assert treated["treated_later"] == 1 and treated["treated_at_referral"] == 1 and treated["goal_percent"] == 90
    assert (ind["same_day_treatment"]["numerator"], ind["same_day_treatment"]["denominator"]) == (1, 4)
    referral = ind["referral_completion"]
    assert (referral["numerator"], referral["denominator"]) == (1, 2)
    assert referral["suspected_cancer"] == {"numerator": 0, "denominator": 1, "percent": 0.0}
    follow = ind["post_treatment_followup_12m"]
    assert (follow["numerator"], follow["denominator"]) == (1, 3)
    lost = ind["lost_to_follow_up"]
    assert (lost["numerator"], lost["denominator"], lost["overdue_open"]) == (1, 3, 1)


def test_the_age_is_the_age_on_the_visit_day(store, cases):
    # A2 and A3 were born the same day: the day before her 50th birthday one is 49, the next day 50.
    before = _ind(store, date_from="2025-06-14", date_to="2025-06-14")["screened"]["by_age_group"]
    after = _ind(store, date_from="2025-06-15", date_to="2025-06-15")["screened"]["by_age_group"]
    assert (before["40-49"], before["30-49"], before["50-59"]) == (1, 1, 0)
    assert (after["40-49"], after["30-49"], after["50-59"]) == (0, 0, 1)


def test_by_post_and_all_time(store, cases):
    summary = store.care.summary(today=TODAY, by_post=True, **YEAR)
    by_post = summary["by_post"]
    assert {p: f["screened"]["numerator"] for p, f in by_post.items()} == {"post-a": 4, "post-b": 3, "post-c": 3}
    assert sum(f["treated_eligible"]["denominator"] for f in by_post.values()) == 4
    all_time = _ind(store)
    assert all_time["screened"]["numerator"] == 11                # + C10, screened in 2024 only
    assert all_time["treated_eligible"]["denominator"] == 7       # + A11, C9, C10 in 2024
    # every treatment at least 12 months before today: A11, C9, C10, A3 (2025-06-15 + 12 months is after today: not yet)
    assert all_time["post_treatment_followup_12m"]["denominator"] == 3
    cross = stats.cross_post(store, **YEAR)
    assert cross["screening"]["by_post"]["post-b"]["referral_completion"]["denominator"] == 2


def test_a_later_decision_on_the_pap_smear_changes_the_cytology_counted(store):
    from test_store_support import register, save_exam
    from pathway_support import save
    woman = register(store)
    pap = save_exam(store, woman, "pap_smear", "abnormal", seed=11)
    save(store, woman, "2026-01-10", exam_uuids=[pap["uuid"]])
    assert _ind(store)["screened"]["numerator"] == 0              # awaiting the clinician's decision
    store.exams.decide(pap["uuid"], "normal", by="doctor1")
    assert _ind(store)["screened"]["numerator"] == 1


def test_appliance_stats_json_carries_the_indicators(cfg, cases, store, capsys):
    from appliance.cli import main as cli
    store.close()
    assert cli(["stats", "--data-dir", str(cfg.data_dir), "--json", "--from", "2025-01-01", "--to", "2025-12-31"]) == 0
    figures = json.loads(capsys.readouterr().out)["screening"]
    assert figures["indicators"]["screened"]["numerator"] == 10
    assert set(figures["by_post"]) == set(POSTS)
    assert cli(["stats", "--data-dir", str(cfg.data_dir)]) == 0
    assert "Treated among eligible screen-positive women: 6 / 7" in capsys.readouterr().out
