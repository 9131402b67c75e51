"""First-run admin creation, login with lockout, logout, the language switch and the user's settings.

Language and calendar are per user (stored in the user's record). Before login the language
switch sets a cookie for the kiosk's login screen; a language picked on the login screen just
before logging in also becomes the user's own (the login form carries it), so a nurse never has
to pick it twice. ``/settings`` lets a logged-in user change both.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import math
import threading
import urllib.parse

import bottle
from bottle import request

from ..errors import UserError
from ..i18n import N_
from ..store.users import AuthError
from . import auth
from .login_limit import LoginLimiter
from .context import AppContext, _, current_session, request_language
from .forms import field

_setup_lock = threading.Lock()
CALENDAR_CHOSEN = {"gregorian": N_("Dates are now shown and typed in the Gregorian calendar."),
                   "ethiopian": N_("Dates are now shown and typed in the Ethiopian calendar (E.C.).")}


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    server = ctx.cfg.server
    limiter = ctx.login_limiter = LoginLimiter(server.login_failures_per_address,
                                               server.login_failure_window_minutes * 60)

    def first_run() -> bool:
        return ctx.store.users.count() == 0

    @app.get("/login")
    def login_page():
        if first_run():
            bottle.redirect("/setup")
        if current_session() is not None:
            bottle.redirect("/")
        notice = _("You were logged out because nobody used the kiosk for a while.") \
            if request.query.get("expired") else None
        if request.query.get("changed"):
            notice = _("You were logged out because your account was changed (password, role or access). "
                       "Log in again.")
        chosen = request_language(ctx) if request.query.get("chosen") else ""
        return ctx.render("login.html", error=None, notice=notice, username="", chosen_language=chosen)

    @app.post("/login")
    def login():
        username = field("username", max_len=64)
        password = field("password", max_len=256, strip=False)
        chosen = field("language", max_len=10)
        chosen = chosen if chosen in ctx.i18n.LANGUAGES else ""
        if not username or not password:
            return _login_failed(ctx, username, chosen, _("Enter your username and password."), None)
        address = request.environ.get("REMOTE_ADDR", "")
        wait = limiter.wait_seconds(address)
        if wait:
            # Refused before the password is checked: it counts against no account's lockout.
            page = _login_failed(ctx, username, chosen,
                                 _("Too many wrong passwords were typed here. Wait %(minutes)d minutes, then try again.",
                                   minutes=math.ceil(wait / 60)),
                                 _("If you forgot your password, ask an administrator to set a new one."))
            bottle.response.status = 429
            return page
        try:
            user = ctx.store.users.authenticate(username, password)
        except UserError as exc:
            if isinstance(exc, AuthError):
                limiter.failed(address)
            auth.audit("login_failed", "user", username, actor=username)
            return _login_failed(ctx, username, chosen, *ctx.error_text(exc))
        if chosen and chosen != user.get("language"):
            # Picked on the login screen just now: it becomes this user's language.
            user = ctx.store.users.update(user["username"], by=user["username"], language=chosen)
        auth.start_session(user)
        auth.audit("login", "user", user["username"])
        bottle.redirect("/")

    @app.get("/setup")
    def setup_page():
        if not _from_this_box():
            return _setup_elsewhere(ctx)
        if not first_run():
            bottle.redirect("/login")
        return ctx.render("setup.html", error=None, values={})

    @app.post("/setup")
    def setup():
        if not _from_this_box():
            return _setup_elsewhere(ctx)
        values = {"username": field("username", max_len=64),
                  "display_name": field("display_name", max_len=100)}
        password = field("password", max_len=256, strip=False)
        repeat = field("password2", max_len=256, strip=False)
        with _setup_lock:   # two first-run forms submitted at once must not make two admins
            if not first_run():
                bottle.redirect("/login")
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
        bottle.redirect("/admin")

    @app.post("/logout")
    def logout():
        session = current_session()
        if session is not None:
            auth.audit("logout", "user", session.username,
                       {"idle": True} if request.forms.get("idle") else None)
        auth.end_session()
        bottle.redirect("/login?expired=1" if request.forms.get("idle") else "/login")

    @app.post("/login/language")
    def language():
        """Switch the kiosk's language (before login: a cookie; after: the user's profile)."""
        lang = field("lang", max_len=10)
        if lang not in ctx.i18n.LANGUAGES:
            raise UserError(_("This language is not available."), _("Choose one from the list."))
        session = current_session()
        if session is not None:
            session.language = lang
            ctx.store.users.update(session.username, by=session.username, language=lang)
        bottle.response.set_cookie("bccdms_lang", lang, path="/", httponly=True, samesite="strict",
                                   max_age=365 * 24 * 3600)
        back = field("back", max_len=200)
        if session is None and back == "/login":
            back = "/login?chosen=1"       # the login form then carries the choice to the user's profile
        bottle.redirect(same_origin_path(back))

    @app.get("/settings")
    def settings_page():
        auth.require()
        from ..i18n.dates import CALENDARS
        return ctx.render("settings.html", calendars=list(CALENDARS.items()), today=dt.date.today())

    @app.post("/settings/calendar")
    def set_calendar():
        """The calendar dates are shown and typed in, for this user (saved in the user's record)."""
        auth.require()
        from ..i18n.dates import CALENDARS
        calendar = field("calendar", max_len=20)
        if calendar not in CALENDARS:
            raise UserError(_("This calendar is not available."), _("Choose one from the list."))
        session = current_session()
        ctx.store.users.update(session.username, by=session.username, calendar=calendar)
        session.calendar = calendar
        session.flash(_(CALENDAR_CHOSEN[calendar]), "ok")
        bottle.redirect("/settings")


def same_origin_path(back: str) -> str:
    """``back`` when it is a path on this kiosk, else "/". Browsers read "/\\evil.com" and
    "/<tab>/evil.com" as "//evil.com" (another site), so a backslash or any control character or
    space refuses it, as does anything with a scheme or a host."""
    parts = urllib.parse.urlsplit(back)
    if (not back.startswith("/") or back.startswith("//") or parts.scheme or parts.netloc
            or "\\" in back or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in back)):
        return "/"
    return back


def _from_this_box() -> bool:
    """The request comes from this box itself (the kiosk's screen), not from the network."""
    try:
        peer = ipaddress.ip_address(request.environ.get("REMOTE_ADDR", "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(peer, "ipv4_mapped", None)
    return (mapped or peer).is_loopback


def _setup_elsewhere(ctx):
    """The first administrator is created only on the box: before it exists anyone reaching
    /setup would become the administrator."""
    return bottle.HTTPResponse(status=403, body=ctx.render(
        "error.html", title=_("Not from here"),
        message=_("The first administrator account is created on the kiosk's own screen."),
        hint=_("Use the box's touchscreen, or 'appliance user add NAME --role admin' on the box.")))


def _login_failed(ctx, username, chosen, message, hint):
    bottle.response.status = 401
    return ctx.render("login.html", error=message, hint=hint, notice=None, username=username,
                      chosen_language=chosen)


def _setup_failed(ctx, values, message, hint):
    bottle.response.status = 400
    return ctx.render("setup.html", error=message, hint=hint, values=values)
