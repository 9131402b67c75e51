"""First-run admin creation, login with lockout, logout, the language switch and the user's settings.

Language and calendar are per user (stored in the user's record). Before login the language
switch sets a cookie for the kiosk's login screen; a language picked on the login screen just
before logging in also becomes the user's own (the login form carries it), so a nurse never has
to pick it twice. ``/settings`` lets a logged-in user change both.

A wrong password, an unknown username and a locked account get the same answer: the login
page never tells which accounts exist.
"""
from __future__ import annotations

import datetime as dt
import math
import threading

import bottle
from bottle import request

from ..errors import UserError
from ..i18n import N_
from ..i18n.dates import CALENDARS
from ..store.users import AuthError
from . import auth
from .context import AppContext
from .forms import field
from .request import LANGUAGE_COOKIE, _, current_session, from_this_box, ngettext, request_language
from .responses import error_response, redirect, same_origin_path
from .routing import add_routes

_setup_lock = threading.Lock()
CALENDAR_CHOSEN = {"gregorian": N_("Dates are now shown and typed in the Gregorian calendar."),
                   "ethiopian": N_("Dates are now shown and typed in the Ethiopian calendar (E.C.).")}
# AuthError reasons that get the one answer for a wrong login (a disabled account is told only
# after the right password).
NOT_LOGGED_IN = ("wrong", "locked")


def login_page(ctx: AppContext):
    if _first_run(ctx):
        raise redirect("/setup")
    if current_session() is not None:
        raise redirect("/")
    notice = _("You were logged out because nobody used the kiosk for a while.") \
        if request.query.get("expired") else None
    if request.query.get("changed"):
        notice = _("You were logged out because your account was changed (password, role or access). "
                   "Log in again.")
    chosen = request_language(ctx) if request.query.get("chosen") else ""
    return ctx.render("login.html", error=None, notice=notice, username="", chosen_language=chosen)


def login(ctx: AppContext):
    username = field("username", max_len=64)
    password = field("password", max_len=256, strip=False)
    chosen = field("language", max_len=10)
    chosen = chosen if chosen in ctx.i18n.LANGUAGES else ""
    if not username or not password:
        return _login_failed(ctx, username, chosen, _("Enter your username and password."), None)
    address = request.environ.get("REMOTE_ADDR", "")
    wait = ctx.login_limiter.wait_seconds(address, local=from_this_box())
    if wait:
        # Refused before the password is checked: it counts against no account's lockout.
        page = _login_failed(ctx, username, chosen, _wait_text(wait),
                             _("If you forgot your password, ask an administrator to set a new one."))
        bottle.response.status = 429
        return page
    try:
        user = ctx.store.users.authenticate(username, password)
    except UserError as exc:
        if isinstance(exc, AuthError):
            ctx.login_limiter.failed(address)
        auth.audit("login_failed", "user", username, actor=username)
        return _login_failed(ctx, username, chosen, *_refusal_text(ctx, exc))
    if chosen and chosen != user.get("language"):
        # Picked on the login screen just now: it becomes this user's language.
        user = ctx.store.users.update(user["username"], by=user["username"], language=chosen)
    auth.start_session(user)
    auth.audit("login", "user", user["username"])
    raise redirect("/")


def setup_page(ctx: AppContext):
    if not from_this_box():
        return _setup_elsewhere()
    if not _first_run(ctx):
        raise redirect("/login")
    return ctx.render("setup.html", error=None, values={})


def setup(ctx: AppContext):
    if not from_this_box():
        return _setup_elsewhere()
    values = {"username": field("username", max_len=64),
              "display_name": field("display_name", max_len=100)}
    password = field("password", max_len=256, strip=False)
    repeat = field("password2", max_len=256, strip=False)
    with _setup_lock:   # two first-run forms submitted at once must not make two admins
        if not _first_run(ctx):
            raise redirect("/login")
        if password != repeat:
            return _setup_failed(ctx, values, _("The two passwords are not the same."),
                                 _("Type the same password twice."))
        try:
            user = ctx.store.users.create(values["username"], password, "admin",
                                          display_name=values["display_name"],
                                          language=request_language(ctx), by=None)
        except UserError as exc:
            return _setup_failed(ctx, values, *ctx.error_text(exc))
    auth.start_session(user)
    current_session().flash(_("The administrator account is ready. Now create accounts for the nurses and doctors."))
    raise redirect("/admin")


