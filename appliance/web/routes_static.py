"""The kiosk's own CSS, JavaScript, fonts and icons (vendored: nothing comes from the internet)."""
from __future__ import annotations

import bottle

from ..errors import UserError
from ..i18n import fonts
from .context import STATIC_DIR
from .routing import add_routes

CACHE = "public, max-age=3600"


def font_faces(ctx):
    """@font-face rules for Ethiopic text: the box's installed Noto font, served to clients
    (phones) that do not have it."""
    bottle.response.content_type = "text/css; charset=utf-8"
    bottle.response.set_header("Cache-Control", CACHE)
    return fonts.font_face_css("/static/fonts/")


def font_file(ctx, name: str):
    try:
        path = fonts.kiosk_font_file(name)
    except (KeyError, UserError):
        raise bottle.HTTPError(404) from None
    res = bottle.static_file(path.name, root=str(path.parent), mimetype="font/ttf")
    res.set_header("Cache-Control", CACHE)
    return res


def static(ctx, path: str):
    # static_file refuses paths outside the root (no "..") and answers 404 for missing files.
    res = bottle.static_file(path, root=str(STATIC_DIR))
    if isinstance(res, bottle.HTTPResponse) and res.status_code == 200:
        res.set_header("Cache-Control", CACHE)
    return res


def favicon(ctx):
    return bottle.static_file("img/favicon.svg", root=str(STATIC_DIR), mimetype="image/svg+xml")


ROUTES = (
    ("GET", "/static/css/fonts.css", font_faces),
    ("GET", "/static/fonts/<name>", font_file),
    ("GET", "/static/<path:path>", static),
    ("GET", "/favicon.ico", favicon),
)


def install(app: bottle.Bottle, ctx) -> None:
    add_routes(app, ctx, ROUTES)
