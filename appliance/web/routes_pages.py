"""The kiosk workflow: home → patient → analysis → image → processing → result → decision → print.

Patient data never travels in a URL: pages are addressed by record uuids, searches and
registrations are POSTed and kept in the server-side session (post/redirect/get).
"""
from __future__ import annotations

import re

import bottle
from bottle import request

from .. import catalogue
from ..errors import NotFound, UserError
from ..i18n.age import parse_age_years
from ..i18n.names import normalize_phone
from ..inference import imageio
from . import auth, decisions, views
from .context import AppContext, _, current_session, request_calendar
from .drafts import ImageChanged
from .forms import date_value, field

UUID_RE = r"[0-9a-fA-F-]{32,36}"
DRAFT_RE = r"[A-Za-z0-9_-]{16,40}"
PID_PATTERN = re.compile(r"^[\w][\w/.\- ]{0,39}$", re.UNICODE)
# A second "Start processing" for the same image waits this long for the first one's exam.
PROCESS_WAIT_SECONDS = 120


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    store = ctx.store

    # -- home -------------------------------------------------------------------------------
    @app.get("/")
    def home():
        user = auth.require()
        buttons = [b for b in ctx.home_buttons if user["role"] in b.roles]
        return ctx.render("home.html", home_buttons=buttons)

    # -- find or register a patient ---------------------------------------------------------
    @app.get("/diagnose")
    def diagnose_page():
        auth.require_permission("diagnose")
        return _diagnose_page(ctx)

    @app.post("/diagnose/search")
    def search_patients():
        auth.require_permission("diagnose")
        current_session().state["patient_search"] = field("q", max_len=100)
        bottle.redirect("/diagnose#results")

    @app.post("/patients")
    def register_patient():
        user = auth.require_permission("diagnose")
        values = {k: field(k, max_len=n) for k, n in
                  (("pid", 40), ("full_name", 120), ("address", 200), ("phone", 30),
                   ("birth_date", 40), ("age_years", 20), ("sex", 10))}
        try:
            kwargs = _patient_fields(values, request_calendar(ctx))
            patient = store.patients.register(values["pid"], values["full_name"], by=user["username"], **kwargs)
        except UserError as exc:
            existing = getattr(exc, "existing", None)
            bottle.response.status = 409 if existing else 400
            message, hint = ctx.error_text(exc)
            return _diagnose_page(ctx, form=values, error=message, hint=hint, existing=existing)
        current_session().flash(_("Patient registered."), "ok")
        bottle.redirect(f"/patients/{patient['uuid']}")

    @app.get(f"/patients/<uuid:re:{UUID_RE}>")
    def patient_page(uuid):
        user = auth.require_permission("view_records")
        patient = _patient_or_404(ctx, uuid)
        exams = sorted(store.exams.for_patient(uuid), key=lambda e: e.get("created_at", ""), reverse=True)
        auth.audit("view", "patient", uuid)
        return ctx.render("patient.html", patient=patient, exams=[_exam_row(e) for e in exams],
                          analyses=ctx.available_analyses() if auth.allowed(user, "diagnose") else [],
                          unavailable=_unavailable_analyses(ctx), views=views)

    # -- the image step ---------------------------------------------------------------------
    @app.post("/drafts")
    def new_draft():
        user = auth.require_permission("diagnose")
        patient = _patient_or_404(ctx, field("patient_uuid", max_len=40))
        _open_draft(ctx, user, patient, field("analysis", max_len=40))

    @app.get(f"/drafts/<draft_id:re:{DRAFT_RE}>")
    def image_step(draft_id):
        user = auth.require_permission("diagnose")
        return _image_step_page(ctx, ctx.drafts.get(draft_id, user["username"]))

    @app.get(f"/drafts/<draft_id:re:{DRAFT_RE}>/image.jpg")
    def draft_image(draft_id):
        user = auth.require_permission("diagnose")
        draft = ctx.drafts.get(draft_id, user["username"])
        if draft.preview_jpeg is None:
            raise bottle.HTTPError(404)
        bottle.response.content_type = "image/jpeg"
        return draft.preview_jpeg

    @app.post(f"/drafts/<draft_id:re:{DRAFT_RE}>/image")
    def upload_image(draft_id):
        user = auth.require_permission("diagnose")
        draft = ctx.drafts.get(draft_id, user["username"])
        upload = request.files.get("image")
        try:
            if upload is None or not upload.raw_filename:
                raise UserError(_("No image was chosen."), _("Tap “Choose an image file” and pick the image."))
            data = upload.file.read(ctx.drafts.max_bytes + 1)
            ctx.drafts.attach_image(draft.id, data, "file")
        except UserError as exc:
            bottle.response.status = 400
            message, hint = ctx.error_text(exc)
            return _image_step_page(ctx, draft, error=message, hint=hint)
        bottle.redirect(f"/drafts/{draft.id}")

    @app.post(f"/drafts/<draft_id:re:{DRAFT_RE}>/process")
    def process(draft_id):
        user = auth.require_permission("diagnose")
        owner = user["username"]
        try:
            # The draft leaves the draft store here, frozen: an image arriving from now on finds
            # no open exam, so the result, the stored bytes and the preview are one image.
            claimed = ctx.drafts.claim(draft_id, owner, field("version", max_len=12))
        except ImageChanged as exc:
            bottle.response.status = 409
            message, hint = ctx.error_text(exc)
            return _image_step_page(ctx, ctx.drafts.get(draft_id, owner), error=message, hint=hint)
        except NotFound:
            # A second tap on the button (or a reload of the POST): the first one's exam.
            exam_uuid = ctx.drafts.processed_exam(draft_id, owner, timeout=PROCESS_WAIT_SECONDS)
            if exam_uuid is None:
                raise
            bottle.redirect(f"/exams/{exam_uuid}")
        try:
            patient = _patient_or_404(ctx, claimed.patient_uuid)
            result = ctx.engine.diagnose(claimed.prepared, claimed.analysis, name=claimed.source)
            exam = store.exams.save(_exam_record(claimed, patient, result), claimed.image_bytes, by=owner)
        except BaseException:
            ctx.drafts.give_back(claimed)       # nothing was saved: the nurse can try again
            raise
        ctx.drafts.finish(claimed, exam["uuid"])
        ctx.results.put(exam["uuid"], result)
        ctx.previews.put(exam["uuid"], claimed.preview_jpeg)   # the result page shows it at once
        bottle.redirect(f"/exams/{exam['uuid']}")

    # -- result, decision, print ------------------------------------------------------------
    @app.get(f"/exams/<uuid:re:{UUID_RE}>")
    def exam_page(uuid):
        user = auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        patient = store.patients.get(exam["patient_uuid"]) or {}
        auth.audit("view", "exam", uuid)
        return ctx.render("result.html", exam=exam, patient=patient, r=views.result_view(exam["result"]),
                          views=views, decision=decisions.form(exam),
                          may_decide=auth.may_decide(user, exam["analysis"]),
                          may_retake=auth.allowed(user, "diagnose") and decisions.retake_advised(exam),
                          heatmap=_heatmap_available(ctx, user, exam))

    @app.get(f"/exams/<uuid:re:{UUID_RE}>/image.jpg")
    def exam_image(uuid):
        auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        bottle.response.content_type = "image/jpeg"
        # Just processed: the image step's preview is this image at the same size; older
        # exams get the store's cached thumbnail (made once from the original).
        return ctx.previews.get(uuid) or store.images.thumbnail(exam["image"]["sha256"], size=1024)

    @app.get(f"/exams/<uuid:re:{UUID_RE}>/heatmap.png")
    def exam_heatmap(uuid):
        user = auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        result = ctx.results.get(uuid)
        if result is not None:
            png = result.heatmap_png(max_side=1024)
        elif _may_redraw_heatmap(ctx, user, exam):
            # Not in memory any more (server restarted): the model that made the result draws its class again.
            png = ctx.engine.redraw_heatmap(store.images.path(exam["image"]["sha256"]), exam["result"], max_side=1024)
        else:
            raise NotFound(_("Heatmap not available for this record."),
                           _("The classes and percentages are still valid."))
        auth.audit("view", "exam_heatmap", uuid)
        bottle.response.content_type = "image/png"
        return png

    @app.post(f"/exams/<uuid:re:{UUID_RE}>/decide")
    def decide(uuid):
        user = auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        if not auth.may_decide(user, exam["analysis"]):
            raise bottle.HTTPError(403)
        note = field("note", max_len=1000)
        label = decisions.chosen_label(exam, field("agrees", max_len=20), field("label", max_len=60))
        store.exams.decide(uuid, label, note=note, by=user["username"])
        current_session().flash(_("Decision saved."), "ok")
        bottle.redirect(f"/exams/{uuid}#decision")

    @app.post(f"/exams/<uuid:re:{UUID_RE}>/retake")
    def retake(uuid):
        """A new image for the same patient and analysis. The unsuitable one stays on record as
        "image not suitable" (decided now when this user may decide and nobody has yet)."""
        user = auth.require_permission("diagnose")
        exam = _exam_or_404(ctx, uuid)
        patient = _patient_or_404(ctx, exam["patient_uuid"])
        if not exam.get("decision") and auth.may_decide(user, exam["analysis"]):
            store.exams.decide(uuid, "not_suitable", by=user["username"])
        _open_draft(ctx, user, patient, exam["analysis"])

    @app.get(f"/exams/<uuid:re:{UUID_RE}>/print")
    def print_page(uuid):
        auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        patient = store.patients.get(exam["patient_uuid"]) or {}
        auth.audit("print", "exam", uuid)
        r = views.result_view(exam["result"])
        return ctx.render("print.html", exam=exam, patient=patient, r=r, views=views,
                          path_text=views.path_text(r), post_id=store.post_id)

    @app.get(f"/exams/<uuid:re:{UUID_RE}>/report.pdf")
    def pdf_report(uuid):
        auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        patient = store.patients.get(exam["patient_uuid"]) or {}
        from .report_pdf import exam_report_pdf
        data = exam_report_pdf(ctx, exam, patient)
        auth.audit("pdf", "exam", uuid)
        bottle.response.content_type = "application/pdf"
        # The file name carries the record's uuid, never the patient's name or id.
        bottle.response.set_header("Content-Disposition", f'attachment; filename="bccdms-report-{uuid[:8]}.pdf"')
        return data


