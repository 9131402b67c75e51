"""The security headers every answer carries, pages and error pages alike, whatever made them:
a route, an error handler, bottle's own last-resort 500, the phones' listener's 404 or
waitress's own refusal of a malformed request."""
from __future__ import annotations

from .paths import is_static

SECURITY_HEADERS = {
    # Scripts only from the box's own files (no inline scripts: pass data in data-* attributes).
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
                                "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Pages and API answers may hold patient data: never kept in a cache (static files may be).
NO_STORE = ("Cache-Control", "no-store")


def secured(path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with every security header the answer lacks, and ``Cache-Control: no-store``
    (replacing any other) unless ``path`` is a static file."""
    present = {name.lower() for name, _value in headers}
    out = list(headers)
    out += [(name, value) for name, value in SECURITY_HEADERS.items() if name.lower() not in present]
    if not is_static(path):
        out = [(name, value) for name, value in out if name.lower() != "cache-control"] + [NO_STORE]
    return out


def securing(app):
    """A WSGI ``app`` whose every answer is ``secured`` (wraps ``start_response``)."""
    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")

        def start(status, headers, exc_info=None):
            return start_response(status, secured(path, headers), exc_info)
        return app(environ, start)
    return wrapped
