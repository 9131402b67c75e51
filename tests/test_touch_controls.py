"""The kiosk's own touch controls instead of the browser's (issue 14, item 3), by real touch at 800×480.

No native file picker, drop-down list, mm/dd/yyyy date input or English validation bubble is
ever shown: a translated file chooser (the chosen name, or "No file chosen", in the page's
language; a file too large refused in the page; several files possible), choice sheets and
segmented buttons that send the same form fields as the <select>s they replace, the date field
typed in the user's calendar everywhere, and forms that leave validation to the server's sentence.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import jinja2
import pytest

from appliance.i18n import get_translations
from appliance.i18n.dates import entry_text
from appliance.i18n.ethiopian_calendar import EthiopianDate
from touch import touch_browser, touch_page  # noqa: F401 (fixtures)
from webutil import ADMIN, NURSE, SUPERVISOR, first_image, live_server, staffed_server, web_cfg  # noqa: F401

pytestmark = pytest.mark.browser

TEMPLATES = Path(__file__).resolve().parents[1] / "kiosk" / "templates"
STATIC = TEMPLATES.parent / "static"
AM = get_translations("am")


def am(text: str) -> str:
    translated = AM.gettext(text)
    assert translated != text, f"no Amharic for {text!r}"
    return translated


def amharic_user(live, username: str, role: str, calendar: str = "ethiopian") -> tuple[str, str]:
    password = f"{username}-pass-2026"
    if live.ctx.store.users.get(username) is None:
        live.ctx.store.users.create(username, password, role, display_name="ሙሉ", language="am", calendar=calendar)
    return username, password


def new_draft(live, who, pid: str) -> str:
    client = live.logged_in(who)
    patient = live.ctx.store.patients.register(pid, "አበበች ተሰማ", age_years=35, by=who[0])
    return client.new_draft(patient["uuid"], "pap_smear")


def exam_awaiting_decision(live, who, pid: str, datasets) -> str:
    client = live.logged_in(who)
    patient = live.ctx.store.patients.register(pid, "አበበች ተሰማ", age_years=35, by=who[0])
    draft = client.new_draft(patient["uuid"], "pap_smear")
    image = first_image(datasets, "herlev")
    assert client.upload(draft, image.read_bytes(), filename=image.name).status == 303
    res = client.process(draft)
    assert res.status == 303, res.text[:300]
    return res.location.rsplit("/", 1)[-1]


# -- the templates -------------------------------------------------------------------------------
def test_no_native_widget_is_left_in_the_kiosk_templates():
    """Every kiosk page uses the macros: no <select>, no type=date, a file input only inside
    _macros.file_field, every form novalidate. The phone's own pages are the phone's browser: its
    camera picker is fine, but its file input is hidden under a translated label of ours."""
    found = []
    for path in sorted(TEMPLATES.glob("*.html")):
        text = re.sub(r"\{#.*?#\}", "", path.read_text(encoding="utf-8"), flags=re.S)
        found += [f"{path.name}: {tag[:60]}" for tag in re.findall(r"<form\b[^>]*>", text) if "novalidate" not in tag]
        if path.name.startswith("phone_"):
            found += [f"{path.name}: a visible file input" for tag in re.findall(r"<input\b[^>]*>", text)
                      if re.search(r"type=\"?file\b", tag) and "phone-file" not in tag]
            continue
        if re.search(r"<select\b", text):
            found.append(f"{path.name}: <select>")
        if re.search(r"type=\"?date\b", text):
            found.append(f"{path.name}: type=date")
        if path.name != "_macros.html" and re.search(r"type=\"?file\b", text):
            found.append(f"{path.name}: a bare file input")
    assert not found, found


# -- file chooser --------------------------------------------------------------------------------
def test_file_chooser_is_translated_refuses_a_large_file_and_forgets_the_sent_one(staffed_server, touch_page,
                                                                                  datasets, tmp_path):
    live = staffed_server
    who = amharic_user(live, "am.nurse", "nurse")
    draft = new_draft(live, who, "JU-000501")
    image = first_image(datasets, "herlev")
    live.ctx.drafts.max_bytes = image.stat().st_size + 1000        # this server only
    big = tmp_path / "big.jpg"
    big.write_bytes(image.read_bytes() + b"\0" * 5000)
    touch = touch_page
    touch.login(live, who)
    touch.goto(f"{live.url}/drafts/{draft}")
    button, status, native = (touch.page.locator(s) for s in ("#image-file-button", "#image-file-status", "#image-file"))
    assert button.inner_text().strip() == am("Choose an image file")
    assert status.inner_text().strip() == am("No file chosen")
    box = button.bounding_box()
    assert box["height"] >= 56 and box["width"] >= 48
    native_box = native.bounding_box()                               # in the page, never seen
    assert native_box["width"] <= 1 and native_box["height"] <= 1
    assert "Choose File" not in touch.page.inner_text("body") and "No file chosen" not in touch.page.inner_text("body")

    # A file over the limit: refused in the page, nothing sent, still nothing chosen.
    touch.page.set_input_files("#image-file", str(big))
    touch.page.wait_for_selector("#too-large:not([hidden])")
    assert status.inner_text().strip() == am("No file chosen") and touch.loads == 0
    assert touch.page.evaluate("document.getElementById('image-file').files.length") == 0

    # A good file: its name shows, the page sends it by itself, the image comes back.
    touch.page.set_input_files("#image-file", str(image))
    touch.page.wait_for_selector("#draft-image")
    assert touch.page.evaluate("document.getElementById('image-file').files.length") == 0
    assert status.inner_text().strip() == am("The image shown came from a file. Choose another file to replace it.")
    assert touch.errors == []


def test_file_chooser_takes_several_files(touch_page, tmp_path):
    """The macro with multiple=True (several fields of view at once): every chosen name is shown."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.globals["_"] = lambda text, **fields: text % fields if fields else text
    field = env.from_string('{% from "_macros.html" import file_field %}'
                            '{{ file_field("images", "Choose the images", multiple=True) }}').render()
    page = tmp_path / "files.html"
    page.write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="{STATIC.as_uri()}/css/kiosk.css"></head>