def logout(ctx: AppContext):
    session = current_session()
    idle = bool(request.forms.get("idle"))
    if session is not None:
        auth.audit("logout", "user", session.username, {"idle": True} if idle else None)
    auth.end_session()
    raise redirect("/login?expired=1" if idle else "/login")


def language(ctx: AppContext):
    """Switch the kiosk's language (before login: a cookie; after: the user's profile)."""
    lang = field("lang", max_len=10)
    if lang not in ctx.i18n.LANGUAGES:
        raise UserError(_("This language is not available."), _("Choose one from the list."))
    session = current_session()
    if session is not None:
        session.language = lang
        ctx.store.users.update(session.username, by=session.username, language=lang)
    bottle.response.set_cookie(LANGUAGE_COOKIE, lang, path="/", httponly=True, samesite="strict",
                               max_age=365 * 24 * 3600)
    back = field("back", max_len=200)
    if session is None and back == "/login":
        back = "/login?chosen=1"       # the login form then carries the choice to the user's profile
    raise redirect(same_origin_path(back))


def settings_page(ctx: AppContext):
    auth.require()
    return ctx.render("settings.html", calendars=list(CALENDARS.items()), today=dt.date.today())


def set_calendar(ctx: AppContext):
    """The calendar dates are shown and typed in, for this user (saved in the user's record)."""
    auth.require()
    calendar = field("calendar", max_len=20)
    if calendar not in CALENDARS:
        raise UserError(_("This calendar is not available."), _("Choose one from the list."))
    session = current_session()
    ctx.store.users.update(session.username, by=session.username, calendar=calendar)
    session.calendar = calendar
    session.flash(_(CALENDAR_CHOSEN[calendar]), "ok")
    raise redirect("/settings")


ROUTES = (
    ("GET", "/login", login_page),
    ("POST", "/login", login),
    ("GET", "/setup", setup_page),
    ("POST", "/setup", setup),
    ("POST", "/logout", logout),
    ("POST", "/login/language", language),
    ("GET", "/settings", settings_page),
    ("POST", "/settings/calendar", set_calendar),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


# -- helpers -------------------------------------------------------------------------------
def _first_run(ctx: AppContext) -> bool:
    return ctx.store.users.count() == 0


def _refusal_text(ctx: AppContext, exc: UserError) -> tuple[str, str | None]:
    """What a refused login says. Wrong password, unknown name and locked account read the same."""
    if isinstance(exc, AuthError) and exc.reason in NOT_LOGGED_IN:
        server = ctx.cfg.server
        return (_("The username or password is wrong."),
                _("Check the keyboard language and Caps Lock, then try again. After %(failures)s wrong passwords "
                  "in a row an account is locked for %(minutes)s minutes, or until an administrator sets a "
                  "new password.", failures=server.lockout_failures, minutes=server.lockout_minutes))
    return ctx.error_text(exc)


def _wait_text(wait: float) -> str:
    if wait < 120:
        return ngettext("Too many wrong passwords were typed here. Wait %(num)d second, then try again.",
                        "Too many wrong passwords were typed here. Wait %(num)d seconds, then try again.",
                        math.ceil(wait))
    return _("Too many wrong passwords were typed here. Wait %(minutes)d minutes, then try again.",
             minutes=math.ceil(wait / 60))


def _setup_elsewhere():
    """The first administrator is created only on the box: before it exists anyone reaching
    /setup would become the administrator."""
    return error_response(403, _("Not from here"),
                          _("The first administrator account is created on the kiosk's own screen."),
                          _("Use the box's touchscreen, or 'appliance user add NAME --role admin' on the box."))


def _login_failed(ctx, username, chosen, message, hint):
    bottle.response.status = 401
    return ctx.render("login.html", error=message, hint=hint, notice=None, username=username,
                      chosen_language=chosen)


def _setup_failed(ctx, values, message, hint):
    bottle.response.status = 400
    return ctx.render("setup.html", error=message, hint=hint, values=values)
