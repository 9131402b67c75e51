"""The kiosk's web security: redirects stay on the kiosk, a session follows what the CLI does to
its account, login attempts are limited per client address, and the phones' LAN listener serves
the phone pages and nothing else. Real server (waitress), real store, real HTTP."""
from __future__ import annotations

import subprocess
import sys

import pytest

from webutil import ADMIN, NURSE, Client, live_server, staffed_server, web_cfg  # noqa: F401


# --- redirects ---------------------------------------------------------------------------------
@pytest.mark.parametrize("back", ["/\\evil.com", "//evil.com", "http://evil.com/", "https:evil.com",
                                  "/\t/evil.com", "javascript:alert(1)", "\\\\evil.com", " //evil.com"])
def test_the_language_switch_never_redirects_off_the_kiosk(staffed_server, back):
    client = staffed_server.client()
    client.get("/login")
    res = client.post("/login/language", {"lang": "am", "back": back})
    assert res.status == 303
    assert res.location.endswith("/") and "evil" not in res.location and "javascript" not in res.location


def test_the_language_switch_goes_back_to_the_page_it_came_from(staffed_server):
    client = staffed_server.client()
    client.login(*NURSE)
    res = client.post("/login/language", {"lang": "om", "back": "/records?page=2"})
    assert res.status == 303 and res.location.endswith("/records?page=2")


# --- sessions follow the account ---------------------------------------------------------------
def cli(live, *args, stdin: str = "") -> None:
    """``appliance ...`` in its own process, on the live server's data folder (as a technician would)."""
    import os
    from pathlib import Path
    appliance = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "appliance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    done = subprocess.run([str(appliance), *args, "--data-dir", str(live.cfg.data_dir)], input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def logged_in(live, who=NURSE) -> Client:
    client = live.client()
    assert client.login(*who).status == 303
    assert client.get("/").status == 200
    return client


def refused(client: Client) -> bool:
    res = client.get("/")
    return res.status == 303 and "/login" in res.location


def test_a_cli_disable_or_password_change_ends_the_kiosk_session(staffed_server):
    live = staffed_server
    nurse = logged_in(live)
    # Someone else mistyping her password, or her logging in on another screen, changes nothing here.
    assert live.client().login(NURSE[0], "not-her-password").status == 401
    logged_in(live)
    assert nurse.get("/").status == 200
    cli(live, "user", "disable", NURSE[0])
    assert refused(nurse)
    assert "account was changed" in nurse.get("/login?changed=1").text
    cli(live, "user", "enable", NURSE[0])
    nurse = logged_in(live)
    cli(live, "user", "passwd", NURSE[0], stdin="a-brand-new-pass\n")
    assert refused(nurse)
    assert nurse.login(NURSE[0], "a-brand-new-pass").status == 303 and nurse.get("/").status == 200


def test_a_role_change_ends_the_session(staffed_server):
    live = staffed_server
    nurse = logged_in(live)
    live.ctx.store.users.update(NURSE[0], role="supervisor", by=ADMIN[0])
    assert refused(nurse)
    supervisor = logged_in(live)
    assert supervisor.get("/diagnose").status == 403          # the new role, not the old one


# --- the network -------------------------------------------------------------------------------
PHONE_LAN = "127.0.0.2"          # stands for the box's LAN address (a second address of this machine)
SLIDE = "iarc_colposcopy/originals/type_2/AAAZ_3_After_acetic_acid.jpg"


@pytest.fixture
def lan_server(cfg, tiny_pack, pack_key):
    from webutil import make_users, start_server, web_config
    live = start_server(web_config(cfg, tiny_pack, pack_key, lan_host=PHONE_LAN))
    make_users(live)
    try:
        yield live
    finally:
        live.stop()
    import threading
    assert not [t for t in threading.enumerate() if t.name == "phone-listener"]     # it stopped


