"""The camera panel and the phone colposcope in real Chromium (Playwright, system browser).

Kiosk: live preview of the folder camera → Capture → the captured image is shown, processed
and stored. Phone: the QR code on the kiosk screen is read back from a screenshot with
OpenCV's QR decoder, a second (mobile) browser opens it and sends a real colposcopy photo,
and the kiosk page shows it without anyone touching the kiosk.
Screenshots go to artifacts/screenshots/camera-*.png.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from PIL import Image

from test_camera_web import camera_cfg, server, slide  # noqa: F401  (the kiosk with a folder camera)
from webutil import NURSE, browser, first_image, wait_until  # noqa: F401

KIOSK = {"width": 800, "height": 480}
PHONE = {"width": 390, "height": 844}
COLPOSCOPY = "type_3"                  # IARC transformation-zone type

pytestmark = pytest.mark.browser


@pytest.fixture
def shots(artifacts_dir):
    folder = artifacts_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def kiosk_page(browser, live, analysis: str, pid: str):
    """A nurse's kiosk on the image step of a new exam; returns (page, draft id, errors).
    Login and the choice of analysis are the kiosk's own pages (tested in test_browser_kiosk);
    here the session is made over HTTP and handed to the browser as its cookie."""
    client = live.logged_in(NURSE)
    patient = live.ctx.store.patients.register(pid, "Almaz Bekele", age_years=38, by="nurse1")
    draft_id = client.new_draft(patient["uuid"], analysis)
    context = browser.new_context(viewport=KIOSK, has_touch=True)
    context.add_cookies([{"name": name, "value": value, "url": live.url} for name, value in client.cookies.items()])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live.url}/drafts/{draft_id}")
    assert page.url.endswith(draft_id), page.url
    return page, draft_id, errors


def test_live_preview_capture_and_analysis_in_chromium(server, browser, shots):
    page, draft_id, errors = kiosk_page(browser, server, "pap_smear", "JU-000901")
    preview = page.locator("#camera-preview")
    preview.wait_for(state="visible", timeout=15000)
    wait_until(lambda: page.evaluate("document.getElementById('camera-preview').naturalWidth") > 0)
    assert page.evaluate("document.getElementById('camera-preview').naturalWidth") <= 640
    wait_until(lambda: "fps" in page.inner_text("#camera-state"), timeout=10)
    assert server.ctx.cameras.describe()["state"] == "live"     # the rate is checked in test_camera_web
    page.screenshot(path=str(shots / "camera-01-preview.png"))

    # Unplug the camera (the demo folder) during the preview, then plug it back.
    folder = Path(server.cfg.camera.folder)
    folder.rename(folder.with_name("unplugged"))
    wait_until(lambda: "gone" in page.inner_text("#camera-message"), timeout=10)
    assert page.locator("#camera-hint").is_visible() and page.locator("#camera-capture").is_disabled()
    page.screenshot(path=str(shots / "camera-01b-unplugged.png"))
    folder.with_name("unplugged").rename(folder)
    wait_until(lambda: page.locator("#camera-capture").is_enabled() and not page.locator("#camera-message").is_visible(),
               timeout=15)

    capture = page.locator("#camera-capture")
    assert capture.is_enabled()
    capture.click()
    page.locator("#draft-image").wait_for(state="visible", timeout=15000)
    assert "from the camera" in page.inner_text("#image-step")
    page.screenshot(path=str(shots / "camera-02-captured.png"))
    draft = server.ctx.drafts.get(draft_id)
    captured_sha = hashlib.sha256(draft.image_bytes).hexdigest()
    # The captured still is the microscope image at full resolution.
    source = Image.open(next(Path(server.cfg.camera.folder).iterdir()))
    assert (draft.image_info["width"], draft.image_info["height"]) == source.size

    page.click("#start-processing")
    page.wait_for_url(re.compile(r"/exams/"), timeout=60000)
    exams, total = server.ctx.store.exams.query(limit=5)
    assert total == 1 and exams[0]["source"] == "camera" and exams[0]["image"]["sha256"] == captured_sha
    page.screenshot(path=str(shots / "camera-03-result.png"))
    assert not errors, errors


def read_qr(png: bytes) -> str:
    import cv2
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert text, "the QR code on the kiosk screen cannot be read"
    return text


def test_phone_colposcope_photo_appears_on_the_kiosk(server, browser, datasets, shots):
    page, draft_id, errors = kiosk_page(browser, server, "cervix_type", "JU-000902")
    # Cervix type is a phone-first analysis: the QR code is there without a tap.
    qr = page.locator("#phone-qr svg")
    qr.wait_for(state="visible", timeout=10000)
    assert "works once" in page.inner_text("#phone-status")
    page.screenshot(path=str(shots / "camera-04-phone-qr.png"))
    png = page.locator("#phone-qr").screenshot()
    (shots / "camera-04b-qr.png").write_bytes(png)
    url = read_qr(png)
    assert url == page.get_attribute("#phone-qr", "data-url")
    assert re.fullmatch(re.escape(server.url) + r"/phone/[A-Za-z0-9_-]{32}", url)

    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    phone_page = phone.new_page()
    phone_page.goto(url)
    assert "Almaz" not in phone_page.content() and "JU-000902" not in phone_page.content()
    phone_page.screenshot(path=str(shots / "camera-05-phone-upload.png"))
    photo = first_image(datasets, "iarc_colposcopy", COLPOSCOPY, kind="originals")
    # Choosing the photo sends it at once (camera.js); no second tap needed.
    phone_page.set_input_files("#phone-image", str(photo))
    phone_page.wait_for_selector("#phone-done", timeout=15000)
    phone_page.screenshot(path=str(shots / "camera-06-phone-sent.png"))

    # The kiosk shows the photo by itself (its page polls for the exam's image).
    page.locator("#draft-image").wait_for(state="visible", timeout=15000)
    assert "from the phone" in page.inner_text("#image-step")
    draft = server.ctx.drafts.get(draft_id)
    assert draft.image_bytes == photo.read_bytes()
    page.screenshot(path=str(shots / "camera-07-kiosk-shows-phone-photo.png"))

    # The link is spent: opening it again shows only a refusal.
    phone_page.goto(url)
    assert "cannot be used" in phone_page.inner_text("h1")
    assert not errors, errors
