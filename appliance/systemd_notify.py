"""Tell systemd how the server is doing: READY, STATUS, STOPPING and the watchdog.

This is the ``sd_notify(3)`` datagram protocol spoken directly on ``$NOTIFY_SOCKET`` (a
filesystem path, or an abstract socket when it starts with ``@``), so the appliance needs no
libsystemd binding. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a cheap no-op.

The watchdog thread pings ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, but only while the
server really answers: each round it makes a real HTTP request to the server's own
``/healthz?live=1``. A hung server (every worker stuck, the accept loop dead) therefore stops
the pings and systemd restarts it, instead of a healthy-looking thread keeping a dead server alive.
"""
from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import threading
from typing import Callable, Mapping

log = logging.getLogger(__name__)


def _socket_address(environ: Mapping[str, str]) -> str | None:
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte instead of "@".
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    log.warning("NOTIFY_SOCKET=%r is not a Unix socket path; systemd notifications are off", address)
    return None


def notify(*states: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=value`` lines to systemd; True when a notify socket took them."""
    address = _socket_address(os.environ if environ is None else environ)
    if address is None:
        return False
    message = "\n".join(states).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message)
        except OSError as exc:
            log.warning("could not notify systemd (%s)", exc)
            return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping(text: str = "Stopping") -> bool:
    return notify("STOPPING=1", f"STATUS={text}")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half the watchdog timeout), or None when systemd wants none."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0 or _socket_address(env) is None:
        return None
    # WATCHDOG_PID names the process the watchdog is meant for; a child must not answer for it.
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1_000_000 / 2


def http_probe(host: str, port: int, path: str = "/healthz?live=1", timeout: float = 5.0) -> Callable[[], bool]:
    """A liveness check: True when the server at host:port answers ``path`` with HTTP 200."""
    # A server listening on every address is reached on loopback.
    target = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)

    def probe() -> bool:
        conn = http.client.HTTPConnection(target, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "bccdms-watchdog"})
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return probe


class Watchdog:
    """Pings ``WATCHDOG=1`` while ``is_alive()`` says the server answers."""

    def __init__(self, is_alive: Callable[[], bool], environ: Mapping[str, str] | None = None):
        self._env = dict(os.environ if environ is None else environ)
        self.interval = watchdog_interval(self._env)
        self._is_alive = is_alive
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.missed = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def start(self) -> "Watchdog":
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._is_alive():
                self.missed = 0
                notify("WATCHDOG=1", environ=self._env)
            else:
                self.missed += 1
                log.warning("the server did not answer its own health probe (%d in a row); "
                            "not pinging the systemd watchdog", self.missed)


# -- hooks for appliance.web.server (ON_READY / ON_STOP) ------------------------------------------
_running: dict[int, Watchdog] = {}


def on_server_ready(server, ctx) -> None:
    """The socket listens: READY=1, the watchdog thread, and SIGHUP = reload the model packs."""
    host, port = str(server.effective_host), int(server.effective_port)
    ready(f"Serving the kiosk on http://{host}:{port}/")
    _running[id(server)] = Watchdog(http_probe(host, port)).start()
    _reload_on_sighup(ctx)


def on_server_stop(server, ctx) -> None:
    stopping("Stopping the kiosk server")
    watchdog = _running.pop(id(server), None)
    if watchdog is not None:
        watchdog.stop()


def _reload_on_sighup(ctx) -> None:
    """``systemctl reload bccdms`` (and ``appliance models install``) send SIGHUP: load the new pack.

    Without this handler SIGHUP would end the server, and systemd counts that as a clean exit
    (no restart). The reload runs in a thread: a signal handler must not wait for inference.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    reload = getattr(getattr(ctx, "engine", None), "reload", None)

    def run() -> None:
        notify("RELOADING=1", "STATUS=Reloading the model packs")
        try:
            if reload is not None:
                reload()
            status_text = "Model packs reloaded"
        except Exception as exc:   # a bad pack: keep serving; the Admin page and doctor say why
            log.warning("model reload failed: %s", exc)
            status_text = f"Model reload failed: {exc}"
        notify("READY=1", f"STATUS={status_text}")

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(
        target=run, name="model-reload", daemon=True).start())