def test_the_lan_listener_serves_the_phone_pages_and_nothing_else(lan_server, datasets):
    live = lan_server
    port = live.ctx.phone_port
    assert port and live.url.startswith("http://127.0.0.1:")          # the kiosk itself stays on this box
    lan = Client(f"http://{PHONE_LAN}:{port}")
    for path in ("/", "/login", "/setup", "/healthz", "/healthz?live=1", "/records", "/admin", "/api/session",
                 "/static/css/kiosk.css", "/static/js/kiosk.js", "/phone/", "/phone/../login", "/favicon.svg"):
        res = lan.get(path)
        assert res.status == 404 and b"BCCDMS" not in res.body, path
    for path in ("/login", "/setup", "/logout"):
        assert lan.post(path, {"username": "admin", "password": "x" * 12}, csrf=False).status == 404
    assert lan.get("/static/css/camera.css").status == 200 and lan.get("/static/js/camera.js").status == 200

    nurse = live.logged_in(NURSE)
    patient = live.ctx.store.patients.register("LAN-1", "Lan Test", age_years=30, by="nurse1")
    draft = nurse.new_draft(patient["uuid"], "cervix_type")
    link = nurse.request("POST", "/api/camera/phone-link", body=b'{"draft": "%s"}' % draft.encode(),
                         headers={"Content-Type": "application/json", "X-CSRF-Token": nurse.csrf}).json()
    prefix = f"http://{PHONE_LAN}:{port}/phone/"
    assert link["url"].startswith(prefix)
    path = link["url"][len(f"http://{PHONE_LAN}:{port}"):]
    page = lan.get(path)
    assert page.status == 200 and 'capture="environment"' in page.text
    photo = (datasets / SLIDE).read_bytes()
    sent = lan.post(path, files={"image": ("photo.jpg", photo, "image/jpeg")}, csrf=False)
    assert sent.status == 200 and live.ctx.drafts.get(draft).source == "phone"


def test_the_first_administrator_is_created_only_on_the_box(live_server):
    """/setup from another address (a WSGI request as waitress passes it, REMOTE_ADDR of a LAN
    phone or laptop) is refused; on the box it works."""
    import io
    from wsgiref.util import setup_testing_defaults

    def call(method: str, path: str, remote: str, body: bytes = b"", cookie: str = ""):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "REMOTE_ADDR": remote,
                   "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "HTTP_COOKIE": cookie}
        setup_testing_defaults(environ)
        answer = {}
        out = b"".join(live_server.ctx.app(environ, lambda status, headers, exc=None: answer.update(
            status=int(status.split()[0]), headers=headers)))
        return answer["status"], out.decode("utf-8", "replace"), answer["headers"]

    for remote in ("192.168.4.20", "::ffff:192.168.4.20", "fe80::1"):
        status, text, _headers = call("GET", "/setup", remote)
        assert status == 403 and "created on the kiosk" in text, remote
    status, text, headers = call("GET", "/setup", "127.0.0.1")
    assert status == 200
    cookie = next(v for k, v in headers if k == "Set-Cookie" and v.startswith("bccdms_presession=")).split(";")[0]
    token = __import__("re").search(r'name="csrf_token" value="([^"]+)"', text).group(1)
    form = f"csrf_token={token}&username=intruder&display_name=X&password=intruder-pass-1&password2=intruder-pass-1"
    status, text, _headers = call("POST", "/setup", "192.168.4.20", form.encode(), cookie)
    assert status == 403 and live_server.ctx.store.users.count() == 0


def test_login_attempts_are_limited_per_address(cfg, tiny_pack, pack_key):
    from webutil import DOCTOR, make_users, start_server, web_config
    live = start_server(web_config(cfg, tiny_pack, pack_key, login_failures_per_address=3,
                                   login_failure_window_minutes=1))
    try:
        make_users(live)
        live.ctx.login_limiter._clock = live.clock
        guesser = Client(live.url, source_address="127.0.0.9")
        guesser.get("/login")
        for name in ("nurse1", "doctor1", "super1"):
            assert guesser.post("/login", {"username": name, "password": "guess-1234"}).status == 401
        # The address waits now, whatever it tries, even a right password; no account is locked by it.
        for _ in range(8):
            res = guesser.post("/login", {"username": DOCTOR[0], "password": "guess-1234"})
            assert res.status == 429 and "Too many wrong passwords" in res.text
        assert guesser.post("/login", {"username": NURSE[0], "password": NURSE[1]}).status == 429
        # The kiosk's own screen (another address) is not held up.
        assert logged_in(live, DOCTOR).get("/").status == 200
        live.clock.advance(61)
        assert guesser.login(*NURSE).status == 303
    finally:
        live.stop()
