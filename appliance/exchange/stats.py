"""Statistics across health posts, from the merged store on a supervisor's box.

Everything is a sum over a small count cube keyed by (post, month, analysis, label, age group,
decided, demo): the tables (by post, month, class, age group, decision, and prevalence) and the
DHIS2 data values. The label counted is the final one: the clinician's decision when recorded,
the model's label before that. Prevalence is a class's share of the exams of its analysis in
the same slice.

Two ways to fill the cube: ``store_cube`` from the store's own index (``store.stats()["cells"]``:
milliseconds at any size, for the pages; it cannot tell demo exams apart), and ``count_cube``, one
pass over every exam record (exact, demo flag included, about 0.1 ms per exam: for DHIS2).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache

from .. import catalogue
from ..store.exams import AGREES, AWAITING, DISAGREES, age_group
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


def store_cube(store, *, date_from: str | None = None, date_to: str | None = None) -> Counter:
    """The cube from the store's index (fast; every exam counted as not demo)."""
    cube: Counter = Counter()
    for c in store.stats(date_from=date_from, date_to=date_to)["cells"]:
        decided = c["decision"] in ("agrees", "disagrees")
        cube[Cell(c["post_id"], c["month"] or "unknown", c["analysis"], c["label"] or "unlabelled", c["age_group"],
                  decided, False, (c["decision"] == "agrees") if decided else None)] += c["count"]
    return cube


def _classes(counts: Counter) -> dict:
    total = sum(counts.values())
    return {"exams": total,
            "by_class": dict(sorted(counts.items())),
            "prevalence": {c: round(n / total, 4) for c, n in sorted(counts.items())} if total else {}}


def summarize(cube: Counter, post_names: dict[str, str] | None = None) -> dict:
    """The cross-post tables (JSON-able) from a count cube."""
    post_names = post_names or {}
    by_post: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_month: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_age: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_analysis: dict[str, Counter] = defaultdict(Counter)
    by_group: dict[str, Counter] = defaultdict(Counter)
    decisions: Counter = Counter()
    demo = 0
    for cell, n in cube.items():
        by_post[cell.post_id][cell.analysis][cell.label] += n
        by_month[cell.month][cell.analysis][cell.label] += n
        by_age[cell.age_group][cell.analysis][cell.label] += n
        by_analysis[cell.analysis][cell.label] += n
        by_group[cell.analysis][label_group(cell.analysis, cell.label)] += n
        decisions[AWAITING if not cell.decided else AGREES if cell.agrees else DISAGREES] += n
        demo += n if cell.demo else 0

    def nested(table):
        return {key: {"exams": sum(sum(c.values()) for c in per.values()),
                      "by_analysis": {a: _classes(c) for a, c in sorted(per.items())}}
                for key, per in sorted(table.items())}

    posts = nested(by_post)
    for post_id, entry in posts.items():
        entry["name"] = post_names.get(post_id, "")
    return {
        "exams": sum(cube.values()),
        "demo_exams": demo,
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
    """The cross-post tables, from the store's index (interactive at any size)."""
    return summarize(store_cube(store, date_from=date_from, date_to=date_to), post_names(store))
