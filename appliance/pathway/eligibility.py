"""WHO's checklist for thermal ablation and cryotherapy: four items, all of which must hold.

1. the transformation zone is fully visible (type 1 or 2);
2. the lesion covers less than 75 % of the cervix;
3. the lesion does not extend into the canal;
4. there is no suspicion of invasive cancer.

Otherwise the woman needs excision (LEEP/LLETZ), or referral when cancer is suspected. The
cervix type exam pre-fills the first item as a suggestion (the model's class, or the clinician's
class once the exam is decided); the clinician confirms every item and records the outcome.
This is decision support: an outcome other than the checklist's needs a reason, and "eligible
for ablation" with a type 3 transformation zone needs an explicit confirmation as well.
"""
from __future__ import annotations

from ..i18n import N_, TranslatableError
from .codes import (ANSWER, ELIGIBILITY_OUTCOME, ELIGIBLE_ABLATION, NEEDS_EXCISION, NOT_ASSESSED, REFER,
                    UNKNOWN)

TZ_VISIBLE, LESION_UNDER_75, NOT_INTO_CANAL, NO_CANCER_SUSPICION = (
    "tz_fully_visible", "lesion_under_75", "not_into_canal", "no_cancer_suspicion")
ITEMS = (TZ_VISIBLE, LESION_UNDER_75, NOT_INTO_CANAL, NO_CANCER_SUSPICION)
ITEM_NAMES = {
    TZ_VISIBLE: N_("Transformation zone fully visible (type 1 or 2)"),
    # TRANSLATORS: the WHO criterion "less than 75 % of the cervix" (75 % may be written).
    LESION_UNDER_75: N_("Lesion covers less than three quarters of the cervix"),
    NOT_INTO_CANAL: N_("Lesion does not extend into the canal"),
    NO_CANCER_SUSPICION: N_("No suspicion of invasive cancer"),
}
MODEL, EXAM_DECISION = "model", "exam_decision"
MAX_REASON = 500


class EligibilityProblem(TranslatableError):
    """A checklist or outcome that cannot be recorded as it is."""


def tz_answer(tz_type: str | None) -> str | None:
    """The first item's answer for a transformation-zone type: yes for types 1 and 2, no for 3."""
    return {"type_1": "yes", "type_2": "yes", "type_3": "no"}.get(tz_type or "")


def prefill(model_tz: str | None, clinician_tz: str | None) -> dict:
    """A checklist to show, every item unconfirmed: the first one suggested by the cervix type
    exam (its clinician's class when decided, else the model's), the others unchecked."""
    items = {item: {"value": UNKNOWN, "suggested": None, "suggested_by": None, "confirmed": False} for item in ITEMS}
    source, tz = (EXAM_DECISION, clinician_tz) if tz_answer(clinician_tz) else (MODEL, model_tz)
    answer = tz_answer(tz)
    if answer:
        items[TZ_VISIBLE].update(value=answer, suggested=answer, suggested_by=source)
    return {"items": items, "suggested": suggested_outcome(items), "outcome": NOT_ASSESSED, "tz3_confirmed": False,
            "reason": ""}


def suggested_outcome(items: dict) -> str:
    """What the checklist says: refer when cancer is suspected, excision when another item fails,
    ablation when all four hold; not assessed while an item is unchecked."""
    values = {item: (items.get(item) or {}).get("value", UNKNOWN) for item in ITEMS}
    if values[NO_CANCER_SUSPICION] == "no":
        return REFER
    if "no" in values.values():
        return NEEDS_EXCISION
    if all(v == "yes" for v in values.values()):
        return ELIGIBLE_ABLATION
    return NOT_ASSESSED


