"""Quick login at the kiosk (issue 14, item 12): the post's nurses and doctors listed by name on
the box's own screen only, a 6-digit PIN typed on our PIN pad, the same limits as passwords.
Real server under waitress; the last test taps it in Chromium with touch at 800×480."""
from __future__ import annotations

import io
import re
from wsgiref.util import setup_testing_defaults

import pytest

from webutil import ADMIN, DOCTOR, NURSE, SUPERVISOR, browser, live_server, staffed_server, web_cfg  # noqa: F401

PIN = "482913"


def wsgi_get(live, path: str, remote: str) -> tuple[int, str]:
    """A GET as waitress hands it to the app from ``remote`` (a LAN client's address)."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": remote, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    answer = {}
    out = b"".join(live.ctx.app(environ, lambda status, headers, exc=None: answer.update(status=int(status[:3]))))
    return answer["status"], out.decode("utf-8", "replace")


def with_pin(live, username=NURSE[0], pin=PIN):
    live.ctx.store.users.set_pin(username, pin, by=username)


def pin_login(client, username, pin):
    client.get("/login")
    return client.post("/login/pin", {"person": username, "pin": pin})


def test_the_box_lists_its_nurses_and_doctors_by_name_and_never_to_the_network(staffed_server):
    page = staffed_server.client().get("/login").text
    names = re.findall(r'class="btn person" data-username="([^"]+)" data-name="([^"]+)"', page)
    assert names == [(DOCTOR[0], "Doctor1"), (NURSE[0], "Nurse1")]         # by display name
    assert ADMIN[0] not in page and SUPERVISOR[0] not in page
    for remote in ("192.168.4.20", "::ffff:10.0.0.7"):
        status, lan_page = wsgi_get(staffed_server, "/login", remote)
        assert status == 200 and 'class="btn person"' not in lan_page
        assert "Nurse1" not in lan_page and "Doctor1" not in lan_page and 'id="password-form"' in lan_page


def test_a_nurse_logs_in_with_her_pin_and_lands_on_diagnose(staffed_server):
    with_pin(staffed_server)
    client = staffed_server.client()
    page = client.get("/login").text
    assert re.search(rf'data-username="{NURSE[0]}" data-name="Nurse1"\s+data-pin="1"', page)
    res = pin_login(client, NURSE[0], PIN)
    assert res.status == 303 and res.location == "/diagnose"
    assert client.get("/diagnose").status == 200
    entry = staffed_server.ctx.store.audit.query(action="login")[0][0]
    assert entry["actor"] == NURSE[0] and entry["detail"] == {"with": "pin"}


def test_wrong_pins_lock_the_account_after_five_tries(staffed_server):
    with_pin(staffed_server)
    store = staffed_server.ctx.store
    client = staffed_server.client()
    for _ in range(5):
        res = pin_login(client, NURSE[0], "111112")
        assert res.status == 401 and "The PIN is wrong, or the account is locked." in res.text
        assert 'id="pin-username" value="nurse1"' in res.text                 # her pad again
    # Now even the right PIN, and the right password, are refused.
    assert pin_login(client, NURSE[0], PIN).status == 401
    assert client.login(*NURSE).status == 401
    assert store.users.index.local[NURSE[0]] and store.users.stored(store.users.index.local[NURSE[0]])["locked_until"]
    failed = store.audit.query(action="login_failed")[0]
    assert len(failed) >= 6 and all(e["actor"] == NURSE[0] for e in failed)


def test_pins_count_in_the_per_address_limit(cfg, tiny_pack, pack_key):
    from webutil import Client, make_users, start_server, web_config
    live = start_server(web_config(cfg, tiny_pack, pack_key, login_failures_per_address=3,
                                   login_failure_window_minutes=1))
    try:
        make_users(live)
        with_pin(live)
        guesser = Client(live.url, source_address="127.0.0.9")    # loopback: the kiosk's screen
        statuses = [pin_login(guesser, NURSE[0], f"11111{i}").status for i in range(5)]
        assert 429 in statuses and statuses[0] == 401
    finally:
        live.stop()


@pytest.mark.parametrize("who", [ADMIN, SUPERVISOR])
def test_administrators_and_supervisors_have_no_pin_login(staffed_server, who):
    client = staffed_server.logged_in(who)
    page = client.get("/settings").text
    assert 'id="pin-settings"' not in page
    assert client.post("/settings/pin", {"password": who[1], "pin": PIN, "pin2": PIN}).status == 403
    assert pin_login(staffed_server.client(), who[0], PIN).status == 401


def test_a_pin_from_the_network_is_refused(staffed_server):
    with_pin(staffed_server)
    client = staffed_server.client()
    client.get("/login")
    body = f"csrf_token={client.csrf}&person={NURSE[0]}&pin={PIN}".encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/login/pin", "REMOTE_ADDR": "192.168.4.20",
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}
    setup_testing_defaults(environ)
    answer = {}
    out = b"".join(staffed_server.ctx.app(environ, lambda status, headers, exc=None: answer.update(
        status=int(status[:3]))))
    assert answer["status"] == 403 and b"only on the kiosk" in out


def test_a_user_sets_and_removes_her_pin_on_the_settings_page(staffed_server):
    store = staffed_server.ctx.store
    nurse = staffed_server.logged_in(NURSE)
    page = nurse.get("/settings").text
    assert 'id="pin-settings"' in page and "You have no PIN yet." in page
    assert page.count('id="pin-settings"') == 1                # once, in the page body, not in its <title>
    assert "<section" not in page.split("<title>", 1)[1].split("</title>", 1)[0]
    for fields, message in (({"password": "wrong-pass-2026", "pin": PIN, "pin2": PIN}, "The password is wrong."),
                            ({"password": NURSE[1], "pin": PIN, "pin2": "482914"}, "The two PINs are not the same."),
                            ({"password": NURSE[1], "pin": "123456", "pin2": "123456"}, "too easy to guess"),
                            ({"password": "", "pin": PIN, "pin2": PIN}, "Type your password first.")):
        refused = nurse.post("/settings/pin", fields)
        assert refused.status == 400 and message in refused.text, message
        assert store.users.get(NURSE[0])["has_pin"] is False
    assert nurse.post("/settings/pin", {"password": NURSE[1], "pin": PIN, "pin2": PIN}).status == 303
    assert "You have a PIN." in nurse.get("/settings").text
    assert pin_login(staffed_server.client(), NURSE[0], PIN).status == 303
    assert nurse.post("/settings/pin", {"password": NURSE[1], "remove": "1"}).status == 303
    assert store.users.get(NURSE[0])["has_pin"] is False
    assert pin_login(staffed_server.client(), NURSE[0], PIN).status == 401


@pytest.mark.browser
def test_tap_a_name_and_type_the_pin_on_the_pad(staffed_server, browser):
    with_pin(staffed_server)
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    page = context.new_page()
    page.goto(staffed_server.url + "/login")
    page.locator('.person[data-username="nurse1"]').tap()
    assert page.locator("#pin-form").is_visible() and not page.locator("#people-grid").is_visible()
    assert page.locator("#osk-panel").is_hidden()                  # our pad, no text keyboard over it
    keys = page.locator(".pin-key")
    for i in range(keys.count()):
        box = keys.nth(i).bounding_box()
        assert box["height"] >= 56 and box["width"] >= 56 and box["y"] + box["height"] <= 480
    page.locator('.pin-key[data-key="4"]').tap()
    page.locator('.pin-key[data-key="back"]').tap()
    assert page.locator(".pin-dot.filled").count() == 0
    taps = 0
    with page.expect_navigation():
        for digit in PIN:
            page.locator(f'.pin-key[data-key="{digit}"]').tap()
            taps += 1
    assert taps == 6 and page.url == staffed_server.url + "/diagnose"
    context.close()
