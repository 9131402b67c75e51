"""JSON endpoints for the kiosk's scripts (same session; CSRF header on every POST)."""
from __future__ import annotations

import bottle

from ..errors import NotFound
from . import auth
from .context import AppContext
from .forms import int_query
from .lookups import draft_or_404, exam_or_404
from .paths import DRAFT, UUID
from .routing import add_routes

LONG_POLL_SECONDS = 20


def touch(ctx: AppContext):
    """The page saw a tap or a key press: the guard counted it as activity."""
    session = auth.require_session()
    return {"seconds_left": int(ctx.sessions.seconds_left(session))}


def session_status(ctx: AppContext):
    session = auth.require_session()
    return {"user": session.user, "seconds_left": int(ctx.sessions.seconds_left(session))}


def draft_status(ctx: AppContext, draft_id: str):
    user = auth.require_permission("diagnose")
    return draft_or_404(ctx, draft_id, user).summary()


def draft_wait(ctx: AppContext, draft_id: str):
    """Long poll: answers when the draft's image changes (camera, phone) or after 20 s. Once
    "Start processing" took the draft, it answers with the exam the draft became (``exam``):
    the page is on its way there, and its poll meets no "not found" on the way."""
    user = auth.require_permission("diagnose")
    seen = int_query("version", 0, minimum=0)
    try:
        draft = ctx.drafts.wait_for_change(draft_id, user["username"], seen, LONG_POLL_SECONDS)
    except NotFound:
        exam_uuid = ctx.drafts.processed_exam(draft_id, user["username"], timeout=LONG_POLL_SECONDS)
        if exam_uuid is None:       # never processed, or processing failed (the draft may be open again)
            return ctx.drafts.get(draft_id, user["username"]).summary()
        return {"id": draft_id, "exam": exam_uuid}
    return draft.summary()


def exam_json(ctx: AppContext, uuid: str):
    auth.require_permission("view_records")
    exam = exam_or_404(ctx, uuid)
    auth.audit("view", "exam", uuid, {"via": "api"})
    return exam


ROUTES = (
    ("POST", "/api/session/touch", touch),
    ("GET", "/api/session", session_status),
    ("GET", f"/api/drafts/<draft_id:re:{DRAFT}>", draft_status),
    ("GET", f"/api/drafts/<draft_id:re:{DRAFT}>/wait", draft_wait),
    ("GET", f"/api/exams/<uuid:re:{UUID}>", exam_json),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)
