"""Model packs in the kiosk: the Admin panel "Model packs" (installed packs, packs found on the
USB sticks, install and roll back) and the page that follows an installation.

Installing hashes and copies hundreds of megabytes (a minute on a Pi), so it runs as a
background job with progress (``ctx.jobs``), like the USB export. A posted path is accepted only
when it is a pack the box itself found on a detected USB stick. After a switch the engine
reloads, so the next diagnosis uses the new pack.
"""
from __future__ import annotations

import logging
from pathlib import Path

import bottle

from ..catalogue import N_
from ..errors import UserError
from ..exchange import usb
from ..models_admin import PackInfo, PackManager, packs_on
from . import auth
from .context import AppContext
from .request import _
from .responses import redirect
from .routing import add_routes

log = logging.getLogger(__name__)
JOB = "models"


def install_pack(ctx: AppContext):
    auth.require_permission("manage_models")
    wanted = bottle.request.forms.getunicode("pack", "")
    allowed = {str(p.path): p.path for p in _found_on_sticks(ctx)}
    if wanted not in allowed:
        raise UserError(_("There is no model pack there on a USB stick."),
                        _("Plug the stick in again and reload the Admin page."))
    source: Path = allowed[wanted]
    raise _start(ctx, _("installation of a model pack"), "models.install",
                 lambda progress: ctx.pack_manager.install(source, progress))


def rollback(ctx: AppContext):
    raise _start(ctx, _("roll-back of the model pack"), "models.rollback",
                 lambda progress: ctx.pack_manager.rollback(progress))


def status_page(ctx: AppContext):
    auth.require_permission("manage_models")
    return ctx.render("models_status.html", job=ctx.jobs.current.get(JOB), values=panel_values(ctx))


ROUTES = (
    ("POST", "/admin/models/install", install_pack),
    ("POST", "/admin/models/rollback", rollback),
    ("GET", "/admin/models", status_page),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    ctx.pack_manager = PackManager(ctx.cfg)
    ctx.admin_panels.append((N_("Model packs"), "models_admin_panel.html", panel_values))
    add_routes(app, ctx, ROUTES)


def panel_values(ctx: AppContext) -> dict:
    return {"packs": ctx.pack_manager.list(), "found": _found_on_sticks(ctx),
            "job": ctx.jobs.current.get(JOB), "clinical": ctx.cfg.clinical}


def _found_on_sticks(ctx: AppContext) -> list[PackInfo]:
    return [ctx.pack_manager.describe(path, "usb") for drive in usb.list_drives(ctx.cfg)
            for path in packs_on(drive.path)]


def _start(ctx: AppContext, title: str, action: str, change) -> bottle.HTTPResponse:
    """Run ``change(progress)`` as the models job; the redirect to its progress page."""
    user = auth.require_permission("manage_models")

    def work(progress):
        info = change(progress)
        # The running engine takes its models from the new current pack from now on.
        if ctx.engine is not None:
            ctx.engine.reload()
        # After the switch: a lost audit entry must not report the install as failed.
        auth.record_audit(ctx.store, user["username"], action, "model_pack", info.pack_id,
                          {"version": info.version, "demo": info.demo})
        return info

    ctx.jobs.start(JOB, title, work)
    return redirect("/admin/models")
