"""What an outside attack run found (issue 13), each fixed and kept fixed: malformed requests get a
400 with a sentence, every error page carries the security headers, the login page does not tell
which accounts exist, the kiosk's own screen is never locked out, a changed account is told so,
the pre-login form token is bound to the box, and redirects never carry the client's Host.
Real server (waitress), real store, raw HTTP."""
from __future__ import annotations

import re
import secrets
import socket

import pytest

from test_web_security import PHONE_LAN, SLIDE, lan_server  # noqa: F401
from webutil import (ADMIN, DOCTOR, NURSE, Client, live_server, make_users, multipart,  # noqa: F401
                     staffed_server, start_server, web_cfg, web_config)

SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy")
UNREADABLE = "could not read what was sent"
ERROR_BANNER = re.compile(r'<div class="flash flash-error" role="alert">(.*?)</div>', re.S)


def assert_secured(res, what=""):
    for name in SECURITY_HEADERS:
        assert name in res.headers, (what, res.status, name, res.headers)
    assert res.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in res.headers["content-security-policy"]
    assert res.headers.get("cache-control") == "no-store", (what, res.status, res.headers.get("cache-control"))


def nul_multipart(fields: dict, files: dict | None = None) -> tuple[bytes, str]:
    """A multipart body whose first part carries a header with a NUL in it."""
    body, ctype = multipart(fields, files or {})
    first = body.index(b"\r\n\r\n")
    return body[:first] + b"\r\nX-Note: a\x00b" + body[first:], ctype


