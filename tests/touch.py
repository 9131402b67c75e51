"""A finger on the kiosk's 800×480 touchscreen, for browser tests (Playwright, system Chromium).

Fixtures (import them into a test module: ``from touch import touch_browser, touch_page  # noqa: F401``):

- ``touch_browser``: the system Chromium with the project's flags (webutil.CHROMIUM_ARGS), one per
  test module.
- ``touch_page``: a fresh browser context (800×480, ``has_touch``) with one page, wrapped in a
  :class:`Touch`; closed after the test. Script errors (exceptions, console errors) are collected in
  ``touch_page.errors``.

:class:`Touch` drives the page the way a nurse does, never with a mouse:

- ``tap(target)``: ``locator.tap()`` (Playwright scrolls the element into view first).
- ``finger(target, hold_ms=80)``: a touch where the element is *now* on screen, held like a real
  finger (touchstart … touchend, sent through the DevTools protocol), with no scrolling: the element
  must be inside the viewport, and whatever is under that point when the finger lifts gets the tap.
- ``finger_at(x, y, hold_ms=80)``: the same at a point of the screen.
- ``key(button)``: the on-screen keyboard's key (simple-keyboard's ``data-skbtn``) by finger.
- ``type_latin(text)``, ``type_ethiopic(text)``, ``type_digits(text)``: typing on the on-screen
  keyboard (shift for capitals; consonant then syllable for Ethiopic; the keyboard must be open).
- ``login(live, who)``: a session made over HTTP and handed to the browser as its cookie (the
  login screen itself is tested by touch in test_keyboard_800x480 and test_keyboard_touch).
- ``focused()``: the ``name`` (or id) of the focused element; ``state()``: URL, focused field and
  how many pages were loaded since the last ``goto`` (a tap that navigates shows there).
- ``steady(field)``: from now on every ``key()`` asserts that the page did not change (same URL,
  no page loaded) and that the focus stayed in ``field``; ``steady(None)`` ends it.
- ``visible_above_keyboard(target)``: the element is entirely on screen above the open keyboard.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import Error as PlaywrightError

from webutil import chromium_browser

SCREEN = {"width": 800, "height": 480}
KEY = '#osk .hg-button[data-skbtn="{}"]'


@pytest.fixture(scope="module")
def touch_browser():
    """The system Chromium, headless, with the project's flags (one per test module)."""
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture
def touch_page(touch_browser):
    """A fresh 800×480 touch page (:class:`Touch`), closed after the test."""
    touch = Touch(touch_browser)
    try:
        yield touch
    finally:
        touch.close()


class Touch:
    """One touchscreen page. See the module docstring."""

    def __init__(self, browser, viewport: dict | None = None, **context_options):
        self.context = browser.new_context(viewport=viewport or SCREEN, has_touch=True, **context_options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.loads = 0
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # Script errors; an HTTP error status the server meant (400 with its sentence) is not one.
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        self.page.on("load", lambda _page: self._loaded())
        self._steady: dict | None = None
        self._cdp = self.context.new_cdp_session(self.page)

    def _loaded(self) -> None:
        self.loads += 1

    def close(self) -> None:
        self.context.close()

    # -- getting there ---------------------------------------------------------------------
    def login(self, live, who: tuple[str, str]) -> None:
        client = live.logged_in(who)
        self.context.add_cookies([{"name": k, "value": v, "url": live.url} for k, v in client.cookies.items()])

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_load_state("load")
        self.loads = 0

    # -- touching --------------------------------------------------------------------------
    def _locator(self, target):
        return self.page.locator(target) if isinstance(target, str) else target

    def tap(self, target) -> None:
        self._locator(target).tap()

    def finger(self, target, hold_ms: int = 80) -> None:
        """Touch the centre of ``target`` where it is on screen now, without scrolling."""
        box = self._locator(target).bounding_box()
        assert box, f"{target} is not on the page"
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        assert 0 <= x < SCREEN["width"] and 0 <= y < self.page.viewport_size["height"], \
            f"{target} is off the screen at ({x:.0f}, {y:.0f})"
        self.finger_at(x, y, hold_ms)

    def finger_at(self, x: float, y: float, hold_ms: int = 80) -> None:
        point = {"x": x, "y": y, "radiusX": 8, "radiusY": 8, "force": 1, "id": 1}
        self._cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point]})
        self.page.wait_for_timeout(hold_ms)
        self._cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        self.page.wait_for_timeout(30)         # the tap's click (if any) is delivered after touchend
        # ... and the keyboard's new keys, in a task queued by the last pointerup: this one runs after it.
        try:
            self.page.evaluate("() => new Promise(resolve => setTimeout(resolve, 0))")
        except PlaywrightError:
            pass                               # the tap is loading another page: no keys to wait for

    # -- the on-screen keyboard ------------------------------------------------------------
    def keyboard_open(self) -> bool:
        return self.page.locator("#osk-panel").is_visible()

    def key(self, button: str, hold_ms: int = 80) -> None:
        self.finger(self.page.locator(KEY.format(button)), hold_ms)
        if self._steady is not None:
            assert self.state() == self._steady, f"the page changed after the key {button!r}"

    def steady(self, field: str | None) -> None:
        self.loads = 0
        self._steady = None if field is None else {"url": self.page.url, "focused": field, "loads": 0}

    def visible_above_keyboard(self, target) -> bool:
        box = self._locator(target).bounding_box()
        panel = self.page.locator("#osk-panel")
        free = panel.bounding_box()["y"] if panel.is_visible() else self.page.viewport_size["height"]
        return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= free

    def has_key(self, button: str) -> bool:
        return self.page.locator(KEY.format(button)).count() == 1

    def type_latin(self, text: str) -> None:
        """Type on the Latin layout (digits and symbols on the 123 layer, capitals with shift)."""
        for ch in text:
            self.use_layer_for(ch)
            self.key("{space}" if ch == " " else ch)

    def use_layer_for(self, ch: str) -> None:
        """Show the Latin layer that has ``ch`` (shift for a capital or a symbol)."""
        if ch == " " or self.has_key(ch):
            return
        self.key("{shift}")
        assert self.has_key(ch), f"no key for {ch!r} on the Latin keyboard"

    def type_digits(self, text: str) -> None:
        """Type on the numeric or date keypad."""
        for ch in text:
            self.key("{space}" if ch == " " else ch)

    def ethiopic_consonants(self) -> dict[str, str]:
        """syllable -> its consonant key, from the page's own Ethiopic layout."""
        return self.page.evaluate("""() => {
            const out = {};
            for (const c of EthiopicKeyboard.consonants())
                for (const s of EthiopicKeyboard.syllables(c)) out[s] = c;
            return out;
        }""")

    def type_ethiopic(self, text: str) -> None:
        """Type ``text`` as a nurse does: for each syllable its consonant key, then the syllable."""
        consonant_of = self.ethiopic_consonants()
        for ch in text:
            if ch == " ":
                self.key("{space}")
                continue
            self.key(consonant_of[ch])
            self.key(ch)

    # -- what the page is doing ------------------------------------------------------------
    def focused(self) -> str | None:
        return self.page.evaluate(
            "() => { const e = document.activeElement;"
            " return e && e !== document.body ? (e.name || e.id || e.tagName) : null; }")

    def state(self) -> dict:
        return {"url": self.page.url, "focused": self.focused(), "loads": self.loads}

    def value(self, selector: str) -> str:
        return self.page.locator(selector).input_value()
