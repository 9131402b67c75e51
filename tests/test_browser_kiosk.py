"""The whole kiosk in real Chromium (Playwright with the system browser), at 800×480:
first-run admin → create nurse → login → register patient (name typed on the on-screen
keyboard) → Pap smear → upload a real Herlev image → Start processing → percentages →
decide → save → Browse records → Browse images → Statistics → print page → PDF download.
Screenshots of the main pages go to artifacts/screenshots/.
"""
from __future__ import annotations

import re

import pytest

from webutil import ADMIN, NURSE, browser, browser_login, first_image, live_server, make_users, web_cfg  # noqa: F401

SMALL = {"width": 800, "height": 480}
LARGE = {"width": 1280, "height": 800}

pytestmark = pytest.mark.browser


@pytest.fixture
def shots(artifacts_dir):
    folder = artifacts_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def tap_keys(page, text: str) -> None:
    """Type ``text`` by tapping the on-screen keyboard (lower-case letters, digits, space)."""
    for ch in text:
        key = "{space}" if ch == " " else ch
        page.locator(f'#osk .hg-button[data-skbtn="{key}"]').first.click()


def test_whole_workflow_in_chromium(live_server, browser, datasets, shots, tmp_path):
    base = live_server.url
    context = browser.new_context(viewport=SMALL, accept_downloads=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # First start: no users, so the kiosk asks for the administrator (no default password).
    page.goto(base + "/")
    assert page.url.endswith("/setup")
    page.screenshot(path=str(shots / "01-setup.png"))
    page.fill("input[name=username]", ADMIN[0])
    page.fill("input[name=display_name]", "Administrator")
    page.fill("input[name=password]", ADMIN[1])
    page.fill("input[name=password2]", ADMIN[1])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/admin"))

    # The admin creates the nurse's account.
    form = page.locator("#new-user")
    form.locator("input[name=username]").fill(NURSE[0])
    form.locator("input[name=display_name]").fill("Nurse Almaz")
    form.locator("input[name=password]").fill(NURSE[1])
    form.locator("input[name=password2]").fill(NURSE[1])
    form.locator("input[name=role][value=nurse]").check()
    page.screenshot(path=str(shots / "02-admin.png"), full_page=True)
    form.locator("button[type=submit]").click()
    page.wait_for_selector(f'tr[data-user="{NURSE[0]}"]')
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))

    # The nurse logs in (the on-screen keyboard opens on the field).
    page.click("input[name=username]")
    assert page.locator("#osk-panel").is_visible()
    page.screenshot(path=str(shots / "03-login-keyboard.png"))
    tap_keys(page, NURSE[0])
    assert page.input_value("input[name=username]") == NURSE[0]
    page.fill("input[name=password]", NURSE[1])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    page.screenshot(path=str(shots / "04-home.png"))

    # Register the patient; the name is typed on the on-screen keyboard.
    page.click("a.tile-primary")
    page.wait_for_url(re.compile(r"/diagnose"))
    page.fill("input[name=pid]", "JU-000777")
    page.click("input[name=full_name]")
    tap_keys(page, "almaz bekele")
    assert page.input_value("input[name=full_name]") == "almaz bekele"
    page.locator("#osk-hide").click()
    page.fill("input[name=age_years]", "42")
    page.screenshot(path=str(shots / "05-register.png"))
    page.click("text=Register and continue")
    page.wait_for_url(re.compile(r"/patients/[0-9a-f-]{36}$"))
    assert "JU-000777" not in page.url
    page.screenshot(path=str(shots / "06-patient.png"))

    # Choose the Pap smear, upload a real Herlev image.
    page.click('button[data-analysis="pap_smear"]')
    page.wait_for_url(re.compile(r"/drafts/"))
    page.screenshot(path=str(shots / "07-image-step.png"))
    image = first_image(datasets, "herlev", "carcinoma_in_situ", kind="originals")
    page.set_input_files("#image-file", str(image))          # the page submits it by itself
    page.wait_for_selector("#draft-image")
    page.wait_for_function("document.getElementById('draft-image').naturalWidth > 0")
    page.screenshot(path=str(shots / "08-image-chosen.png"))

    # Start processing → result with percentages.
    page.click("#start-processing")
    page.wait_for_url(re.compile(r"/exams/[0-9a-f-]{36}$"))
    values = page.locator(".bar-value").all_inner_texts()
    assert values and all(re.fullmatch(r"\d+\.\d %", v) for v in values), values
    width = page.locator(".bar-row.top .bar-fill").evaluate("e => e.style.width")
    assert width.endswith("%") and float(width[:-1]) > 0
    page.screenshot(path=str(shots / "09-result.png"), full_page=True)
    page.click("#heatmap-toggle")                     # the heatmap overlay, drawn on request
    page.wait_for_function("() => { const h = document.getElementById('heatmap-image');"
                           " return !h.hidden && h.complete && h.naturalWidth > 0; }")
    page.screenshot(path=str(shots / "09b-result-heatmap.png"))
    page.click("#heatmap-toggle")
    exam_url = page.url
    exam_uuid = exam_url.rsplit("/", 1)[-1]

    # Decide (agree) and save.
    page.check("input[name=agrees][value=yes]")
    page.fill("textarea[name=note]", "Seen")
    page.locator("#osk-hide").click()
    page.click("#save-decision")
    page.wait_for_selector("#decision-saved")
    assert live_server.ctx.store.exams.get(exam_uuid)["decision"]["agrees"] is True
    page.screenshot(path=str(shots / "10-decided.png"), full_page=True)

    # Browse records finds it and opens it.
    page.goto(base + "/records")
    row = page.locator(f'tr[data-href="/exams/{exam_uuid}"]')
    assert "almaz bekele" in row.inner_text()
    page.screenshot(path=str(shots / "11-records.png"))
    row.locator("td").first.click()
    page.wait_for_url(exam_url)

    # Browse images: its class folder holds the thumbnail, which opens the record.
    page.goto(base + "/images")
    page.locator('[data-folder^="pap_smear/"]').first.click()
    thumb = page.locator(f'a.thumb[href="/exams/{exam_uuid}"]')
    thumb.wait_for()
    page.wait_for_function("[...document.querySelectorAll('.thumb img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(shots / "12-images.png"))
    thumb.click()
    page.wait_for_url(exam_url)

    # Statistics shows the exam (numbers and a drawn chart).
    page.goto(base + "/statistics")
    assert page.inner_text("#stat-exams") == "1"
    assert page.evaluate("!!(window.Chart && Chart.getChart(document.getElementById('chart-analysis')))")
    page.screenshot(path=str(shots / "13-statistics.png"), full_page=True)

    # The print page renders; the PDF downloads.
    page.goto(exam_url + "/print")
    assert "almaz bekele" in page.inner_text("#report")
    page.wait_for_function("[...document.querySelectorAll('#report img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(shots / "14-print.png"), full_page=True)
    # What the printer gets (print CSS): A4 and letter, one page, without the kiosk's buttons.
    from pypdf import PdfReader
    for paper in ("A4", "Letter"):
        printed = shots / f"14-print-{paper.lower()}.pdf"
        page.pdf(path=str(printed), format=paper)
        pages = PdfReader(str(printed)).pages
        assert len(pages) == 1, (paper, len(pages))
        text = pages[0].extract_text()
        assert "almaz bekele" in text and "Download PDF" not in text and "Log out" not in text
    pdf_path = tmp_path / "report.pdf"
    with page.expect_download() as download:
        page.click("text=Download PDF")
    download.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF")

    # The same pages at 1280×800.
    page.set_viewport_size(LARGE)
    page.goto(base + "/")
    page.screenshot(path=str(shots / "15-home-1280.png"))
    page.goto(exam_url)
    page.screenshot(path=str(shots / "16-result-1280.png"), full_page=True)

    assert not [e for e in errors if "favicon" not in e and "Failed to load resource" not in e], errors
    context.close()


def test_touch_targets_are_big_enough_at_800x480(live_server, browser):
    make_users(live_server)
    context = browser.new_context(viewport=SMALL, has_touch=True)
    page = context.new_page()
    browser_login(page, live_server.url, *NURSE)
    for path in ("/", "/diagnose", "/records", "/statistics"):
        page.goto(live_server.url + path)
        small = page.evaluate("""() => [...document.querySelectorAll('a.btn, button, a.tile, input, select')]
            .filter(e => e.offsetParent !== null && !e.closest('#osk-panel'))
            .map(e => e.closest('label') && e.type !== 'text' ? e.closest('label') : e)   // a radio's target is its label
            .map(e => [e.outerHTML.slice(0, 80), e.getBoundingClientRect().height])
            .filter(([_, h]) => h < 44)""")
        assert not small, (path, small)
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
        assert not overflow, f"{path} scrolls sideways at 800 px"
    context.close()


def test_idle_timer_logs_out_in_the_browser(live_server, browser):
    """The client timer (not only the server) returns a forgotten kiosk to the login page."""
    make_users(live_server)
    live_server.ctx.sessions.idle_seconds = 3      # this server only
    context = browser.new_context(viewport=SMALL)
    page = context.new_page()
    browser_login(page, live_server.url, *NURSE)
    page.wait_for_url(re.compile(r"/login\?expired=1"), timeout=15000)
    assert "nobody used the kiosk" in page.inner_text("main")
    context.close()
