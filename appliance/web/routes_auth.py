"""First-run admin creation, login with lockout, logout and the language switch."""
from __future__ import annotations

import threading

import bottle
from bottle import request

from ..errors import UserError
from . import auth
from .context import AppContext, _, current_session
from .forms import field

_setup_lock = threading.Lock()


def install(app: bottle.Bottle, ctx: AppContext) -> None:
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
        return ctx.render("login.html", error=None, notice=notice, username="")

    @app.post("/login")
    def login():
        username = field("username", max_len=64)
        password = field("password", max_len=256, strip=False)
        if not username or not password:
            return _login_failed(ctx, username, _("Enter your username and password."), None)
        try:
            user = ctx.store.users.authenticate(username, password)
        except UserError as exc:
            auth.audit("login_failed", "user", username, actor=username)
            return _login_failed(ctx, username, *ctx.error_text(exc))
        auth.start_session(user)
        auth.audit("login", "user", user["username"])
        bottle.redirect("/")

    @app.get("/setup")
    def setup_page():
        if not first_run():
            bottle.redirect("/login")
        return ctx.render("setup.html", error=None, values={})

    @app.post("/setup")
    def setup():
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
                                              language=ctx.cfg.ui.default_language, by=None)
            except UserError as exc:
                return _setup_failed(ctx, values, *ctx.error_text(exc))
        auth.start_session(user)
        auth.audit("create", "user", user["username"], {"role": "admin", "first_run": True})
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
        bottle.redirect(back if back.startswith("/") and not back.startswith("//") else "/")


def _login_failed(ctx, username, message, hint):
    bottle.response.status = 401
    return ctx.render("login.html", error=message, hint=hint, notice=None, username=username)


def _setup_failed(ctx, values, message, hint):
    bottle.response.status = 400
    return ctx.render("setup.html", error=message, hint=hint, values=values)
