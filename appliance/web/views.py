"""Shaping records for the pages: display names in the reader's language, percentages, paths.

Catalogue names are English source strings (marked with ``N_`` in the catalogue); they are
translated here, at render time, with the request's gettext.
"""
from __future__ import annotations

import datetime as dt

from babel.dates import format_skeleton

from .. import catalogue
from ..i18n import N_, glossary
from ..i18n.age import age_at, format_age
from ..i18n.dates import GREGORIAN, entry_text, format_date, format_datetime
from ..i18n.names import format_phone
from .request import _, current_context, request_calendar, request_language


def clinical_term(english: str) -> str:
    """A catalogue class name in the reader's language, with the English beside a translation
    no native-speaking clinician has reviewed yet ("አደገኛ (Malignant)"; appliance/i18n/glossary.py)."""
    lang = _lang_and_calendar()[0]
    return glossary.with_english(english, _(english), lang)


def class_name(model_id: str, class_id: str) -> str:
    try:
        return clinical_term(catalogue.model(model_id).class_name(class_id))
    except (KeyError, Exception):
        return class_id


def label_name(analysis_id: str, label_id: str | None) -> str:
    if not label_id:
        return ""
    try:
        analysis = catalogue.analysis(analysis_id)
    except Exception:
        return label_id
    for c in analysis.decision_choices():
        if c.id == label_id:
            return clinical_term(c.name)
    for model_id in analysis.model_ids:
        if label_id in catalogue.model(model_id).class_ids:
            return class_name(model_id, label_id)
    return label_id


def decision_relation(decision: dict | None) -> str:
    """How a recorded decision stands to the model's answer, in the reader's language."""
    if not decision:
        return ""
    if catalogue.is_referral(decision.get("label")):
        return _("no class given")
    return _("agrees with the model") if decision.get("agrees") else _("differs from the model")


def analysis_name(analysis_id: str) -> str:
    a = catalogue.ANALYSES.get(analysis_id)
    return _(a.name) if a else analysis_id


def result_view(result: dict) -> dict:
    """The result JSON as the result page, the print page and the PDF show it."""
    steps = []
    by_model = {}
    for step in result.get("steps", []):
        model_id = step["model"]
        probs = step.get("probabilities", {})
        rows = [{"id": cid, "name": class_name(model_id, cid), "p": float(p), "top": cid == step.get("top")}
                for cid, p in sorted(probs.items(), key=lambda kv: -kv[1])]
        view = {"model": model_id, "model_name": _(catalogue.model(model_id).name) if model_id in catalogue.MODELS else model_id,
                "version": step.get("version", ""), "pack": step.get("pack", ""), "demo": bool(step.get("demo")), "rows": rows,
                "top": step.get("top"), "confidence": float(step.get("confidence", probs.get(step.get("top"), 0.0))),
                "uncertain": bool(step.get("uncertain"))}
        steps.append(view)
        by_model[model_id] = view
    path = []
    for model_id, class_id in result.get("path", []):
        step = by_model.get(model_id)
        p = next((r["p"] for r in step["rows"] if r["id"] == class_id), None) if step else None
        path.append({"model": model_id, "class": class_id, "name": class_name(model_id, class_id), "p": p})
    scope = result.get("out_of_scope") or {}
    quality = result.get("quality") or {}
    skipped = [{"model": s.get("model"), "text": skipped_text(s)} for s in result.get("skipped") or []]
    return {
        "analysis": result.get("analysis"),
        "analysis_name": analysis_name(result.get("analysis", "")),
        "label": result.get("label"),
        "label_name": label_name(result.get("analysis", ""), result.get("label")),
        "steps": steps, "path": path, "skipped": skipped,
        "demo": bool(result.get("demo")) or any(s["demo"] for s in steps),
        "uncertain": bool(result.get("uncertain")),
        "out_of_scope": bool(scope.get("flagged")), "out_of_scope_reason": scope.get("reason"),
        "quality_warnings": [w.get("message", "") for w in quality.get("warnings", [])],
        "pack": result.get("pack") or {}, "runtime": result.get("runtime"), "precision": result.get("precision"),
        # Every pack a step came from (a result may mix the current pack and the demo pack's models).
        "packs": list(dict.fromkeys(s.get("pack") for s in result.get("steps", []) if s.get("pack"))),
        "timings": result.get("timings_ms") or {},
        "heatmap": (result.get("heatmap") or {}).get("available", False),
    }


