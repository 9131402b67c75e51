"""The composition root of the kiosk: ``AppContext`` holds what every route shares — the store,
the engine, the cameras, the sessions, the drafts, templates and i18n.

It is built once per server process (``server.serve``) and handed to each route module's
``install(app, ctx)``; route handlers take it as their first argument. The request-local
helpers (session, language, ``_``) live in request.py. Extension points for other parts:

- ``ctx.admin_panels``: ``(title, template)`` pairs (or ``(title, template, vars_fn)`` where
  ``vars_fn(ctx) -> dict``); the Admin page renders each template in a panel titled
  ``_(title)``. Mark the title with ``catalogue.N_`` so it is extracted for translation.
- ``ctx.home_buttons``: ``HomeButton`` entries (title, href, roles) shown on the home page
  beside the built-in ones (e.g. "Import from USB" for supervisors).
- ``ctx.drafts``: exams being prepared; an image source attaches its picture with
  ``ctx.drafts.attach_image(draft_id, jpeg_bytes, source)``.
- ``ctx.jobs``: background tasks with progress (USB export and import, model packs).
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import bottle
import jinja2

from .. import catalogue, signing
from .. import i18n as default_i18n
from ..camera import PhoneLinks
from ..config import CHECKOUT_DIR, Config
from ..errors import UserError
from ..exchange.keys import keys_dir
from ..fsutil import write_secret
from ..inference import imageio
from . import roles, views
from .drafts import DraftStore
from .jobs import Jobs
from .login_limit import LoginLimiter

# (_, current_context, ngettext: still importable from here by code written before request.py)
from .request import (  # noqa: F401
    RequestCsrfToken,
    Translator,
    _,
    csrf_token,
    current_context,
    current_session,
    ngettext,
    request_calendar,
    request_language,
)
from .sessions import SessionStore

log = logging.getLogger(__name__)

KIOSK_DIR = CHECKOUT_DIR / "kiosk"
TEMPLATES_DIR = KIOSK_DIR / "templates"
STATIC_DIR = KIOSK_DIR / "static"
PRESESSION_SECRET = "web_presession.key"     # in <data>/keys, beside the post's other secrets


@dataclass(frozen=True)
class HomeButton:
    title: str                   # English source text, translated at render time
    href: str
    roles: tuple[str, ...]
    icon: str = ""


class ResultCache:
    """A small LRU by exam uuid: the engine's last results (the heatmap is drawn on request
    without running the models again) and the latest preview images. Bounded: each result
    holds a feature map and an image."""

    def __init__(self, size: int = 6):
        self._size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, result: Any) -> None:
        with self._lock:
            self._items[key] = result
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, key: str) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item


class AppContext:
    def __init__(self, cfg: Config, store, engine, cameras=None, i18n=None):
        server = cfg.server
        self.cfg = cfg
        self.store = store
        self.engine = engine
        self.cameras = cameras
        self.i18n = i18n or default_i18n
        self.app = None               # the bottle.Bottle, set by create_app
        self.admin_panels: list[tuple] = []
        self.home_buttons: list[HomeButton] = []
        self.sessions = SessionStore(idle_seconds=server.idle_logout_minutes * 60)
        self.drafts = DraftStore(max_bytes=server.max_upload_mb * 1024 * 1024,
                                 decode=self._decode_upload,
                                 check_quality=engine.check_quality if engine is not None else None)
        self.results = ResultCache()
        self.previews = ResultCache(size=16)     # preview JPEGs of the latest exams
        self.jobs = Jobs()
        self.login_limiter = LoginLimiter(server.login_failures_per_address,
                                          server.login_failure_window_minutes * 60)
        self.phone_links = PhoneLinks(cfg.camera.phone_link_minutes)
        self.phone_port: int | None = None    # the phones' own listener, when it runs (phone_listener.py)
        self.presession_secret = presession_secret(cfg)
        # Set by their route modules' install(): what only those routes use.
        self.bundle_inspections = None        # routes_exchange
        self.storage_use = None               # routes_admin
        self.pack_manager = None              # routes_models
        self.health_monitor = None            # routes_health
        self.templates = self._template_environment()

    def _template_environment(self) -> jinja2.Environment:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                                 extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
        # Globals follow the current request, so macros imported without context (and
        # {% trans %} blocks) still translate and still get this client's CSRF token.
        # (Jinja2's "newstyle" wrappers do the %-formatting and escaping.)
        env.install_gettext_callables(
            lambda text: self._request_translations().gettext(text),
            lambda singular, plural, n: self._request_translations().ngettext(singular, plural, n),
            newstyle=True)
        env.globals.update(catalogue=catalogue, csrf_token=RequestCsrfToken(), views=views)
        env.filters["pct"] = _percent
        return env

    def _decode_upload(self, data: bytes, analysis_id: str):
        """Safe decode of an uploaded image (the engine's reduced-scale JPEG path when it has one)."""
        if self.engine is not None:
            return self.engine.decode(data, catalogue.analysis(analysis_id))
        return imageio.decode(data, self.cfg.inference.max_image_pixels)

    def _request_translations(self):
        return self.i18n.get_translations(request_language(self))

    def error_text(self, exc) -> tuple[str, str | None]:
        """A UserError's sentence and hint in the request's language."""
        return self.i18n.error_text(exc, request_language(self))

    # -- rendering -------------------------------------------------------------------------
    def translator(self, lang: str | None = None, *, markup: bool = True) -> Translator:
        return Translator(self.i18n.get_translations(lang or request_language(self)), markup=markup)

    def render(self, template: str, **values) -> str:
        """A whole page: the template with the request's language, user, CSRF token and flashes."""
        return self._render(template, values, pop_flashes=True)

    def render_fragment(self, template: str, **values) -> str:
        """A part of a page (an admin panel): like ``render`` but leaves the flash messages."""
        return self._render(template, values, pop_flashes=False)

    def _render(self, template: str, values: dict, *, pop_flashes: bool) -> str:
        session = current_session()
        lang = request_language(self)
        tr = self.translator(lang)
        base = {
            "_": tr.gettext, "gettext": tr.gettext, "ngettext": tr.ngettext,
            "lang": lang, "languages": self.i18n.LANGUAGES, "calendar": request_calendar(self),
            "user": session.user if session else None,
            "csrf_token": csrf_token(),
            "flashes": session.pop_flashes() if session and pop_flashes else [],
            "idle_seconds": int(self.sessions.idle_seconds),
            "post_name": self.cfg.post.name,
            "demo": self.demo_active(),
            "request_path": bottle.request.path,
            "ctx": self,
            "can": lambda permission: roles.allowed(session.user if session else None, permission),
            "role_label": lambda role: tr.gettext(roles.ROLE_LABELS.get(role, role)),
        }
        base.update(values)
        return self.templates.get_template(template).render(base)

    # -- facts the pages show ---------------------------------------------------------------
    def demo_active(self) -> bool:
        """True when a result on this box can come from a demo model (every page then says so).
        A demo model that could only follow a trusted first step is never run, so it does not count."""
        if self.engine is None:
            return False
        try:
            return bool(self.engine.demo_in_use())
        except Exception:   # a broken pack must not take every page down; Admin shows why
            return False

    def available_analyses(self) -> list[catalogue.Analysis]:
        ids = set(self.engine.analyses()) if self.engine is not None else set()
        return [a for a in catalogue.ANALYSES.values() if a.id in ids]

    def close(self) -> None:
        if self.cameras is not None:
            try:
                self.cameras.stop()
            except Exception:
                pass
        if self.store is not None:
            self.store.close()


def presession_secret(cfg: Config) -> bytes:
    """This box's secret for pre-login form tokens (``<data>/keys/web_presession.key``), made on
    the first start. A damaged one is replaced: it only ends forms open before the login."""
    path = keys_dir(cfg) / PRESESSION_SECRET
    try:
        stored = path.read_text() if path.exists() else write_secret(path, _secret_text()).decode("ascii", "replace")
        secret = signing.unb64(stored, f"pre-login secret in {path}")
        if len(secret) == 32:
            return secret
    except UserError:
        pass
    log.warning("the pre-login secret in %s was damaged; a new one is made", path)
    return signing.unb64(write_secret(path, _secret_text(), replace=True).decode("ascii"), str(path))


def _secret_text() -> bytes:
    return (signing.b64(secrets.token_bytes(32)) + "\n").encode("ascii")


def _percent(value: float, digits: int = 0) -> str:
    try:
        return f"{float(value) * 100:.{digits}f} %"
    except (TypeError, ValueError):
        return ""
