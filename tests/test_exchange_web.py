"""The kiosk's USB pages over HTTP, on two real servers: the post's Admin exports, the supervisor imports."""
from __future__ import annotations

import json
import re
import time

import pytest

from appliance import signing
from appliance.config import load_config
from appliance.exchange import dhis2, keys

from webutil import (ADMIN, NURSE, SUPERVISOR, browser, browser_login, first_image, make_users,  # noqa: F401
                     start_server, web_config)


def _wait_done(client, path: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = client.get(path)
        assert res.status == 200, res.text[:500]
        if 'http-equiv="refresh"' not in res.text:
            return res
        time.sleep(0.2)
    raise AssertionError(f"{path} still running after {timeout} s")


@pytest.fixture
def boxes(tmp_path, tiny_pack, pack_key, datasets):
    usb_root = tmp_path / "usb"
    usb_root.mkdir()
    sup_cfg = web_config(load_config(data_dir=tmp_path / "supervisor", environ={}), tiny_pack, pack_key)
    supervisor_key = keys.create_supervisor_key(keys.supervisor_key_path(sup_cfg))
    post_cfg = web_config(load_config(data_dir=tmp_path / "post", environ={}), tiny_pack, pack_key)
    post_cfg.post.name = "Agaro health post"
    for cfg in (post_cfg, sup_cfg):
        cfg.exchange.usb_roots = [str(usb_root)]
        cfg.exchange.usb_folder_drives = True
    post_cfg.exchange.supervisor_public_key = signing.b64(keys.x25519_public_raw(supervisor_key))
    post = start_server(post_cfg)
    servers = [post]
    try:
        make_users(post)
        store = post.ctx.store
        patient = store.patients.register("JU-000123", "Almaz Kebede", by="nurse1")
        exam = store.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear",
                                 "result": {"label": "abnormal"}},
                                first_image(datasets, "herlev", "carcinoma_in_situ").read_bytes(), by="nurse1")
        store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
        yield {"post": post, "sup_cfg": sup_cfg, "usb": usb_root, "tmp": tmp_path, "servers": servers}
    finally:
        for server in servers:
            server.stop()


def _start_supervisor(boxes):
    post = boxes["post"]
    sup_cfg = boxes["sup_cfg"]
    sup_cfg.exchange.known_posts = {post.ctx.store.post_id: signing.public_b64(keys.post_signing_key(post.cfg))}
    mapping = boxes["tmp"] / "mapping.toml"
    mapping.write_text(dhis2.DEFAULT_MAPPING.read_text().replace(
        "[org_units]\n", f'[org_units]\n"{post.ctx.store.post_id}" = "OU_AGARO"\n'))
    sup_cfg.exchange.dhis2_mapping = str(mapping)
    server = start_server(sup_cfg)
    boxes["servers"].append(server)
    make_users(server)
    return server


def test_export_from_admin_then_import_on_the_supervisors_kiosk(boxes):
    post, usb_root = boxes["post"], boxes["usb"]
    admin = post.logged_in(ADMIN)
    page = admin.get("/admin")
    assert "Export to USB" in page.text and "No USB stick found" in page.text

    stick = usb_root / "STICK"
    stick.mkdir()
    page = admin.get("/admin")
    assert 'name="drive" value="%s"' % stick in page.text
    refused = admin.post("/exchange/export", {"drive": "/etc"})
    assert refused.status == 400 and "There is no USB stick at /etc" in refused.text

    started = admin.post("/exchange/export", {"drive": str(stick), "csv": "1"})
    assert started.status == 303 and started.location.endswith("/exchange/export")
    done = _wait_done(admin, "/exchange/export")
    assert "The bundle is on the stick" in done.text, done.text[:2000]
    bundles = list((stick / "BCCDMS").glob("*.bccdms"))
    assert len(bundles) == 1
    ejected = admin.post("/exchange/eject", {"drive": str(stick), "back": "/admin"})
    assert ejected.status == 303
    assert "safe to remove" in admin.get("/admin").text
    entries, _ = post.ctx.store.audit.query(action="exchange.export")
    assert entries and entries[0]["actor"] == ADMIN[0]

    nurse = post.logged_in(NURSE)
    assert nurse.post("/exchange/export", {"drive": str(stick)}).status == 403
    assert nurse.get("/exchange/import").status == 403

    # The supervisor's box, with the same stick.
    supervisor_server = _start_supervisor(boxes)
    sup = supervisor_server.logged_in(SUPERVISOR)
    assert "/exchange/import" in sup.get("/").text

    page = sup.get("/exchange/import")
    assert "signed by a known post" in page.text and "Agaro health post" in page.text
    forged = sup.post("/exchange/import", {"bundle": "/etc/passwd"})
    assert forged.status == 400 and "Choose at least one bundle" in forged.text
    assert sup.post("/exchange/import", {"bundle": str(bundles[0])}).status == 303
    done = _wait_done(sup, "/exchange/import")
    assert re.search(r"exams: 1 new", done.text), done.text[:3000]
    assert supervisor_server.ctx.store.stats()["exams"] == 1

    stats_page = sup.get("/exchange/statistics")
    assert stats_page.status == 200 and "Agaro health post" in stats_page.text and "100.0 %" in stats_page.text
    values = sup.get("/exchange/dhis2.json")
    assert values.status == 200
    doc = json.loads(values.body)
    assert {"dataElement": "BCCDMS_PAP_SMEAR", "orgUnit": "OU_AGARO", "categoryOptionCombo": "BCCDMS_ABNORMAL",
            "value": "1"}.items() <= next(v for v in doc["dataValues"]
                                          if v.get("categoryOptionCombo") == "BCCDMS_ABNORMAL").items()
    assert nurse.get("/exchange/statistics").status in (403, 303)


@pytest.mark.browser
def test_the_usb_pages_in_chromium(boxes, browser, artifacts_dir):
    """Click through export, eject, import and the statistics in the real browser, with screenshots."""
    shots = artifacts_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    post = boxes["post"]
    (boxes["usb"] / "STICK").mkdir()
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    browser_login(page, post.url, *ADMIN)
    page.goto(post.url + "/admin#exchange-export-panel")
    page.locator("#exchange-export-panel").screenshot(path=str(shots / "exchange-01-admin-panel.png"))
    page.locator("#exchange-export-panel button[type=submit]", has_text="Export to USB").click()
    page.wait_for_selector("#export-result", timeout=60_000)
    page.screenshot(path=str(shots / "exchange-02-exported.png"), full_page=True)
    page.click("#eject")
    page.wait_for_url(post.url + "/admin")
    assert "safe to remove" in page.content()

    supervisor = _start_supervisor(boxes)
    browser_login(page, supervisor.url, *SUPERVISOR)
    page.click("a[href='/exchange/import']")
    page.screenshot(path=str(shots / "exchange-03-import.png"), full_page=True)
    page.click("text=Import the ticked bundles")
    page.wait_for_selector(".import-results .imported", timeout=60_000)
    page.screenshot(path=str(shots / "exchange-04-imported.png"), full_page=True)
    page.goto(supervisor.url + "/exchange/statistics")
    assert "Agaro health post" in page.content()
    page.screenshot(path=str(shots / "exchange-05-statistics.png"), full_page=True)
    assert errors == []
    context.close()
