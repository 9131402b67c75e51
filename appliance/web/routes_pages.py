"""The kiosk workflow: home, patient, analysis, image, processing, result, decision, print."""
from __future__ import annotations

import bottle

from . import auth
from .context import AppContext


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    @app.get("/")
    def home():
        user = auth.require()
        buttons = [b for b in ctx.home_buttons if user["role"] in b.roles]
        return ctx.render("home.html", home_buttons=buttons)
