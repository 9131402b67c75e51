"""The kiosk in Amharic and Afaan Oromo, in real Chromium at 800×480, through the real kiosk.

- Every page of the main workflow (login, home, find/register patient, choose analysis, image
  step, result, print, records, images, statistics, settings) after switching the language on
  the login screen: no English sentence of the catalogue is left on screen (kept-English terms,
  names, numbers and technical ids excepted) and, in Amharic, no stray Latin words. Screenshots:
  artifacts/screenshots/i18n/<lang>-NN-<page>.png.
- The Ethiopic on-screen keyboard types a patient's name (and the date keyboard an E.C. date of
  birth); the name typed again in another spelling is found by the kiosk's search.
"""
from __future__ import annotations

import re

import pytest

from appliance.i18n import LANGUAGES, get_translations
from appliance.i18n.dates import format_date
from appliance.i18n import glossary
from appliance.i18n.extract import extract_messages, load_catalogue
from test_i18n_keyboard import key as tap, type_ethiopic
from test_i18n_web import server  # noqa: F401 (fixture)
from webutil import browser, browser_login, first_image  # noqa: F401 (fixture)

SMALL = {"width": 800, "height": 480}
PASSWORD = "kiosk-pass-2026"
_FIELD = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdifr]")
# Latin words an Amharic page may show: product, file formats and units.
LATIN_OK = {"BCCDMS", "JPEG", "PNG", "BMP", "TIFF", "WebP", "PDF", "USB", "QR", "MB", "GB", "KB",
            "ABC"}                 # the on-screen keyboard's Latin layout button

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def kiosk(server):  # noqa: F811
    """The module's server, with a health post named in Amharic (its name is on every page)."""
    server.ctx.cfg.post.name = "ጅማ ጤና ኬላ"
    return server


@pytest.fixture(scope="module")
def shots(artifacts_dir):
    folder = artifacts_dir / "screenshots" / "i18n"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def amharic_latin_words() -> set[str]:
    """Latin words the Amharic translations use on purpose (HPV, PDF, USB, Caps Lock …)."""
    words = set()
    for message in load_catalogue("am"):
        strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        for text in strings:
            words |= set(re.findall(r"[A-Za-z][\w'’.-]*", text or ""))
    return {w.strip(".") for w in words}


@pytest.fixture(scope="module")
def english_sentences():
    """lang -> English source texts (the parts between %(fields)s) that have a translation in lang."""
    template = extract_messages()
    out = {}
    for lang in ("am", "om"):
        po = load_catalogue(lang)
        texts = set()
        for message in template:
            if not message.id:
                continue
            found = po.get(message.id)
            strings = found.string if found is not None else None
            strings = list(strings) if isinstance(strings, (list, tuple)) else [strings]
            ids = list(message.id) if isinstance(message.id, (list, tuple)) else [message.id]
            if found is None or found.fuzzy or any(s in ids for s in strings):
                continue          # shown in English on purpose (international term, awaiting review)
            for msgid in ids:
                for part in _FIELD.split(msgid):
                    part = part.strip(" .,:;·()“”'-–—…")
                    if len(re.findall(r"[A-Za-z]", part)) >= 3:
                        texts.add(part)
        out[lang] = sorted(texts, key=len, reverse=True)
    return out


def page_text(page) -> str:
    """What a person can read: visible text, button and field captions, and the charts' labels."""
    text = page.evaluate("""() => {
        const parts = [document.body.innerText];
        for (const el of document.querySelectorAll('[placeholder], [aria-label], [alt], [title], input[type=submit]')) {
            if (el.offsetParent === null && el.tagName !== 'IMG') continue;
            for (const a of ['placeholder', 'aria-label', 'alt', 'title', 'value'])
                if (el.getAttribute(a) && (a !== 'value' || el.type === 'submit')) parts.push(el.getAttribute(a));
        }
        // The charts' labels (drawn on canvas): names and label texts, not ids and keys.
        const charts = document.getElementById('charts');
        const walk = (v, key) => {
            if (Array.isArray(v)) v.forEach(x => walk(x, key));
            else if (v && typeof v === 'object') Object.entries(v).forEach(([k, x]) => walk(x, key === 'labels' ? 'label' : k));
            else if (typeof v === 'string' && ['name', 'month', 'label'].includes(key)) parts.push(v);
        };
        if (charts) walk(JSON.parse(charts.dataset.charts), '');
        return parts.join('\\n');
    }""")
    return text


def without_english_glosses(text: str, lang: str) -> str:
    """``text`` less the English terms shown on purpose beside a clinical translation that no
    native-speaking clinician has reviewed yet: "አደገኛ (Malignant)" (appliance/i18n/glossary.py)."""
    for (english, language), status in glossary.statuses().items():
        if language == lang and status != glossary.REVIEWED:
            text = text.replace(f"({english})", "")
    return text


