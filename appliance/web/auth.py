"""Who may do what: the logged-in user's permissions, which post's records they see, the audit
trail of views, and starting and ending a login session.

Routes call ``require(*roles)`` or ``require_permission(name)`` at their top, and
``audit(...)`` for every view of patient data. The global guard (guard.py) finds the session
and checks CSRF before any route runs.
"""
from __future__ import annotations

from bottle import request, response

from ..errors import StoreError
from .paths import is_api, is_phone, matches  # noqa: F401 (is_api, is_phone re-exported)
from .request import ENV_SESSION, SESSION_COOKIE, current_context, current_session
from .responses import forbidden, refuse_anonymous
from .roles import PERMISSIONS, ROLES, allowed, may_decide  # noqa: F401 (re-exported)
from .sessions import Session

# Reachable without login. Everything else refuses anonymous clients.
PUBLIC_PREFIXES = ["/login", "/setup", "/static/", "/healthz", "/phone/", "/favicon.ico"]


def is_public(path: str) -> bool:
    return matches(path, PUBLIC_PREFIXES)


# -- permissions ---------------------------------------------------------------------------
def require(*roles: str) -> dict:
    """The logged-in user; 403 unless their role is one of ``roles`` (any role when empty)."""
    session = current_session()
    if session is None:
        raise refuse_anonymous(request.path)
    if roles and session.role not in roles:
        raise forbidden()
    return session.user


def require_permission(permission: str) -> dict:
    return require(*PERMISSIONS[permission])


def require_session() -> Session:
    session = current_session()
    if session is None:
        raise refuse_anonymous(request.path)
    return session


def records_post(user: dict | None = None) -> str | None:
    """The health post whose records the logged-in user may see; None: every post (a supervisor).
    A nurse or doctor sees their own post's records only, also on a box holding other posts'."""
    user = user or require()
    if allowed(user, "all_posts"):
        return None
    return user.get("post_id") or current_context().store.post_id


def may_see(record: dict) -> bool:
    """A patient or exam record is visible to the logged-in user (see ``records_post``)."""
    post = records_post()
    return post is None or record.get("post_id") == post


# -- audit ---------------------------------------------------------------------------------
def audit(action: str, target_type: str, target_id: str | None = None, detail: dict | None = None,
          *, actor: str | None = None) -> None:
    """Write one audit entry for a view of patient data, a login or an export (never the data
    itself). Changes are not audited here: the store audits every change it makes."""
    session = current_session()
    who = actor or (session.username if session else "anonymous")
    record_audit(current_context().store, who, action, target_type, target_id, detail)


def record_audit(store, actor: str, action: str, target_type: str, target_id: str | None = None,
                 detail: dict | None = None) -> None:
    """The audit entry, best-effort: on a full or failing disk a clinician must still be able to
    read records, and a change already made must not be reported as failed (she would redo it).
    A lost entry is logged and listed in the store's warnings, which the self-check shows."""
    try:
        store.audit.log(actor, action, target_type, target_id, detail)
    except (StoreError, OSError) as exc:
        reason = getattr(exc, "message", None) or getattr(exc, "strerror", None) or type(exc).__name__
        store.warn(f"The audit entry for {action} {target_type} {target_id or ''} by {actor} "
                    f"could not be written: {reason}")


# -- login sessions ------------------------------------------------------------------------
def start_session(user: dict) -> Session:
    """Log ``user`` in: a fresh session id (no fixation) and CSRF token, cookie set."""
    ctx = current_context()
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
    ctx = current_context()
    sid = request.get_cookie(SESSION_COOKIE)
    session = current_session()
    if session is not None:
        ctx.drafts.discard_owner(session.username)
    if sid:
        ctx.sessions.delete(sid)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    request.environ[ENV_SESSION] = None
