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


def _iso(day: date | str | None) -> str | None:
    return day.isoformat() if isinstance(day, date) else day


def screening_flags(hpv: str, via: str, colposcopy: str) -> tuple[bool, bool]:
    """(screened, positive) from the tests a visit row holds itself; cytology, which follows its
    exam's decision, is added by ``visit_cell``."""
    return (hpv in SCREENING["hpv"] or via in SCREENING["via"],
            hpv == "positive" or via in POSITIVE["via"] or colposcopy in POSITIVE["colposcopy"])


# A visit's cell: what the indicators need of it, shared by every visit alike (a few hundred
# distinct cells for 150,000 visits), so counting is one C-level Counter pass over the rows.
POST, HIV, AGE_GROUP, TARGET, SCREENED, POSITIVE_, VIA, HPV, MODEL, ELIGIBILITY, TREATED = range(11)


def visit_cell(row, cytology: str, age: int | None) -> tuple:
    """The cell of a visit row (``post_id, hiv, hpv, via, eligibility, treated_on, model_assisted,
    date, screened, positive``) given its cytology now and her age at the visit."""
    screened = row.screened or cytology in SCREENING["cytology"]
    positive = row.positive or cytology in POSITIVE["cytology"]
    treated = "" if not row.treated_on else "same_day" if row.treated_on == row.date else "later"
    return (row.post_id, row.hiv, age_group(age), age is not None and 30 <= age <= 49, screened, positive,
            row.via, row.hpv, bool(row.model_assisted) and screened, row.eligibility, treated)


