"""Routes are module-level functions ``handler(ctx, **url_args)``; each route module lists
them as ``(method, rule, handler)`` rows and registers them with ``add_routes`` in a short
``install(app, ctx)``. A handler can then be called in a test with a context and a request
environ of its own, without a server."""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import bottle

Route = tuple[str, str, Callable]


def bind(ctx, handler: Callable) -> Callable:
    """``handler`` with ``ctx`` as its first argument (named like it, for bottle's route list)."""
    @functools.wraps(handler)
    def route(*args, **url_args):
        return handler(ctx, *args, **url_args)
    return route


def add_routes(app: bottle.Bottle, ctx, routes: Iterable[Route]) -> None:
    for method, rule, handler in routes:
        app.route(rule, method, bind(ctx, handler))
