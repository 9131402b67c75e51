"""JSON endpoints for the kiosk's scripts (same session, CSRF header on every POST)."""
from __future__ import annotations

import bottle

from . import auth
from .context import AppContext


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    @app.post("/api/session/touch")
    def touch():
        """The page saw a tap or a key press: count it as activity (the guard already did)."""
        session = auth.require_session()
        return {"seconds_left": int(ctx.sessions.seconds_left(session))}

    @app.get("/api/session")
    def status():
        session = ctx.sessions.get(bottle.request.get_cookie(auth.SESSION_COOKIE), touch=False)
        if session is None:
            raise auth._refuse_anonymous(bottle.request.path)
        return {"user": session.user, "seconds_left": int(ctx.sessions.seconds_left(session))}