def compute(visits: list, *, treated: Iterable = (), referrals: Iterable = (), followups: Iterable = (),
            cell_of: Callable[[Any], tuple], visits_of: Callable[[str], Iterable],
            visit_row: Callable[[str], Any], treated_elsewhere: Iterable[str] = (), today: date,
            date_from=None, date_to=None, group_of: Callable[[str, str], Any] | None = None
            ) -> tuple[Figures, dict[Any, Figures]]:
    """The indicators from index rows: totals, and per group (``group_of(post_id, day)``, e.g. a
    post and a DHIS2 period) when asked.

    The caller hands in the rows of the period, in day order: ``visits`` (visit day in the
    period), ``referrals`` (referral day in the period), ``followups`` (due in the period, before
    today); ``treated``: every visit with a treatment at this post (the 12-month cohort is taken
    from them); ``treated_elsewhere``: the uuids of visits whose referral came back treated.
    Visit rows have ``uuid, post_id, patient_uuid, date, treated_on``; ``cell_of(row)`` gives
    their ``visit_cell``, ``visit_row(uuid)`` a visit's row, ``visits_of(patient)`` her visits.
    Referral rows have ``post_id, date, outcome, reason``; follow-up rows ``post_id, due_date, state``.
    """
    low, high, now = _iso(date_from), _iso(date_to), today.isoformat()
    total = Figures()
    groups: dict[Any, Figures] = defaultdict(Figures)

    def figures_of(key) -> tuple[Figures, ...]:
        return (total, groups[key]) if group_of else (total,)

    if group_of is None:
        cells = Counter(r.cell or cell_of(r) for r in visits)
        first = {r.patient_uuid: r for r in reversed(visits) if (r.cell or cell_of(r))[SCREENED]}
        women = Counter(cell_of(r) for r in first.values())
        keyed_cells = {(None, c): n for c, n in cells.items()}
        keyed_women = {(None, c): n for c, n in women.items()}
    else:
        keyed_cells = Counter((group_of(r.post_id, r.date), r.cell or cell_of(r)) for r in visits)
        first = {(group_of(r.post_id, r.date), r.patient_uuid): r for r in reversed(visits)
                 if (r.cell or cell_of(r))[SCREENED]}
        keyed_women = Counter((key[0], cell_of(r)) for key, r in first.items())
    for (key, cell), n in keyed_women.items():
        for figures in figures_of(key):
            figures.counts["screened"].numerator += n
            figures.by_age_group[cell[AGE_GROUP]] += n
            if cell[TARGET]:
                figures.by_age_group[TARGET_GROUP] += n
            figures.by_hiv[cell[HIV]] += n
            figures.by_age_and_hiv[(cell[AGE_GROUP], cell[HIV])] += n
    for (key, cell), n in keyed_cells.items():
        positive, via, hpv = cell[POSITIVE_], cell[VIA], cell[HPV]
        for figures in figures_of(key):
            counts = figures.counts
            if via in SCREENING["via"]:
                counts["screen_positive_via"].denominator += n
                counts["screen_positive_via"].numerator += n if via in POSITIVE["via"] else 0
            if hpv in SCREENING["hpv"]:
                counts["screen_positive_hpv"].denominator += n
                counts["screen_positive_hpv"].numerator += n if hpv == "positive" else 0
            if cell[MODEL]:
                counts["screen_positive_model_assisted"].denominator += n
                counts["screen_positive_model_assisted"].numerator += n if positive else 0
            if positive and cell[ELIGIBILITY] in TREATABLE:
                counts["treated_eligible"].denominator += n
                counts["same_day_treatment"].denominator += n
                counts["treated_eligible"].numerator += n if cell[TREATED] else 0
                counts["same_day_treatment"].numerator += n if cell[TREATED] == "same_day" else 0
                figures.treated_later += n if cell[TREATED] == "later" else 0
            elif positive and cell[ELIGIBILITY] == "not_assessed":
                figures.positive_not_assessed += n
    for uuid in treated_elsewhere:                   # treated at the facility she was referred to
        row = visit_row(uuid)
        if row is None or not ((low is None or row.date >= low) and (high is None or row.date <= high)):
            continue
        cell = cell_of(row)
        if cell[POSITIVE_] and cell[ELIGIBILITY] in TREATABLE and not cell[TREATED]:
            for figures in figures_of(group_of(row.post_id, row.date) if group_of else None):
                figures.counts["treated_eligible"].numerator += 1
                figures.treated_at_referral += 1
    last = min(high or now, now)
    for row in treated:
        year_after = add_months(date.fromisoformat(row.treated_on), 12).isoformat()
        if not ((low is None or year_after >= low) and year_after <= last):
            continue
        came_back = _came_back(row, visits_of(row.patient_uuid), cell_of)
        for figures in figures_of(group_of(row.post_id, year_after) if group_of else None):
            counts = figures.counts["post_treatment_followup_12m"]
            counts.denominator += 1
            counts.numerator += came_back
    for row in referrals:
        for figures in figures_of(group_of(row.post_id, row.date) if group_of else None):
            counts = figures.counts["referral_completion"]
            counts.denominator += 1
            counts.numerator += row.outcome == ATTENDED
            if row.reason == "suspected_cancer":
                figures.referrals_suspected_cancer.denominator += 1
                figures.referrals_suspected_cancer.numerator += row.outcome == ATTENDED
    for row in followups:
        for figures in figures_of(group_of(row.post_id, row.due_date) if group_of else None):
            counts = figures.counts["lost_to_follow_up"]
            counts.denominator += 1
            counts.numerator += row.state == LOST
            figures.overdue_open += row.state in OPEN_STATES
    return total, dict(groups)


def _came_back(treated_row, her_visits: Iterable, cell_of: Callable[[Any], tuple]) -> bool:
    start = date.fromisoformat(treated_row.treated_on)
    low = add_months(start, FOLLOW_UP_WINDOW_MONTHS[0]).isoformat()
    high = add_months(start, FOLLOW_UP_WINDOW_MONTHS[1]).isoformat()
    return any(other is not treated_row and low <= other.date <= high and cell_of(other)[SCREENED]
               for other in her_visits)


def as_json(figures: Figures, *, date_from=None, date_to=None, today: date) -> dict:
    return {"date_from": _iso(date_from), "date_to": _iso(date_to), "today": today.isoformat(),
            "indicators": figures.to_json()}
