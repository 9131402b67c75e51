"""The on-screen keyboard for Amharic (two-step Ethiopic layout) and Afaan Oromo (Qubee), in Chromium.

The page is a small static copy of the kiosk's keyboard panel (markup of base.html) loading the
real scripts: the vendored simple-keyboard, the kiosk's keyboard.js and keyboard-ethiopic.js.
No server: the files are opened from disk.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from appliance.i18n.names import name_key
from webutil import chromium_browser

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "kiosk" / "static"

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<link rel="stylesheet" href="{static}/vendor/simple-keyboard/index.css">
<link rel="stylesheet" href="{static}/css/kiosk.css">
</head>
<body data-lang="{lang}" data-kb-hide="Hide keyboard">
<main><label>Name <input id="name" type="text" autocomplete="off"></label></main>
<div id="osk-panel" class="osk-panel" hidden>
  <div class="osk-bar"><span class="osk-layouts" id="osk-layouts"></span>
    <button type="button" class="btn btn-quiet osk-hide" id="osk-hide">Hide keyboard</button></div>
  <div class="simple-keyboard" id="osk"></div>
</div>
<script src="{static}/vendor/simple-keyboard/index.js"></script>
<script src="{static}/js/keyboard.js"></script>
<script src="{static}/js/keyboard-ethiopic.js"></script>
</body></html>
"""


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:      # one browser for the module's pages
        yield chromium


def open_page(browser, tmp_path: Path, lang: str):
    html = tmp_path / f"keyboard-{lang}.html"
    html.write_text(PAGE.format(lang=lang, static=STATIC.as_uri()), encoding="utf-8")
    page = browser.new_page(viewport={"width": 800, "height": 480})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(html.as_uri())
    page.click("#name")
    page.wait_for_selector("#osk-panel:not([hidden])")
    return page, errors


def key(page, button: str):
    page.click(f'#osk .hg-button[data-skbtn="{button}"]')
    # keyboard.js swaps the keys in a task queued by the pointerup (after every finger lifted): a
    # task queued now runs after it, so the next key() finds the new keys, never the old ones.
    page.evaluate("() => new Promise(resolve => setTimeout(resolve, 0))")


def type_ethiopic(page, text: str):
    """Type ``text`` the way a nurse does: for each syllable its consonant key, then the syllable."""
    consonant_of = {}
    for consonant in page.evaluate("EthiopicKeyboard.consonants()"):
        for syllable in page.evaluate("c => EthiopicKeyboard.syllables(c)", consonant):
            consonant_of[syllable] = consonant
    for ch in text:
        if ch == " ":
            key(page, "{space}")
            continue
        key(page, consonant_of[ch])
        key(page, ch)


def test_amharic_name_typed_in_two_steps(browser, tmp_path, artifacts_dir):
    page, errors = open_page(browser, tmp_path, "am")
    # Amharic users get the Ethiopic layout first; its button is in the keyboard bar.
    assert page.locator('#osk-layouts [data-layout="ethiopic"]').count() == 1
    assert page.locator('#osk .hg-button[data-skbtn="ሀ"]').count() == 1
    page.screenshot(path=str(artifacts_dir / "keyboard-ethiopic-consonants-800x480.png"))

    key(page, "በ")                                     # step 1: the consonant ...
    shown = page.eval_on_selector_all("#osk .hg-button", "els => els.map(e => e.dataset.skbtn)")
    assert shown[:8] == ["በ", "ቡ", "ቢ", "ባ", "ቤ", "ብ", "ቦ", "ቧ"]
    assert "ለ" not in shown                            # ... shows only its vowel orders
    page.screenshot(path=str(artifacts_dir / "keyboard-ethiopic-vowels-800x480.png"))
    key(page, "{back}")                                # back without typing
    assert page.input_value("#name") == ""

    type_ethiopic(page, "አበበ በቀለ")
    assert page.input_value("#name") == "አበበ በቀለ"
    # The name typed here is the one search finds (same key as the stored name).
    assert name_key(page.input_value("#name")) == name_key("አበበ  በቀለ")

    key(page, "{bksp}")                                # one tap erases one syllable
    assert page.input_value("#name") == "አበበ በቀ"
    key(page, "ገ")
    key(page, "ጓ")                                     # labialised form, second row of ገ
    assert page.input_value("#name") == "አበበ በቀጓ"
    assert errors == []


def test_switching_layouts_forgets_a_half_typed_syllable(browser, tmp_path):
    page, errors = open_page(browser, tmp_path, "am")
    key(page, "ለ")                                     # vowel orders of ለ on screen
    # The kiosk puts the layout back (what its layout buttons do), here through its API.
    page.evaluate("BCCDMS.keyboard.use('latin'); BCCDMS.keyboard.use('ethiopic')")
    key(page, "ለ")                                     # a consonant again: opens its vowels ...
    assert page.input_value("#name") == ""             # ... and types nothing
    key(page, "ሉ")
    assert page.input_value("#name") == "ሉ"
    assert errors == []


def test_afaan_oromo_double_vowels_and_hudhaa(browser, tmp_path):
    page, errors = open_page(browser, tmp_path, "om")
    # Afaan Oromo uses the Latin (Qubee) layout; the apostrophe is on the main rows.
    for ch in "bu'aa gammachuu":
        key(page, "{space}" if ch == " " else ch)
    assert page.input_value("#name") == "bu'aa gammachuu"
    assert name_key(page.input_value("#name")) == name_key("Bu'aa Gammachuu")
    assert errors == []


def _expected_syllables(consonant: str) -> list[str]:
    """From the Unicode names: 7 orders, the "-WA" form at base+7, the labiovelar row if any."""
    base = ord(consonant)
    out = [chr(base + i) for i in range(7)]
    wa = chr(base + 7)
    if unicodedata.name(wa, "").endswith("WA"):
        out.append(wa)
    stem = unicodedata.name(consonant).removeprefix("ETHIOPIC SYLLABLE ").removesuffix("A")
    for cp in range(base + 8, base + 16):
        name = unicodedata.name(chr(cp), "")
        if name.startswith(f"ETHIOPIC SYLLABLE {stem}W") and name != f"ETHIOPIC SYLLABLE {stem}WA" or \
                name == f"ETHIOPIC SYLLABLE {stem}WA" and cp == base + 8:
            out.append(chr(cp))
    return out


def test_every_consonant_offers_its_syllables(browser, tmp_path):
    page, _errors = open_page(browser, tmp_path, "am")
    consonants = page.evaluate("EthiopicKeyboard.consonants()")
    assert len(consonants) == 34 and len(set(consonants)) == 34
    for consonant in consonants:
        assert page.evaluate("c => EthiopicKeyboard.syllables(c)", consonant) == _expected_syllables(consonant), consonant
