"""The programme's indicators, each a numerator and a denominator (both reported, never only the ratio).

``compute`` counts them from the store's index rows (``appliance.store.care`` hands them in):
visits, referrals and follow-ups. Every count is exact; what falls in a period is decided by one
date per indicator, given below. ``docs/pathway-codes.md`` has the same definitions.

- ``screened``: women (each counted once) with a visit in the period at which a screening test
  gave a result (``outcomes.screened``), by age group at that visit (her first screening visit
  in the period), ``30-49`` among them, and by HIV status recorded at it. A count: its
  denominator (the women of the catchment area) is not known to the appliance.
- ``screen_positive_via``: visits in the period with VIA positive or suspicious / visits with
  VIA negative, positive or suspicious (not readable is left out of both).
- ``screen_positive_hpv``: HPV positive / HPV negative or positive.
- ``screen_positive_model_assisted``: screen-positive visits / screened visits, among visits
  whose Pap smear or cervix type was read with a trained model (``model_assisted``).
- ``treated_eligible``: screen-positive visits in the period whose checklist outcome is
  "eligible for ablation" or "needs excision" (treatable precancer), treated at this post (on
  the visit day or later) or at the facility she was referred to / those visits. The visit's
  period counts it, whenever the treatment was. WHO and PEPFAR's goal: 90 %.
- ``same_day_treatment``: of the same denominator, treated on the visit day.
- ``referral_completion``: referrals made in the period whose outcome is "attended" / referrals
  made in the period.
- ``post_treatment_followup_12m``: women treated at this post whose 12-month follow-up fell due
  in the period (treatment day + 12 months within the period, and not after ``today``) who came
  back for a screening visit 9 to 15 months after the treatment / those women. The period of
  the follow-up's due day counts it.
- ``lost_to_follow_up``: follow-ups due in the period (and before ``today``) that were declared
  lost to follow-up / follow-ups due in the period before today; ``overdue_open`` counts those
  still open (overdue, nobody has recorded what happened: the silence to work off).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable

from ..i18n import N_
from ..i18n.age import AGE_GROUPS, age_group
from .codes import ATTENDED, ELIGIBLE_ABLATION, HIV_STATUS, LOST, NEEDS_EXCISION, OPEN_STATES
from .rules import add_months

TARGET_GROUP = "30-49"
TREATABLE = (ELIGIBLE_ABLATION, NEEDS_EXCISION)
FOLLOW_UP_WINDOW_MONTHS = (9, 15)
POSITIVE = {"hpv": ("positive",), "via": ("positive", "suspicious"), "cytology": ("abnormal",),
            "colposcopy": ("abnormal", "suspicious")}
SCREENING = {"hpv": ("negative", "positive"), "via": ("negative", "positive", "suspicious"),
             "cytology": ("normal", "abnormal")}

# id: (name, what the numerator counts, what the denominator counts or None for a plain count)
DEFINITIONS: dict[str, tuple[str, str, str | None]] = {
    "screened": (N_("Women screened"), N_("Women with a screening test result"), None),
    "screen_positive_via": (N_("VIA positive"), N_("VIA positive or suspicious for cancer"),
                            N_("VIA done")),
    "screen_positive_hpv": (N_("HPV positive"), N_("HPV positive"), N_("HPV test done")),
    "screen_positive_model_assisted": (N_("Screen positive, read with the model"), N_("Screen positive"),
                                       N_("Screened with a model-read image")),
    "treated_eligible": (N_("Treated among eligible screen-positive women"), N_("Treated (same day or later)"),
                         N_("Screen positive and eligible for treatment")),
    "same_day_treatment": (N_("Same-day treatment"), N_("Treated on the day of screening"),
                           N_("Screen positive and eligible for treatment")),
    "referral_completion": (N_("Referrals completed"), N_("Attended the facility"), N_("Referred")),
    "post_treatment_followup_12m": (N_("Follow-up 12 months after treatment"),
                                    N_("Came back 9 to 15 months after treatment"),
                                    N_("Treated 12 months before the period")),
    "lost_to_follow_up": (N_("Lost to follow-up"), N_("Declared lost to follow-up"), N_("Follow-ups due")),
}
GOALS = {"treated_eligible": 0.9}


@dataclass
class Counts:
    numerator: int = 0
    denominator: int = 0

    def to_json(self, with_denominator: bool = True) -> dict:
        out: dict[str, Any] = {"numerator": self.numerator}
        if with_denominator:
            out["denominator"] = self.denominator
            out["percent"] = round(100.0 * self.numerator / self.denominator, 1) if self.denominator else None
        else:
            out["denominator"] = None
            out["percent"] = None
        return out


@dataclass
class Figures:
    """The indicators of one slice (all posts and days, or one post and period)."""
    counts: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in DEFINITIONS})
    screened_women: set = field(default_factory=set)
    by_age_group: Counter = field(default_factory=Counter)
    by_hiv: Counter = field(default_factory=Counter)
    by_age_and_hiv: Counter = field(default_factory=Counter)
    treated_later: int = 0
    treated_at_referral: int = 0
    positive_not_assessed: int = 0
    referrals_suspected_cancer: Counts = field(default_factory=Counts)
    overdue_open: int = 0

    def to_json(self) -> dict:
        out = {}
        for key, counts in self.counts.items():
            entry = counts.to_json(DEFINITIONS[key][2] is not None)
            if key in GOALS:
                entry["goal_percent"] = round(100 * GOALS[key])
            out[key] = entry
        out["screened"].update(
            by_age_group={g: self.by_age_group.get(g, 0) for g in (*AGE_GROUPS, TARGET_GROUP)},
            by_hiv={h: self.by_hiv.get(h, 0) for h in HIV_STATUS.ids},
            by_age_and_hiv={f"{g}/{h}": n for (g, h), n in sorted(self.by_age_and_hiv.items())})
        out["treated_eligible"].update(treated_later=self.treated_later, treated_at_referral=self.treated_at_referral,
                                       positive_not_assessed=self.positive_not_assessed)
        out["referral_completion"]["suspected_cancer"] = self.referrals_suspected_cancer.to_json()
        out["lost_to_follow_up"]["overdue_open"] = self.overdue_open
        return out


def _in(day: str, low: str | None, high: str | None) -> bool:
    return bool(day) and (low is None or day >= low) and (high is None or day <= high)


def _iso(day: date | str | None) -> str | None:
    return day.isoformat() if isinstance(day, date) else day


def compute(visits: Iterable, *, referrals: Iterable = (), followups: Iterable = (),
            visits_of: Callable[[str], Iterable], cytology_of: Callable[[Any], str], age_of: Callable[[Any], int | None],
            referral_treated: Callable[[str], bool], today: date, date_from=None, date_to=None,
            group_of: Callable[[str, str], Any] | None = None) -> tuple[Figures, dict[Any, Figures]]:
    """The indicators from index rows: totals, and per group (``group_of(post_id, day)``, e.g. a
    post and a DHIS2 period) when asked. ``visits`` may be every visit; the period is applied
    here (``date_from``/``date_to``: ISO days, inclusive).

    Rows (attributes read): visits ``uuid, post_id, patient_uuid, date, hiv, hpv, via, colposcopy,
    eligibility, treated_on, model_assisted``; referrals ``post_id, date, outcome, reason``;
    follow-ups ``post_id, due_date, state``. ``cytology_of(row)`` is the visit's cytology result
    now (its Pap smear exam's decision), ``age_of(row)`` her age at the visit, ``visits_of(patient)``
    her visits, ``referral_treated(visit_uuid)`` whether a referral of that visit came back treated.
    """
    low, high, now = _iso(date_from), _iso(date_to), today.isoformat()
    total = Figures()
    groups: dict[Any, Figures] = defaultdict(Figures)

    def slices(post_id: str, day: str) -> tuple[Figures, ...]:
        return (total, groups[group_of(post_id, day)]) if group_of else (total,)

    for row in visits:
        day = row.date
        year_after = add_months(date.fromisoformat(row.treated_on), 12).isoformat() if row.treated_on else ""
        if year_after and _in(year_after, low, min(high or now, now)):
            came_back = _came_back(row, visits_of(row.patient_uuid), cytology_of)
            for figures in slices(row.post_id, year_after):
                counts = figures.counts["post_treatment_followup_12m"]
                counts.denominator += 1
                counts.numerator += came_back
        if not _in(day, low, high):
            continue
        cytology = cytology_of(row)
        results = {"hpv": row.hpv, "via": row.via, "cytology": cytology, "colposcopy": row.colposcopy}
        screened = any(results[t] in values for t, values in SCREENING.items())
        positive = any(results[t] in values for t, values in POSITIVE.items())
        for figures in slices(row.post_id, day):
            counts = figures.counts
            if screened and row.patient_uuid not in figures.screened_women:
                figures.screened_women.add(row.patient_uuid)
                age = age_of(row)
                group = age_group(age)
                figures.by_age_group[group] += 1
                if age is not None and 30 <= age <= 49:
                    figures.by_age_group[TARGET_GROUP] += 1
                figures.by_hiv[row.hiv] += 1
                figures.by_age_and_hiv[(group, row.hiv)] += 1
                counts["screened"].numerator += 1
            if row.via in SCREENING["via"]:
                counts["screen_positive_via"].denominator += 1
                counts["screen_positive_via"].numerator += row.via in POSITIVE["via"]
            if row.hpv in SCREENING["hpv"]:
                counts["screen_positive_hpv"].denominator += 1
                counts["screen_positive_hpv"].numerator += row.hpv == "positive"
            if row.model_assisted and screened:
                counts["screen_positive_model_assisted"].denominator += 1
                counts["screen_positive_model_assisted"].numerator += positive
            if positive and row.eligibility in TREATABLE:
                here = bool(row.treated_on)
                elsewhere = not here and referral_treated(row.uuid)
                for key in ("treated_eligible", "same_day_treatment"):
                    counts[key].denominator += 1
                counts["treated_eligible"].numerator += here or elsewhere
                counts["same_day_treatment"].numerator += here and row.treated_on == day
                figures.treated_later += here and row.treated_on > day
                figures.treated_at_referral += elsewhere
            elif positive and row.eligibility == "not_assessed":
                figures.positive_not_assessed += 1
    for row in referrals:
        if not _in(row.date, low, high):
            continue
        for figures in slices(row.post_id, row.date):
            counts = figures.counts["referral_completion"]
            counts.denominator += 1
            counts.numerator += row.outcome == ATTENDED
            if row.reason == "suspected_cancer":
                figures.referrals_suspected_cancer.denominator += 1
                figures.referrals_suspected_cancer.numerator += row.outcome == ATTENDED
    for row in followups:
        due = row.due_date
        if not _in(due, low, high) or due >= now:
            continue
        for figures in slices(row.post_id, due):
            counts = figures.counts["lost_to_follow_up"]
            counts.denominator += 1
            counts.numerator += row.state == LOST
            figures.overdue_open += row.state in OPEN_STATES
    return total, dict(groups)


def _came_back(treated_row, her_visits: Iterable, cytology_of: Callable[[Any], str]) -> bool:
    start = date.fromisoformat(treated_row.treated_on)
    low = add_months(start, FOLLOW_UP_WINDOW_MONTHS[0]).isoformat()
    high = add_months(start, FOLLOW_UP_WINDOW_MONTHS[1]).isoformat()
    for other in her_visits:
        if other is treated_row or not (low <= other.date <= high):
            continue
        results = {"hpv": other.hpv, "via": other.via, "cytology": cytology_of(other)}
        if any(results[t] in values for t, values in SCREENING.items()):
            return True
    return False


def as_json(figures: Figures, *, date_from=None, date_to=None, today: date) -> dict:
    return {"date_from": _iso(date_from), "date_to": _iso(date_to), "today": today.isoformat(),
            "indicators": figures.to_json()}