# --- malformed requests ------------------------------------------------------------------------
def test_a_nul_in_a_part_header_is_refused_with_a_sentence(staffed_server):
    anon = staffed_server.client()
    anon.get("/login")
    body, ctype = nul_multipart({"csrf_token": anon.csrf, "username": NURSE[0], "password": NURSE[1]})
    res = anon.request("POST", "/login", body=body, headers={"Content-Type": ctype})
    assert res.status == 400 and UNREADABLE in res.text and "Reload the page" in res.text
    assert_secured(res, "login")
    assert "bccdms_session" not in anon.cookies

    nurse = staffed_server.logged_in(NURSE)
    patient = staffed_server.ctx.store.patients.register("NUL-1", "Nul Test", age_years=30, by="nurse1")
    draft = nurse.new_draft(patient["uuid"], "pap_smear")
    body, ctype = nul_multipart({"csrf_token": nurse.csrf}, {"image": ("a.jpg", b"\xff\xd8 not much", "image/jpeg")})
    res = nurse.request("POST", f"/drafts/{draft}/image", body=body, headers={"Content-Type": ctype})
    assert res.status == 400 and UNREADABLE in res.text
    assert_secured(res, "upload")
    assert not staffed_server.ctx.drafts.get(draft).has_image          # nothing changed

    # A multipart body that never ends and broken JSON: the same sentence, never a 500.
    broken = nurse.request("POST", f"/drafts/{draft}/image", body=b"--B\r\nContent-Disposition: form-data",
                           headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert broken.status == 400 and UNREADABLE in broken.text
    api = nurse.request("POST", "/api/camera/capture", body=b'{"draft": ',
                        headers={"Content-Type": "application/json", "X-CSRF-Token": nurse.csrf})
    assert api.status == 400 and UNREADABLE in api.json()["error"]
    assert_secured(api, "api")


def test_a_nul_in_a_phone_upload_is_refused_on_a_phone_page(lan_server, datasets):
    live = lan_server
    nurse = live.logged_in(NURSE)
    patient = live.ctx.store.patients.register("NUL-2", "Phone Nul", age_years=30, by="nurse1")
    draft = nurse.new_draft(patient["uuid"], "cervix_type")
    link = nurse.request("POST", "/api/camera/phone-link", body=b'{"draft": "%s"}' % draft.encode(),
                         headers={"Content-Type": "application/json", "X-CSRF-Token": nurse.csrf}).json()
    port = live.ctx.phone_port
    path = link["url"][len(f"http://{PHONE_LAN}:{port}"):]
    phone = Client(f"http://{PHONE_LAN}:{port}")
    photo = (datasets / SLIDE).read_bytes()
    body, ctype = nul_multipart({}, {"image": ("photo.jpg", photo, "image/jpeg")})
    res = phone.request("POST", path, body=body, headers={"Content-Type": ctype})
    assert res.status == 400 and UNREADABLE in res.text and 'id="phone-error"' in res.text
    assert "Test health post" not in res.text                       # a phone page, no kiosk chrome
    assert_secured(res, "phone")
    # Nothing was read: the link still works.
    sent = phone.post(path, files={"image": ("photo.jpg", photo, "image/jpeg")}, csrf=False)
    assert sent.status == 200 and live.ctx.drafts.get(draft).source == "phone"


# --- the security headers on every answer ------------------------------------------------------
@pytest.fixture
def small_server(cfg, tiny_pack, pack_key):
    """A kiosk with a 1 MB upload limit and one free wrong password per address."""
    live = start_server(web_config(cfg, tiny_pack, pack_key, max_upload_mb=1, login_failures_per_address=1))
    make_users(live)
    live.ctx.login_limiter._clock = live.clock
    try:
        yield live
    finally:
        live.stop()


def test_every_error_page_carries_the_security_headers(small_server, monkeypatch):
    live = small_server
    anon = live.client()
    nurse = live.logged_in(NURSE)
    answers = {
        401: anon.get("/api/session"),
        403: nurse.get("/admin"),
        404: nurse.get("/no/such/page"),
        405: nurse.get("/logout"),
        413: nurse.post("/patients", files={"image": ("big.jpg", b"x" * (2 * 1024 * 1024 + 10), "image/jpeg")}),
    }
    guesser = live.client()
    guesser.login(DOCTOR[0], "wrong-pass-1")
    answers[429] = guesser.login(DOCTOR[0], "wrong-pass-2")
    answers[400] = nurse.request("POST", "/patients", body=b"--B\r\n",
                                 headers={"Content-Type": "multipart/form-data; boundary=B"})

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(live.ctx.store, "stats", broken)
    answers[500] = nurse.get("/statistics")
    for status, res in answers.items():
        assert res.status == status, (status, res.status, res.text[:300])
        assert_secured(res, status)
    assert "may or may not have been saved" in answers[500].text

    # Waitress's own answer to a request it cannot parse at all.
    with socket.create_connection((anon.host, anon.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: kiosk\r\nContent-Length: nonsense\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 400")
    for name in SECURITY_HEADERS:
        assert f"\r\n{name}:" in head, name


# --- the login page ----------------------------------------------------------------------------
def test_a_locked_account_and_an_unknown_name_read_the_same(staffed_server):
    live = staffed_server
    tries = live.cfg.server.lockout_failures + 1
    real, unknown = Client(live.url, "127.0.0.11"), Client(live.url, "127.0.0.12")
    for _ in range(tries):
        locked = real.login(DOCTOR[0], "wrong-password-1")
        ghost = unknown.login("ghost1", "wrong-password-1")
    assert locked.status == ghost.status == 401
    assert ERROR_BANNER.search(locked.text).group(1) == ERROR_BANNER.search(ghost.text).group(1)
    assert "This account is locked" not in locked.text
    # The lockout itself holds: the right password does not help now, and the page reads the same.
    right = real.login(*DOCTOR)
    assert right.status == 401 and ERROR_BANNER.search(right.text).group(1) == ERROR_BANNER.search(ghost.text).group(1)


def test_the_kiosks_own_screen_is_slowed_down_never_locked_out(cfg, tiny_pack, pack_key):
    live = start_server(web_config(cfg, tiny_pack, pack_key, login_failures_per_address=3, lockout_failures=1000))
    try:
        make_users(live)
        live.ctx.login_limiter._clock = live.clock
        screen = Client(live.url, "127.0.0.1")       # the kiosk's own browser
        screen.get("/login")
        for _ in range(3):
            assert screen.post("/login", {"username": NURSE[0], "password": "guess-1234"}).status == 401
        # Past the free ones, each wrong password makes the next try wait longer: 2 s, then 4 s ...
        assert screen.post("/login", {"username": NURSE[0], "password": NURSE[1]}).status == 429
        live.clock.advance(2.1)
        assert screen.post("/login", {"username": NURSE[0], "password": "guess-1234"}).status == 401
        live.clock.advance(2.1)
        waiting = screen.post("/login", {"username": NURSE[0], "password": NURSE[1]})
        assert waiting.status == 429 and "Wait 2 seconds" in waiting.text
        # ... but never more than half a minute, however long the guessing went on.
        for _ in range(12):
            live.clock.advance(31)
            assert screen.post("/login", {"username": NURSE[0], "password": "guess-1234"}).status == 401
        live.clock.advance(31)
        assert screen.login(*NURSE).status == 303
    finally:
        live.stop()


def test_a_user_disabled_by_an_admin_is_told_the_account_changed(staffed_server):
    live = staffed_server
    nurse = live.logged_in(NURSE)
    admin = live.logged_in(ADMIN)
    admin.get("/admin")
    assert admin.post(f"/admin/users/{NURSE[0]}/disable", {"disabled": "1"}).status == 303
    res = nurse.get("/")
    assert res.status == 303 and res.location == "/login?changed=1"
    assert "account was changed" in nurse.get(res.location).text

    admin.post(f"/admin/users/{NURSE[0]}/disable", {"disabled": "0"})
    nurse = live.logged_in(NURSE)
    admin.get("/admin")
    assert admin.post(f"/admin/users/{NURSE[0]}/password",
                      {"password": "a-new-pass-2026", "password2": "a-new-pass-2026"}).status == 303
    assert nurse.get("/records").location == "/login?changed=1"


def test_the_pre_login_token_is_bound_to_the_box(staffed_server):
    live = staffed_server
    forger = live.client()
    chosen = secrets.token_urlsafe(24)
    forger.cookies["bccdms_presession"] = chosen
    res = forger.post("/login", {"username": NURSE[0], "password": NURSE[1], "csrf_token": chosen})
    assert res.status == 403 and "did not come from this kiosk" in res.text
    assert "bccdms_session" not in forger.cookies
    # The pair the box itself issued works.
    honest = live.client()
    honest.get("/login")
    assert honest.csrf != honest.cookies["bccdms_presession"]
    assert honest.post("/login", {"username": NURSE[0], "password": NURSE[1]}).status == 303


def test_redirects_never_carry_the_clients_host(staffed_server):
    live = staffed_server
    evil = {"Host": "evil.example"}
    anon = live.client()
    assert anon.get("/records", headers=evil).location == "/login"
    anon.get("/login", headers=evil)
    res = anon.post("/login", {"username": NURSE[0], "password": NURSE[1]}, headers=evil)
    assert res.status == 303 and res.location == "/"
    anon.get("/diagnose", headers=evil)
    res = anon.post("/patients", {"pid": "HOST-1", "full_name": "Host Test", "age_years": "30"}, headers=evil)
    assert res.status == 303 and res.location.startswith("/patients/")
    res = anon.post("/login/language", {"lang": "am", "back": "/records"}, headers=evil)
    assert res.location == "/records"
