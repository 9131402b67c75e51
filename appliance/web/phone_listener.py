"""The phones' own listener: the kiosk stays on ``[server] host`` (127.0.0.1), and phones on the
health post's network reach the colposcope upload pages and nothing else.

With ``[server] lan_host`` set, ``appliance serve`` opens a second waitress listener on that
address (port ``[server] phone_port``, else the kiosk's) in front of the same app, filtered by
``phone_only``: ``/phone/<token>`` and the few static files the phone page loads. Everything
else — the login page, ``/setup``, ``/healthz``, records, the API — is answered 404 before the
kiosk app sees the request, so plain HTTP on the LAN never carries a password or a session
cookie, and nobody on the network can try passwords or create the first administrator.
"""
from __future__ import annotations

import logging
import re
import threading

from ..camera.phone import ANY_HOSTS, LOOPBACK_HOSTS, phone_host
from .context import AppContext
from .headers import secured
from .paths import PHONE_PREFIX, PHONE_TOKEN, STATIC_PREFIX

log = logging.getLogger(__name__)

PHONE_PAGE = re.compile(f"^{PHONE_PREFIX}{PHONE_TOKEN}$")
# What phone_base.html loads (and the fonts its CSS may ask for).
PHONE_STATIC = frozenset({"/static/css/camera.css", "/static/js/camera.js", "/static/css/fonts.css", "/favicon.ico"})
PHONE_FONTS = STATIC_PREFIX + "fonts/"
THREADS = 2                       # one phone at a time in practice; the kiosk keeps its threads
_NOT_FOUND = b"Not found\n"


def phone_only(app):
    """``app`` answering only the phone pages; 404 for every other path or method."""
    def filtered(environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        page = PHONE_PAGE.match(path) and method in ("GET", "HEAD", "POST")
        static = (path in PHONE_STATIC or path.startswith(PHONE_FONTS)) and method in ("GET", "HEAD")
        if page or static:
            return app(environ, start_response)
        start_response("404 Not Found", secured(path, [("Content-Type", "text/plain; charset=utf-8"),
                                                       ("Content-Length", str(len(_NOT_FOUND))),
                                                       ("Cache-Control", "no-store")]))
        return [_NOT_FOUND]
    return filtered


def address(cfg, kiosk_host: str, kiosk_port: int) -> tuple[str, int] | None:
    """Where the phones' listener listens, or None when none is needed: no phones configured, or
    the kiosk's own listener already answers on that address (``host = 0.0.0.0``, discouraged)."""
    host = phone_host(cfg.server)
    if host is None or not cfg.server.lan_host or kiosk_host in ANY_HOSTS or host == kiosk_host:
        return None
    if kiosk_host not in LOOPBACK_HOSTS:
        log.warning("The kiosk listens on %s, not only on this box: passwords cross the network in clear "
                    "text. Keep [server] host = \"127.0.0.1\"; phones use lan_host.", kiosk_host)
    return host, cfg.server.phone_port or kiosk_port


class PhoneListener:
    """A running phones' listener; ``port`` is the one it got (phone links carry it)."""

    def __init__(self, server):
        self.server = server
        self.host, self.port = server.effective_host, server.effective_port
        self._thread = threading.Thread(target=server.run, name="phone-listener", daemon=True)
        self._thread.start()

    def close(self) -> None:
        # The sockets are closed by the loop's own thread (a thunk run through waitress's trigger):
        # closed from here, the loop's select() would fail on them ("Bad file descriptor"). With
        # nothing left in its map the loop ends and run() returns.
        def close_all() -> None:
            for dispatcher in list(self.server._map.values()):
                dispatcher.close()
        self.server.trigger.pull_trigger(close_all)
        self._thread.join(timeout=5)
        if self._thread.is_alive():          # the loop did not answer: close from here after all
            log.warning("the phones' listener did not stop in time; closing it")
            self.server.close()
        self.server.task_dispatcher.shutdown(timeout=5)


def start(ctx: AppContext, kiosk_host: str, kiosk_port: int, create) -> PhoneListener | None:
    """Open the phones' listener when the configuration asks for one; ``create(app, host, port,
    threads)`` makes the waitress server (server.py's, so both listeners share its limits)."""
    where = address(ctx.cfg, kiosk_host, kiosk_port)
    if where is None:
        return None
    listener = PhoneListener(create(phone_only(ctx.app), where[0], where[1], THREADS))
    ctx.phone_port = listener.port
    log.info("Phone colposcope pages (only those) on http://%s:%s/phone/", listener.host, listener.port)
    return listener
