"""The image step of an exam: open it for a patient and an analysis, attach an image (a file
here; the camera and the phone in routes_camera / routes_phone), then "Start processing",
which runs the analysis and saves the exam record.
"""
from __future__ import annotations

import bottle
from bottle import request

from .. import catalogue
from ..errors import NotFound, UserError
from ..inference import imageio
from . import auth
from .context import AppContext
from .drafts import ImageChanged
from .forms import field
from .lookups import draft_or_404, patient_or_404
from .paths import DRAFT
from .request import _
from .responses import redirect
from .routing import add_routes

# A second "Start processing" for the same image waits this long for the first one's exam.
PROCESS_WAIT_SECONDS = 120


def new_draft(ctx: AppContext):
    user = auth.require_permission("diagnose")
    patient = patient_or_404(ctx, field("patient_uuid", max_len=40))
    raise open_draft(ctx, user, patient, field("analysis", max_len=40))


def image_step(ctx: AppContext, draft_id: str):
    user = auth.require_permission("diagnose")
    return image_step_page(ctx, draft_or_404(ctx, draft_id, user))


def draft_image(ctx: AppContext, draft_id: str):
    user = auth.require_permission("diagnose")
    draft = draft_or_404(ctx, draft_id, user)
    if draft.preview_jpeg is None:
        raise bottle.HTTPError(404)
    bottle.response.content_type = "image/jpeg"
    return draft.preview_jpeg


def upload_image(ctx: AppContext, draft_id: str):
    user = auth.require_permission("diagnose")
    draft = draft_or_404(ctx, draft_id, user)
    upload = request.files.get("image")
    try:
        if upload is None or not upload.raw_filename:
            raise UserError(_("No image was chosen."), _("Tap “Choose an image file” and pick the image."))
        data = upload.file.read(ctx.drafts.max_bytes + 1)
        ctx.drafts.attach_image(draft.id, data, "file")
    except UserError as exc:
        bottle.response.status = 400
        message, hint = ctx.error_text(exc)
        return image_step_page(ctx, draft, error=message, hint=hint)
    raise redirect(f"/drafts/{draft.id}")


def process(ctx: AppContext, draft_id: str):
    """"Start processing": the analysis runs on the image the nurse saw, the exam is saved, and
    the result page opens."""
    user = auth.require_permission("diagnose")
    owner = user["username"]
    try:
        # The draft leaves the draft store here, frozen: an image arriving from now on finds
        # no open exam, so the result, the stored bytes and the preview are one image.
        claimed = ctx.drafts.claim(draft_id, owner, field("version", max_len=12))
    except ImageChanged as exc:
        bottle.response.status = 409
        message, hint = ctx.error_text(exc)
        return image_step_page(ctx, ctx.drafts.get(draft_id, owner), error=message, hint=hint)
    except NotFound:
        # A second tap on the button (or a reload of the POST): the first one's exam.
        exam_uuid = ctx.drafts.processed_exam(draft_id, owner, timeout=PROCESS_WAIT_SECONDS)
        if exam_uuid is None:
            raise
        raise redirect(f"/exams/{exam_uuid}") from None
    try:
        patient = patient_or_404(ctx, claimed.patient_uuid)
        result = ctx.engine.diagnose(claimed.decoded, claimed.analysis, name=claimed.source)
        exam = ctx.store.exams.save(exam_record(claimed, patient, result), claimed.image_bytes, by=owner)
    except BaseException:
        ctx.drafts.give_back(claimed)       # nothing was saved: the nurse can try again
        raise
    ctx.drafts.finish(claimed, exam["uuid"])
    ctx.results.put(exam["uuid"], result)
    ctx.previews.put(exam["uuid"], claimed.preview_jpeg)   # the result page shows it at once
    raise redirect(f"/exams/{exam['uuid']}")


ROUTES = (
    ("POST", "/drafts", new_draft),
    ("GET", f"/drafts/<draft_id:re:{DRAFT}>", image_step),
    ("GET", f"/drafts/<draft_id:re:{DRAFT}>/image.jpg", draft_image),
    ("POST", f"/drafts/<draft_id:re:{DRAFT}>/image", upload_image),
    ("POST", f"/drafts/<draft_id:re:{DRAFT}>/process", process),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


# -- helpers -------------------------------------------------------------------------------
def open_draft(ctx: AppContext, user: dict, patient: dict, analysis_id: str) -> bottle.HTTPResponse:
    """Open the image step of a new exam for the patient: the redirect there."""
    if analysis_id not in [a.id for a in ctx.available_analyses()]:
        raise UserError(_("This analysis is not available on this box."),
                        _("Choose another analysis, or ask the administrator to install its model."))
    draft = ctx.drafts.create(user["username"], patient["uuid"], analysis_id)
    return redirect(f"/drafts/{draft.id}")


def image_step_page(ctx: AppContext, draft, *, error=None, hint=None):
    patient = ctx.store.patients.get(draft.patient_uuid) or {}
    analysis = catalogue.analysis(draft.analysis)
    return ctx.render("image_step.html", draft=draft, patient=patient, analysis=analysis, error=error, hint=hint,
                      max_bytes=ctx.drafts.max_bytes, max_mb=ctx.cfg.server.max_upload_mb,
                      accept=imageio.accept_attribute())


def exam_record(draft, patient: dict, result) -> dict:
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
