"""The on-screen keyboard owns every tap that starts on it (issue 14, item 1), by real touch at 800×480.

A tap on a key never reaches the page beneath the keyboard (no focus jump to another field, no
search result opened), nothing under a finger changes until it lifts, the keyboard keeps one
height (4 rows of keys >= 56 px, at most half the screen), the focused field is visible above
it, and ↵ goes to the next field of the form or submits on the last one. Real kiosk under
waitress, real Chromium with touch (tests/touch.py), fingers held like a nurse's.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from touch import touch_browser, touch_page  # noqa: F401 (fixtures)
from webutil import NURSE, live_server, staffed_server, web_cfg  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

AMHARIC_NURSE = ("am.nurse", "am-nurse-pass-2026")
NAME = "አበበች ተሰማ"
PHONE = "0911 234 567"
BIRTH_EC = "12/07/1977"            # 12 Megabit 1977 E.C. = 21 March 1985


def amharic_nurse(live):
    if live.ctx.store.users.get(AMHARIC_NURSE[0]) is None:
        live.ctx.store.users.create(*AMHARIC_NURSE, "nurse", display_name="ሙሉ", language="am",
                                    calendar="ethiopian")
    return AMHARIC_NURSE


def reach(touch, selector: str) -> None:
    """Tap a field as a nurse does (after hiding the keyboard if it covers the field); the
    keyboard opens, the field is focused and on screen above it."""
    field = touch.page.locator(selector)
    if touch.keyboard_open() and not touch.visible_above_keyboard(field):
        touch.finger("#osk-hide")
        assert not touch.keyboard_open()
    touch.tap(field)
    touch.page.wait_for_selector("#osk-panel:not([hidden])")
    touch.page.wait_for_timeout(120)                 # the keyboard scrolls the field into view
    name = field.get_attribute("name")
    assert touch.focused() == name
    assert touch.visible_above_keyboard(field), f"{selector} is behind the keyboard"
    touch.steady(name)


def at_the_card_number(live, touch) -> str:
    """An Amharic nurse on Diagnose, the keyboard open on the registration form's first field;
    the form's selector."""
    touch.login(live, amharic_nurse(live))
    touch.goto(live.url + "/diagnose")
    form = "form[action='/patients'] "
    reach(touch, form + "input[name=pid]")
    return form


def search_by_touch(touch, text: str, answer: str = "#results") -> None:
    """Diagnose's search: ``text`` typed on the Ethiopic keyboard, sent with ↵ (one page load)."""
    reach(touch, "input[name=q]")
    touch.type_ethiopic(text)
    assert touch.value("input[name=q]") == text
    touch.steady(None)
    touch.key("{enter}")
    touch.page.wait_for_selector(answer)
    assert touch.loads == 1


