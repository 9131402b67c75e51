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