# -- helpers -------------------------------------------------------------------------------
def _patient_or_404(ctx: AppContext, uuid: str) -> dict:
    patient = ctx.store.patients.get(uuid) if uuid else None
    if patient is None or not auth.may_see(patient):      # another post's record: not for this user
        raise NotFound(_("This patient record does not exist."), _("Search for the patient again."))
    return patient


def _open_draft(ctx: AppContext, user: dict, patient: dict, analysis_id: str):
    """Open the image step of a new exam for the patient (redirects there)."""
    if analysis_id not in [a.id for a in ctx.available_analyses()]:
        raise UserError(_("This analysis is not available on this box."),
                        _("Choose another analysis, or ask the administrator to install its model."))
    draft = ctx.drafts.create(user["username"], patient["uuid"], analysis_id)
    bottle.redirect(f"/drafts/{draft.id}")


def _exam_or_404(ctx: AppContext, uuid: str) -> dict:
    exam = ctx.store.exams.get(uuid)
    if exam is None or not auth.may_see(exam):            # another post's record: not for this user
        raise NotFound(_("This exam record does not exist."), _("Open it again from Browse records."))
    return exam


def _patient_fields(values: dict, calendar: str) -> dict:
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


def _heatmap_available(ctx: AppContext, user: dict, exam: dict) -> bool:
    """A heatmap can be drawn: from the result in memory, else by the very models that made it."""
    cached = ctx.results.get(exam["uuid"])
    if cached is not None:
        return cached.has_heatmap
    return _may_redraw_heatmap(ctx, user, exam)


