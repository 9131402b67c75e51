"""GET /healthz: a JSON self-check for systemd, the kiosk launcher and technicians."""
from __future__ import annotations

import bottle

from .. import __version__


def install(app: bottle.Bottle, ctx) -> None:
    @app.get("/healthz")
    def healthz():
        bottle.response.content_type = "application/json"
        return {"ok": True, "version": __version__, "post_id": ctx.store.post_id if ctx.store else None}
