"""What belongs to the request being answered: its session and context, language and calendar,
the ``_``/``ngettext`` that translate into its language, the pre-login form token, and a first
read of its body.

Everything here reads ``bottle.request`` (a thread-local): route modules, views and templates
call these helpers without being handed the request. ``AppContext`` (context.py) is the
composition root; the guard (guard.py) puts the context and the session into the environ.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
from http.cookies import CookieError
from typing import TYPE_CHECKING

import bottle
from markupsafe import Markup, escape

from ..catalogue import N_
from ..errors import UserError
from ..i18n.dates import CALENDARS, GREGORIAN
from .sessions import Session, new_token

if TYPE_CHECKING:
    from .context import AppContext

# Keys under which the request's context, session and language travel in the WSGI environ.
ENV_CTX = "bccdms.ctx"
ENV_SESSION = "bccdms.session"
ENV_LANG = "bccdms.lang"
ENV_ANON_CSRF = "bccdms.anon_csrf"
ENV_ACCOUNT_CHANGED = "bccdms.account_changed"

SESSION_COOKIE = "bccdms_session"
ANON_CSRF_COOKIE = "bccdms_presession"
LANGUAGE_COOKIE = "bccdms_lang"
PRESESSION_PURPOSE = b"bccdms pre-login form token\x00"


def current_session() -> Session | None:
    return bottle.request.environ.get(ENV_SESSION)


def current_context() -> "AppContext | None":
    return bottle.request.environ.get(ENV_CTX)


def from_this_box() -> bool:
    """The request comes from this box itself (the kiosk's screen), not from the network."""
    try:
        peer = ipaddress.ip_address(bottle.request.environ.get("REMOTE_ADDR", "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(peer, "ipv4_mapped", None)
    return (mapped or peer).is_loopback


# -- language and calendar -----------------------------------------------------------------
class Translator:
    """The gettext functions for one language, in the forms templates and Python use.

    ``_("Hello %(name)s", name=x)`` formats after translating, like Jinja2's "newstyle"
    gettext: the translation is trusted markup, the values are escaped.
    """

    def __init__(self, translations, *, markup: bool):
        self._t = translations
        self._markup = markup

    def gettext(self, text: str, **values) -> str:
        out = self._t.gettext(text)
        if self._markup:
            out = Markup(out)
            return out % {k: escape(v) for k, v in values.items()} if values else out
        return out % values if values else out

    def ngettext(self, singular: str, plural: str, n: int, **values) -> str:
        values.setdefault("num", n)
        out = self._t.ngettext(singular, plural, n)
        if self._markup:
            return Markup(out) % {k: escape(v) for k, v in values.items()}
        return out % values


def request_language(ctx: "AppContext") -> str:
    lang = bottle.request.environ.get(ENV_LANG)
    if lang:
        return lang
    session = current_session()
    if session and session.language in ctx.i18n.LANGUAGES:
        return session.language
    cookie = bottle.request.get_cookie(LANGUAGE_COOKIE)
    if cookie in ctx.i18n.LANGUAGES:
        return cookie
    return ctx.cfg.ui.default_language if ctx.cfg.ui.default_language in ctx.i18n.LANGUAGES else "en"


def request_calendar(ctx: "AppContext") -> str:
    """How this request's dates are shown and typed: the user's calendar, else the box's default."""
    session = current_session()
    if session and session.calendar in CALENDARS:
        return session.calendar
    return ctx.cfg.ui.calendar if ctx.cfg.ui.calendar in CALENDARS else GREGORIAN


def request_translator(ctx: "AppContext", *, markup: bool) -> Translator:
    return Translator(ctx.i18n.get_translations(request_language(ctx)), markup=markup)


def _(text: str, **values) -> str:
    """Translate a Python-side sentence into the current request's language."""
    ctx = current_context()
    if ctx is None:
        return text % values if values else text
    return request_translator(ctx, markup=False).gettext(text, **values)


def ngettext(singular: str, plural: str, n: int, **values) -> str:
    ctx = current_context()
    if ctx is None:
        values.setdefault("num", n)
        return (singular if n == 1 else plural) % values
    return request_translator(ctx, markup=False).ngettext(singular, plural, n, **values)


# -- the pre-login form token --------------------------------------------------------------
def presession_token(secret: bytes, nonce: str) -> str:
    """The form token that goes with the pre-login cookie ``nonce``: an HMAC under this box's
    secret, so a client cannot choose a cookie and token pair of its own (double submit alone
    accepts any pair the client sets)."""
    return hmac.new(secret, PRESESSION_PURPOSE + nonce.encode(), hashlib.sha256).hexdigest()


def expected_anon_token(ctx: "AppContext") -> str:
    """The token a pre-login form must carry, from the client's cookie ("" without a valid one)."""
    nonce = bottle.request.get_cookie(ANON_CSRF_COOKIE) or ""
    if not 20 <= len(nonce) <= 100:
        return ""
    return presession_token(ctx.presession_secret, nonce)


def anon_csrf_token() -> str:
    """The CSRF token of a client that is not logged in. A page that shows a form creates the
    cookie (so parallel requests for static files never replace it)."""
    env = bottle.request.environ
    token = env.get(ENV_ANON_CSRF)
    if not token:
        nonce = new_token()
        bottle.response.set_cookie(ANON_CSRF_COOKIE, nonce, path="/", httponly=True, samesite="strict")
        token = env[ENV_ANON_CSRF] = presession_token(current_context().presession_secret, nonce)
    return token


def csrf_token() -> str:
    """The token the request's forms carry: the session's, else the pre-login one."""
    session = current_session()
    return session.csrf_token if session else anon_csrf_token()


class RequestCsrfToken:
    """``{{ csrf_token }}`` for templates rendered without the page's context."""

    def __str__(self) -> str:
        return csrf_token()

    def __html__(self) -> str:
        return str(escape(str(self)))


# -- reading the request -------------------------------------------------------------------
class MalformedRequest(UserError):
    """The request's body or headers cannot be read (a broken upload, a control character in a
    part header, invalid JSON); ``status`` is the HTTP status that says so."""

    def __init__(self, message: str, hint: str, status: int = 400):
        super().__init__(message, hint)
        self.status = status


def read_request(*, body: bool) -> None:
    """Parse the cookies and the query (and with ``body``, for a request that has one, the form
    fields, files and JSON) once, here, so that a malformed request is refused with a sentence
    (400) instead of failing inside a route (500). Bottle keeps what it parsed: routes read the
    same values."""
    req = bottle.request
    try:
        req.cookies, req.query       # noqa: B018 (parsed and cached by bottle)
        if body and req.method in ("POST", "PUT", "PATCH", "DELETE"):
            req.POST                 # noqa: B018
            if req.content_type.lower().startswith("application/json"):
                req.json             # noqa: B018
    except bottle.HTTPError as exc:
        if exc.status_code == 413:
            raise MalformedRequest(N_("The request is too large to be read."),
                                   N_("Send a smaller form or image."), 413) from None
        raise _unreadable() from None
    except (ValueError, CookieError, LookupError, TypeError):
        raise _unreadable() from None


def _unreadable() -> MalformedRequest:
    return MalformedRequest(N_("The kiosk could not read what was sent: the form or upload is damaged."),
                            N_("Reload the page and send it again."))
