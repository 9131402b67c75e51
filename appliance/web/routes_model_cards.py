"""Model cards on the Admin page: each installed model's card (written by ``bccdms-export
evaluate`` and carried in its pack) with its ROC and reliability figures, read through the
pack's checksums like the model files themselves."""
from __future__ import annotations

import bottle

from .. import catalogue
from ..errors import PackError
from . import auth
from .context import AppContext

FIGURES = {"roc.png": "figure_roc", "reliability.png": "figure_reliability"}
MODEL_ID_RE = "[a-z_]{1,40}"


def install(app: bottle.Bottle, ctx: AppContext) -> None:

    def card_file(model_id: str, role: str) -> bytes:
        auth.require_permission("manage_models")
        slot = ctx.engine.slots.get(model_id) if ctx.engine is not None else None
        if slot is None or role not in slot.entry.files:
            raise bottle.HTTPError(404)
        try:
            return slot.pack.read_verified(slot.entry.files[role])
        except PackError:
            raise bottle.HTTPError(404) from None      # damaged: the Admin page reports the pack itself

    @app.get(f"/admin/models/<model_id:re:{MODEL_ID_RE}>/card")
    def model_card(model_id):
        text = card_file(model_id, "card").decode("utf-8", "replace")
        slot = ctx.engine.slots[model_id]
        return ctx.render("model_card.html", model_id=model_id, model_name=catalogue.model(model_id).name,
                          version=slot.entry.version, pack=slot.pack.pack_id, card=text,
                          figures=[name for name, role in FIGURES.items() if role in slot.entry.files])

    @app.get(f"/admin/models/<model_id:re:{MODEL_ID_RE}>/card/<name:re:(roc|reliability)\\.png>")
    def model_card_figure(model_id, name):
        data = card_file(model_id, FIGURES[name])
        bottle.response.content_type = "image/png"
        bottle.response.set_header("Cache-Control", "private, max-age=300")
        return data

    @app.get(f"/admin/models/<model_id:re:{MODEL_ID_RE}>/model_card.md")
    def model_card_markdown(model_id):
        data = card_file(model_id, "card")
        bottle.response.content_type = "text/markdown; charset=utf-8"
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{model_id}.model_card.md"')
        return data
