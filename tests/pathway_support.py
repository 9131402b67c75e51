"""Helpers for the screening-pathway tests (no tests here): visits as the kiosk would send them."""
from __future__ import annotations

from datetime import date

from appliance.pathway.eligibility import ITEMS


def checklist(outcome: str = "eligible_ablation", *, no: tuple[str, ...] = (), **extra) -> dict:
    """A checklist with every item confirmed: yes, except the items named in ``no``."""
    items = {item: {"value": "no" if item in no else "yes", "confirmed": True} for item in ITEMS}
    return {"items": items, "outcome": outcome, **extra}


def visit_answers(patient: dict, day, **answers) -> dict:
    """A visit's answers for ``patient`` on ``day`` (a date or ISO text); parts given as keywords:
    ``via="positive"``, ``hpv="negative"`` (or a dict), ``hiv="positive"``, ``treated=True``…"""
    out = {"patient_uuid": patient["uuid"], "date": day.isoformat() if isinstance(day, date) else day,
           "visit_type": answers.pop("visit_type", "first_screening")}
    if "hiv" in answers:
        out["hiv_status"] = answers.pop("hiv")
    for test in ("hpv", "via", "colposcopy", "cytology"):
        if test in answers:
            value = answers.pop(test)
            out[test] = value if isinstance(value, dict) else {"result": value}
    if answers.pop("treated", False):
        out["eligibility"] = answers.pop("eligibility", checklist())
        out["treatment"] = {"status": "received", "method": answers.pop("method", "thermal_ablation"),
                            **({"date": answers.pop("treated_on")} if "treated_on" in answers else {})}
    out.update(answers)
    return out


def save(store, patient: dict, day, *, today=None, follow_up="propose", **answers) -> dict:
    """Save a visit through ``store.care`` ("today" defaults to the visit day); returns what it returns."""
    day_text = day.isoformat() if isinstance(day, date) else day
    options = {key: answers.pop(key) for key in ("referral", "allow_duplicate") if key in answers}
    return store.care.save_visit(visit_answers(patient, day_text, **answers), by=answers.pop("by", "nurse1"),
                                 follow_up=follow_up, today=today or date.fromisoformat(day_text), **options)
