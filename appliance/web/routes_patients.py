"""The kiosk's start: home → find or register a patient → the patient's page (her exams and the
analyses to start).

Patient data never travels in a URL: pages are addressed by record uuids, searches and
registrations are POSTed and kept in the server-side session (post/redirect/get).
"""
from __future__ import annotations

import re

import bottle

from .. import catalogue
from ..errors import UserError
from ..i18n.age import parse_age_years
from ..i18n.names import normalize_phone
from . import auth, views
from .context import AppContext
from .forms import date_value, field
from .lookups import patient_or_404
from .paths import UUID
from .request import _, current_session, request_calendar
from .responses import redirect
from .routing import add_routes

PID_PATTERN = re.compile(r"^[\w][\w/.\- ]{0,39}$", re.UNICODE)
REGISTRATION_FIELDS = (("pid", 40), ("full_name", 120), ("address", 200), ("phone", 30),
                       ("birth_date", 40), ("age_years", 20), ("sex", 10))


def home(ctx: AppContext):
    user = auth.require()
    buttons = [b for b in ctx.home_buttons if user["role"] in b.roles]
    return ctx.render("home.html", home_buttons=buttons)


def diagnose_page(ctx: AppContext):
    auth.require_permission("diagnose")
    return _diagnose_page(ctx)


def search_patients(ctx: AppContext):
    auth.require_permission("diagnose")
    current_session().state["patient_search"] = field("q", max_len=100)
    raise redirect("/diagnose#results")


def register_patient(ctx: AppContext):
    user = auth.require_permission("diagnose")
    values = {k: field(k, max_len=n) for k, n in REGISTRATION_FIELDS}
    try:
        kwargs = patient_fields(values, request_calendar(ctx))
        patient = ctx.store.patients.register(values["pid"], values["full_name"], by=user["username"], **kwargs)
    except UserError as exc:
        existing = getattr(exc, "existing", None)
        bottle.response.status = 409 if existing else 400
        message, hint = ctx.error_text(exc)
        return _diagnose_page(ctx, form=values, error=message, hint=hint, existing=existing)
    current_session().flash(_("Patient registered."), "ok")
    raise redirect(f"/patients/{patient['uuid']}")


def patient_page(ctx: AppContext, uuid: str):
    user = auth.require_permission("view_records")
    patient = patient_or_404(ctx, uuid)
    exams = sorted(ctx.store.exams.for_patient(uuid), key=lambda e: e.get("created_at", ""), reverse=True)
    auth.audit("view", "patient", uuid)
    return ctx.render("patient.html", patient=patient, exams=[_exam_row(e) for e in exams],
                      analyses=ctx.available_analyses() if auth.allowed(user, "diagnose") else [],
                      unavailable=_unavailable_analyses(ctx), views=views)


ROUTES = (
    ("GET", "/", home),
    ("GET", "/diagnose", diagnose_page),
    ("POST", "/diagnose/search", search_patients),
    ("POST", "/patients", register_patient),
    ("GET", f"/patients/<uuid:re:{UUID}>", patient_page),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


# -- helpers -------------------------------------------------------------------------------
def patient_fields(values: dict, calendar: str) -> dict:
    """Validate the registration form beyond what the store checks; raise UserError.

    The date of birth is typed in the user's calendar and stored as a Gregorian ISO date; an
    approximate age is stored as such (``age_years``), never turned into an invented date.
    """
    if not values["pid"]:
        raise UserError(_("Enter the card number / patient id."), _("It is written on the patient's card."))
    if not PID_PATTERN.match(values["pid"]):
        raise UserError(_("The patient id may only contain letters, digits, spaces and - / ."),
                        _("Type it as written on the card, for example JU-000123."))
    if not values["full_name"]:
        raise UserError(_("Enter the patient's full name."), _("Use the name on the card."))
    out = {"address": values["address"], "phone": normalize_phone(values["phone"])}
    if values["sex"] in ("female", "male"):
        out["sex"] = values["sex"]
    if values["birth_date"]:
        out["birth_date"] = date_value(values["birth_date"], calendar, past=True)
    elif values["age_years"]:
        out["age_years"] = parse_age_years(values["age_years"])
    else:
        raise UserError(_("Enter the date of birth or the approximate age."),
                        _("If the exact date is not known, type the age in years."))
    return out


def _diagnose_page(ctx: AppContext, *, form=None, error=None, hint=None, existing=None):
    session = current_session()
    text = session.state.get("patient_search", "")
    results = None
    if text:
        results = ctx.store.patients.search(text, limit=25, post_id=auth.records_post())
        auth.audit("search", "patient", None, {"results": len(results)})
    return ctx.render("diagnose.html", search=text, results=results, form=form or {}, error=error, hint=hint,
                      existing=existing, views=views)


def _exam_row(exam: dict) -> dict:
    return {"uuid": exam["uuid"], "when": views.local_time(exam.get("created_at")),
            "analysis": views.analysis_name(exam.get("analysis", "")),
            "label": views.label_name(exam.get("analysis", ""), exam.get("final_label") or exam.get("label")),
            "decided": exam.get("status") == "decided" or bool(exam.get("decision")),
            "demo": bool(exam.get("demo"))}


def _unavailable_analyses(ctx: AppContext) -> list:
    available = {a.id for a in ctx.available_analyses()}
    return [a for a in catalogue.ANALYSES.values() if a.id not in available]
