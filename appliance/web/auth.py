"""Who may do what: login sessions, roles, CSRF and the audit trail.

One global ``before_request`` hook (installed by ``create_app``) does, for every request:
1. refuse bodies larger than ``[server] max_upload_mb`` (413) before anything reads them;
2. find the session from the ``bccdms_session`` cookie (requests marked passive — header
   ``X-Passive: 1``, query ``passive=1`` or a path in ``PASSIVE_PREFIXES`` — do not count as
   activity, so a polling page still logs out when nobody touches it);
3. refuse anonymous clients everywhere except ``PUBLIC_PREFIXES``: pages are redirected to
   the login page, ``/api/`` answers 401 JSON;
4. check the CSRF token on every POST/PUT/PATCH/DELETE (form field ``csrf_token`` or header
   ``X-CSRF-Token``); before login the token is bound to a cookie (double submit).
Routes then call ``require(*roles)`` or ``require_permission(name)`` at their top, and
``audit(...)`` for every view or change of patient data.
"""
from __future__ import annotations

import hmac
import json

import bottle
from bottle import request, response

from ..errors import StoreError
from .roles import PERMISSIONS, ROLES, allowed, may_decide  # noqa: F401 (re-exported)
from .context import ENV_ANON_CSRF, ENV_SESSION, AppContext, current_session
from .sessions import Session, new_token

SESSION_COOKIE = "bccdms_session"
ANON_CSRF_COOKIE = "bccdms_presession"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ENV_ACCOUNT_CHANGED = "bccdms.account_changed"

# Reachable without login. Everything else refuses anonymous clients.
PUBLIC_PREFIXES = ["/login", "/setup", "/static/", "/healthz", "/phone/", "/favicon.ico"]
# Routes with their own protection (one-time tokens bound to one exam) instead of a session.
CSRF_EXEMPT_PREFIXES = ["/phone/"]
# What a phone opens from a QR code: it must only ever see phone pages (no kiosk chrome).
PHONE_PREFIX = "/phone/"
# Background requests (polls, previews) that must not keep an idle session alive.
PASSIVE_PREFIXES: list[str] = []
# multipart framing and the other form fields around an upload
FORM_OVERHEAD = 1024 * 1024

def _matches(path: str, prefixes) -> bool:
    for prefix in prefixes:
        if prefix.endswith("/") or prefix.endswith(".ico"):
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return True
        elif path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def is_public(path: str) -> bool:
    return _matches(path, PUBLIC_PREFIXES)


def is_api(path: str) -> bool:
    return path.startswith("/api/")


def is_phone(path: str) -> bool:
    return path.startswith(PHONE_PREFIX)


def _is_passive() -> bool:
    return (request.get_header("X-Passive") == "1" or request.query.get("passive") == "1"
            or _matches(request.path, PASSIVE_PREFIXES))


def ctx_of_request() -> AppContext:
    return request.environ["bccdms.ctx"]


# -- permissions ---------------------------------------------------------------------------
def _forbidden() -> bottle.HTTPError:
    return bottle.HTTPError(403, "forbidden")


def require(*roles: str) -> dict:
    """The logged-in user; 403 unless their role is one of ``roles`` (any role when empty)."""
    session = current_session()
    if session is None:
        raise _refuse_anonymous(request.path)
    if roles and session.role not in roles:
        raise _forbidden()
    return session.user


def require_permission(permission: str) -> dict:
    return require(*PERMISSIONS[permission])


def require_session() -> Session:
    session = current_session()
    if session is None:
        raise _refuse_anonymous(request.path)
    return session


def records_post(user: dict | None = None) -> str | None:
    """The health post whose records the logged-in user may see; None: every post (a supervisor).
    A nurse or doctor sees their own post's records only, also on a box holding other posts'."""
    user = user or require()
    if allowed(user, "all_posts"):
        return None
    return user.get("post_id") or ctx_of_request().store.post_id


def may_see(record: dict) -> bool:
    """A patient or exam record is visible to the logged-in user (see ``records_post``)."""
    post = records_post()
    return post is None or record.get("post_id") == post


# -- audit ---------------------------------------------------------------------------------
def audit(action: str, target_type: str, target_id: str | None = None, detail: dict | None = None,
          *, actor: str | None = None) -> None:
    """Write one audit entry for a view of patient data, a login or an export (never the data
    itself). Changes are not audited here: the store audits every change it makes."""
    ctx = ctx_of_request()
    session = current_session()
    who = actor or (session.username if session else "anonymous")
    record_audit(ctx.store, who, action, target_type, target_id, detail)


def record_audit(store, actor: str, action: str, target_type: str, target_id: str | None = None,
                 detail: dict | None = None) -> None:
    """The audit entry, best-effort: on a full or failing disk a clinician must still be able to
    read records, and a change already made must not be reported as failed (she would redo it).
    A lost entry is logged and listed in the store's warnings, which the self-check shows."""
    try:
        store.audit.log(actor, action, target_type, target_id, detail)
    except (StoreError, OSError) as exc:
        reason = getattr(exc, "message", None) or getattr(exc, "strerror", None) or type(exc).__name__
        store._warn(f"The audit entry for {action} {target_type} {target_id or ''} by {actor} "
                    f"could not be written: {reason}")


# -- login sessions ------------------------------------------------------------------------
def start_session(user: dict) -> Session:
    """Log ``user`` in: a fresh session id (no fixation) and CSRF token, cookie set."""
    ctx = ctx_of_request()
    old = request.get_cookie(SESSION_COOKIE)
    if old:
        ctx.sessions.delete(old)
    session = ctx.sessions.create(user)
    access = ctx.store.users.access(user["username"])
    session.password_stamp = access[2] if access else ""
    response.set_cookie(SESSION_COOKIE, session.id, path="/", httponly=True, samesite="strict")
    request.environ[ENV_SESSION] = session
    return session


