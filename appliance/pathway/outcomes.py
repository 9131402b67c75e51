"""What a visit's answers amount to: screened or not, screen positive, and the situation the
next-visit rules are keyed by (``rules.SITUATIONS``). One definition for the store's checks,
its indicators and the kiosk.

A visit is *screened* when a screening test gave a result: HPV (negative or positive), VIA
(negative, positive, suspicious) or cytology (normal or abnormal). Colposcopy is a triage test
here: alone it does not make a visit a screening. A visit is *screen positive* when any test is
positive: HPV positive, VIA positive or suspicious, cytology abnormal, colposcopy abnormal or
suspicious; only then may a treatment be recorded.
"""
from __future__ import annotations

from .codes import RECEIVED

SCREENING_RESULTS = {"hpv": ("negative", "positive"), "via": ("negative", "positive", "suspicious"),
                     "cytology": ("normal", "abnormal")}
POSITIVE_RESULTS = {"hpv": ("positive",), "via": ("positive", "suspicious"), "cytology": ("abnormal",),
                    "colposcopy": ("abnormal", "suspicious")}
NEGATIVE_TRIAGE = {"via": "negative", "cytology": "normal", "colposcopy": "normal"}


def result(visit: dict, test: str) -> str:
    part = visit.get(test)
    return part.get("result", "not_done") if isinstance(part, dict) else "not_done"


def screened(visit: dict) -> bool:
    return any(result(visit, test) in values for test, values in SCREENING_RESULTS.items())


def screen_positive(visit: dict) -> bool:
    return any(result(visit, test) in values for test, values in POSITIVE_RESULTS.items())


def suspected_cancer(visit: dict) -> bool:
    return result(visit, "via") == "suspicious" or result(visit, "colposcopy") == "suspicious"


def treated(visit: dict) -> bool:
    treatment = visit.get("treatment")
    return isinstance(treatment, dict) and treatment.get("status") == RECEIVED


def hpv_positive_triage_negative(visit: dict) -> bool:
    """HPV positive, a triage test done, and every triage test done negative (none positive)."""
    if result(visit, "hpv") != "positive":
        return False
    done = {test: result(visit, test) for test in NEGATIVE_TRIAGE if result(visit, test) != "not_done"}
    return bool(done) and all(value == NEGATIVE_TRIAGE[test] for test, value in done.items())


def situation(visit: dict, referred: bool) -> str:
    """The rules table's ``when`` for this visit (``rules.SITUATIONS``, in that order)."""
    if treated(visit):
        return "treated"
    if referred:
        return "referred"
    if hpv_positive_triage_negative(visit):
        return "hpv_positive_triage_negative"
    if screen_positive(visit):
        return "positive_untreated"
    if result(visit, "hpv") == "negative":
        return "hpv_negative"
    if result(visit, "via") == "negative" or result(visit, "cytology") == "normal":
        return "via_or_cytology_negative"
    return "not_screened"
