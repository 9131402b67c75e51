"""GET /healthz: the doctor's report as JSON, for systemd, the kiosk launcher and technicians;
the same report as the Admin page's "Self-check" panel.

Public (no login) and cheap: expensive checks (model checksums, runtime, camera) come from the
``HealthMonitor`` cache and are refreshed in the background. ``/healthz?live=1`` skips every
check and only proves the server answers (the systemd watchdog asks that every few seconds).
The status code is 200 whenever the server answers; ``ok`` and ``status`` say how healthy it is,
so the kiosk still opens (and shows its own banner) on a box with a problem.
"""
from __future__ import annotations

import bottle

from .. import __version__
from ..catalogue import N_
from ..doctor import HealthMonitor
from .routing import add_routes


def healthz(ctx):
    bottle.response.content_type = "application/json"
    if bottle.request.query.get("live"):
        return {"ok": True, "live": True, "version": __version__}
    return ctx.health_monitor.report().to_json()


def install(app: bottle.Bottle, ctx) -> None:
    monitor = ctx.health_monitor = HealthMonitor(
        ctx.cfg, store=getattr(ctx, "store", None), engine=getattr(ctx, "engine", None),
        cameras=getattr(ctx, "cameras", None)).start()
    # The same report on the Admin page: a technician on the phone can have it read out.
    ctx.admin_panels.append((N_("Self-check"), "doctor_admin_panel.html", lambda c: {"report": monitor.report()}))
    add_routes(app, ctx, [("GET", "/healthz", healthz)])
