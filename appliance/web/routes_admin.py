"""Admin: user accounts, the installed models and runtime, storage use, and others' panels."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import bottle
from markupsafe import Markup

from ..errors import UserError
from ..i18n.dates import CALENDARS
from . import auth
from .context import AppContext
from .forms import field
from .lookups import user_or_404
from .paths import USERNAME
from .request import _, current_session
from .responses import redirect
from .roles import ROLE_LABELS, ROLES
from .routing import add_routes


def admin_page(ctx: AppContext):
    auth.require_permission("manage_users")
    return _admin_page(ctx)


def create_user(ctx: AppContext):
    admin = auth.require_permission("manage_users")
    values = {"username": field("username", max_len=64), "display_name": field("display_name", max_len=100),
              "role": field("role", max_len=20),
              "language": field("language", max_len=10) or ctx.cfg.ui.default_language,
              "calendar": field("calendar", max_len=20) or ctx.cfg.ui.calendar}
    password, repeat = _passwords()
    try:
        if values["role"] not in ROLES:
            raise UserError(_("Choose the role of the new account."), _("Nurse, doctor, supervisor or administrator."))
        if values["language"] not in ctx.i18n.LANGUAGES or values["calendar"] not in CALENDARS:
            raise UserError(_("Choose the language and the calendar of the new account."),
                            _("The person can change them later under their name at the top of the screen."))
        _check_repeated(password, repeat)
        user = ctx.store.users.create(values["username"], password, values["role"],
                                      display_name=values["display_name"], language=values["language"],
                                      calendar=values["calendar"], by=admin["username"])
    except UserError as exc:
        bottle.response.status = 400
        return _admin_page(ctx, new_user=values, error=ctx.error_text(exc))
    current_session().flash(_("Account %(name)s created.", name=user["username"]), "ok")
    raise redirect("/admin#users")


def reset_password(ctx: AppContext, username: str):
    admin = auth.require_permission("manage_users")
    user_or_404(ctx, username)
    password, repeat = _passwords()
    try:
        _check_repeated(password, repeat)
        ctx.store.users.set_password(username, password, by=admin["username"])
    except UserError as exc:
        bottle.response.status = 400
        return _admin_page(ctx, error=ctx.error_text(exc))
    ctx.sessions.delete_user(username)
    current_session().flash(_("New password set for %(name)s.", name=username), "ok")
    raise redirect("/admin#users")


def disable_user(ctx: AppContext, username: str):
    admin = auth.require_permission("manage_users")
    user_or_404(ctx, username)
    disabled = field("disabled", max_len=1) == "1"
    if disabled and username == admin["username"]:
        raise UserError(_("You cannot disable your own account."), _("Log in as another administrator to do it."))
    ctx.store.users.set_disabled(username, disabled, by=admin["username"])
    if disabled:
        ctx.sessions.delete_user(username)      # her next page says her account changed
    current_session().flash(_("Account %(name)s disabled.", name=username) if disabled
                            else _("Account %(name)s enabled.", name=username), "ok")
    raise redirect("/admin#users")


ROUTES = (
    ("GET", "/admin", admin_page),
    ("POST", "/admin/users", create_user),
    ("POST", f"/admin/users/<username:re:{USERNAME}>/password", reset_password),
    ("POST", f"/admin/users/<username:re:{USERNAME}>/disable", disable_user),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    ctx.storage_use = StorageUse(ctx.cfg.data_dir)
    add_routes(app, ctx, ROUTES)


def _passwords() -> tuple[str, str]:
    return field("password", max_len=256, strip=False), field("password2", max_len=256, strip=False)


def _check_repeated(password: str, repeat: str) -> None:
    if password != repeat:
        raise UserError(_("The two passwords are not the same."), _("Type the same password twice."))


def _admin_page(ctx: AppContext, *, new_user=None, error=None):
    try:
        engine_status = ctx.engine.status()
    except Exception as exc:   # a broken pack must still leave the admin a page to fix it from
        engine_status = {"problems": [str(exc)], "models": {}, "packs": []}
    panels = []
    for panel in ctx.admin_panels:
        title, template, *rest = panel
        values = rest[0](ctx) if rest else {}
        # The panel template sees its values both as `values` and by name.
        panels.append({"title": title, "html": Markup(ctx.render_fragment(template, values=values, **values))})
    message, hint = error if error else (None, None)
    defaults = {"language": ctx.cfg.ui.default_language, "calendar": ctx.cfg.ui.calendar}
    return ctx.render("admin.html", users=sorted(ctx.store.users.list(), key=lambda u: u["username"]),
                      roles=[(r, ROLE_LABELS[r]) for r in ROLES], engine=engine_status,
                      storage=ctx.storage_use.measure(), panels=panels,
                      new_user={**defaults, **(new_user or {})}, error=message, hint=hint,
                      calendars=list(CALENDARS.items()))


class StorageUse:
    """Disk use of the data folder; the folder walk is cached (thousands of images)."""

    def __init__(self, data_dir: Path, ttl: float = 300.0):
        self.data_dir = Path(data_dir)
        self.ttl = ttl
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def measure(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            disk = shutil.disk_usage(self.data_dir)
            parts = {}
            for child in sorted(self.data_dir.iterdir()) if self.data_dir.is_dir() else []:
                parts[child.name] = _tree_size(child)
            info = {"total": disk.total, "free": disk.free, "used": disk.used,
                    "data": sum(parts.values()), "parts": parts,
                    "free_fraction": disk.free / disk.total if disk.total else 0.0}
            self._cached = (time.monotonic(), info)
            return info


def _tree_size(path: Path) -> int:
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
