"""``appliance serve``: the kiosk's WSGI server (waitress, several threads).

Bottle's own server is single-threaded and stalls Chromium's parallel requests, so the app
runs under waitress with ``[server] threads`` worker threads; inference is serialised by the
engine's own lock, so parallel requests never run two models at once.

Start-up: the socket listens at once, in front of a ``startup.StartupGate``, while a thread
opens the record store and builds the app: the kiosk shows the start-up page with the opening's
progress (and ``/healthz`` says ``starting``) instead of nothing. The log line ``BCCDMS kiosk
listening on http://HOST:PORT`` comes when the app is ready.

Hooks: ``ON_READY`` / ``ON_STOP`` are lists of callables ``hook(server, ctx)`` run once the
app is ready (in the server's main thread: e.g. systemd READY=1, the watchdog thread, SIGHUP)
and when the server stops. ``serve(..., on_ready=[...])`` adds more for one call (tests use it
to learn the port).
"""
from __future__ import annotations

import _thread
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
from ..inference import memory
from ..inference.engine import Engine
from ..store import Store
from ..store.opening import OpeningProgress
from . import phone_listener
from .app import create_app
from .context import AppContext
from .headers import secured
from .startup import StartupGate

log = logging.getLogger(__name__)

Hook = Callable[[object, AppContext], None]
ON_READY: list[Hook] = []
ON_STOP: list[Hook] = []
# systemd (box part, appliance/systemd_notify.py): READY=1 and the watchdog once listening, SIGHUP
# reloads the model packs, STOPPING=1 on the way out. Each is a no-op outside systemd.
ON_READY.append(systemd_notify.on_server_ready)
ON_STOP.append(systemd_notify.on_server_stop)


def build_context(cfg: Config, progress: OpeningProgress | None = None) -> AppContext:
    """Open the store (``progress`` follows it), the engine (models load lazily) and the cameras
    for one server process."""
    store = Store.open(cfg, progress=progress)
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
    memory.tune_allocator()         # big image buffers go back to the system when freed
    opening = OpeningProgress(on_change=_opening_status)
    gate = StartupGate(cfg, opening)
    server = _listen(cfg, gate, host, port, max(2, cfg.server.threads))
    log.info("BCCDMS kiosk starting on http://%s:%s (opening the records)", server.effective_host,
             server.effective_port)
    start = _Start(cfg, server, gate, opening, host, [*ON_READY, *on_ready])
    stop_hooks = [*ON_STOP, *on_stop]
    previous = _stop_on_sigterm(start)
    try:
        start.thread.start()
        server.run()
    except (KeyboardInterrupt, SystemExit):
        if start.error is None:
            log.info("BCCDMS kiosk stopping")
    finally:
        ctx = start.finish()          # waits for an opening still under way
        if ctx is not None:
            # Cameras first: their streams end, so no worker thread writes to a closed server.
            _stop_cameras(ctx)
        if start.ready:
            for hook in stop_hooks:
                try:
                    hook(server, ctx)
                except Exception:
                    log.exception("stop hook failed")
        if start.phones is not None:
            start.phones.close()
        server.close()
        if ctx is not None:
            ctx.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        # systemd (box part): a model still compiling in native code when the interpreter exits
        # aborts the process (std::terminate, exit 134) on a stop during start-up; let it finish
        # first, well within the unit's TimeoutStopSec.
        if start.preloading is not None:
            start.preloading.join(timeout=25)
    if start.error is not None:
        raise start.error


def _opening_status(snapshot: dict) -> None:
    """systemd's STATUS= line while the records open (a no-op outside systemd)."""
    if snapshot["state"] == "opening":
        systemd_notify.status(f"Opening the records: {snapshot['percent']} %")


class _Start:
    """Opens the store and builds the app in a thread while the server already answers (with
    the start-up page); then hands the app to the gate and runs the ready hooks in the server's
    own thread. A failure stops the server, and ``serve`` raises it."""

    def __init__(self, cfg: Config, server, gate: StartupGate, opening: OpeningProgress, host: str,
                 ready_hooks: list[Hook]):
        self.cfg, self.server, self.gate, self.opening, self.host = cfg, server, gate, opening, host
        self.ready_hooks = ready_hooks
        self.ctx: AppContext | None = None
        self.phones = None
        self.preloading: threading.Thread | None = None
        self.error: BaseException | None = None
        self.ready = False
        self._stopping = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="opening-records", daemon=True)

    def _run(self) -> None:
        try:
            ctx = build_context(self.cfg, self.opening)
        except BaseException as exc:
            self._fail(exc)
            return
        with self._lock:
            if self._stopping:        # stopped while the records were opening
                ctx.close()
                return
            self.ctx = ctx
        try:
            app = create_app(ctx)
            # Phones get their own listener on the LAN (phone pages only); the kiosk stays on `host`.
            self.phones = phone_listener.start(ctx, self.host, self.server.effective_port,
                                               _phones_server(self.cfg))
        except BaseException as exc:
            self._fail(exc)
            return
        self.gate.ready(app)
        # systemd's hooks install signal handlers: they run in the server's (main) thread.
        self.server.trigger.pull_trigger(self._announce)

    def _announce(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self.ready = True
        log.info("BCCDMS kiosk listening on http://%s:%s", self.server.effective_host, self.server.effective_port)
        for hook in self.ready_hooks:
            try:
                hook(self.server, self.ctx)
            except Exception:
                log.exception("ready hook failed")
        self.preloading = _preload_in_background(self.ctx)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        if not isinstance(exc, UserError):
            self.opening.failed(f"{type(exc).__name__}: {exc}")
        log.error("the kiosk cannot start: %s", getattr(exc, "message", exc))
        _thread.interrupt_main()      # leave server.run(); serve() raises the error

    def finish(self) -> AppContext | None:
        """On the way out: no more starting; the context, once any opening still running ends."""
        with self._lock:
            self._stopping = True
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join()
        return self.ctx


def _stop_on_sigterm(start: _Start):
    """systemd stops the service with SIGTERM: leave the loop cleanly (store closed, camera freed).

    The cameras stop before the loop is left: waitress then waits for its worker threads, and a
    live MJPEG stream only ends when the cameras stop (otherwise it outlives the wait and writes
    to the closed server: "Bad file descriptor")."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        if start.ctx is not None:
            _stop_cameras(start.ctx)
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
