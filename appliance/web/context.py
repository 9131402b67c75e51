"""What every route module shares: the store, the engine, the cameras, templates and i18n.

``AppContext`` is built once per server process (``server.serve``) and handed to each route
module's ``install(app, ctx)``. Extension points for other parts of the appliance:

- ``ctx.admin_panels``: ``(title, template)`` pairs (or ``(title, template, vars_fn)`` where
  ``vars_fn(ctx) -> dict``); the Admin page renders each template in a panel titled
  ``_(title)``. Mark the title with ``catalogue.N_`` so it is extracted for translation.
- ``ctx.home_buttons``: ``HomeButton`` entries (title, href, roles) shown on the home page
  beside the built-in ones (e.g. "Import from USB" for supervisors).
- ``ctx.drafts``: exams being prepared; an image source attaches its picture with
  ``ctx.drafts.attach_image(draft_id, jpeg_bytes, source)``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import bottle
import jinja2
from markupsafe import Markup, escape

from .. import catalogue
from .. import i18n as default_i18n
from ..config import CHECKOUT_DIR, Config
from . import roles
from .drafts import DraftStore
from .sessions import Session, SessionStore

KIOSK_DIR = CHECKOUT_DIR / "kiosk"
TEMPLATES_DIR = KIOSK_DIR / "templates"
STATIC_DIR = KIOSK_DIR / "static"

# Keys under which the request's session and language travel in the WSGI environ.
ENV_SESSION = "bccdms.session"
ENV_LANG = "bccdms.lang"
ENV_ANON_CSRF = "bccdms.anon_csrf"


@dataclass(frozen=True)
class HomeButton:
    title: str                   # English source text, translated at render time
    href: str
    roles: tuple[str, ...]
    icon: str = ""


def current_session() -> Session | None:
    return bottle.request.environ.get(ENV_SESSION)


class Translator:
    """The gettext functions for one language, in the forms templates and Python use.

    ``_("Hello %(name)s", name=x)`` formats after translating, like Jinja2's "newstyle"
    gettext: the translation is trusted markup, the values are escaped.
    """

    def __init__(self, translations, *, markup: bool):
        self._t = translations
        self._markup = markup

    def gettext(self, text: str, **values) -> str:
        out = self._t.gettext(text)
        if self._markup:
            out = Markup(out)
            return out % {k: escape(v) for k, v in values.items()} if values else out
        return out % values if values else out

    def ngettext(self, singular: str, plural: str, n: int, **values) -> str:
        values.setdefault("num", n)
        out = self._t.ngettext(singular, plural, n)
        if self._markup:
            return Markup(out) % {k: escape(v) for k, v in values.items()}
        return out % values


def request_language(ctx: "AppContext") -> str:
    lang = bottle.request.environ.get(ENV_LANG)
    if lang:
        return lang
    session = current_session()
    if session and session.language in ctx.i18n.LANGUAGES:
        return session.language
    cookie = bottle.request.get_cookie("bccdms_lang")
    if cookie in ctx.i18n.LANGUAGES:
        return cookie
    return ctx.cfg.ui.default_language if ctx.cfg.ui.default_language in ctx.i18n.LANGUAGES else "en"


def request_calendar(ctx: "AppContext") -> str:
    """How this request's dates are shown and typed: the user's calendar, else the box's default."""
    from ..i18n.dates import CALENDARS, GREGORIAN
    session = current_session()
    if session and session.calendar in CALENDARS:
        return session.calendar
    return ctx.cfg.ui.calendar if ctx.cfg.ui.calendar in CALENDARS else GREGORIAN


def current_context() -> "AppContext | None":
    return bottle.request.environ.get("bccdms.ctx")


def _(text: str, **values) -> str:
    """Translate a Python-side sentence into the current request's language."""
    ctx = bottle.request.environ.get("bccdms.ctx")
    if ctx is None:
        return text % values if values else text
    return Translator(ctx.i18n.get_translations(request_language(ctx)), markup=False).gettext(text, **values)


def ngettext(singular: str, plural: str, n: int, **values) -> str:
    ctx = bottle.request.environ.get("bccdms.ctx")
    if ctx is None:
        values.setdefault("num", n)
        return (singular if n == 1 else plural) % values
    return Translator(ctx.i18n.get_translations(request_language(ctx)), markup=False).ngettext(
        singular, plural, n, **values)


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
        self.cfg = cfg
        self.store = store
        self.engine = engine
        self.cameras = cameras
        self.i18n = i18n or default_i18n
        self.app = None               # the bottle.Bottle, set by create_app
        self.admin_panels: list[tuple] = []
        self.home_buttons: list[HomeButton] = []
        self.sessions = SessionStore(idle_seconds=cfg.server.idle_logout_minutes * 60)
        self.drafts = DraftStore(max_bytes=cfg.server.max_upload_mb * 1024 * 1024,
                                 folder=cfg.data_dir / "drafts", prepare=self._prepare_upload)
        self.results = ResultCache()
        self.phone_port: int | None = None    # the phones' own listener, when it runs (phone_listener.py)
        self.previews = ResultCache(size=16)     # preview JPEGs of the latest exams
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True, lstrip_blocks=True)
        # Globals follow the current request, so macros imported without context (and
        # {% trans %} blocks) still translate and still get this client's CSRF token.
        # (Jinja2's "newstyle" wrappers do the %-formatting and escaping.)
        self.templates.install_gettext_callables(
            lambda text: self._request_translations().gettext(text),
            lambda singular, plural, n: self._request_translations().ngettext(singular, plural, n),
            newstyle=True)
        from . import views         # here: views reads this module's request helpers
        self.templates.globals.update(catalogue=catalogue, csrf_token=_RequestCsrfToken(), views=views)
        self.templates.filters["pct"] = _percent

    def _prepare_upload(self, data, analysis_id: str):
        """An arriving image prepared once for its analysis: safe decode within the engine's
        memory budget, quality gate, model crops, preview (its file stays with the draft)."""
        if self.engine is not None:
            return self.engine.prepare(data, analysis_id, keep_bytes=False)
        from ..inference import imageio, prepared
        return prepared.prepare(imageio.decode(data, self.cfg.inference.max_image_pixels), [], None,
                                keep_bytes=False)

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
            "csrf_token": session.csrf_token if session else _anon_csrf_token(),
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


class _RequestCsrfToken:
    """``{{ csrf_token }}`` for templates rendered without the page's context."""

    def __str__(self) -> str:
        session = current_session()
        return session.csrf_token if session else _anon_csrf_token()

    def __html__(self) -> str:
        return str(escape(str(self)))


def _anon_csrf_token() -> str:
    from .auth import anon_csrf_token
    return anon_csrf_token()


def _percent(value: float, digits: int = 0) -> str:
    try:
        return f"{float(value) * 100:.{digits}f} %"
    except (TypeError, ValueError):
        return ""