def _may_redraw_heatmap(ctx: AppContext, user: dict, exam: dict) -> bool:
    """Redraw only a record of this box, for a clinician who runs analyses, and only when every
    step's model (id, version, pack) is still the one installed: after a pack change, or for an
    imported record, another model would draw another heatmap (a supervisor's GET runs no model)."""
    return (exam.get("post_id") == ctx.store.post_id and auth.allowed(user, "diagnose")
            and ctx.engine is not None and ctx.engine.can_redraw_heatmap(exam.get("result") or {}))


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


def _image_step_page(ctx: AppContext, draft, *, error=None, hint=None):
    patient = ctx.store.patients.get(draft.patient_uuid) or {}
    analysis = catalogue.analysis(draft.analysis)
    return ctx.render("image_step.html", draft=draft, patient=patient, analysis=analysis, error=error, hint=hint,
                      max_bytes=ctx.drafts.max_bytes, max_mb=ctx.cfg.server.max_upload_mb,
                      accept=imageio.accept_attribute())


def _exam_record(draft, patient: dict, result) -> dict:
    """The exam to store for a claimed draft (``drafts.ClaimedDraft``) and its result."""
    info = draft.image_info
    body = result.to_json()      # its "heatmap" entry says whether one can be drawn (not the image)
    return {
        "patient_uuid": patient["uuid"], "patient_pid": patient.get("pid"),
        "analysis": draft.analysis, "source": draft.source or "file",
        "image": {"sha256": info["sha256"], "ext": imageio.extension(info.get("format")),
                  "width": info["width"], "height": info["height"]},
        "result": body,
        "label": result.label, "demo": bool(result.demo),
    }
