"""The phone's pages (no login; the token in the path is the only key, see appliance.camera.phone):

    GET  /phone/<token>               the upload page, nothing else
    POST /phone/<token>               the photo; it becomes the exam's image

On the LAN these are all the phones' listener serves (phone_listener.py).
"""
from __future__ import annotations

import logging

import bottle
from bottle import request

from ..camera import PhoneLinkRefused
from ..catalogue import N_
from ..errors import BadImage, NotFound, UserError
from .context import AppContext
from .paths import PHONE_TOKEN
from .request import _
from .routing import add_routes

log = logging.getLogger(__name__)


def phone_page(ctx: AppContext, token: str):
    try:
        _open_link(ctx, token)
        return _upload_page(ctx, token)
    except PhoneLinkRefused as exc:
        return _refused(ctx, exc)


def phone_upload(ctx: AppContext, token: str):
    try:
        return _receive_photo(ctx, token)
    except PhoneLinkRefused as exc:
        return _refused(ctx, exc)


ROUTES = (
    ("GET", f"/phone/<token:re:{PHONE_TOKEN}>", phone_page),
    ("POST", f"/phone/<token:re:{PHONE_TOKEN}>", phone_upload),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    add_routes(app, ctx, ROUTES)


def _receive_photo(ctx: AppContext, token: str):
    links = ctx.phone_links
    _open_link(ctx, token)
    upload = request.files.get("image")
    if upload is None:
        return _upload_page(ctx, token, BadImage(N_("No photo was sent."), N_("Take the photo, then press Send.")), 400)
    data = upload.file.read(ctx.drafts.max_bytes + 1)
    try:
        links.redeem(token, lambda link: ctx.drafts.attach_image(link.draft_id, data, "phone"))
    except NotFound:
        raise _exam_closed() from None
    except BadImage as exc:
        # Nothing changed and the link still works: the nurse can take the photo again.
        return _upload_page(ctx, token, exc, 413 if len(data) > ctx.drafts.max_bytes else 400)
    log.info("phone photo received for an open exam (%d bytes)", len(data))
    return ctx.render("phone_done.html")


def _open_link(ctx: AppContext, token: str):
    """The link, refusing it when the exam it belongs to was closed in the meantime."""
    link = ctx.phone_links.check(token)
    try:
        ctx.drafts.get(link.draft_id, owner=link.owner)
    except NotFound:
        ctx.phone_links.revoke_draft(link.draft_id)
        raise _exam_closed() from None
    return link


def _upload_page(ctx: AppContext, token: str, error: UserError | None = None, status: int = 200):
    links = ctx.phone_links
    link = links.check(token)
    return bottle.HTTPResponse(status=status, body=ctx.render(
        "phone_upload.html", token=token, max_mb=ctx.cfg.server.max_upload_mb,
        minutes_left=max(1, round(links.seconds_left(link) / 60)),
        error=_(error.message) if error else None,
        error_hint=_(error.hint) if error and error.hint else None))


def _refused(ctx: AppContext, exc: UserError, status: int = 410):
    return bottle.HTTPResponse(status=status, body=ctx.render(
        "phone_refused.html", message=_(exc.message), hint=_(exc.hint) if exc.hint else None))


def _exam_closed() -> PhoneLinkRefused:
    return PhoneLinkRefused(N_("The exam this link was made for is closed on the kiosk."),
                            N_("Ask for a new QR code on the kiosk screen and scan it again."))
