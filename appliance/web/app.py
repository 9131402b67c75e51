"""The Bottle application: the guard, error pages and every route module.

``create_app(ctx)`` installs each module named in ``ROUTE_MODULES`` by calling its
``install(app, ctx)``. A route may raise ``UserError``: pages then show the sentence and its
hint in a banner (status 400), ``/api/`` routes answer ``{"error", "hint"}`` JSON.
"""
from __future__ import annotations

import functools
import importlib
import json
import logging

import bottle

from ..catalogue import N_
from ..errors import NotFound, UserError
from . import auth
from .context import AppContext, _

log = logging.getLogger(__name__)

ROUTE_MODULES = (
    "routes_health",
    "routes_static",
    "routes_auth",
    "routes_pages",
    "routes_browse",
    "routes_admin",
    "routes_api",
    "routes_camera",
    "routes_exchange",
    "routes_models",
    "routes_model_cards",
)


class UserErrorPlugin:
    """Turns a ``UserError`` raised by any route into a clear answer, never a traceback."""
    name = "bccdms_user_errors"
    api = 2

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def apply(self, callback, route):
        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except UserError as exc:
                status = 404 if isinstance(exc, NotFound) else 400
                message, hint = self.ctx.error_text(exc)
                if auth.is_api(bottle.request.path):
                    return bottle.HTTPResponse(status=status, body=json.dumps({"error": message, "hint": hint}),
                                               headers={"Content-Type": "application/json"})
                return bottle.HTTPResponse(status=status, body=self.ctx.render(
                    "error.html", title=_("That did not work"), message=message, hint=hint))
        return wrapper


def _error_page(ctx: AppContext, status: int, title: str, message: str, hint: str | None):
    def handler(error):
        bottle.response.status = status
        if auth.is_api(bottle.request.path):
            bottle.response.content_type = "application/json"
            return json.dumps({"error": _(message), "hint": _(hint) if hint else None})
        # A phone that opened a QR link sees only phone pages, errors included.
        template = "phone_error.html" if auth.is_phone(bottle.request.path) else "error.html"
        try:
            return ctx.render(template, title=_(title), message=_(message), hint=_(hint) if hint else None)
        except Exception:   # the error page itself must never fail
            log.exception("error page failed")
            return message
    return handler


def create_app(ctx: AppContext) -> bottle.Bottle:
    app = bottle.Bottle(catchall=True, autojson=True)
    app.config["bccdms.ctx"] = ctx
    ctx.app = app
    auth.install_guard(app, ctx)
    app.install(UserErrorPlugin(ctx))
    app.error(403)(_error_page(ctx, 403, N_("Not for your role"), N_("Your account cannot open this page."),
                               N_("Ask the administrator if you need it.")))
    app.error(404)(_error_page(ctx, 404, N_("Not found"), N_("This page does not exist."),
                               N_("Go back to the home page.")))
    app.error(405)(_error_page(ctx, 405, N_("Not allowed"), N_("This page cannot be used that way."),
                               N_("Go back to the home page.")))
    app.error(413)(_error_page(ctx, 413, N_("Upload refused"), N_("The upload is too large."),
                               N_("Use a smaller image or a lower camera resolution.")))
    # Not known here whether the step got as far as saving: never claim that nothing was saved.
    app.error(500)(_error_page(ctx, 500, N_("Something went wrong"),
                               N_("The kiosk met an unexpected problem. What you just did may or may not have been saved."),
                               N_("Check the record (Browse records) before doing it again. If it happens again, "
                                  "tell the technician (appliance doctor).")))
    for name in ROUTE_MODULES:
        importlib.import_module(f"{__package__}.{name}").install(app, ctx)
    return app
