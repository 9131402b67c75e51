"""JSON endpoints for the kiosk's scripts (same session; CSRF header on every POST)."""
from __future__ import annotations

import bottle

from . import auth
from .context import AppContext
from .forms import int_query
from .routes_pages import DRAFT_RE, UUID_RE, _exam_or_404

LONG_POLL_SECONDS = 20


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    @app.post("/api/session/touch")
    def touch():
        """The page saw a tap or a key press: the guard counted it as activity."""
        session = auth.require_session()
        return {"seconds_left": int(ctx.sessions.seconds_left(session))}

    @app.get("/api/session")
    def session_status():
        session = auth.require_session()
        return {"user": session.user, "seconds_left": int(ctx.sessions.seconds_left(session))}

    @app.get(f"/api/drafts/<draft_id:re:{DRAFT_RE}>")
    def draft_status(draft_id):
        user = auth.require_permission("diagnose")
        return ctx.drafts.get(draft_id, user["username"]).summary()

    @app.get(f"/api/drafts/<draft_id:re:{DRAFT_RE}>/wait")
    def draft_wait(draft_id):
        """Long poll: answers when the draft's image changes (camera, phone) or after 20 s."""
        user = auth.require_permission("diagnose")
        seen = int_query("version", 0, minimum=0)
        draft = ctx.drafts.wait_for_change(draft_id, user["username"], seen, LONG_POLL_SECONDS)
        return draft.summary()

    @app.get(f"/api/exams/<uuid:re:{UUID_RE}>")
    def exam_json(uuid):
        auth.require_permission("view_records")
        exam = _exam_or_404(ctx, uuid)
        auth.audit("view", "exam", uuid, {"via": "api"})
        return exam
