"""The global guard: one ``before_request`` hook (installed by ``create_app``) that, for every request,

1. refuses bodies larger than ``[server] max_upload_mb`` (413) before anything reads them;
2. finds the session from the ``bccdms_session`` cookie (requests marked passive — header
   ``X-Passive: 1``, query ``passive=1`` or a path in ``PASSIVE_PREFIXES`` — do not count as
   activity, so a polling page still logs out when nobody touches it), and ends it when its
   account changed since the login;
3. refuses anonymous clients everywhere except ``auth.PUBLIC_PREFIXES``: pages are redirected
   to the login page, ``/api/`` answers 401 JSON;
4. reads the cookies, query, form fields, files and JSON once, refusing a malformed request
   (a broken upload, a control character in a part header) with a sentence (400);
5. checks the CSRF token on every POST/PUT/PATCH/DELETE (form field ``csrf_token`` or header
   ``X-CSRF-Token``); before login the token is the HMAC of the pre-login cookie under this
   box's secret (request.presession_token).
"""
from __future__ import annotations

import hmac

import bottle
from bottle import request

from ..errors import StoreError
from .auth import is_public
from .context import AppContext
from .paths import is_phone, is_static, matches
from .request import (
    ENV_ACCOUNT_CHANGED,
    ENV_ANON_CSRF,
    ENV_CTX,
    ENV_SESSION,
    SESSION_COOKIE,
    MalformedRequest,
    _,
    expected_anon_token,
    read_request,
)
from .responses import error_response, refuse_anonymous
from .sessions import Session

CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Routes with their own protection (one-time tokens bound to one exam) instead of a session.
CSRF_EXEMPT_PREFIXES = ["/phone/"]
# Background requests (polls, previews) that must not keep an idle session alive.
PASSIVE_PREFIXES: list[str] = []
# multipart framing and the other form fields around an upload
FORM_OVERHEAD = 1024 * 1024


def install_guard(app: bottle.Bottle, ctx: AppContext) -> None:
    app.add_hook("before_request", lambda: guard(ctx))


def guard(ctx: AppContext) -> None:
    env = request.environ
    env[ENV_CTX] = ctx
    path = request.path
    if request.content_length > ctx.cfg.server.max_upload_mb * 1024 * 1024 + FORM_OVERHEAD:
        raise too_large(ctx.cfg.server.max_upload_mb)
    _read(body=False)
    session = _live_session(ctx, path)
    env[ENV_SESSION] = session
    if session is None:
        if not is_public(path):
            raise refuse_anonymous(path)
        env[ENV_ANON_CSRF] = expected_anon_token(ctx)
    _read(body=True)        # an anonymous client's body is read on public paths only
    if request.method in UNSAFE_METHODS and not matches(path, CSRF_EXEMPT_PREFIXES):
        expected = session.csrf_token if session else env.get(ENV_ANON_CSRF, "")
        if not _csrf_ok(expected):
            raise error_response(403, _("Refused"), _("This form has expired or did not come from this kiosk."),
                                 _("Go back, reload the page and try again."))


def _read(*, body: bool) -> None:
    try:
        read_request(body=body)
    except MalformedRequest as exc:
        raise unreadable(exc) from None


def _live_session(ctx: AppContext, path: str) -> Session | None:
    """The request's session; None when there is none, or when its account was disabled, given
    another role or a new password since the login (here, by the CLI or by another process):
    the session ends now, not at its idle timeout, and the login page says why."""
    sid = request.get_cookie(SESSION_COOKIE)
    session = ctx.sessions.get(sid, touch=not _is_passive())
    if session is not None and not is_static(path) and not _account_unchanged(ctx, session):
        ctx.sessions.end_changed(session.id)
        ctx.drafts.discard_owner(session.username)
        session = None
    if session is None and ctx.sessions.account_changed(sid):
        request.environ[ENV_ACCOUNT_CHANGED] = True
    return session


def _is_passive() -> bool:
    return (request.get_header("X-Passive") == "1" or request.query.get("passive") == "1"
            or matches(request.path, PASSIVE_PREFIXES))


def _account_unchanged(ctx: AppContext, session: Session) -> bool:
    """The logged-in account is still enabled, with the role and password of the login."""
    try:
        access = ctx.store.users.access(session.username)
    except StoreError:      # the store cannot be read: every page says so; keep the session
        return True
    return access is not None and not access[1] and access[0] == session.role and access[2] == session.password_stamp


def _csrf_ok(expected: str) -> bool:
    given = request.get_header(CSRF_HEADER) or request.forms.get("csrf_token") or ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def too_large(limit_mb: int) -> bottle.HTTPResponse:
    if is_phone(request.path):
        # The link is not spent (nothing was read): the phone may send a smaller photo.
        return error_response(413, _("Photo not sent"), _("The photo is too large (the limit is %(mb)s MB).", mb=limit_mb),
                              _("Use a lower camera resolution on the phone and take the photo again."),
                              retry=request.path)
    return error_response(413, _("Upload refused"), _("The upload is too large (the limit is %(mb)s MB).", mb=limit_mb),
                          _("Use a smaller image or a lower camera resolution."))


def unreadable(exc: MalformedRequest) -> bottle.HTTPResponse:
    """A body or header that cannot be read: nothing was done; a phone's link is not spent."""
    message, hint = request.environ[ENV_CTX].error_text(exc)
    if is_phone(request.path):
        return error_response(exc.status, _("Photo not sent"), message, hint, retry=request.path)
    return error_response(exc.status, _("That did not work"), message, hint)