def test_keyboard_keeps_one_height_and_big_keys_in_every_layout(staffed_server, touch_page):
    touch = touch_page
    touch.login(staffed_server, amharic_nurse(staffed_server))
    touch.goto(staffed_server.url + "/diagnose")
    boxes = {}

    def measure(state: str) -> None:
        panel = touch.page.locator("#osk-panel").bounding_box()
        keys = touch.page.eval_on_selector_all(
            "#osk .hg-button:not(.osk-inert), #osk-panel .osk-bar .btn",
            "els => els.map(e => [e.dataset.skbtn || e.textContent, e.getBoundingClientRect().height,"
            " e.getBoundingClientRect().width])")
        small = [k for k in keys if k[1] < 56 or k[2] < 56]
        assert not small, (state, small)
        rows = touch.page.locator("#osk .hg-row").count()
        assert rows == 4, (state, rows)
        boxes[state] = (panel["y"], panel["height"])

    reach(touch, "form[action='/patients'] input[name=full_name]")
    measure("ethiopic consonants")
    # A finger on a consonant: while it is down nothing on the keyboard changes under it ...
    box = touch.page.locator('#osk .hg-button[data-skbtn="ለ"]').bounding_box()
    cdp = touch._cdp
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [
        {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2, "id": 1}]})
    touch.page.wait_for_timeout(150)
    assert touch.has_key("ለ") and not touch.has_key("ሉ")
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    touch.page.wait_for_timeout(50)
    # ... and once it has lifted, the vowel orders are on screen, in the same rows.
    assert touch.has_key("ሉ") and not touch.has_key("መ")
    measure("vowels of ለ")
    touch.key("{back}")
    touch.key("ገ")                                  # with the labiovelar row
    assert touch.has_key("ጓ")
    measure("vowels of ገ")
    touch.key("{back}")
    touch.finger('#osk-layouts [data-layout="latin"]')
    assert touch.has_key("q")
    measure("latin")
    touch.key("{shift}")
    assert touch.has_key("Q")
    measure("latin shift")
    reach(touch, "form[action='/patients'] input[name=phone]")
    assert touch.has_key("0") and not touch.has_key("q")
    measure("numeric")
    reach(touch, "form[action='/patients'] input[name=birth_date]")
    assert touch.has_key("/")
    measure("date")
    assert len(set(boxes.values())) == 1, boxes               # one height, one place
    top, height = next(iter(boxes.values()))
    assert height <= 240 and top >= 240, boxes                # at most half of the 480-px screen
    assert touch.errors == []


def test_consonant_taps_over_search_results_never_open_a_record(staffed_server, touch_page, artifacts_dir):
    live = staffed_server
    for n in range(6):
        live.ctx.store.patients.register(f"JU-{n:06d}", f"{NAME} {n}", age_years=30 + n, by="nurse1")
    touch = touch_page
    touch.login(live, amharic_nurse(live))
    touch.goto(live.url + "/diagnose")
    search_by_touch(touch, "አበበች")
    assert touch.page.locator("#results tr[data-href]").count() == 6
    reach(touch, "input[name=q]")
    touch.page.screenshot(path=str(artifacts_dir / "keyboard-touch-search-results.png"))
    consonants = touch.page.evaluate("EthiopicKeyboard.consonants()")
    assert len(consonants) == 34
    typed = touch.value("input[name=q]")
    for consonant in consonants:
        touch.key(consonant)                       # the vowel orders replace the consonants ...
        touch.key(consonant)                       # ... its first order types the syllable
        typed += consonant
        assert touch.value("input[name=q]") == typed
    # Every tap stayed on the keyboard: no record opened, the results are still there.
    assert "/patients/" not in touch.page.url
    assert touch.page.locator("#results tr[data-href]").count() == 6
    assert touch.errors == []


