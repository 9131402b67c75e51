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
