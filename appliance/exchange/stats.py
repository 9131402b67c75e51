"""Statistics across health posts, from the merged store on a supervisor's box.

Everything is a sum over a small count cube keyed by (post, month, analysis, label, age group,
decided, demo): the tables (by post, month, class, age group, decision, and prevalence) and the
DHIS2 data values. Prevalence is a class's share of the *decided* exams of its analysis in the
same slice, by the clinician's class; exams awaiting a decision are counted beside it (the
model's label is no finding), and exams made with demo models are left out of every table and
counted apart (``demo_exams``), as in ``store.stats()`` and the DHIS2 output.

Two ways to fill the cube: ``store_cube`` from the store's own index (``store.stats()["cells"]``:
milliseconds at any size, for the pages), and ``count_cube``, one pass over every exam record
(about 0.1 ms per exam); both give the same cube.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache

from .. import catalogue
from ..store.exams import AGREES, AWAITING, DISAGREES, REFERRED, age_group
from .deidentify import patient_age


@dataclass(frozen=True)
class Cell:
    post_id: str
    month: str
    analysis: str
    label: str
    age_group: str
    decided: bool
    demo: bool
    agrees: bool | None


def label_group(analysis_id: str, label: str) -> str:
    """The first model's class a label falls under (a breast subtype -> benign or malignant)."""
    spec = catalogue.ANALYSES.get(analysis_id)
    if spec is None:
        return label
    if label in catalogue.MODELS[spec.first_model].class_ids:
        return label
    for rule in spec.rules:
        if rule.refines_label and rule.after_model == spec.first_model and \
                label in catalogue.MODELS[rule.then_model].class_ids:
            return rule.when_class
    return label


def _in_range(created: str, date_from: str | None, date_to: str | None) -> bool:
    day = created[:10]
    return (date_from is None or day >= date_from[:10]) and (date_to is None or day <= date_to[:10])


def count_cube(store, *, date_from: str | None = None, date_to: str | None = None) -> Counter:
    """Exams counted by :class:`Cell` (one streaming pass; patients looked up once each)."""
    patient = lru_cache(maxsize=65536)(store.patients.get)
    cube: Counter = Counter()
    for exam in store.changes("exams", 0):
        created = str(exam.get("created_at") or "")
        if not _in_range(created, date_from, date_to) or exam.get("analysis") not in catalogue.ANALYSES:
            continue
        decision = exam.get("decision") if isinstance(exam.get("decision"), dict) else None
        label = exam.get("final_label") or exam.get("label") or "unlabelled"
        age = patient_age(patient(exam.get("patient_uuid")), created)
        cube[Cell(str(exam.get("post_id") or ""), created[:7] or "unknown", exam["analysis"],
                  str(label), age_group(age), decision is not None, bool(exam.get("demo")),
                  None if decision is None else bool(decision.get("agrees")))] += 1
    return cube


def store_cube(store, *, date_from: str | None = None, date_to: str | None = None, by_day: bool = False) -> Counter:
    """The cube from the store's index (fast; the same cube as ``count_cube``). ``by_day``: each
    cell's ``month`` is its day (YYYY-MM-DD), for Ethiopian-calendar periods."""
    cube: Counter = Counter()
    for c in store.stats(date_from=date_from, date_to=date_to, by_day=by_day)["cells"]:
        decided = c["decision"] in (AGREES, DISAGREES, REFERRED)
        when = (c.get("day") if by_day else c["month"]) or "unknown"
        cube[Cell(c["post_id"], when, c["analysis"], c["label"] or "unlabelled", c["age_group"],
                  decided, bool(c["demo"]), (c["decision"] == AGREES) if decided else None)] += c["count"]
    return cube


# A class counter's key for the exams still awaiting a decision (never a class of the catalogue).
_AWAITING = None


def _classes(counts: Counter) -> dict:
    """One analysis in one slice: its exams, those awaiting a decision, and the decided ones by
    class with each class's share of them (the prevalence). Referrals (decided without a class:
    image not suitable, second opinion) are no finding: counted apart (``referred``,
    ``by_referral``), like those awaiting a decision, never in a class's share (as store.stats)."""
    waiting = counts.get(_AWAITING, 0)
    referrals = {c: n for c, n in counts.items() if catalogue.is_referral(c)}
    decided = {c: n for c, n in counts.items() if c is not _AWAITING and c not in referrals}
    total, referred = sum(decided.values()), sum(referrals.values())
    return {"exams": total + waiting + referred, "decided": total, "awaiting_decision": waiting,
            "referred": referred, "by_referral": dict(sorted(referrals.items())),
            "by_class": dict(sorted(decided.items())),
            "prevalence": {c: round(n / total, 4) for c, n in sorted(decided.items())} if total else {}}


def summarize(cube: Counter, post_names: dict[str, str] | None = None, *, include_demo: bool = False) -> dict:
    """The cross-post tables (JSON-able) from a count cube; demo exams only counted in ``demo_exams``
    unless ``include_demo``."""
    post_names = post_names or {}
    by_post: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_month: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_age: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_analysis: dict[str, Counter] = defaultdict(Counter)
    by_group: dict[str, Counter] = defaultdict(Counter)
    decisions: Counter = Counter()
    demo = 0
    for cell, n in cube.items():
        if cell.demo:
            demo += n
            if not include_demo:
                continue
        label = cell.label if cell.decided else _AWAITING
        by_post[cell.post_id][cell.analysis][label] += n
        by_month[cell.month][cell.analysis][label] += n
        by_age[cell.age_group][cell.analysis][label] += n
        by_analysis[cell.analysis][label] += n
        by_group[cell.analysis][label if label is _AWAITING else label_group(cell.analysis, label)] += n
        decisions[AWAITING if not cell.decided else REFERRED if catalogue.is_referral(cell.label)
                  else AGREES if cell.agrees else DISAGREES] += n

    def nested(table):
        out = {}
        for key, per in sorted(table.items()):
            analyses = {a: _classes(c) for a, c in sorted(per.items())}
            out[key] = {"exams": sum(a["exams"] for a in analyses.values()),
                        "awaiting_decision": sum(a["awaiting_decision"] for a in analyses.values()),
                        "by_analysis": analyses}
        return out

    posts = nested(by_post)
    for post_id, entry in posts.items():
        entry["name"] = post_names.get(post_id, "")
    return {
        "exams": sum(decisions.values()),
        "awaiting_decision": decisions.get(AWAITING, 0),
        "demo_exams": demo,
        "include_demo": include_demo,
        "posts": {p: post_names.get(p, "") for p in sorted(by_post)},
        "by_analysis": {a: _classes(c) for a, c in sorted(by_analysis.items())},
        "by_group": {a: _classes(c) for a, c in sorted(by_group.items())},
        "by_decision": dict(sorted(decisions.items())),
        "by_post": posts,
        "by_month": nested(by_month),
        "by_age_group": nested(by_age),
    }


def post_names(store) -> dict[str, str]:
    from .importer import imported_posts
    names = {pid: str(info.get("name") or "") for pid, info in imported_posts(store).items()}
    names[store.post_id] = store.post_name
    return names


def cross_post(store, *, date_from: str | None = None, date_to: str | None = None) -> dict:
    """The cross-post tables, from the store's index (interactive at any size), with the screening
    programme's indicators (``screening``: all posts, and ``by_post``)."""
    out = summarize(store_cube(store, date_from=date_from, date_to=date_to), post_names(store))
    out["screening"] = store.care.summary(date_from=date_from, date_to=date_to, by_post=True)
    return out
