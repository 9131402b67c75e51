"""Every answer that is not a page of its own: error answers (JSON under ``/api/``, the phone's
error page under ``/phone/``, the kiosk's error page elsewhere) and redirects.

Redirects are relative (``Location: /exams/...``): bottle's own ``redirect`` writes the client's
``Host`` header into an absolute address, which a client can choose.
"""
from __future__ import annotations

import json
import logging
import urllib.parse
from typing import TYPE_CHECKING

import bottle

from .paths import is_api, is_phone
from .request import ENV_ACCOUNT_CHANGED, SESSION_COOKIE, current_context

if TYPE_CHECKING:
    from .context import AppContext

log = logging.getLogger(__name__)


def redirect(path: str, status: int = 303) -> bottle.HTTPResponse:
    """A redirect to ``path`` on this kiosk (``raise redirect(...)``), keeping the cookies this
    request set."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"not a path on this kiosk: {path!r}")
    res = bottle.response.copy(cls=bottle.HTTPResponse)
    res.status = status
    res.body = ""
    res.set_header("Location", path)
    return res


def same_origin_path(back: str) -> str:
    """``back`` when it is a path on this kiosk, else "/". Browsers read "/\\evil.com" and
    "/<tab>/evil.com" as "//evil.com" (another site), so a backslash or any control character or
    space refuses it, as does anything with a scheme or a host."""
    parts = urllib.parse.urlsplit(back)
    if (not back.startswith("/") or back.startswith("//") or parts.scheme or parts.netloc
            or "\\" in back or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in back)):
        return "/"
    return back


def json_response(status: int, payload: dict) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(status=status, body=json.dumps(payload),
                               headers={"Content-Type": "application/json"})


def json_error(status: int, message: str, hint: str | None = None, **extra) -> bottle.HTTPResponse:
    """``{"error": message, "hint": hint, ...}``: what the kiosk's scripts show (already translated)."""
    return json_response(status, {"error": message, "hint": hint, **extra})


def error_body(ctx: "AppContext", title: str, message: str, hint: str | None, **values) -> str:
    """The HTML error page (the phone's own under ``/phone/``), already translated text."""
    template = "phone_error.html" if is_phone(bottle.request.path) else "error.html"
    try:
        return ctx.render(template, title=title, message=message, hint=hint, **values)
    except Exception:       # the error page itself must never fail
        log.exception("error page failed")
        return str(message)


def error_response(status: int, title: str, message: str, hint: str | None = None,
                   **values) -> bottle.HTTPResponse:
    """The error answer for this request's path (already translated text)."""
    if is_api(bottle.request.path):
        return json_error(status, message, hint)
    return bottle.HTTPResponse(status=status, body=error_body(current_context(), title, message, hint, **values))


def user_error_response(exc, status: int, title: str) -> bottle.HTTPResponse:
    """A ``UserError``'s sentence and hint in the request's language."""
    message, hint = current_context().error_text(exc)
    return error_response(status, title, message, hint)


def forbidden() -> bottle.HTTPError:
    return bottle.HTTPError(403, "forbidden")


def not_found() -> bottle.HTTPError:
    return bottle.HTTPError(404, "not found")


def refuse_anonymous(path: str) -> bottle.HTTPResponse:
    """No session: ``/api/`` answers 401, a page goes to the login page (saying why the session
    ended when there was one)."""
    if is_api(path):
        return json_error(401, "Please log in.", "Your session ended; log in again.")
    reason = "?expired=1" if bottle.request.get_cookie(SESSION_COOKIE) else ""
    if bottle.request.environ.get(ENV_ACCOUNT_CHANGED):
        reason = "?changed=1"
    res = bottle.HTTPResponse(status=303, headers={"Location": "/login" + reason})
    if reason:
        res.delete_cookie(SESSION_COOKIE, path="/")
    return res