def test_amharic_name_phone_and_ethiopian_date_typed_into_every_form(staffed_server, touch_page, artifacts_dir):
    live = staffed_server
    touch = touch_page
    # Registration: card number (Latin), name and address (Ethiopic), E.C. date, phone.
    form = at_the_card_number(live, touch)
    touch.type_latin("JU-0042")
    reach(touch, form + "input[name=full_name]")
    touch.type_ethiopic(NAME)
    reach(touch, form + "input[name=birth_date]")
    touch.type_digits(BIRTH_EC)
    reach(touch, form + "input[name=phone]")
    touch.type_digits(PHONE)
    reach(touch, form + "input[name=address]")
    touch.type_ethiopic("ጅማ")
    touch.steady(None)
    touch.page.screenshot(path=str(artifacts_dir / "keyboard-touch-registration.png"))
    assert [touch.value(form + f"input[name={n}]") for n in ("pid", "full_name", "birth_date", "phone", "address")] \
        == ["JU-0042", NAME, BIRTH_EC, PHONE, "ጅማ"]
    assert touch.value(form + "input[name=age_years]") == ""           # nothing typed where it was not aimed
    touch.finger("#osk-hide")
    touch.tap(form + "button[type=submit]")
    touch.page.wait_for_url(re.compile(r"/patients/[0-9a-f-]{36}$"))
    patient = live.ctx.store.patients.by_pid("JU-0042")
    assert (patient["full_name"], patient["birth_date"], patient["phone"], patient["address"]) == \
        (NAME, "1985-03-21", "+251911234567", "ጅማ")

    # Search: by name (Ethiopic), then by phone (digits on the Latin layout, chosen in the bar).
    touch.goto(live.url + "/diagnose")
    search_by_touch(touch, "አበበች")
    assert NAME in touch.page.inner_text("#results")
    reach(touch, "input[name=q]")
    for _ in range(len(touch.value("input[name=q]"))):
        touch.key("{bksp}")
    touch.finger('#osk-layouts [data-layout="latin"]')
    touch.type_latin("0911234567")
    assert touch.value("input[name=q]") == "0911234567"
    touch.steady(None)
    touch.key("{enter}")
    touch.page.wait_for_selector("#results")
    assert "JU-0042" in touch.page.inner_text("#results")

    # Browse records: a name and an E.C. period; ↵ on the last field sends the filters.
    touch.goto(live.url + "/records")
    filters = "#record-filters "
    reach(touch, filters + "input[name=name]")
    touch.type_ethiopic("አበበች")
    reach(touch, filters + "input[name=date_from]")
    touch.type_digits("01/01/2017")
    reach(touch, filters + "input[name=date_to]")
    touch.type_digits("30/12/2017")
    assert [touch.value(filters + f"input[name={n}]") for n in ("name", "date_from", "date_to")] == \
        ["አበበች", "01/01/2017", "30/12/2017"]
    touch.steady(None)
    with touch.page.expect_navigation():
        touch.key("{enter}")
    assert touch.loads == 1 and touch.page.url.endswith("/records")
    assert [touch.value(filters + f"input[name={n}]") for n in ("name", "date_from", "date_to")] == \
        ["አበበች", "01/01/2017", "30/12/2017"]                          # kept, in the E.C. calendar

    # Statistics: an E.C. period, typed on the date keypad, sent with ↵.
    touch.goto(live.url + "/statistics")
    reach(touch, "input[name=from]")
    touch.type_digits("01/01/2017")
    reach(touch, "input[name=to]")
    touch.type_digits("30/12/2017")
    touch.steady(None)
    touch.key("{enter}")
    touch.page.wait_for_url(re.compile(r"/statistics\?"))
    assert parse_qs(urlsplit(touch.page.url).query) == {"from": ["01/01/2017"], "to": ["30/12/2017"]}
    assert touch.value("input[name=from]") == "01/01/2017" and touch.value("input[name=to]") == "30/12/2017"
    assert touch.errors == []


def test_enter_goes_to_the_next_field_then_submits(staffed_server, touch_page):
    live = staffed_server
    touch = touch_page
    form = at_the_card_number(live, touch)
    order = ["pid"]
    for _ in range(5):
        touch.steady(None)
        touch.key("{enter}")
        touch.page.wait_for_timeout(120)
        order.append(touch.focused())
        assert touch.keyboard_open() and touch.loads == 0
        assert touch.visible_above_keyboard(form + f"input[name={order[-1]}]"), order
    assert order == ["pid", "full_name", "birth_date", "age_years", "phone", "address"]
    # ↵ on the last field submits the form; the server answers with its own sentence (no browser
    # bubble: the forms are novalidate), in the user's language.
    with touch.page.expect_navigation():
        touch.key("{enter}")
    assert touch.loads == 1
    error = touch.page.locator(".flash-error").inner_text()
    assert error.strip() and not re.search(r"[A-Za-z]{3,}", error), error     # Amharic, from the server
    # In a one-field form (search) ↵ submits at once.
    touch.goto(live.url + "/diagnose")
    search_by_touch(touch, "አ", answer="#results, .empty")
    assert touch.errors == []
