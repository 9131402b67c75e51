"""An exam's result: the result page with its image and heatmap, the clinician's decision, a
retake, the print page and the PDF report. Every route finds its exam with ``exam_or_404``,
which applies the post visibility rule."""
from __future__ import annotations

import bottle

from ..errors import NotFound
from . import auth, decisions, views
from .context import AppContext
from .forms import field
from .lookups import exam_or_404, exam_patient, patient_or_404
from .paths import UUID
from .report_pdf import exam_report_pdf
from .request import _, current_session
from .responses import forbidden, redirect
from .routes_drafts import open_draft
from .routing import add_routes

THUMBNAIL_SIZE = 256
PREVIEW_SIZE = 1024


def exam_page(ctx: AppContext, uuid: str):
    user = auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    patient = exam_patient(ctx, exam)
    auth.audit("view", "exam", uuid)
    return ctx.render("result.html", exam=exam, patient=patient, r=views.result_view(exam["result"]),
                      views=views, decision=decisions.form(exam),
                      may_decide=auth.may_decide(user, exam["analysis"]),
                      may_retake=auth.allowed(user, "diagnose") and decisions.retake_advised(exam),
                      heatmap=_heatmap_available(ctx, user, exam))


def exam_image(ctx: AppContext, uuid: str):
    auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    bottle.response.content_type = "image/jpeg"
    # Just processed: the image step's preview is this image at the same size; older
    # exams get the store's cached thumbnail (made once from the original).
    return ctx.previews.get(uuid) or ctx.store.images.thumbnail(exam["image"]["sha256"], size=PREVIEW_SIZE)


def exam_thumbnail(ctx: AppContext, uuid: str):
    """The small image the image library shows: addressed by its exam, so the exam's post
    decides who may see it (the same image is never reachable by its hash alone)."""
    auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    try:
        data = ctx.store.images.thumbnail(exam["image"]["sha256"], size=THUMBNAIL_SIZE)
    except (FileNotFoundError, KeyError):
        raise bottle.HTTPError(404) from None
    bottle.response.content_type = "image/jpeg"
    return data


def exam_heatmap(ctx: AppContext, uuid: str):
    user = auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    result = ctx.results.get(uuid)
    if result is not None:
        png = result.heatmap_png(max_side=PREVIEW_SIZE)
    elif _may_redraw_heatmap(ctx, user, exam):
        # Not in memory any more (server restarted): the model that made the result draws its class again.
        png = ctx.engine.redraw_heatmap(ctx.store.images.path(exam["image"]["sha256"]), exam["result"],
                                        max_side=PREVIEW_SIZE)
    else:
        raise NotFound(_("Heatmap not available for this record."),
                       _("The classes and percentages are still valid."))
    auth.audit("view", "exam_heatmap", uuid)
    bottle.response.content_type = "image/png"
    return png


def decide(ctx: AppContext, uuid: str):
    user = auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    if not auth.may_decide(user, exam["analysis"]):
        raise forbidden()
    note = field("note", max_len=1000)
    label = decisions.chosen_label(exam, field("agrees", max_len=20), field("label", max_len=60))
    ctx.store.exams.decide(uuid, label, note=note, by=user["username"])
    current_session().flash(_("Decision saved."), "ok")
    raise redirect(f"/exams/{uuid}#decision")


def retake(ctx: AppContext, uuid: str):
    """A new image for the same patient and analysis. The unsuitable one stays on record as
    "image not suitable" (decided now when this user may decide and nobody has yet)."""
    user = auth.require_permission("diagnose")
    exam = exam_or_404(ctx, uuid)
    patient = patient_or_404(ctx, exam["patient_uuid"])
    if not exam.get("decision") and auth.may_decide(user, exam["analysis"]):
        ctx.store.exams.decide(uuid, "not_suitable", by=user["username"])
    raise open_draft(ctx, user, patient, exam["analysis"])


def print_page(ctx: AppContext, uuid: str):
    auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    patient = exam_patient(ctx, exam)
    auth.audit("print", "exam", uuid)
    r = views.result_view(exam["result"])
    return ctx.render("print.html", exam=exam, patient=patient, r=r, views=views,
                      path_text=views.path_text(r), post_id=ctx.store.post_id)


def pdf_report(ctx: AppContext, uuid: str):
    auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    data = exam_report_pdf(ctx, exam, exam_patient(ctx, exam))
    auth.audit("pdf", "exam", uuid)
    bottle.response.content_type = "application/pdf"
    # The file name carries the record's uuid, never the patient's name or id.
    bottle.response.set_header("Content-Disposition", f'attachment; filename="bccdms-report-{uuid[:8]}.pdf"')
    return data


ROUTES = (
    ("GET", f"/exams/<uuid:re:{UUID}>", exam_page),
    ("GET", f"/exams/<uuid:re:{UUID}>/image.jpg", exam_image),
    ("GET", f"/exams/<uuid:re:{UUID}>/thumb.jpg", exam_thumbnail),
    ("GET", f"/exams/<uuid:re:{UUID}>/heatmap.png", exam_heatmap),
    ("POST", f"/exams/<uuid:re:{UUID}>/decide", decide),
    ("POST", f"/exams/<uuid:re:{UUID}>/retake", retake),
    ("GET", f"/exams/<uuid:re:{UUID}>/print", print_page),
    ("GET", f"/exams/<uuid:re:{UUID}>/report.pdf", pdf_report),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


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