def checked(eligibility, tz_type: str | None = None) -> dict:
    """The eligibility part of a visit as stored, or an ``EligibilityProblem`` (nothing saved).

    ``eligibility``: {items: {item: {value, confirmed, suggested, suggested_by}}, outcome,
    tz3_confirmed, reason}; ``tz_type``: the visit's transformation zone, which the first item may
    not contradict."""
    if eligibility in (None, {}):
        eligibility = {}
    if not isinstance(eligibility, dict):
        raise EligibilityProblem(N_("The treatment eligibility must be a checklist."), N_("Fill in the checklist again."))
    unknown = set(eligibility) - {"items", "outcome", "suggested", "tz3_confirmed", "reason", "by", "at"}
    if unknown:
        raise EligibilityProblem(N_("The treatment eligibility has an unknown part %(part)r."),
                                 N_("Fill in the checklist again."), part=sorted(unknown)[0])
    raw_items = eligibility.get("items") or {}
    if not isinstance(raw_items, dict) or set(raw_items) - set(ITEMS):
        raise EligibilityProblem(N_("The checklist has items that are not on WHO's list."),
                                 N_("Fill in the checklist again."))
    items = {}
    for item in ITEMS:
        given = raw_items.get(item) or {}
        if not isinstance(given, dict):
            raise EligibilityProblem(N_("The checklist item %(item)s is malformed."), N_("Fill in the checklist again."),
                                     item=item)
        value = ANSWER.check(given.get("value"))
        confirmed = given.get("confirmed", False)
        suggested = given.get("suggested")
        if not isinstance(confirmed, bool) or suggested not in (None, "yes", "no") \
                or given.get("suggested_by") not in (None, MODEL, EXAM_DECISION):
            raise EligibilityProblem(N_("The checklist item %(item)s is malformed."), N_("Fill in the checklist again."),
                                     item=item)
        items[item] = {"value": value, "suggested": suggested, "suggested_by": given.get("suggested_by"),
                       "confirmed": confirmed and value != UNKNOWN}
    outcome = ELIGIBILITY_OUTCOME.check(eligibility.get("outcome"))
    reason = eligibility.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise EligibilityProblem(N_("The reason for the eligibility outcome must be a short text."),
                                 N_("Shorten the reason."))
    reason = reason.strip()
    tz3_confirmed = eligibility.get("tz3_confirmed", False)
    if not isinstance(tz3_confirmed, bool):
        raise EligibilityProblem(N_("The type 3 confirmation must be yes or no."), N_("Fill in the checklist again."))
    suggested = suggested_outcome(items)
    if tz_answer(tz_type) and items[TZ_VISIBLE]["confirmed"] and items[TZ_VISIBLE]["value"] != tz_answer(tz_type):
        raise EligibilityProblem(
            N_("The first checklist item does not match the visit's transformation zone (%(tz)s)."),
            N_("Check the transformation zone type or the first checklist item."), tz=tz_type.replace("_", " "))
    if outcome != NOT_ASSESSED:
        unconfirmed = [i for i in ITEMS if not items[i]["confirmed"]]
        if unconfirmed:
            raise EligibilityProblem(N_("Every item of the checklist must be confirmed before recording an outcome."),
                                     N_("Confirm: %(items)s."), items=", ".join(unconfirmed))
        type3 = items[TZ_VISIBLE]["value"] == "no" or tz_type == "type_3"
        if outcome == ELIGIBLE_ABLATION and type3 and not (tz3_confirmed and reason):
            raise EligibilityProblem(
                N_("Eligible for ablation with a type 3 transformation zone needs an explicit confirmation and a reason."),
                N_("WHO's checklist asks for a fully visible zone: confirm and give the reason, or choose excision."))
        if outcome != suggested and not reason:
            raise EligibilityProblem(N_("The outcome differs from what the checklist suggests; give the reason."),
                                     N_("Type why, or choose the suggested outcome."))
    return {"items": items, "suggested": suggested, "outcome": outcome, "tz3_confirmed": tz3_confirmed,
            "reason": reason, **({k: eligibility[k] for k in ("by", "at") if eligibility.get(k)})}


def not_assessed() -> dict:
    return prefill(None, None)
