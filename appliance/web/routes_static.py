"""The kiosk's own CSS, JavaScript, fonts and icons (vendored: nothing comes from the internet)."""
from __future__ import annotations

import bottle

from .context import STATIC_DIR


def install(app: bottle.Bottle, ctx) -> None:
    @app.get("/static/<path:path>")
    def static(path):
        # static_file refuses paths outside the root (no "..") and answers 404 for missing files.
        res = bottle.static_file(path, root=str(STATIC_DIR))
        if isinstance(res, bottle.HTTPResponse) and res.status_code == 200:
            res.set_header("Cache-Control", "public, max-age=3600")
        return res

    @app.get("/favicon.ico")
    def favicon():
        return bottle.static_file("img/favicon.svg", root=str(STATIC_DIR), mimetype="image/svg+xml")
