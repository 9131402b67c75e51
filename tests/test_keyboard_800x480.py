"""Forms typed on the on-screen keyboard of the 800×480 touchscreen: the button a nurse taps
next ("Log in", "Search") is on screen above the keyboard, and one tap on it (or the keyboard's
↵ key) submits, without hiding the keyboard first. Real kiosk under waitress, real Chromium
with touch; taps land where the button is on screen (no automatic scrolling)."""
from __future__ import annotations

import pytest

from webutil import NURSE, browser, browser_login, live_server, staffed_server, web_cfg  # noqa: F401

pytestmark = pytest.mark.browser


def type_on_screen(page, text: str) -> None:
    """Tap the on-screen keyboard's keys (shift for capitals, as a nurse does)."""
    for ch in text:
        if ch.isupper():
            page.locator('#osk .hg-button[data-skbtn="{shift}"]').tap()
        page.locator(f'#osk .hg-button[data-skbtn="{ch}"]').tap()


def tap_where_seen(page, button) -> None:
    """A finger on the button where it is on screen (unlike locator.tap, which scrolls first):
    the button must be fully visible above the keyboard."""
    box, panel = button.bounding_box(), page.locator("#osk-panel").bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= panel["y"], "the keyboard covers the button"
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def open_login(staffed_server, browser):
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    page = context.new_page()
    page.goto(staffed_server.url + "/login")
    page.locator("input[name=username]").tap()
    page.wait_for_selector("#osk-panel:not([hidden])")
    type_on_screen(page, NURSE[0])
    page.locator("input[name=password]").tap()
    type_on_screen(page, NURSE[1])
    assert page.locator("input[name=username]").input_value() == NURSE[0]
    assert page.locator("input[name=password]").input_value() == NURSE[1]
    assert page.locator("#osk-panel").is_visible()
    return context, page


def test_tap_log_in_with_the_keyboard_open(staffed_server, browser, artifacts_dir):
    context, page = open_login(staffed_server, browser)
    # What the nurse sees after typing the password, without scrolling anything herself.
    page.screenshot(path=str(artifacts_dir / "login_keyboard_800x480.png"))
    tap_where_seen(page, page.locator("button[type=submit]", has_text="Log in"))
    page.wait_for_url(staffed_server.url + "/", timeout=10_000)
    context.close()


def test_the_keyboards_enter_key_logs_in(staffed_server, browser):
    context, page = open_login(staffed_server, browser)
    page.locator('#osk .hg-button[data-skbtn="{enter}"]').tap()
    page.wait_for_url(staffed_server.url + "/", timeout=10_000)
    context.close()


def test_search_button_is_above_the_keyboard_after_typing(staffed_server, browser, artifacts_dir):
    staffed_server.ctx.store.patients.register("JU-000321", "Almaz Kebede", age_years=30, by="nurse1")
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    page = context.new_page()
    browser_login(page, staffed_server.url, *NURSE)
    page.goto(staffed_server.url + "/diagnose")
    page.locator("input[name=q]").tap()
    page.wait_for_selector("#osk-panel:not([hidden])")
    type_on_screen(page, "Almaz")
    page.wait_for_timeout(100)
    page.screenshot(path=str(artifacts_dir / "search_keyboard_800x480.png"))
    tap_where_seen(page, page.locator("form[action='/diagnose/search'] button[type=submit]"))
    page.wait_for_selector("#results")
    assert "JU-000321" in page.locator("#results").inner_text()
    context.close()
