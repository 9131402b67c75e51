"""Camera and phone routes: live preview, capture into the open exam, phone colposcope links.

Kiosk side (logged in; JSON errors under ``/api/``):
    GET  /api/camera                  state, backend, message, phone availability (polled)
    GET  /api/camera/preview.jpg      the latest preview frame; ``?after=N`` waits for a newer one
    GET  /api/camera/stream.mjpg      the live view as an MJPEG stream
    POST /api/camera/capture          a full-resolution still becomes the exam's image
    POST /api/camera/phone-link       a one-time link (and its QR code) for the phone

Phone side (no login; the token in the path is the only key, see appliance.camera.phone):
    GET  /phone/<token>               the upload page, nothing else
    POST /phone/<token>               the photo; it becomes the exam's image

Captured and phone photos go through ``ctx.drafts.attach_image`` exactly like a chosen file,
so the image the page shows, the quality check and the analysis all use the same bytes.
Preview requests are passive: watching the live view does not keep an idle kiosk logged in.
"""
from __future__ import annotations

import json
import logging

import bottle
from bottle import request

from ..camera import CameraUnavailable, PhoneLinkRefused, PhoneLinks
from ..camera.phone import phone_host, phone_url
from ..catalogue import N_
from ..errors import BadImage, NotFound, UserError
from . import auth
from .context import AppContext, _

log = logging.getLogger(__name__)

# Exact paths (a prefix would also make a capture passive); the status poll sends ?passive=1.
PASSIVE = ("/api/camera/preview.jpg", "/api/camera/stream.mjpg")
VIEW_ROLES = ("nurse", "doctor", "admin")       # admin: to check focus and orientation at set-up
BOUNDARY = "bccdms-frame"
LONG_POLL_SECONDS = 2.0
HOLD_KEY = "bccdms.camera_hold"


def _json(status: int, payload: dict) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(status=status, body=json.dumps(payload),
                               headers={"Content-Type": "application/json", "Cache-Control": "no-store"})


def _unavailable(exc: CameraUnavailable, state: str | None = None) -> bottle.HTTPResponse:
    return _json(503, {"error": _(exc.message), "hint": _(exc.hint) if exc.hint else None, "state": state})


def _no_camera_configured() -> CameraUnavailable:
    return CameraUnavailable(N_("The camera is switched off in the configuration."),
                             N_("Use the phone or a file, or ask the technician to set [camera] backend."))


def _draft_id() -> str:
    if request.json and isinstance(request.json, dict):
        return str(request.json.get("draft") or "")
    return request.forms.get("draft") or ""


