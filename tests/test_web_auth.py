"""The kiosk's gate: first-run admin, login and lockout, idle logout, CSRF, roles, anonymous refusal.

All against the real app under waitress on 127.0.0.1 (``live_server``), over HTTP.
"""
from __future__ import annotations

import re

import pytest

from appliance.web import auth
from webutil import ADMIN, DOCTOR, NURSE, SUPERVISOR, Client, live_server, make_users, staffed_server, web_cfg  # noqa: F401

SAMPLE_ARGS = {"uuid": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "draft_id": "A" * 22, "sha256": "a" * 64,
               "username": "nurse1", "path": "css/kiosk.css", "token": "x" * 20}


def _concrete(rule: str) -> str:
    """A real path for a route rule: each <name:...> filled with a value its filter accepts."""
    def fill(match):
        name = match.group(1).split(":")[0]
        return SAMPLE_ARGS.get(name, "x")
    return re.sub(r"<([^>]+)>", fill, rule)


def test_every_route_refuses_anonymous_clients(live_server):
    make_users(live_server)
    client = live_server.client()
    checked = 0
    for route in live_server.ctx.app.routes:
        path = _concrete(route.rule)
        if auth.is_public(path):
            continue
        res = client.request(route.method if route.method != "ANY" else "GET", path,
                             body=b"" if route.method in ("POST", "PUT", "DELETE") else None)
        if path.startswith("/api/"):
            assert res.status == 401, (route.method, route.rule, res.status)
            assert res.json()["error"]
        else:
            assert res.status == 303, (route.method, route.rule, res.status)
            assert res.location.endswith("/login") or "/login?" in res.location, route.rule
        assert b"Test health post" not in res.body or path == "/"
        checked += 1
    assert checked >= 25, "the app's route list looks too short"


def test_first_start_creates_the_admin_and_then_never_again(live_server):
    client = live_server.client()
    res = client.get("/login")
    assert res.status == 303 and res.location.endswith("/setup")
    page = client.get("/setup")
    assert page.status == 200 and "no default password" in page.text
    bad = client.post("/setup", {"username": "admin", "display_name": "Admin", "password": "a-long-pass",
                                 "password2": "another-pass"})
    assert bad.status == 400 and "not the same" in bad.text
    assert live_server.ctx.store.users.count() == 0
    ok = client.post("/setup", {"username": ADMIN[0], "display_name": "Admin", "password": ADMIN[1],
                                "password2": ADMIN[1]})
    assert ok.status == 303 and ok.location.endswith("/admin")
    assert live_server.ctx.store.users.get(ADMIN[0])["role"] == "admin"
    # A second first-run form (another tab, an attacker on the LAN) changes nothing.
    other = live_server.client()
    assert other.get("/setup").location.endswith("/login")
    other.get("/login")
    again = other.post("/setup", {"username": "evil", "password": "evil-pass-1", "password2": "evil-pass-1"})
    assert again.status == 303 and live_server.ctx.store.users.get("evil") is None


def test_login_sets_a_strict_httponly_session_cookie_and_wrong_passwords_lock_out(staffed_server):
    cfg = staffed_server.cfg
    client = staffed_server.client()
    res = client.login(*NURSE)
    assert res.status == 303
    cookie = next(c for c in res.set_cookies if c.startswith(auth.SESSION_COOKIE + "="))
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert client.get("/").status == 200

    other = staffed_server.client()
    for _ in range(cfg.server.lockout_failures):
        bad = other.login(DOCTOR[0], "wrong-password")
        assert bad.status == 401
    locked = other.login(*DOCTOR)             # the right password no longer helps
    assert locked.status == 401 and "lock" in locked.text.lower()
    assert auth.SESSION_COOKIE not in other.cookies
    actions = [e["action"] for e in staffed_server.ctx.store.audit.query(actor=DOCTOR[0])[0]]
    assert actions.count("login_failed") >= cfg.server.lockout_failures


def test_idle_session_expires_on_the_server(staffed_server):
    client = staffed_server.client()
    client.login(*NURSE)
    assert client.get("/").status == 200
    idle = staffed_server.cfg.server.idle_logout_minutes * 60
    staffed_server.clock.advance(idle - 5)
    assert client.get("/").status == 200                 # activity resets the timer
    staffed_server.clock.advance(idle - 5)
    # Background polls do not count as activity.
    assert client.get("/api/session", headers={"X-Passive": "1"}).status == 200
    staffed_server.clock.advance(10)
    res = client.get("/")
    assert res.status == 303 and "expired=1" in res.location
    assert client.get("/api/session").status == 401
    assert "nobody used the kiosk" in client.get("/login?expired=1").text


def test_logout_ends_the_session(staffed_server):
    client = staffed_server.client()
    client.login(*NURSE)
    old = dict(client.cookies)
    assert client.post("/logout").status == 303
    assert client.get("/").status == 303
    replay = Client(staffed_server.url)
    replay.cookies = old
    assert replay.get("/").status == 303


