"""The appliance running as systemd runs it, and the kiosk launcher in front of it.

- The real ``appliance serve`` process with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set talks to a
  Unix datagram socket this test binds (a file path, and Linux's abstract namespace), exactly as
  it talks to systemd: READY=1, WATCHDOG=1 pings, RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM.
- The watchdog stops pinging when the server stops answering (a real HTTP server, shut down).
- ``kiosk/launcher/bccdms-kiosk`` waits for /healthz, then opens the app in headless Chromium.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance import systemd_notify
from appliance.models_admin import PackManager
from inference_helpers import clone_pack, reseal
from serve_process import ServeProcess
from webutil import ADMIN, Client, wait_until

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "kiosk" / "launcher" / "bccdms-kiosk"


class NotifySocket:
    """What systemd listens on: a Unix datagram socket, at a path or in the abstract namespace."""

    def __init__(self, tmp_path: Path, abstract: bool):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"bccdms-test-{secrets.token_hex(6)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = tmp_path / "notify.sock"
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(message)
            if key in message and (value is None or message[key] == value):
                return message
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")

    def drain(self) -> list[dict[str, str]]:
        """The messages already waiting on the socket, without waiting for more."""
        got = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                got.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        self.messages += got
        return got

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    """A port nothing listens on now (only for the launcher tests, which need the address before
    any server exists; servers themselves bind port 0, see serve_process.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def box(tmp_path, tiny_pack, pack_key):
    """A data folder and a configuration file that trusts the tiny pack as the built-in one."""
    from appliance import signing
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    config = tmp_path / "config.toml"
    config.write_text(
        '[post]\nname = "Runtime test post"\n'
        f'[inference]\ndemo_pack = {json.dumps(str(tiny_pack))}\nruntime = "onnxruntime"\n'
        '[camera]\nbackend = "none"\n'
        f'[security]\ntrusted_model_keys = [{json.dumps(signing.public_b64(pack_key))}]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCDMS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(BCCDMS_DATA_DIR=str(data), BCCDMS_CONFIG=str(config))
    return {"data": data, "config": config, "env": env, "tmp": tmp_path}


@pytest.fixture
def serve(box):
    """Start ``appliance serve`` on a port it binds itself (``.port`` reads it back)."""
    started: list[ServeProcess] = []

    def start(port: int = 0, **extra_env: str) -> ServeProcess:
        served = ServeProcess({**box["env"], **extra_env}, box["tmp"] / f"serve-{secrets.token_hex(3)}.log", port)
        started.append(served)
        return served
    yield start
    for served in started:
        served.kill()


# -- READY, WATCHDOG, RELOADING, STOPPING ----------------------------------------------------
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_serve_tells_systemd_it_is_ready_and_pings_the_watchdog(box, serve, tmp_path, abstract):
    notify = NotifySocket(tmp_path, abstract)
    try:
        served = serve(NOTIFY_SOCKET=notify.env_value, WATCHDOG_USEC="1000000")   # pings every 0.5 s
        ready = notify.wait_for("READY", "1")
        assert ready["STATUS"] == f"Serving the kiosk on http://127.0.0.1:{served.port}/"
        # Ready means ready: the server answers at once.
        status, body = http_get(served.port, "/healthz?live=1")
        assert status == 200 and json.loads(body)["live"] is True
        for _ in range(3):                               # it keeps pinging (how often: the unit's business)
            notify.wait_for("WATCHDOG", "1", timeout=30)
        served.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1", timeout=20)
        code = served.stop(already_signalled=True)
        assert code == 0, f"exit {code}: {served.output()}"
    finally:
        notify.close()


def test_without_systemd_serve_runs_and_sends_nothing(box, serve):
    served = serve()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http_get(served.port, "/healthz?live=1", timeout=2)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        raise AssertionError(served.output())
    assert served.stop() == 0


def test_sighup_reloads_the_model_packs_while_serving(box, serve, tmp_path, tiny_pack, pack_key):
    """``systemctl reload bccdms`` and ``appliance models install`` beside the service: the
    running engine takes its models from the newly installed pack without a restart."""
    from appliance.config import load_config
    from appliance.store import Store
    cfg = load_config(config_file=box["config"], data_dir=box["data"], environ={})
    store = Store.open(cfg)
    store.users.create(*ADMIN, "admin", by=None)
    store.close()
    notify = NotifySocket(tmp_path, abstract=False)
    try:
        served = serve(NOTIFY_SOCKET=notify.env_value)
        notify.wait_for("READY", "1")
        client = Client(served.url)
        assert client.login(*ADMIN).status in (302, 303)
        assert "fresh-pack" not in client.get("/admin").text

        stick = tmp_path / "stick"
        stick.mkdir()
        PackManager(cfg).install(reseal(clone_pack(tiny_pack, stick / "fresh-pack"), pack_key,
                                        lambda m: m.update(pack_id="fresh-pack", version="3.1.4")))
        served.proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", "1", timeout=20)
        done = notify.wait_for("READY", "1", timeout=60)
        assert done["STATUS"] == "Model packs reloaded"
        page = client.get("/admin").text
        assert "fresh-pack" in page and "3.1.4" in page
        assert served.proc.poll() is None                # SIGHUP did not end the server
        assert served.stop() == 0
    finally:
        notify.close()


# -- the watchdog only pings while the server answers ----------------------------------------
class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args):
        pass


def test_watchdog_stops_pinging_when_the_server_stops_answering(tmp_path):
    notify = NotifySocket(tmp_path, abstract=False)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    env = {"NOTIFY_SOCKET": notify.env_value, "WATCHDOG_USEC": "400000"}     # every 0.2 s
    watchdog = systemd_notify.Watchdog(systemd_notify.http_probe("127.0.0.1", http.server_port, timeout=1), env)
    try:
        assert watchdog.enabled and watchdog.interval == pytest.approx(0.2)
        watchdog.start()
        notify.wait_for("WATCHDOG", "1", timeout=30)
        notify.wait_for("WATCHDOG", "1", timeout=30)
        http.shutdown()
        http.server_close()
        # Probes now fail; pings sent before that are drained, then two more failed rounds must
        # send nothing. Counted in rounds, not seconds, so a slow machine cannot fail it.
        wait_until(lambda: watchdog.missed >= 3, timeout=60)
        notify.drain()
        missed = watchdog.missed
        wait_until(lambda: watchdog.missed >= missed + 2, timeout=60)
        assert not [m for m in notify.drain() if "WATCHDOG" in m]
    finally:
        watchdog.stop()
        notify.close()


def test_watchdog_is_off_unless_systemd_asks_for_this_process():
    sock = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    assert systemd_notify.watchdog_interval({**sock, "WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd_notify.watchdog_interval({**sock, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd_notify.watchdog_interval({**sock, "WATCHDOG_USEC": "0"}) is None
    assert systemd_notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) is None
    assert systemd_notify.notify("READY=1", environ={}) is False


# -- the kiosk launcher ----------------------------------------------------------------------
def launcher(*args: str, home: Path, timeout: float = 180) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCDMS_", "DISPLAY", "WAYLAND_DISPLAY"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"))
    return subprocess.Popen(["/usr/bin/python3", str(LAUNCHER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.browser
def test_launcher_waits_for_the_server_then_opens_the_kiosk(box, serve, tmp_path):
    # The launcher needs the address before the server exists: if another process takes the
    # port first, the server says "already in use" and the test tries another port.
    for attempt in range(3):
        url = f"http://127.0.0.1:{(port := free_port())}/"
        proc = launcher("--url", url, "--headless-dump-dom", "--timeout", "120", home=tmp_path / f"home{attempt}")
        try:
            time.sleep(3)
            assert proc.poll() is None, proc.communicate()     # no server yet: it waits, it does not open
            served = serve(port)
            try:
                served.wait_listening()
            except AssertionError:
                if "already in use" in served.output():
                    continue
                raise
            out, err = proc.communicate(timeout=180)
            break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    else:
        raise AssertionError("three ports in a row were taken before the server could bind them")
    assert proc.returncode == 0, err
    assert f"waiting for the appliance at {url}" in err and f"opening {url}" in err
    # A fresh box: the kiosk's first-run page asks for the first administrator.
    assert "<html" in out and "Runtime test post" in out
    assert 'name="csrf_token"' in out


@pytest.mark.browser
def test_launcher_screenshot_of_the_kiosk_at_800x480(box, serve, tmp_path, artifacts_dir):
    served = serve()
    shot = artifacts_dir / "screenshots" / "kiosk-first-start.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    proc = launcher("--url", f"{served.url}/", "--headless-screenshot", str(shot),
                    "--timeout", "120", home=tmp_path / "home")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 800 and int.from_bytes(data[20:24], "big") == 480


def test_launcher_gives_up_after_its_timeout_with_a_clear_message(tmp_path):
    proc = launcher("--url", f"http://127.0.0.1:{free_port()}/", "--headless-dump-dom", "--timeout", "2",
                    home=tmp_path / "home")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "did not answer" in err and "Traceback" not in err


def test_launcher_reads_the_address_from_the_config_and_uses_the_kiosk_flags(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nport = 8181\n')
    proc = launcher("--config", str(config), "--print-command", home=tmp_path / "home")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    command = out.split()
    assert command[-1] == "http://127.0.0.1:8181/"
    for flag in ("--kiosk", "--noerrdialogs", "--disable-session-crashed-bubble", "--touch-events=enabled",
                 "--kiosk-printing", "--disable-pinch", "--overscroll-history-navigation=0",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        assert flag in command, flag
    assert "--no-sandbox" not in command and "--headless" not in command


def test_launcher_clears_chromiums_crash_state_after_a_power_cut(tmp_path):
    loader = importlib.machinery.SourceFileLoader("bccdms_kiosk", str(LAUNCHER))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("bccdms_kiosk", loader))
    loader.exec_module(module)
    prefs = tmp_path / "profile" / "Default" / "Preferences"
    prefs.parent.mkdir(parents=True)
    prefs.write_text(json.dumps({"profile": {"exit_type": "Crashed", "exited_cleanly": False, "name": "kiosk"}}))
    module.mark_clean_exit(tmp_path / "profile")
    profile = json.loads(prefs.read_text())["profile"]
    assert profile == {"exit_type": "Normal", "exited_cleanly": True, "name": "kiosk"}