def _someone_waits() -> bool:
    """Whether a person waits for this request (a page, an upload, "Start processing"), as
    opposed to the preview itself, static files and background polls."""
    path = request.path
    return not (path.startswith(("/static/", "/api/camera")) or path == "/healthz"
                or request.get_header("X-Passive") == "1" or request.query.get("passive") == "1")


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    links = PhoneLinks(ctx.cfg.camera.phone_link_minutes)
    ctx.phone_links = links
    for prefix in PASSIVE:
        if prefix not in auth.PASSIVE_PREFIXES:
            auth.PASSIVE_PREFIXES.append(prefix)
    ctx.admin_panels.append((N_("Camera"), "camera_admin.html", lambda c: {"camera": camera_status(c)}))

    # The preview yields the CPU to every request a person waits for: on two cores a frame
    # encoded during "Start processing" would show up in the diagnosis time.
    @app.hook("before_request")
    def hold_preview():
        if ctx.cameras is not None and _someone_waits():
            ctx.cameras.hold()
            request.environ[HOLD_KEY] = True

    @app.hook("after_request")
    def release_preview():
        # after_request runs even when an earlier hook refused the request; only release a hold
        # this request really took.
        if request.environ.pop(HOLD_KEY, False):
            ctx.cameras.release()

    def cameras():
        if ctx.cameras is None:
            raise _no_camera_configured()
        return ctx.cameras

    # --- kiosk side ----------------------------------------------------------------------------
    @app.get("/api/camera")
    def status():
        auth.require(*VIEW_ROLES)
        return camera_status(ctx)

    @app.get("/api/camera/preview.jpg")
    def preview():
        auth.require(*VIEW_ROLES)
        try:
            after = int(request.query.get("after")) if request.query.get("after") else None
        except ValueError:
            after = None
        try:
            frame = cameras().latest(after=after, timeout=LONG_POLL_SECONDS if after is not None else 5.0)
        except CameraUnavailable as exc:
            return _unavailable(exc, ctx.cameras.describe()["state"] if ctx.cameras else "none")
        return bottle.HTTPResponse(body=frame.jpeg, headers={
            "Content-Type": "image/jpeg", "Cache-Control": "no-store",
            "X-Frame-Seq": str(frame.seq), "X-Camera-State": ctx.cameras.describe()["state"]})

    @app.get("/api/camera/stream.mjpg")
    def stream():
        auth.require(*VIEW_ROLES)
        manager = cameras()
        session_id = request.get_cookie(auth.SESSION_COOKIE)

        def alive() -> bool:
            # A stream outlives its page's session otherwise (idle logout, log out elsewhere).
            return ctx.sessions.get(session_id, touch=False) is not None

        def parts():
            for frame in manager.stream(alive):
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n"
                       f"X-Frame-Seq: {frame.seq}\r\n\r\n").encode("ascii") + frame.jpeg + b"\r\n"

        bottle.response.content_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        bottle.response.set_header("Cache-Control", "no-store")
        return parts()

    @app.post("/api/camera/capture")
    def capture():
        user = auth.require_permission("diagnose")
        draft_id = _draft_id()
        ctx.drafts.get(draft_id, owner=user["username"])       # the exam must be open, and theirs
        try:
            jpeg = cameras().capture()
        except CameraUnavailable as exc:
            return _unavailable(exc, ctx.cameras.describe()["state"] if ctx.cameras else "none")
        draft = ctx.drafts.attach_image(draft_id, jpeg, "camera")
        return {"draft": draft.summary()}

    @app.post("/api/camera/phone-link")
    def phone_link():
        user = auth.require_permission("diagnose")
        draft_id = _draft_id()
        ctx.drafts.get(draft_id, owner=user["username"])
        host = phone_host(ctx.cfg.server)
        if host is None:
            raise UserError(N_("Phones cannot reach this kiosk: it listens on this box only."),
                            N_("A technician sets [server] lan_host to this box's address on the health post's "
                               "network (see docs/camera.md), or use the camera or a file."))
        # The phones' own listener when it runs (it serves the phone pages only), else this one.
        port = ctx.phone_port or request.urlparts.port or ctx.cfg.server.port
        link = links.create(draft_id, user["username"])
        url = phone_url(host, port, link.token)
        return {"url": url, "qr_svg": qr_svg(url), "expires_in": int(link.seconds_left(link.created))}

    # --- phone side ----------------------------------------------------------------------------
    def refused(exc: UserError, status: int = 410):
        return bottle.HTTPResponse(status=status, body=ctx.render(
            "phone_refused.html", message=_(exc.message), hint=_(exc.hint) if exc.hint else None))

    def upload_page(token: str, error: UserError | None = None, status: int = 200):
        link = links.check(token)
        return bottle.HTTPResponse(status=status, body=ctx.render(
            "phone_upload.html", token=token, max_mb=ctx.cfg.server.max_upload_mb,
            minutes_left=max(1, round(links.seconds_left(link) / 60)),
            error=_(error.message) if error else None,
            error_hint=_(error.hint) if error and error.hint else None))

    def open_link(token: str):
        """The link, refusing it when the exam it belongs to was closed in the meantime."""
        link = links.check(token)
        try:
            ctx.drafts.get(link.draft_id, owner=link.owner)
        except NotFound:
            links.revoke_draft(link.draft_id)
            raise _exam_closed() from None
        return link

    @app.get("/phone/<token>")
    def phone_page(token):
        try:
            open_link(token)
            return upload_page(token)
        except PhoneLinkRefused as exc:
            return refused(exc)

    @app.post("/phone/<token>")
    def phone_upload(token):
        try:
            return receive_photo(token)
        except PhoneLinkRefused as exc:
            return refused(exc)

    def receive_photo(token: str):
        open_link(token)
        upload = request.files.get("image")
        if upload is None:
            return upload_page(token, BadImage(N_("No photo was sent."), N_("Take the photo, then press Send.")), 400)
        data = upload.file.read(ctx.drafts.max_bytes + 1)
        try:
            links.redeem(token, lambda link: ctx.drafts.attach_image(link.draft_id, data, "phone"))
        except NotFound:
            raise _exam_closed() from None
        except BadImage as exc:
            # Nothing changed and the link still works: the nurse can take the photo again.
            return upload_page(token, exc, 413 if len(data) > ctx.drafts.max_bytes else 400)
        log.info("phone photo received for an open exam (%d bytes)", len(data))
        return ctx.render("phone_done.html")


def _exam_closed() -> PhoneLinkRefused:
    return PhoneLinkRefused(N_("The exam this link was made for is closed on the kiosk."),
                            N_("Ask for a new QR code on the kiosk screen and scan it again."))


def camera_status(ctx: AppContext) -> dict:
    """What the kiosk's camera panel and the Admin page show."""
    if ctx.cameras is None:
        exc = _no_camera_configured()
        info = {"state": "none", "configured": ctx.cfg.camera.backend, "backend": None,
                "message": _(exc.message), "hint": _(exc.hint)}
    else:
        info = ctx.cameras.describe()
        for key in ("message", "hint"):
            if info.get(key):
                info[key] = _(info[key])
    host = phone_host(ctx.cfg.server)
    info["phone"] = {"available": host is not None, "host": host,
                     "minutes": ctx.cfg.camera.phone_link_minutes}
    return info


def qr_svg(url: str) -> str:
    """The link as an inline SVG QR code (no script, no external file: fine under the CSP)."""
    import segno
    # A viewBox (omitsize) lets CSS size it; a 4-module quiet zone is what phone cameras expect.
    return segno.make(url, error="m").svg_inline(scale=6, border=4, dark="#000", light="#fff",
                                                 omitsize=True)