def test_state_changing_requests_need_the_csrf_token(staffed_server):
    client = staffed_server.client()
    client.login(*NURSE)
    before = staffed_server.ctx.store.patients.search("CSRF", limit=5)
    no_token = client.post("/patients", {"pid": "CSRF-1", "full_name": "Csrf Test", "age_years": "30"}, csrf=False)
    assert no_token.status == 403 and "did not come from this kiosk" in no_token.text
    wrong = client.post("/patients", {"pid": "CSRF-1", "full_name": "Csrf Test", "age_years": "30",
                                      "csrf_token": "forged"})
    assert wrong.status == 403
    # Another user's valid token does not work with this session.
    doctor = staffed_server.client()
    doctor.login(*DOCTOR)
    stolen = client.post("/patients", {"pid": "CSRF-1", "full_name": "Csrf Test", "age_years": "30",
                                       "csrf_token": doctor.csrf})
    assert stolen.status == 403
    api = client.request("POST", "/api/session/touch", body=b"{}")
    assert api.status == 403 and api.json()["error"]
    assert staffed_server.ctx.store.patients.by_pid("CSRF-1") is None
    assert staffed_server.ctx.store.patients.search("CSRF", limit=5) == before
    # The login form itself is protected before any session exists.
    anon = staffed_server.client()
    anon.get("/login")
    assert anon.post("/login", {"username": NURSE[0], "password": NURSE[1]}, csrf=False).status == 403


@pytest.mark.parametrize("who, path, allowed", [
    (NURSE, "/diagnose", True), (NURSE, "/records", True), (NURSE, "/admin", False),
    (DOCTOR, "/diagnose", True), (DOCTOR, "/admin", False),
    (SUPERVISOR, "/diagnose", False), (SUPERVISOR, "/records", True), (SUPERVISOR, "/statistics", True),
    (SUPERVISOR, "/admin", False),
    (ADMIN, "/admin", True), (ADMIN, "/records", False), (ADMIN, "/diagnose", False), (ADMIN, "/images", False),
    (ADMIN, "/statistics", True),
])
def test_roles_decide_what_each_user_sees(staffed_server, who, path, allowed):
    client = staffed_server.client()
    client.login(*who)
    res = client.get(path)
    assert res.status == (200 if allowed else 403), (who[0], path, res.status)
    if not allowed:
        assert "cannot open this page" in res.text


def test_home_shows_only_the_buttons_of_the_role(staffed_server):
    nurse = staffed_server.client()
    nurse.login(*NURSE)
    home = nurse.get("/").text
    assert 'href="/diagnose"' in home and 'href="/admin"' not in home
    admin = staffed_server.client()
    admin.login(*ADMIN)
    home = admin.get("/").text
    assert 'href="/admin"' in home and 'href="/diagnose"' not in home and 'href="/records"' not in home


def test_admin_creates_resets_and_disables_accounts(staffed_server):
    admin = staffed_server.client()
    admin.login(*ADMIN)
    admin.get("/admin")
    res = admin.post("/admin/users", {"username": "nurse2", "display_name": "Almaz", "role": "nurse",
                                      "password": "first-pass-1", "password2": "first-pass-1"})
    assert res.status == 303
    nurse2 = staffed_server.client()
    assert nurse2.login("nurse2", "first-pass-1").status == 303
    # Bad input: clear message, nothing created.
    for values, words in ((dict(username="x2", role="nurse", password="short", password2="short"), ""),
                          (dict(username="x3", role="wizard", password="long-enough-1", password2="long-enough-1"), "role"),
                          (dict(username="x4", role="nurse", password="long-enough-1", password2="different-1"), "not the same")):
        bad = admin.post("/admin/users", values)
        assert bad.status == 400 and words in bad.text
        assert staffed_server.ctx.store.users.get(values["username"]) is None
    # Reset the password: the old sessions end, the new password works.
    assert admin.post("/admin/users/nurse2/password", {"password": "second-pass-2", "password2": "second-pass-2"}).status == 303
    assert nurse2.get("/").status == 303
    assert nurse2.login("nurse2", "first-pass-1").status == 401
    assert nurse2.login("nurse2", "second-pass-2").status == 303
    # Disable: logged out at once and cannot log in.
    assert admin.post("/admin/users/nurse2/disable", {"disabled": "1"}).status == 303
    assert nurse2.get("/").status == 303
    assert nurse2.login("nurse2", "second-pass-2").status == 401
    # An admin cannot lock themself out.
    own = admin.post(f"/admin/users/{ADMIN[0]}/disable", {"disabled": "1"})
    assert own.status == 400 and not staffed_server.ctx.store.users.get(ADMIN[0]).get("disabled")
    # Nobody else may manage accounts.
    nurse = staffed_server.client()
    nurse.login(*NURSE)
    assert nurse.post("/admin/users", {"username": "x5", "role": "admin", "password": "long-enough-1",
                                       "password2": "long-enough-1"}).status == 403
    assert staffed_server.ctx.store.users.get("x5") is None


def test_security_headers_and_no_caching_of_pages(staffed_server):
    client = staffed_server.client()
    client.login(*NURSE)
    res = client.get("/")
    assert "script-src 'self'" in res.headers["content-security-policy"]
    assert res.headers["x-frame-options"] == "DENY"
    assert res.headers["cache-control"] == "no-store"
    assert re.search(r"<script>|\son[a-z]+=", res.text) is None, "inline scripts break under the CSP"


def test_language_switch_refuses_unknown_languages(staffed_server):
    client = staffed_server.client()
    client.get("/login")
    assert client.post("/login/language", {"lang": "xx", "back": "/login"}).status == 400
    res = client.post("/login/language", {"lang": "am", "back": "//evil.example/"})
    assert res.status == 303 and res.location.endswith("/") and "evil" not in res.location
    assert 'lang="am"' in client.get("/login").text
    assert client.post("/login", {"username": "", "password": ""}).status == 401
