"""First-run admin creation, login with lockout, logout, the language switch and the user's settings.

Language and calendar are per user (stored in the user's record). Before login the language
switch sets a cookie for the kiosk's login screen; a language picked on the login screen just
before logging in also becomes the user's own (the login form carries it), so a nurse never has
to pick it twice. ``/settings`` lets a logged-in user change both.

A wrong password, an unknown username and a locked account get the same answer: the login
page never tells a network client which accounts exist. On the box's own screen (127.0.0.1) it
lists the post's nurses and doctors by display name; one with a PIN taps her name and types
the 6 digits on our PIN pad (``/login/pin``: the same address limit and account lockout as a
password; refused from anywhere but the box's own screen). Her quick login goes straight to
her main job (a nurse: Diagnose); a PIN is set on ``/settings`` after typing the password.
"""
from __future__ import annotations

import math
import threading

import bottle
from bottle import request

from .. import clock
from ..errors import UserError
from ..i18n import N_
from ..i18n.dates import CALENDARS
from ..store.users import PIN_LENGTH, PIN_ROLES, AuthError
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
    return _login_page(ctx, notice=notice, chosen_language=chosen)


def login(ctx: AppContext):
    username = field("username", max_len=64)
    password = field("password", max_len=256, strip=False)
    chosen = _chosen_language(ctx)
    if not username or not password:
        return _login_failed(ctx, username, chosen, _("Enter your username and password."), None)
    user, refused = _checked_login(ctx, username, chosen, lambda: ctx.store.users.authenticate(username, password))
    if refused is not None:
        return refused
    _log_in(ctx, user, chosen)
    raise redirect("/")


def login_pin(ctx: AppContext):
    """Quick login on the box's own screen: a listed nurse or doctor and her 6-digit PIN."""
    if not from_this_box():
        return error_response(403, _("Not from here"), _("A PIN works only on the kiosk's own screen."),
                              _("Log in with your username and password."))
    username = field("person", max_len=64)     # not "username": the password form beside it has that field
    pin = field("pin", max_len=PIN_LENGTH + 2)
    chosen = _chosen_language(ctx)
    if not username or not pin:
        return _login_failed(ctx, "", chosen, _("Tap your name, then type your PIN."), None)
    user, refused = _checked_login(ctx, username, chosen, lambda: ctx.store.users.authenticate_pin(username, pin),
                                   pin=True)
    if refused is not None:
        return refused
    _log_in(ctx, user, chosen, how="pin")
    # Straight to the main job: a nurse finds or registers the patient first.
    raise redirect("/diagnose" if user.get("role") == "nurse" else "/")


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
    user = auth.require()
    return _settings_page(ctx, user)


def set_pin(ctx: AppContext):
    """Set or remove this user's quick-login PIN; the password is asked first (a PIN is a
    shortcut to the account, so whoever sets it must know the password)."""
    user = auth.require(*PIN_ROLES)
    session = current_session()
    password = field("password", max_len=256, strip=False)
    remove = field("remove", max_len=1) == "1"
    pin, repeat = field("pin", max_len=PIN_LENGTH + 2), field("pin2", max_len=PIN_LENGTH + 2)
    try:
        if not password:
            raise UserError(_("Type your password first."), _("A PIN can be set or removed only with the password."))
        if not remove and pin != repeat:
            raise UserError(_("The two PINs are not the same."), _("Type the same 6 digits twice."))
        try:
            ctx.store.users.authenticate(session.username, password)
        except AuthError as exc:
            if exc.reason == "wrong":
                raise UserError(_("The password is wrong."), _("Type your password again.")) from None
            raise
        ctx.store.users.set_pin(session.username, None if remove else pin, by=session.username)
    except UserError as exc:
        bottle.response.status = 400
        return _settings_page(ctx, user, *ctx.error_text(exc))
    session.flash(_("Your PIN is removed.") if remove else
                  _("Your PIN is set: tap your name on the login screen and type it."), "ok")
    raise redirect("/settings")


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
    ("POST", "/login/pin", login_pin),
    ("GET", "/settings", settings_page),
    ("POST", "/settings/calendar", set_calendar),
    ("POST", "/settings/pin", set_pin),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


