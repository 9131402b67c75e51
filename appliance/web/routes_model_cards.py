"""Model cards on the Admin page: each installed model's card (written by ``bccdms-export
evaluate`` and carried in its pack) with its ROC and reliability figures, read through the
pack's checksums like the model files themselves."""
from __future__ import annotations

import bottle

from .. import catalogue
from ..errors import PackError
from . import auth
from .context import AppContext
from .paths import MODEL_ID
from .routing import add_routes

FIGURES = {"roc.png": "figure_roc", "reliability.png": "figure_reliability"}


def model_card(ctx: AppContext, model_id: str):
    text = _card_file(ctx, model_id, "card").decode("utf-8", "replace")
    slot = ctx.engine.slots[model_id]
    return ctx.render("model_card.html", model_id=model_id, model_name=catalogue.model(model_id).name,
                      version=slot.entry.version, pack=slot.pack.pack_id, card=text,
                      figures=[name for name, role in FIGURES.items() if role in slot.entry.files])


def model_card_figure(ctx: AppContext, model_id: str, name: str):
    data = _card_file(ctx, model_id, FIGURES[name])
    bottle.response.content_type = "image/png"
    return data


def model_card_markdown(ctx: AppContext, model_id: str):
    data = _card_file(ctx, model_id, "card")
    bottle.response.content_type = "text/markdown; charset=utf-8"
    bottle.response.set_header("Content-Disposition", f'attachment; filename="{model_id}.model_card.md"')
    return data


ROUTES = (
    ("GET", f"/admin/models/<model_id:re:{MODEL_ID}>/card", model_card),
    ("GET", f"/admin/models/<model_id:re:{MODEL_ID}>/card/<name:re:(roc|reliability)\\.png>", model_card_figure),
    ("GET", f"/admin/models/<model_id:re:{MODEL_ID}>/model_card.md", model_card_markdown),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


def _card_file(ctx: AppContext, model_id: str, role: str) -> bytes:
    auth.require_permission("manage_models")
    slot = ctx.engine.slots.get(model_id) if ctx.engine is not None else None
    if slot is None or role not in slot.entry.files:
        raise bottle.HTTPError(404)
    try:
        return slot.pack.read_verified(slot.entry.files[role])
    except PackError:
        raise bottle.HTTPError(404) from None      # damaged: the Admin page reports the pack itself
