"""Camera routes on the kiosk: live preview, capture into the open exam, phone colposcope links.

Kiosk side (logged in; JSON errors under ``/api/``):
    GET  /api/camera                  state, backend, message, phone availability (polled)
    GET  /api/camera/preview.jpg      the latest preview frame; ``?after=N`` waits for a newer one
    GET  /api/camera/stream.mjpg      the live view as an MJPEG stream
    POST /api/camera/capture          a full-resolution still becomes the exam's image
    POST /api/camera/phone-link       a one-time link (and its QR code) for the phone

The phone's own pages are in routes_phone. Captured and phone photos go through
``ctx.drafts.attach_image`` exactly like a chosen file, so the image the page shows, the
quality check and the analysis all use the same bytes. Preview requests are passive: watching
the live view does not keep an idle kiosk logged in.
"""
from __future__ import annotations

import bottle
import segno
from bottle import request

from ..camera import CameraUnavailable
from ..camera.phone import phone_host, phone_url
from ..catalogue import N_
from ..errors import UserError
from . import auth, guard
from .context import AppContext
from .lookups import draft_or_404
from .request import SESSION_COOKIE, _
from .responses import json_error
from .routing import add_routes

# Exact paths (a prefix would also make a capture passive); the status poll sends ?passive=1.
PASSIVE = ("/api/camera/preview.jpg", "/api/camera/stream.mjpg")
VIEW_ROLES = ("nurse", "doctor", "admin")       # admin: to check focus and orientation at set-up
BOUNDARY = "bccdms-frame"
LONG_POLL_SECONDS = 2.0
HOLD_KEY = "bccdms.camera_hold"


def status(ctx: AppContext):
    auth.require(*VIEW_ROLES)
    return camera_status(ctx)


def preview(ctx: AppContext):
    auth.require(*VIEW_ROLES)
    try:
        after = int(request.query.get("after")) if request.query.get("after") else None
    except ValueError:
        after = None
    try:
        frame = _cameras(ctx).latest(after=after, timeout=LONG_POLL_SECONDS if after is not None else 5.0)
    except CameraUnavailable as exc:
        return _unavailable(ctx, exc)
    return bottle.HTTPResponse(body=frame.jpeg, headers={
        "Content-Type": "image/jpeg", "X-Frame-Seq": str(frame.seq), "X-Camera-State": ctx.cameras.describe()["state"]})


def stream(ctx: AppContext):
    auth.require(*VIEW_ROLES)
    manager = _cameras(ctx)
    session_id = request.get_cookie(SESSION_COOKIE)

    def alive() -> bool:
        # A stream outlives its page's session otherwise (idle logout, log out elsewhere).
        return ctx.sessions.get(session_id, touch=False) is not None

    def parts():
        for frame in manager.stream(alive):
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n"
                   f"X-Frame-Seq: {frame.seq}\r\n\r\n").encode("ascii") + frame.jpeg + b"\r\n"

    bottle.response.content_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    return parts()


def capture(ctx: AppContext):
    user = auth.require_permission("diagnose")
    draft_id = _draft_id()
    draft_or_404(ctx, draft_id, user)       # the exam must be open, and theirs
    try:
        jpeg = _cameras(ctx).capture()
    except CameraUnavailable as exc:
        return _unavailable(ctx, exc)
    draft = ctx.drafts.attach_image(draft_id, jpeg, "camera")
    return {"draft": draft.summary()}


def phone_link(ctx: AppContext):
    user = auth.require_permission("diagnose")
    draft_id = _draft_id()
    draft_or_404(ctx, draft_id, user)
    host = phone_host(ctx.cfg.server)
    if host is None:
        raise UserError(N_("Phones cannot reach this kiosk: it listens on this box only."),
                        N_("A technician sets [server] lan_host to this box's address on the health post's "
                           "network (see docs/camera.md), or use the camera or a file."))
    # The phones' own listener when it runs (it serves the phone pages only), else this one.
    port = ctx.phone_port or request.urlparts.port or ctx.cfg.server.port
    link = ctx.phone_links.create(draft_id, user["username"])
    url = phone_url(host, port, link.token)
    return {"url": url, "qr_svg": qr_svg(url), "expires_in": int(link.seconds_left(link.created))}


ROUTES = (
    ("GET", "/api/camera", status),
    ("GET", "/api/camera/preview.jpg", preview),
    ("GET", "/api/camera/stream.mjpg", stream),
    ("POST", "/api/camera/capture", capture),
    ("POST", "/api/camera/phone-link", phone_link),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    for prefix in PASSIVE:
        if prefix not in guard.PASSIVE_PREFIXES:
            guard.PASSIVE_PREFIXES.append(prefix)
    ctx.admin_panels.append((N_("Camera"), "camera_admin.html", lambda c: {"camera": camera_status(c)}))
    app.add_hook("before_request", lambda: hold_preview(ctx))
    app.add_hook("after_request", lambda: release_preview(ctx))
    add_routes(app, ctx, ROUTES)


# -- the preview yields to people ------------------------------------------------------------
def hold_preview(ctx: AppContext) -> None:
    """The preview yields the CPU to every request a person waits for: on two cores a frame
    encoded during "Start processing" would show up in the diagnosis time."""
    if ctx.cameras is not None and _someone_waits():
        ctx.cameras.hold()
        request.environ[HOLD_KEY] = True


def release_preview(ctx: AppContext) -> None:
    # after_request runs even when an earlier hook refused the request; only release a hold
    # this request really took.
    if request.environ.pop(HOLD_KEY, False):
        ctx.cameras.release()


def _someone_waits() -> bool:
    """Whether a person waits for this request (a page, an upload, "Start processing"), as
    opposed to the preview itself, static files and background polls."""
    path = request.path
    return not (path.startswith(("/static/", "/api/camera")) or path == "/healthz"
                or request.get_header("X-Passive") == "1" or request.query.get("passive") == "1")


# -- helpers ---------------------------------------------------------------------------------
def _cameras(ctx: AppContext):
    if ctx.cameras is None:
        raise _no_camera_configured()
    return ctx.cameras


def _unavailable(ctx: AppContext, exc: CameraUnavailable) -> bottle.HTTPResponse:
    state = ctx.cameras.describe()["state"] if ctx.cameras else "none"
    return json_error(503, _(exc.message), _(exc.hint) if exc.hint else None, state=state)


def _no_camera_configured() -> CameraUnavailable:
    return CameraUnavailable(N_("The camera is switched off in the configuration."),
                             N_("Use the phone or a file, or ask the technician to set [camera] backend."))


def _draft_id() -> str:
    if request.json and isinstance(request.json, dict):
        return str(request.json.get("draft") or "")
    return request.forms.get("draft") or ""


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
    # A viewBox (omitsize) lets CSS size it; a 4-module quiet zone is what phone cameras expect.
    return segno.make(url, error="m").svg_inline(scale=6, border=4, dark="#000", light="#fff",
                                                 omitsize=True)
