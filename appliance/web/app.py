"""The Bottle application: the guard, error pages and every route module.

``create_app(ctx)`` installs each module named in ``ROUTE_MODULES`` by calling its
``install(app, ctx)``. A route may raise ``UserError``: pages then show the sentence and its
hint in a banner (status 400), ``/api/`` routes answer ``{"error", "hint"}`` JSON. Every answer,
error pages included, carries the security headers (headers.py).
"""
from __future__ import annotations

import functools

import bottle

from ..catalogue import N_
from ..errors import NotFound, UserError
from . import (
    guard,
    routes_admin,
    routes_api,
    routes_auth,
    routes_browse,
    routes_camera,
    routes_drafts,
    routes_exams,
    routes_exchange,
    routes_health,
    routes_model_cards,
    routes_models,
    routes_patients,
    routes_phone,
    routes_static,
)
from .context import AppContext
from .headers import securing
from .request import MalformedRequest, _
from .responses import error_response, user_error_response

ROUTE_MODULES = (routes_health, routes_static, routes_auth, routes_patients, routes_drafts, routes_exams,
                 routes_browse, routes_admin, routes_api, routes_camera, routes_phone, routes_exchange,
                 routes_models, routes_model_cards)

# The page (or JSON) for each error status bottle or a route raises: title, sentence, next step.
ERROR_PAGES = {
    400: (N_("That did not work"), N_("The kiosk could not understand this request."),
          N_("Go back, reload the page and try again.")),
    403: (N_("Not for your role"), N_("Your account cannot open this page."),
          N_("Ask the administrator if you need it.")),
    404: (N_("Not found"), N_("This page does not exist."), N_("Go back to the home page.")),
    405: (N_("Not allowed"), N_("This page cannot be used that way."), N_("Go back to the home page.")),
    413: (N_("Upload refused"), N_("The upload is too large."),
          N_("Use a smaller image or a lower camera resolution.")),
    # Not known here whether the step got as far as saving: never claim that nothing was saved.
    500: (N_("Something went wrong"),
          N_("The kiosk met an unexpected problem. What you just did may or may not have been saved."),
          N_("Check the record (Browse records) before doing it again. If it happens again, "
             "tell the technician (appliance doctor).")),
}


class KioskApp(bottle.Bottle):
    """Bottle, with the security headers on every answer whatever made it (a route, an error
    handler, or bottle's own last-resort 500 page)."""

    def wsgi(self, environ, start_response):
        return securing(super().wsgi)(environ, start_response)


class UserErrorPlugin:
    """Turns a ``UserError`` raised by any route into a clear answer, never a traceback."""
    name = "bccdms_user_errors"
    api = 2

    def apply(self, callback, route):
        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except UserError as exc:
                return user_error_response(exc, _status_of(exc), _("That did not work"))
        return wrapper


def _status_of(exc: UserError) -> int:
    if isinstance(exc, NotFound):
        return 404
    return exc.status if isinstance(exc, MalformedRequest) else 400


def error_handler(status: int):
    title, message, hint = ERROR_PAGES[status]

    def handler(error):
        res = error_response(status, _(title), _(message), _(hint))
        for name, value in res.headerlist:
            bottle.response.set_header(name, value)
        return res.body
    return handler


def create_app(ctx: AppContext) -> bottle.Bottle:
    app = KioskApp(catchall=True, autojson=True)
    app.config["bccdms.ctx"] = ctx
    ctx.app = app
    guard.install_guard(app, ctx)
    app.install(UserErrorPlugin())
    for status in ERROR_PAGES:
        app.error(status)(error_handler(status))
    for module in ROUTE_MODULES:
        module.install(app, ctx)
    return app
