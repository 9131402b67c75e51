"""Helpers for the kiosk's tests: a real waitress server on 127.0.0.1 and a small HTTP client.

``live_server`` (fixture, in ``tests/conftest.py`` via ``pytest_plugins`` or imported from here)
serves the real app from a temporary data folder with the ``tiny_pack`` models. ``Client`` is
a cookie-keeping ``http.client`` wrapper that does NOT follow redirects, so tests see exactly
what the server answered.
"""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

ADMIN = ("admin", "admin-pass-2026")
NURSE = ("nurse1", "nurse-pass-2026")
DOCTOR = ("doctor1", "doctor-pass-2026")
SUPERVISOR = ("super1", "super-pass-2026")

# The one way tests start Chromium: the system's browser (never a downloaded one), headless.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
VERSION_RE = re.compile(r'name="version" value="(\d+)"')      # the image-step form's image version
ANYWAY_RE = re.compile(r'name="anyway" value="1"')           # its "Analyse anyway" (an image that failed the gate)


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes
    set_cookies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class Client:
    """One browser: keeps cookies, never follows redirects, knows the page's CSRF token."""

    def __init__(self, base_url: str, source_address: str | None = None):
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        # Connect from this local address (another "device": 127.0.0.x is still this machine).
        self.source = (source_address, 0) if source_address else None
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    # -- raw requests ------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=self.source)
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=hdrs)
            res = conn.getresponse()
            data = res.read()
            set_cookies = res.headers.get_all("Set-Cookie") or []
            out = Response(res.status, {k.lower(): v for k, v in res.getheaders()}, data, set_cookies)
        finally:
            conn.close()
        for raw in set_cookies:
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                expired = morsel["max-age"] == "0" or "1970" in morsel["expires"] or not morsel.value
                if expired:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        if out.headers.get("content-type", "").startswith("text/html"):
            match = CSRF_RE.search(out.text)
            if match:
                self.csrf = match.group(1)
        return out

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: dict | None = None, *, files: dict | None = None, csrf: bool = True,
             headers: dict | None = None) -> Response:
        fields = dict(data or {})
        if csrf and "csrf_token" not in fields and self.csrf:
            fields["csrf_token"] = self.csrf
        if files:
            body, ctype = multipart(fields, files)
        else:
            body, ctype = urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
        return self.request("POST", path, body=body, headers={"Content-Type": ctype, **(headers or {})})

    # -- the kiosk's steps -------------------------------------------------------------------
    def login(self, username: str, password: str) -> Response:
        self.get("/login")
        res = self.post("/login", {"username": username, "password": password})
        if res.status == 303:
            self.get("/")          # picks up the session's CSRF token
        return res

    def register_patient(self, pid: str, full_name: str, **extra) -> Response:
        self.get("/diagnose")
        values = {"pid": pid, "full_name": full_name, "age_years": "40", "sex": "female"}
        values.update(extra)
        return self.post("/patients", values)

    def new_draft(self, patient_uuid: str, analysis: str) -> str:
        self.get(f"/patients/{patient_uuid}")
        res = self.post("/drafts", {"patient_uuid": patient_uuid, "analysis": analysis})
        assert res.status == 303, res.text[:500]
        return res.location.rsplit("/", 1)[-1]

    def upload(self, draft_id: str, data: bytes, filename: str = "image.jpg",
               content_type: str = "image/jpeg") -> Response:
        self.get(f"/drafts/{draft_id}")
        return self.post(f"/drafts/{draft_id}/image", files={"image": (filename, data, content_type)})

    def process(self, draft_id: str, version: int | None = None, **kw) -> Response:
        """"Start processing" as the nurse does it: look at the image step, then post its form
        (which carries the version of the image shown)."""
        fields = {}
        if version is None:
            page = self.get(f"/drafts/{draft_id}")
            match = VERSION_RE.search(page.text)
            version = int(match.group(1)) if match else 0
            if ANYWAY_RE.search(page.text):      # the one button the page offers then: "Analyse anyway"
                fields["anyway"] = "1"
        return self.post(f"/drafts/{draft_id}/process", {"version": version, **fields}, **kw)


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "----bccdms" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode())
        out.write(str(value).encode() + b"\r\n")
    for name, (filename, data, ctype) in files.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class FakeClock:
    """A monotonic clock the test moves forward (idle logout without waiting minutes)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class LiveServer:
    url: str
    cfg: object
    ctx: object
    server: object
    thread: threading.Thread
    clock: FakeClock

    def client(self) -> Client:
        return Client(self.url)

    def logged_in(self, who: tuple[str, str]) -> Client:
        """A new client logged in as ``who`` (username, password)."""
        client = self.client()
        assert client.login(*who).status == 303
        return client

    def stop(self) -> None:
        self.server.close()
        self.thread.join(timeout=15)


def web_config(cfg, pack: Path, pack_key, **server):
    """``cfg`` on the tiny pack (trusted), with server settings overridden."""
    from appliance import signing
    cfg.inference.demo_pack = str(pack)
    cfg.inference.runtime = "onnxruntime"
    cfg.security.trusted_model_keys = [signing.public_b64(pack_key)]
    cfg.post.name = "Test health post"
    cfg.camera.backend = "none"
    for key, value in server.items():
        setattr(cfg.server, key, value)
    return cfg


def start_server(cfg) -> LiveServer:
    """Serve the real app under waitress on a free port, in this process (so tests reach ctx)."""
    from appliance.web import server as web_server

    ready = threading.Event()
    holder: dict = {}
    clock = FakeClock()

    def on_ready(server, ctx):
        # Sessions run on a clock the test controls; everything else is real.
        ctx.sessions._clock = clock
        holder.update(server=server, ctx=ctx)
        ready.set()

    def run():
        try:
            web_server.serve(cfg, host="127.0.0.1", port=0, on_ready=[on_ready])
        except BaseException as exc:   # surfaces in the test instead of hanging it
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()
    if not ready.wait(120):
        raise RuntimeError("the server did not start in 120 s")
    if "error" in holder:
        raise holder["error"]
    server = holder["server"]
    url = f"http://127.0.0.1:{server.effective_port}"
    return LiveServer(url, cfg, holder["ctx"], server, thread, clock)


def jpeg_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def first_image(datasets: Path, dataset: str, label: str | None = None, kind: str = "eval") -> Path:
    root = datasets / dataset / kind
    folders = [root / label] if label else sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if files:
            return files[0]
    raise FileNotFoundError(f"no image under {root}")


def make_users(live: LiveServer) -> None:
    """The four roles, created straight in the store (the admin page has its own tests)."""
    users = live.ctx.store.users
    for (name, password), role in ((ADMIN, "admin"), (NURSE, "nurse"), (DOCTOR, "doctor"),
                                   (SUPERVISOR, "supervisor")):
        if users.get(name) is None:
            users.create(name, password, role, display_name=name.title(), by=None)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def browser_login(page, base_url: str, username: str, password: str) -> None:
    """Log in through the login form of a Playwright page and wait for the home page."""
    page.goto(base_url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def web_cfg(cfg, tiny_pack, pack_key):
    return web_config(cfg, tiny_pack, pack_key)


@pytest.fixture
def live_server(web_cfg):
    """A fresh kiosk on an empty temporary data folder (no users: first-run state)."""
    live = start_server(web_cfg)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def staffed_server(live_server):
    """``live_server`` with an admin, a nurse, a doctor and a supervisor."""
    make_users(live_server)
    return live_server




@contextlib.contextmanager
def chromium_browser():
    """The system Chromium, headless, driven by Playwright (for fixtures of a wider scope)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser():
    """The system Chromium, headless, driven by Playwright (no downloaded browsers)."""
    with chromium_browser() as chromium:
        yield chromium