# Why a cascade step did not run (the result's ``skipped`` reasons), as the pages say it.
SKIP_REASONS = {"not installed": N_("model not installed"),
                "only a demo model is installed": N_("only a demo model is installed")}


def skipped_text(skipped: dict) -> str:
    """"Breast: malignant subtype — not assessed: model not installed": a step the cascade
    would have run next, so nobody reads the result as if it had been assessed."""
    model_id = skipped.get("model", "")
    name = _(catalogue.model(model_id).name) if model_id in catalogue.MODELS else str(model_id)
    reason = skipped.get("reason") or ""
    reason = _(SKIP_REASONS[reason]) if reason in SKIP_REASONS else reason
    return _("%(model)s — not assessed: %(reason)s", model=name, reason=reason)


def path_text(view: dict) -> str:
    """"Malignant 97 % → Ductal carcinoma 88 %" (the cascade in one line)."""
    parts = []
    for step in view["path"]:
        parts.append(f"{step['name']} {step['p'] * 100:.0f} %" if step["p"] is not None else step["name"])
    return " → ".join(parts)


def _lang_and_calendar() -> tuple[str, str]:
    ctx = current_context()
    if ctx is None:
        return "en", GREGORIAN
    return request_language(ctx), request_calendar(ctx)


def date_text(value, *, both: bool = False, style: str = "long") -> str:
    """A stored date (or timestamp) in the reader's language and calendar; ``both`` adds the other calendar."""
    if not value:
        return ""
    lang, calendar = _lang_and_calendar()
    try:
        return format_date(value, lang, calendar, style=style, both=both)
    except ValueError:          # not a date (an imported record from other software): as stored
        return str(value)


def local_time(iso: str | None, *, both: bool = False) -> str:
    """A stored UTC time (``...Z``): its day in the reader's calendar and the box's clock time."""
    if not iso:
        return ""
    lang, calendar = _lang_and_calendar()
    try:
        return format_datetime(iso, lang, calendar, both=both)
    except ValueError:
        return iso


def entry_value(value) -> str:
    """A stored date as the reader types it into a date field (``dd/mm/yyyy`` in their calendar)."""
    try:
        return entry_text(value, _lang_and_calendar()[1])
    except ValueError:
        return str(value or "")


def date_example() -> str:
    """Today as typed into a date field in the reader's calendar (the example in the field's hint)."""
    return entry_value(dt.date.today())


def month_text(month: str) -> str:
    """A statistics month key (``2026-11``) as its name and year in the reader's language."""
    lang, _calendar = _lang_and_calendar()
    try:
        year, number = (int(part) for part in month.split("-"))
        return format_skeleton("yMMM", dt.date(year, number, 1), locale=lang)
    except (ValueError, TypeError):
        return month


def age_text(patient: dict, on=None) -> str:
    """"45 years" from the birth date, or "about 47 years" from an age given two years before
    (an approximate age grows with the years since it was recorded)."""
    lang, _calendar = _lang_and_calendar()
    try:
        age = age_at(on or dt.date.today(), birth_date=patient.get("birth_date"),
                     age_years=patient.get("age_years"), recorded_at=patient.get("created_at"))
    except (ValueError, TypeError):
        return str(patient.get("birth_date") or patient.get("age_years") or "")
    return format_age(age, lang) if age is not None else ""


def phone_text(phone: str | None) -> str:
    return format_phone(phone or "")