# -- helpers -------------------------------------------------------------------------------
def _first_run(ctx: AppContext) -> bool:
    return ctx.store.users.count() == 0


def _refusal_text(ctx: AppContext, exc: UserError, *, pin: bool = False) -> tuple[str, str | None]:
    """What a refused login says. Wrong password, unknown name and locked account read the same."""
    if isinstance(exc, AuthError) and exc.reason in NOT_LOGGED_IN and pin:
        server = ctx.cfg.server
        return (_("The PIN is wrong, or the account is locked."),
                _("Type your PIN again. After %(failures)s wrong tries in a row an account is locked for "
                  "%(minutes)s minutes; your password works again after that.",
                  failures=server.lockout_failures, minutes=server.lockout_minutes))
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


def _chosen_language(ctx: AppContext) -> str:
    chosen = field("language", max_len=10)
    return chosen if chosen in ctx.i18n.LANGUAGES else ""


def _checked_login(ctx: AppContext, username: str, chosen: str, check, *, pin: bool = False):
    """``(user, None)`` for the user ``check()`` lets in behind the address limit, else
    ``(None, the login page that says why)``."""
    address = request.environ.get("REMOTE_ADDR", "")
    wait = ctx.login_limiter.wait_seconds(address, local=from_this_box())
    if wait:
        # Refused before the password or PIN is checked: it counts against no account's lockout.
        page = _login_failed(ctx, username, chosen, _wait_text(wait),
                             _("If you forgot your password, ask an administrator to set a new one."), pin=pin)
        bottle.response.status = 429
        return None, page
    try:
        return check(), None
    except UserError as exc:
        if isinstance(exc, AuthError):
            ctx.login_limiter.failed(address)
        auth.audit("login_failed", "user", username, {"pin": True} if pin else None, actor=username)
        return None, _login_failed(ctx, username, chosen, *_refusal_text(ctx, exc, pin=pin), pin=pin)


def _log_in(ctx: AppContext, user: dict, chosen: str, how: str = "password") -> None:
    if chosen and chosen != user.get("language"):
        # Picked on the login screen just now: it becomes this user's language.
        user = ctx.store.users.update(user["username"], by=user["username"], language=chosen)
    auth.start_session(user)
    auth.audit("login", "user", user["username"], {"with": "pin"} if how == "pin" else None)


def _login_page(ctx: AppContext, *, error=None, hint=None, notice=None, username="", chosen_language="",
                pin_username=""):
    # Names of the post's people only on the box's own screen: a network client learns no account.
    people = ctx.store.users.login_list() if from_this_box() else []
    pin_name = next((p["display_name"] for p in people if p["username"] == pin_username and p["has_pin"]), "")
    return ctx.render("login.html", error=error, hint=hint, notice=notice, username=username,
                      chosen_language=chosen_language, people=people, pin_length=PIN_LENGTH,
                      pin_username=pin_username if pin_name else "", pin_name=pin_name)


def _settings_page(ctx: AppContext, user: dict, error=None, hint=None):
    fresh = ctx.store.users.get(user["username"]) or {}
    return ctx.render("settings.html", calendars=list(CALENDARS.items()), today=clock.today(),
                      may_pin=user.get("role") in PIN_ROLES, has_pin=bool(fresh.get("has_pin")),
                      pin_length=PIN_LENGTH, error=error, hint=hint)


def _login_failed(ctx, username, chosen, message, hint, *, pin: bool = False):
    bottle.response.status = 401
    if pin:   # the same person's PIN pad again (a wrong PIN reads the same for every account)
        return _login_page(ctx, error=message, hint=hint, chosen_language=chosen, pin_username=username)
    return _login_page(ctx, error=message, hint=hint, username=username, chosen_language=chosen)


def _setup_failed(ctx, values, message, hint):
    bottle.response.status = 400
    return ctx.render("setup.html", error=message, hint=hint, values=values)