def english_left(text: str, sentences: list[str]) -> list[str]:
    return [s for s in sentences if re.search(rf"(?<![A-Za-z]){re.escape(s)}(?![A-Za-z])", text)]


def stray_latin(text: str, allowed: set[str]) -> list[str]:
    words = set(re.findall(r"[A-Za-z][\w'’.-]*", text))
    return sorted(w for w in words if len(re.findall(r"[A-Za-z]", w)) >= 3 and w.strip(".") not in allowed
                  and not re.search(r"[\d_]", w))


def test_every_workflow_page_in_amharic_and_afaan_oromo(kiosk, browser, shots, datasets, english_sentences,
                                                        amharic_latin_words):
    status = kiosk.ctx.engine.status()
    technical = {status.get("runtime") or "", status.get("precision") or ""}
    technical |= {p["id"] for p in status.get("packs", [])}
    names = {"am": ("ጽጌ ረዳ", "ጽጌ"), "om": ("Caaltuu Gammachuu", "Caaltuu")}
    for number, lang in enumerate(("am", "om")):
        username = f"{lang}.kiosk"
        kiosk.ctx.store.users.create(username, PASSWORD, "nurse", display_name="ሙሉ" if lang == "am" else "Lensa")
        full_name, first = names[lang]
        pid = f"{lang.upper()}-{number + 1}"
        allowed = LATIN_OK | amharic_latin_words | technical | {username, pid, "Lensa"} | set(full_name.split())
        allowed |= {word for name in LANGUAGES.values() for word in name.split()}   # each in its own language
        context = browser.new_context(viewport=SMALL, has_touch=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        seen = []

        def check(name: str) -> None:
            page.wait_for_load_state("load")
            assert page.evaluate("document.documentElement.lang") == lang, (name, page.url)
            page.evaluate("window.BCCDMS && BCCDMS.keyboard && BCCDMS.keyboard.hide()")   # the page itself
            page.screenshot(path=str(shots / f"{lang}-{len(seen) + 1:02d}-{name}.png"))
            text = without_english_glosses(page_text(page), lang)
            # People's names on the login screen's grid are data, not words to translate ("Nurse"
            # is the display name of the module's nurse account).
            people = {u["display_name"] for u in kiosk.ctx.store.users.login_list()}
            left = [s for s in english_left(text, english_sentences[lang]) if not any(s in who for who in people)]
            assert not left, f"{lang} {name}: English left on the page: {left}"
            if lang == "am":
                stray = stray_latin(text, allowed)
                assert not stray, f"am {name}: Latin words on the page: {stray}"
            seen.append(name)

        # The login screen: switch the language there, then log in (the choice becomes the user's).
        page.goto(kiosk.url + "/login")
        page.click(f'.language-switch button[value="{lang}"]')
        page.wait_for_function(f"document.documentElement.lang === '{lang}'")
        check("login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(kiosk.url + "/")
        assert kiosk.ctx.store.users.get(username)["language"] == lang
        check("home")

        # Register the patient, choose the analysis.
        page.click("a.tile-primary")
        page.wait_for_url(re.compile(r"/diagnose"))
        form = page.locator("form[action='/patients']")
        form.locator("input[name=pid]").fill(pid)
        form.locator("input[name=full_name]").fill(full_name)
        form.locator("input[name=age_years]").fill("38")
        form.locator("input[name=phone]").fill("0911 222 333")
        check("register")
        form.locator("button[type=submit]").click()
        page.wait_for_url(re.compile(r"/patients/[0-9a-f-]{36}$"))
        patient_url = page.url
        check("choose-analysis")

        # Find her again by name.
        page.goto(kiosk.url + "/diagnose")
        page.fill("input[name=q]", first)
        page.click("form[action='/diagnose/search'] button[type=submit]")
        page.wait_for_selector("#results")
        assert full_name in page.inner_text("#results")
        check("find")

        # The image step, a real Herlev image, the result.
        page.goto(patient_url)
        page.click('button[data-analysis="pap_smear"]')
        page.wait_for_url(re.compile(r"/drafts/"))
        check("image-step")
        page.set_input_files("#image-file", str(first_image(datasets, "herlev")))
        page.wait_for_selector("#draft-image")
        check("image-chosen")
        page.click("#start-processing")
        page.wait_for_url(re.compile(r"/exams/[0-9a-f-]{36}$"))
        exam_url = page.url
        # The print page names the exam by its short id (hex): its letters after the last digit
        # ("0c21dfab") are a record number, not a word left in English.
        allowed.update(re.findall(r"[a-f]+", exam_url.rsplit("/", 1)[-1][:8]))
        check("result")
        page.check("input[name=agrees][value=yes]")
        page.click("#save-decision")
        page.wait_for_selector("#decision-saved")
        check("decided")

        for name, path in (("print", exam_url + "/print"), ("records", kiosk.url + "/records"),
                           ("images", kiosk.url + "/images"), ("statistics", kiosk.url + "/statistics"),
                           ("settings", kiosk.url + "/settings")):
            page.goto(path)
            if name == "statistics":
                page.wait_for_function("!!(window.Chart && Chart.getChart(document.getElementById('chart-analysis')))")
            check(name)
        assert errors == [], errors
        context.close()


def test_ethiopic_keyboard_name_and_ec_birth_date_then_found_by_search(kiosk, browser, shots):
    store = kiosk.ctx.store
    store.users.create("kb.nurse", PASSWORD, "nurse", display_name="ሙሉ", language="am", calendar="ethiopian")
    context = browser.new_context(viewport=SMALL, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    browser_login(page, kiosk.url, "kb.nurse", PASSWORD)
    page.goto(kiosk.url + "/diagnose")
    form = page.locator("form[action='/patients']")

    # The card number opens the Latin keyboard; the name opens the Ethiopic one (Amharic user).
    form.locator("input[name=pid]").click()
    assert page.locator('#osk-layouts [data-layout="latin"]').get_attribute("class").count("btn-selected") == 1
    for ch in "kb-1":
        tap(page, ch)
    form.locator("input[name=full_name]").click()
    assert page.locator('#osk .hg-button[data-skbtn="ሀ"]').count() == 1
    page.screenshot(path=str(shots / "keyboard-01-ethiopic-name.png"))
    type_ethiopic(page, "ኃይሌ ገብሬ")
    assert form.locator("input[name=full_name]").input_value() == "ኃይሌ ገብሬ"
    # A tap on a layout button switches the layout and leaves the keyboard open (it used to close it).
    # (The keys swap in a task after the pointer lifts: nothing changes under a finger.)
    page.locator('#osk-layouts [data-layout="latin"]').click()
    page.wait_for_selector('#osk .hg-button[data-skbtn="q"]')
    assert page.locator("#osk-panel").is_visible() and page.locator('#osk .hg-button[data-skbtn="q"]').count() == 1
    page.locator('#osk-layouts [data-layout="ethiopic"]').click()
    page.wait_for_selector('#osk .hg-button[data-skbtn="ሀ"]')
    assert page.locator("#osk-panel").is_visible() and page.locator('#osk .hg-button[data-skbtn="ሀ"]').count() == 1

    # The date of birth on the date keyboard, in the Ethiopian calendar: 12 Megabit 1977 E.C.
    form.locator("input[name=birth_date]").click()
    assert page.locator('#osk .hg-button[data-skbtn="/"]').count() == 1
    for ch in "12/07/1977":
        tap(page, ch)
    page.screenshot(path=str(shots / "keyboard-02-date-ec.png"))
    page.locator("#osk-hide").click()
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/patients/[0-9a-f-]{36}$"))
    patient = store.patients.by_pid("KB-1")
    assert patient["full_name"] == "ኃይሌ ገብሬ" and patient["birth_date"] == "1985-03-21"
    assert format_date("1985-03-21", "am", "ethiopian") in page.inner_text("main")     # shown back in E.C.

    # Search, typed on the keyboard in another spelling (ሀ for ኃ), submitted with its enter key.
    page.goto(kiosk.url + "/diagnose")
    page.locator("input[name=q]").click()
    type_ethiopic(page, "ሀይሌ")
    tap(page, "{enter}")
    page.wait_for_selector("#results")
    assert "ኃይሌ ገብሬ" in page.inner_text("#results")
    page.screenshot(path=str(shots / "keyboard-03-found.png"))
    assert get_translations("am").gettext("Open") in page.inner_text("#results")
    assert errors == [], errors
    context.close()


def test_statistics_chart_labels_come_translated_from_the_page(kiosk, browser):
    """statistics.js draws what the page gives it: the labels are already in the user's language."""
    kiosk.ctx.store.users.create("chart.nurse", PASSWORD, "nurse", display_name="Chart", language="om")
    context = browser.new_context(viewport=SMALL)
    page = context.new_page()
    browser_login(page, kiosk.url, "chart.nurse", PASSWORD)
    page.goto(kiosk.url + "/statistics")
    page.wait_for_function("!!(window.Chart && Chart.getChart(document.getElementById('chart-analysis')))")
    drawn = page.evaluate("""() => {
        const c = Chart.getChart(document.getElementById('chart-analysis'));
        return {labels: c.data.labels, dataset: c.data.datasets[0].label};
    }""")
    om = get_translations("om")
    assert drawn["dataset"] == om.gettext("Exams") != "Exams"
    assert om.gettext("Pap smear") in drawn["labels"] or "Pap smear" in drawn["labels"]
    assert om.gettext("Cervical histopathology") in drawn["labels"]
    context.close()
