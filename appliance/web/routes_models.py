"""Model packs in the kiosk: the Admin panel "Model packs" (installed packs, packs found on the
USB sticks, install and roll back) and the page that follows an installation.

Installing hashes and copies hundreds of megabytes (a minute on a Pi), so it runs as a
background job with progress, like the USB export. A posted path is accepted only when it is
a pack the box itself found on a detected USB stick. After a switch the engine reloads, so
the next diagnosis uses the new pack.
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
from .context import AppContext, _
from .routes_exchange import Jobs

log = logging.getLogger(__name__)
JOB = "models"


def _found_on_sticks(ctx: AppContext, manager: PackManager) -> list[PackInfo]:
    return [manager.describe(path, "usb") for drive in usb.list_drives(ctx.cfg) for path in packs_on(drive.path)]


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    manager = PackManager(ctx.cfg)
    jobs = Jobs()

    def panel_values(ctx: AppContext) -> dict:
        return {"packs": manager.list(), "found": _found_on_sticks(ctx, manager),
                "job": jobs.current.get(JOB), "clinical": ctx.cfg.clinical}

    ctx.admin_panels.append((N_("Model packs"), "models_admin_panel.html", panel_values))

    def start(title: str, action: str, change) -> None:
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

        jobs.start(JOB, title, work)
        bottle.redirect("/admin/models")

    @app.post("/admin/models/install")
    def install_pack():
        auth.require_permission("manage_models")
        wanted = bottle.request.forms.getunicode("pack", "")
        allowed = {str(p.path): p.path for p in _found_on_sticks(ctx, manager)}
        if wanted not in allowed:
            raise UserError(_("There is no model pack there on a USB stick."),
                            _("Plug the stick in again and reload the Admin page."))
        source: Path = allowed[wanted]
        start(_("installation of a model pack"), "models.install",
              lambda progress: manager.install(source, progress))

    @app.post("/admin/models/rollback")
    def rollback():
        start(_("roll-back of the model pack"), "models.rollback", lambda progress: manager.rollback(progress))

    @app.get("/admin/models")
    def status_page():
        auth.require_permission("manage_models")
        return ctx.render("models_status.html", job=jobs.current.get(JOB), values=panel_values(ctx))