def end_session() -> None:
    ctx = ctx_of_request()
    sid = request.get_cookie(SESSION_COOKIE)
    session = current_session()
    if session is not None:
        ctx.drafts.discard_owner(session.username)
    if sid:
        ctx.sessions.delete(sid)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    request.environ[ENV_SESSION] = None


def anon_csrf_token() -> str:
    """The CSRF token of a client that is not logged in (bound to a cookie: double submit)."""
    token = request.environ.get(ENV_ANON_CSRF)
    if not token:
        token = new_token()
        response.set_cookie(ANON_CSRF_COOKIE, token, path="/", httponly=True, samesite="strict")
        request.environ[ENV_ANON_CSRF] = token
    return token


# -- the global guard ----------------------------------------------------------------------
def _json_error(status: int, message: str, hint: str | None = None) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(status=status, body=json.dumps({"error": message, "hint": hint}),
                               headers={"Content-Type": "application/json"})


def _refuse_anonymous(path: str) -> bottle.HTTPResponse:
    if is_api(path):
        return _json_error(401, "Please log in.", "Your session ended; log in again.")
    expired = "?expired=1" if request.get_cookie(SESSION_COOKIE) else ""
    if request.environ.get(ENV_ACCOUNT_CHANGED):
        expired = "?changed=1"
    res = bottle.HTTPResponse(status=303, headers={"Location": "/login" + expired})
    if expired:
        res.delete_cookie(SESSION_COOKIE, path="/")
    return res


def _too_large(limit_mb: int) -> bottle.HTTPResponse:
    from .context import _
    if is_phone(request.path):
        # The link is not spent (nothing was read): the phone may send a smaller photo.
        body = ctx_of_request().render(
            "phone_error.html", title=_("Photo not sent"), retry=request.path,
            message=_("The photo is too large (the limit is %(mb)s MB).", mb=limit_mb),
            hint=_("Use a lower camera resolution on the phone and take the photo again."))
        return bottle.HTTPResponse(status=413, body=body)
    message = _("The upload is too large (the limit is %(mb)s MB).", mb=limit_mb)
    hint = _("Use a smaller image or a lower camera resolution.")
    if is_api(request.path):
        return _json_error(413, message, hint)
    ctx = ctx_of_request()
    body = ctx.render("error.html", title=_("Upload refused"), message=message, hint=hint)
    return bottle.HTTPResponse(status=413, body=body)


def _csrf_ok(expected: str) -> bool:
    # A multipart body is parsed here (after the size check) so the token can be read.
    given = request.get_header(CSRF_HEADER) or request.forms.get("csrf_token") or ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _csrf_refused() -> bottle.HTTPResponse:
    from .context import _
    message = _("This form has expired or did not come from this kiosk.")
    hint = _("Go back, reload the page and try again.")
    if is_api(request.path):
        return _json_error(403, message, hint)
    ctx = ctx_of_request()
    return bottle.HTTPResponse(status=403, body=ctx.render("error.html", title=_("Refused"),
                                                           message=message, hint=hint))


def _account_unchanged(ctx: AppContext, session: Session) -> bool:
    """The logged-in account is still enabled, with the role and password of the login."""
    try:
        access = ctx.store.users.access(session.username)
    except StoreError:      # the store cannot be read: every page says so; keep the session
        return True
    return access is not None and not access[1] and access[0] == session.role and access[2] == session.password_stamp


SECURITY_HEADERS = {
    # Scripts only from the box's own files (no inline scripts: pass data in data-* attributes).
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
                                "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def install_guard(app: bottle.Bottle, ctx: AppContext) -> None:
    max_body = ctx.cfg.server.max_upload_mb * 1024 * 1024 + FORM_OVERHEAD

    @app.hook("before_request")
    def guard():
        env = request.environ
        env["bccdms.ctx"] = ctx
        path = request.path
        if request.content_length > max_body:
            raise _too_large(ctx.cfg.server.max_upload_mb)
        session = ctx.sessions.get(request.get_cookie(SESSION_COOKIE), touch=not _is_passive())
        if session is not None and not path.startswith("/static/") and not _account_unchanged(ctx, session):
            # Disabled, given another role or a new password since the login (here, by the CLI
            # or by another process): the session ends now, not at its idle timeout.
            ctx.sessions.delete(session.id)
            ctx.drafts.discard_owner(session.username)
            env[ENV_ACCOUNT_CHANGED] = True
            session = None
        env[ENV_SESSION] = session
        if session is None:
            if not is_public(path):
                raise _refuse_anonymous(path)
            # The pre-login form token; a page that shows a form creates it (see anon_csrf_token),
            # so parallel requests for static files never replace it.
            token = request.get_cookie(ANON_CSRF_COOKIE) or ""
            env[ENV_ANON_CSRF] = token if 20 <= len(token) <= 100 else ""
        if request.method in UNSAFE_METHODS and not _matches(path, CSRF_EXEMPT_PREFIXES):
            expected = session.csrf_token if session else env.get(ENV_ANON_CSRF, "")
            if not _csrf_ok(expected):
                raise _csrf_refused()

    @app.hook("after_request")
    def security_headers():
        for name, value in SECURITY_HEADERS.items():
            if name not in response.headers:
                response.set_header(name, value)
        if not request.path.startswith("/static/"):
            # Pages and API answers may hold patient data: never keep them in a cache.
            response.set_header("Cache-Control", "no-store")
