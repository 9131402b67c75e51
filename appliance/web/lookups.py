"""The records a route is addressed by, found or 404: another post's record (for a user who
sees only her own post's, auth.records_post) does not exist for that user either."""
from __future__ import annotations

import bottle

from ..errors import NotFound
from . import auth
from .context import AppContext
from .request import _


def patient_or_404(ctx: AppContext, uuid: str) -> dict:
    patient = ctx.store.patients.get(uuid) if uuid else None
    if patient is None or not auth.may_see(patient):
        raise NotFound(_("This patient record does not exist."), _("Search for the patient again."))
    return patient


def exam_or_404(ctx: AppContext, uuid: str) -> dict:
    exam = ctx.store.exams.get(uuid) if uuid else None
    if exam is None or not auth.may_see(exam):
        raise NotFound(_("This exam record does not exist."), _("Open it again from Browse records."))
    return exam


def exam_patient(ctx: AppContext, exam: dict) -> dict:
    """The patient of an exam the user may see (``{}`` when the record is missing)."""
    return ctx.store.patients.get(exam["patient_uuid"]) or {}


def user_or_404(ctx: AppContext, username: str) -> dict:
    user = ctx.store.users.get(username)
    if user is None:
        raise bottle.HTTPError(404)
    return user


def draft_or_404(ctx: AppContext, draft_id: str, user: dict):
    """The user's own open exam ``draft_id`` (NotFound for anyone else's)."""
    return ctx.drafts.get(draft_id, user["username"])
