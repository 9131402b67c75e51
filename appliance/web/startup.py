"""The kiosk while the server starts: its start-up page, and ``/healthz`` with the opening's progress.

The server listens from its first second with a :class:`StartupGate` in front of the app. Until
the record store is open (seconds; longer on the first start after an upgrade or a restore,
when it has no summary cache) every request gets the start-up page: what the box is doing and how
far it got (``appliance.store.opening.OpeningProgress``), reloading itself every two seconds.
``/healthz`` answers at once with ``"status": "starting"`` and the progress under ``"starting"``,
so the kiosk launcher (which waits for ``/healthz``) opens Chromium on that page instead of
leaving the screen blank. Once the app is ready the gate hands every request to it.
"""
from __future__ import annotations

import html
import json
from typing import Callable

from .. import __version__, clock, i18n
from ..store.opening import STAGE_TEXT, OpeningProgress
from .headers import secured

REFRESH_SECONDS = 2


class StartupGate:
    """A WSGI app: the start-up page until ``ready(app)``, then ``app`` for every request."""

    def __init__(self, cfg, opening: OpeningProgress):
        self.cfg = cfg
        self.opening = opening
        self.app: Callable | None = None

    def ready(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        app = self.app
        if app is not None:
            return app(environ, start_response)
        if environ.get("PATH_INFO") == "/healthz":
            return self._health(environ, start_response)
        return self._page(start_response)

    def _health(self, environ, start_response):
        state = self.opening.snapshot()
        if "live=1" in environ.get("QUERY_STRING", ""):
            body = {"ok": True, "live": True, "version": __version__}
        else:
            failed = state["state"] == "failed"
            body = {"ok": not failed, "status": "fail" if failed else "starting", "version": __version__,
                    "post_id": self.cfg.post.id or None, "checked_at": clock.now().strftime("%Y-%m-%d %H:%M UTC"),
                    "starting": state,
                    "checks": [{"name": "store", "status": "FAIL" if failed else "WARN",
                                "message": state["error"] if failed else self.opening.line(), "details": []}]}
        return _respond(start_response, "200 OK", "application/json", json.dumps(body).encode())

    def _page(self, start_response):
        state = self.opening.snapshot()
        _ = i18n.get_translations(i18n.language(self.cfg.ui.default_language)).gettext     # cached
        if state["state"] == "failed":
            title = _("The records could not be opened.")
            line = html.escape(state["error"] or "")
            hint = _("Ask the technician to run 'sudo appliance doctor'.")
            bar = ""
        else:
            title = _("The appliance is starting.")
            line = f"{html.escape(_(STAGE_TEXT.get(state['stage'], STAGE_TEXT['records'])))}: {state['percent']} %"
            hint = _("This page changes by itself when the appliance is ready.")
            bar = (f'<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
                   f'aria-valuenow="{state["percent"]}"><div style="width:{state["percent"]}%"></div></div>')
        page = (f'<!doctype html><html lang="{i18n.language(self.cfg.ui.default_language)}"><head>'
                f'<meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>BCCDMS</title>'
                "<style>body{font-family:sans-serif;font-size:24px;margin:40px;color:#102a43}"
                "h1{font-size:32px}.bar{height:36px;border:3px solid #243b53;border-radius:8px;margin:24px 0}"
                ".bar>div{height:100%;background:#243b53}.hint{color:#486581}</style></head>"
                f'<body><main id="starting" data-state="{state["state"]}" data-percent="{state["percent"]}">'
                f'<h1>{html.escape(title)}</h1><p id="starting-stage">{line}</p>{bar}'
                f'<p class="hint">{html.escape(hint)}</p></main></body></html>')
        return _respond(start_response, "503 Service Unavailable", "text/html; charset=utf-8", page.encode(),
                        [("Retry-After", str(REFRESH_SECONDS))])


def _respond(start_response, status: str, content_type: str, body: bytes, extra=()):
    start_response(status, secured("", [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]))
    return [body]
