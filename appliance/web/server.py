"""``appliance serve``: the kiosk's WSGI server (waitress, several threads).

Bottle's own server is single-threaded and stalls Chromium's parallel requests, so the app
runs under waitress with ``[server] threads`` worker threads; inference is serialised by the
engine's own lock, so parallel requests never run two models at once.

Hooks: ``ON_READY`` / ``ON_STOP`` are lists of callables ``hook(server, ctx)`` run once the
socket is listening (e.g. systemd READY=1 and the watchdog thread) and when the server stops.
``serve(..., on_ready=[...])`` adds more for one call (tests use it to learn the port).
"""
from __future__ import annotations

import errno
import logging
import signal
import threading
from typing import Callable, Iterable

import waitress
import waitress.channel
import waitress.server
import waitress.task

from .. import camera, systemd_notify
from ..config import Config
from ..errors import UserError
from ..inference.engine import Engine
from ..store import Store
from . import phone_listener
from .app import create_app
from .context import AppContext
from .headers import secured

log = logging.getLogger(__name__)

Hook = Callable[[object, AppContext], None]
ON_READY: list[Hook] = []
ON_STOP: list[Hook] = []
# systemd (box part, appliance/systemd_notify.py): READY=1 and the watchdog once listening, SIGHUP
# reloads the model packs, STOPPING=1 on the way out. Each is a no-op outside systemd.
ON_READY.append(systemd_notify.on_server_ready)
ON_STOP.append(systemd_notify.on_server_stop)


def build_context(cfg: Config) -> AppContext:
    """Open the store, the engine (models load lazily) and the cameras for one server process."""
    store = Store.open(cfg)
    try:
        engine = Engine.from_config(cfg)
    except Exception:
        store.close()
        raise
    return AppContext(cfg, store, engine, cameras=_open_cameras(cfg, engine))


def _open_cameras(cfg: Config, engine):
    """The one long-lived camera owner, or None when the camera part is not installed."""
    manager_cls = getattr(camera, "CameraManager", None)
    if manager_cls is None or cfg.camera.backend == "none":
        return None
    return manager_cls(cfg, busy=engine.busy)


def create_server(ctx: AppContext, host: str, port: int):
    return _listen(ctx.cfg, create_app(ctx), host, port, max(2, ctx.cfg.server.threads))


class _SecuredErrorTask(waitress.task.ErrorTask):
    """Waitress's own answer to a request it cannot parse (a broken request line or header),
    with the security headers the app's answers carry."""

    def execute(self):
        self.response_headers.extend(secured("", []))
        super().execute()


class _Channel(waitress.channel.HTTPChannel):
    error_task_class = _SecuredErrorTask


def _listen(cfg: Config, app, host: str, port: int, threads: int, settings: str = "host and port"):
    """A waitress server for ``app`` on ``host:port`` (the kiosk's, or the phones' listener)."""
    limit = cfg.server.max_upload_mb * 1024 * 1024
    try:
        server = waitress.create_server(
            app, host=host, port=port, threads=threads,
            # The app answers a too-large upload with a clear page; waitress stops absurd ones.
            max_request_body_size=2 * limit + 4 * 1024 * 1024,
            ident="BCCDMS", clear_untrusted_proxy_headers=True, channel_timeout=120)
        # Each listening socket (a host name may resolve to several) makes its channels with it.
        sockets = getattr(server, "map", None) or server._map
        for dispatcher in list(sockets.values()):
            if isinstance(dispatcher, waitress.server.BaseWSGIServer):
                dispatcher.channel_class = _Channel
        return server
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"The address {host}:{port} is already in use.",
                            "Another 'appliance serve' may be running: stop it, or use --port.") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise UserError(f"The server cannot listen on {host}:{port} ({exc.strerror}).",
                            f"Check [server] {settings} in the configuration.") from None
        raise


def _phones_server(cfg: Config):
    def create(app, host: str, port: int, threads: int):
        return _listen(cfg, app, host, port, threads, settings="lan_host and phone_port")
    return create


def serve(cfg: Config, *, host: str | None = None, port: int | None = None,
          on_ready: Iterable[Hook] = (), on_stop: Iterable[Hook] = ()) -> None:
    host = host or cfg.server.host
    port = cfg.server.port if port is None else port
    ctx = build_context(cfg)
    stop_hooks = [*ON_STOP, *on_stop]
    try:
        server = create_server(ctx, host, port)
    except BaseException:
        ctx.close()
        raise
    try:
        # Phones get their own listener on the LAN (phone pages only); the kiosk stays on `host`.
        phones = phone_listener.start(ctx, host, server.effective_port, _phones_server(cfg))
    except BaseException:
        server.close()
        ctx.close()
        raise
    previous = _stop_on_sigterm(ctx)
    preloading = None
    try:
        log.info("BCCDMS kiosk listening on http://%s:%s", server.effective_host, server.effective_port)
        for hook in [*ON_READY, *on_ready]:
            hook(server, ctx)
        preloading = _preload_in_background(ctx)
        server.run()
    except (KeyboardInterrupt, SystemExit):
        log.info("BCCDMS kiosk stopping")
    finally:
        # Cameras first: their streams end, so no worker thread writes to a closed server.
        _stop_cameras(ctx)
        for hook in stop_hooks:
            try:
                hook(server, ctx)
            except Exception:
                log.exception("stop hook failed")
        if phones is not None:
            phones.close()
        server.close()
        ctx.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        # systemd (box part): a model still compiling in native code when the interpreter exits
        # aborts the process (std::terminate, exit 134) on a stop during start-up; let it finish
        # first, well within the unit's TimeoutStopSec.
        if preloading is not None:
            preloading.join(timeout=25)


def _stop_on_sigterm(ctx: AppContext):
    """systemd stops the service with SIGTERM: leave the loop cleanly (store closed, camera freed).

    The cameras stop before the loop is left: waitress then waits for its worker threads, and a
    live MJPEG stream only ends when the cameras stop (otherwise it outlives the wait and writes
    to the closed server: "Bad file descriptor")."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        _stop_cameras(ctx)
        raise SystemExit(0)
    return signal.signal(signal.SIGTERM, stop)


def _stop_cameras(ctx: AppContext) -> None:
    """End every preview stream and long poll now and free the camera (idempotent)."""
    if ctx.cameras is None:
        return
    try:
        ctx.cameras.stop()
    except Exception:
        log.exception("stopping the cameras failed")


def _preload_in_background(ctx: AppContext) -> threading.Thread | None:
    """Load the models while the login screen is shown, so the first diagnosis is not slow."""
    preload = getattr(ctx.engine, "preload", None)
    if preload is None:
        return None

    def run():
        try:
            preload()
        except Exception as exc:   # the Admin page and the diagnosis itself report pack problems
            log.warning("model preload failed: %s", exc)
    thread = threading.Thread(target=run, name="model-preload", daemon=True)
    thread.start()
    return thread