<body><form>{field}</form><script src="{STATIC.as_uri()}/js/controls.js"></script></body></html>""", "utf-8")
    files = []
    for name in ("field-1.jpg", "field-2.jpg", "field-3.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8 not checked here")
        files.append(str(tmp_path / name))
    touch = touch_page
    touch.goto(page.as_uri())
    assert touch.page.inner_text("#file-images-status") == "No file chosen"
    assert touch.page.get_attribute("#file-images", "multiple") is not None
    touch.page.set_input_files("#file-images", files)
    assert touch.page.inner_text("#file-images-status") == "field-1.jpg, field-2.jpg, field-3.jpg"
    touch.page.set_input_files("#file-images", [])
    assert touch.page.inner_text("#file-images-status") == "No file chosen"
    assert touch.errors == []


# -- choice sheet and segmented buttons ----------------------------------------------------------
def test_choice_sheet_on_records_sends_the_same_field(staffed_server, touch_page):
    live = staffed_server
    touch = touch_page
    touch.login(live, amharic_user(live, "am.nurse", "nurse"))
    touch.goto(live.url + "/records")
    summary = touch.page.locator("#choice-analysis .sheet-current")
    sheet = touch.page.locator("#choice-analysis .sheet")
    assert summary.inner_text().strip() == am("All") and not sheet.is_visible()
    assert summary.bounding_box()["height"] >= 48
    touch.tap(summary)
    assert sheet.is_visible()
    options = touch.page.locator("#choice-analysis .sheet-option")
    assert options.count() >= 3
    assert all(options.nth(i).bounding_box()["height"] >= 56 for i in range(options.count()))

    # A tap beside the sheet closes it, and lands on nothing else.
    touch.finger_at(400, 20)
    assert not sheet.is_visible() and touch.loads == 0 and touch.page.url.endswith("/records")
    assert summary.inner_text().strip() == am("All")

    touch.tap(summary)
    pap = touch.page.locator("#choice-analysis .sheet-option", has=touch.page.locator("input[value=pap_smear]"))
    touch.tap(pap)
    touch.page.wait_for_timeout(50)
    assert not sheet.is_visible() and touch.loads == 0
    assert summary.inner_text().strip() == pap.text_content().strip() == am("Pap smear")
    with touch.page.expect_navigation():
        touch.tap("#record-filters button[type=submit]:not([name])")
    assert touch.loads == 1
    # The server read analysis=pap_smear (the filter is kept on the page it answered).
    assert touch.page.locator("#choice-analysis input:checked").get_attribute("value") == "pap_smear"
    assert touch.page.locator("#choice-analysis .sheet-current").inner_text().strip() == am("Pap smear")
    assert touch.errors == []


def test_decision_with_another_class_from_the_sheet(staffed_server, touch_page, datasets):
    live = staffed_server
    who = amharic_user(live, "am.nurse", "nurse")
    exam_uuid = exam_awaiting_decision(live, who, "JU-000502", datasets)
    model_label = live.ctx.store.exams.get(exam_uuid)["label"]
    touch = touch_page
    touch.login(live, who)
    touch.goto(f"{live.url}/exams/{exam_uuid}")
    other = touch.page.locator("#decision-label")
    assert other.evaluate("e => e.disabled")                   # until "Another class" is chosen
    touch.tap("#decision-form .radio-row label:has(input[value=no])")
    assert not other.evaluate("e => e.disabled")
    touch.tap("#decision-label .sheet-current")
    choices = touch.page.locator("#decision-label .sheet-option input")
    values = [choices.nth(i).get_attribute("value") for i in range(choices.count())]
    wanted = next(v for v in values if v != model_label)
    touch.tap(touch.page.locator("#decision-label .sheet-option", has=touch.page.locator(f"input[value='{wanted}']")))
    touch.page.wait_for_timeout(50)
    assert not touch.page.locator("#decision-label .sheet").is_visible()
    touch.tap("#save-decision")
    touch.page.wait_for_selector("#decision-saved")
    decision = live.ctx.store.exams.get(exam_uuid)["decision"]
    assert decision["label"] == wanted and decision["agrees"] is False
    assert touch.errors == []


def test_new_account_language_and_calendar_as_segmented_buttons(staffed_server, touch_page):
    live = staffed_server
    touch = touch_page
    touch.login(live, ADMIN)
    touch.goto(live.url + "/admin")
    form = "#new-user "
    for selector, text in ((form + "input[name=username]", "clerk.am"), (form + "input[name=password]", "clerk-pass-2026"),
                           (form + "input[name=password2]", "clerk-pass-2026")):
        touch.tap(selector)
        touch.type_latin(text)
        touch.finger("#osk-hide")
    touch.tap(form + "input[name=display_name]")
    touch.finger('#osk-layouts [data-layout="ethiopic"]')
    touch.type_ethiopic("ሙሉ")
    touch.finger("#osk-hide")
    segments = touch.page.locator(form + ".segment")
    assert segments.count() == 5                     # 3 languages, 2 calendars
    assert all(segments.nth(i).bounding_box()["height"] >= 48 for i in range(segments.count()))
    touch.tap(form + ".radio-row label:has(input[value=nurse])")
    touch.tap(form + "#choice-language .segment:has(input[value=am])")
    touch.tap(form + "#choice-calendar .segment:has(input[value=ethiopian])")
    assert touch.page.locator(form + "#choice-language input:checked").get_attribute("value") == "am"
    touch.tap(form + "button[type=submit]")
    touch.page.wait_for_selector('tr[data-user="clerk.am"]')
    user = live.ctx.store.users.get("clerk.am")
    assert (user["display_name"], user["role"], user["language"], user["calendar"]) == ("ሙሉ", "nurse", "am", "ethiopian")
    assert touch.errors == []


# -- validation ----------------------------------------------------------------------------------
def test_an_empty_login_gets_the_servers_sentence_in_the_language_of_the_screen(staffed_server, touch_page):
    live = staffed_server
    touch = touch_page
    touch.goto(live.url + "/login")
    touch.tap('.language-switch button[value="am"]')
    touch.page.wait_for_function("document.documentElement.lang === 'am'")
    touch.goto(touch.page.url)
    assert touch.page.evaluate("[...document.forms].every(f => f.noValidate)")
    with touch.page.expect_navigation():
        touch.tap("form[action='/login'] button[type=submit]")     # no browser bubble stops it
    assert touch.loads == 1
    error = touch.page.locator(".flash-error").inner_text()
    assert error.strip() and not re.search(r"[A-Za-z]{3,}", error), error


# -- dates ---------------------------------------------------------------------------------------
def test_cross_post_statistics_take_the_date_field(staffed_server, touch_page):
    live = staffed_server
    touch = touch_page
    touch.login(live, amharic_user(live, "am.super", "supervisor"))
    touch.goto(live.url + "/exchange/statistics")
    assert touch.page.locator("input[type=date]").count() == 0
    touch.tap("input[name=from]")
    touch.page.wait_for_selector("#osk-panel:not([hidden])")
    assert touch.has_key("/") and not touch.has_key("q")          # the date keypad
    hint = touch.page.locator("label.field:has(input[name=from]) .field-hint").inner_text()
    example = entry_text(dt.date.today(), "ethiopian")
    assert hint == am("Day/month/year in the Ethiopian calendar (E.C.), for example %(example)s") % {"example": example}
    touch.type_digits("01/01/2017")
    assert touch.value("input[name=from]") == "01/01/2017"
    assert touch.errors == []


def test_cross_post_statistics_period_is_read_in_the_users_calendar(staffed_server, datasets):
    live = staffed_server
    exam_awaiting_decision(live, NURSE, "JU-000503", datasets)                # made today
    supervisor = live.logged_in(amharic_user(live, "am.super", "supervisor"))
    year = EthiopianDate.from_gregorian(dt.date.today()).year
    this_year = supervisor.get(f"/exchange/statistics?from=01/01/{year - 1}&to=05/13/{year + 1}")
    assert re.search(r'id="stat-exams">1<', this_year.text)
    long_ago = supervisor.get(f"/exchange/statistics?from=01/01/{year - 20}&to=30/12/{year - 19}")
    assert long_ago.status == 200 and re.search(r'id="stat-exams">0<', long_ago.text)
    assert supervisor.get(f"/exchange/statistics?from=01/01/{year}&to=01/01/{year - 1}").status == 400
