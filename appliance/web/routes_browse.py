"""Browse records, browse the labelled image library, statistics: each shows the records of the
posts the user may see (auth.records_post). The library's thumbnails are served by their exam
(routes_exams), so the exam's post decides who sees them."""
from __future__ import annotations

import json
import math
from collections import Counter

import bottle

from .. import catalogue
from ..errors import UserError
from ..fsutil import is_sha256
from ..i18n.age import AGE_GROUPS, age_group_label
from ..store.exams import DECISION_NAMES, REFERRED
from . import auth, views
from .context import AppContext
from .forms import check_period, date_value, field, int_query, query
from .request import _, current_session, request_calendar, request_language
from .responses import redirect
from .routing import add_routes

PAGE_SIZE = 25
THUMBS_PER_PAGE = 48
RECORD_FILTERS = (("analysis", 40), ("pid", 40), ("name", 120), ("date_from", 40), ("date_to", 40), ("label", 60))


# -- records -------------------------------------------------------------------------------
def records(ctx: AppContext):
    auth.require_permission("view_records")
    filters = current_session().state.get("records_filter", {})
    page = int_query("page", 1, minimum=1)
    rows, total = ctx.store.exams.query(**_query_args(filters), post_id=auth.records_post(),
                                        offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    auth.audit("view", "exam_list", None, {"page": page, "rows": len(rows), "filtered": bool(filters)})
    return ctx.render("records.html", rows=[_record_row(ctx, e) for e in rows], total=total, page=page,
                      pages=pages, filters=filters, analyses=list(catalogue.ANALYSES.values()),
                      label_choices=_label_choices())


def set_record_filters(ctx: AppContext):
    auth.require_permission("view_records")
    session = current_session()
    if bottle.request.forms.get("clear"):
        session.state.pop("records_filter", None)
        raise redirect("/records")
    filters = {k: field(k, max_len=n) for k, n in RECORD_FILTERS}
    _validate_filters(filters, request_calendar(ctx))
    session.state["records_filter"] = {k: v for k, v in filters.items() if v}
    raise redirect("/records")


# -- image library ---------------------------------------------------------------------------
def images(ctx: AppContext):
    user = auth.require_permission("view_records")
    post = auth.records_post(user)
    analysis_id = query("analysis", max_len=40)
    label = query("label", max_len=60)
    if analysis_id and analysis_id not in catalogue.ANALYSES:
        raise UserError(_("There is no such analysis."), _("Choose a folder from the list."))
    page = int_query("page", 1, minimum=1)
    items, total = ctx.store.images.browse(analysis=analysis_id or None, label=label or None, post_id=post,
                                           offset=(page - 1) * THUMBS_PER_PAGE, limit=THUMBS_PER_PAGE)
    pages = max(1, math.ceil(total / THUMBS_PER_PAGE))
    auth.audit("view", "image_library", None, {"analysis": analysis_id, "label": label, "page": page})
    return ctx.render("images.html", folders=_folders(ctx, post, analysis_id, label),
                      items=[_image_item(i) for i in items], total=total,
                      page=page, pages=pages, analysis_id=analysis_id, label=label,
                      base=f"/images?analysis={analysis_id}&label={label}&")


def _folders(ctx: AppContext, post: str | None, analysis_id: str, label: str) -> list[dict]:
    """The class folders that hold images this user may see."""
    folders = []
    for a in catalogue.ANALYSES.values():
        # Referrals too: the images a clinician found unsuitable are worth a look.
        for c in a.decision_choices():
            _items, count = ctx.store.images.browse(analysis=a.id, label=c.id, offset=0, limit=1, post_id=post)
            if count:
                folders.append({"analysis": a.id, "label": c.id, "count": count,
                                "name": f"{_(a.name)} / {_(c.name)}",
                                "selected": a.id == analysis_id and c.id == label})
    return folders


# -- statistics ------------------------------------------------------------------------------
def statistics(ctx: AppContext):
    user = auth.require_permission("statistics")
    calendar = request_calendar(ctx)
    # Typed in the user's calendar (GET: the link to a period can be kept); ISO for the store.
    date_from = date_value(query("from", max_len=40), calendar)
    date_to = date_value(query("to", max_len=40), calendar)
    check_period(date_from, date_to)
    stats = ctx.store.stats(date_from=date_from, date_to=date_to, post_id=auth.records_post(user))
    charts = _chart_data(ctx, stats, by_post=auth.allowed(user, "statistics_by_post"))
    return ctx.render("statistics.html", stats=stats, charts=charts, charts_json=json.dumps(charts),
                      date_from=date_from or "", date_to=date_to or "", views=views)


ROUTES = (
    ("GET", "/records", records),
    ("POST", "/records", set_record_filters),
    ("GET", "/images", images),
    ("GET", "/statistics", statistics),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


# -- helpers -------------------------------------------------------------------------------
def _validate_filters(filters: dict, calendar: str) -> None:
    """Check the record filters; dates typed in the user's calendar become ISO dates."""
    if filters["analysis"] and filters["analysis"] not in catalogue.ANALYSES:
        raise UserError(_("There is no such analysis."), _("Choose one from the list."))
    filters["date_from"] = date_value(filters["date_from"], calendar) or ""
    filters["date_to"] = date_value(filters["date_to"], calendar) or ""
    check_period(filters["date_from"], filters["date_to"])


def _query_args(filters: dict) -> dict:
    return {"analysis": filters.get("analysis") or None, "pid": filters.get("pid") or None,
            "name_prefix": filters.get("name") or None, "date_from": filters.get("date_from") or None,
            "date_to": filters.get("date_to") or None, "label": filters.get("label") or None}


def _label_choices() -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for a in catalogue.ANALYSES.values():
        for c in a.decision_choices():
            seen.setdefault(c.id, c.name)
    return sorted(seen.items(), key=lambda kv: _(kv[1]))


def _record_row(ctx: AppContext, exam: dict) -> dict:
    patient = ctx.store.patients.get(exam.get("patient_uuid")) or {}
    return {"uuid": exam["uuid"], "when": views.local_time(exam.get("created_at")),
            "pid": exam.get("patient_pid") or patient.get("pid", ""), "name": patient.get("full_name", ""),
            "analysis": views.analysis_name(exam.get("analysis", "")),
            "model_label": views.label_name(exam.get("analysis", ""), exam.get("label")),
            "final_label": views.label_name(exam.get("analysis", ""), exam.get("final_label")) if exam.get("decision") else "",
            "decided": bool(exam.get("decision")), "demo": bool(exam.get("demo")),
            "post": exam.get("post_id", "")}


def _image_item(item: dict) -> dict:
    sha = item.get("sha256", "")
    exam_uuid = item.get("exam_uuid") or (item.get("exams") or [None])[-1]
    # The badges say when the label shown is no clinician's finding: made by demo models, or the
    # model's class still awaiting a decision (the library files these apart, as unconfirmed).
    return {"sha256": sha if is_sha256(sha) else "", "exam_uuid": exam_uuid,
            "label": views.label_name(item.get("analysis", ""), item.get("label")),
            "when": views.local_time(item.get("created_at")),
            "demo": bool(item.get("demo")), "awaiting": not item.get("decided", True)}


def _chart_data(ctx: AppContext, stats: dict, *, by_post: bool) -> dict:
    """Counts and prevalence in the shape statistics.js draws (names already translated)."""
    by_analysis = stats.get("by_analysis", {}) or {}
    referred = _referrals(stats)
    analyses = []
    for a in catalogue.ANALYSES.values():
        # Prevalence is a share of the exams a clinician decided; those still awaiting a decision
        # are shown beside it, never under the model's class (store.stats leaves demo exams out).
        classes = (stats.get("by_class", {}) or {}).get(a.id, {}) or {}
        decided = int(sum(_count(n) for n in classes.values()))
        rows = []
        for c in a.label_classes():
            n = int(_count(classes.get(c.id, 0)))
            rows.append({"id": c.id, "name": _(c.name), "count": n, "prevalence": (n / decided) if decided else 0.0})
        referrals = [{"id": c.id, "name": _(c.name), "count": referred[(a.id, c.id)]}
                     for c in catalogue.REFERRALS if referred[(a.id, c.id)]]
        analyses.append({"id": a.id, "name": _(a.name), "exams": int(_count(by_analysis.get(a.id, 0))),
                         "total": decided, "awaiting": int((stats.get("awaiting_by_analysis") or {}).get(a.id, 0)),
                         "classes": rows, "referrals": referrals, "referred": sum(r["count"] for r in referrals)})
    months = sorted((stats.get("by_month", {}) or {}).items())
    out = {
        "analyses": analyses,
        "months": [{"month": views.month_text(m), "count": int(_count(v))} for m, v in months],
        "labels": {"count": _("Exams"), "prevalence": _("Share of exams (%)")},
    }
    decisions = stats.get("by_decision", {}) or {}
    out["decisions"] = [{"name": _(DECISION_NAMES.get(k, k)), "count": int(_count(v))} for k, v in decisions.items()]
    ages = stats.get("by_age_group", {}) or {}
    out["age_groups"] = [{"name": age_group_label(k, request_language(ctx)), "count": int(_count(ages[k]))}
                         for k in AGE_GROUPS if k in ages]
    if by_post:
        out["posts"] = [{"post": p, "count": int(_count(v))} for p, v in sorted((stats.get("by_post", {}) or {}).items())]
    return out


def _referrals(stats: dict) -> Counter:
    """Exams decided without a class, by (analysis, referral): no finding, so never in the
    classes' prevalence; counted from the statistics cells as store.stats counts them."""
    counted = Counter()
    for cell in stats.get("cells") or ():
        if cell.get("decision") == REFERRED and (stats.get("include_demo") or not cell.get("demo")):
            counted[(cell["analysis"], cell["label"])] += cell["count"]
    return counted


def _count(value) -> float:
    """Counts may come as numbers or as {"exams": n, ...} dicts."""
    if isinstance(value, dict):
        for key in ("exams", "count", "total"):
            if key in value:
                return value[key]
        return sum(v for v in value.values() if isinstance(v, (int, float)))
    return value or 0
