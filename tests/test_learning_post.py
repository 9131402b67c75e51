"""At the post: a pack's comparison in a nurse's words, the admin's confirmation for a pack that is not
recommended, rollback in one command, and the drift watch on the self-check. The packs are the real
tiny pack re-signed with a comparison (as `bccdms-export pack` writes it)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from appliance import drift
from appliance.cli import main as appliance_main
from appliance.doctor import check_drift
from appliance.models_admin import NotRecommended, PackManager
from appliance.store import Store

from inference_helpers import clone_pack, reseal, trusting

COMPARISON = {
    "format": "bccdms-comparison/1", "recommended": True, "rule_passed": True, "override": None,
    "rule": "sensitivity not lower ...", "champion": {"pack_id": "pap-1", "version": "1.0.0"},
    "cases": 1240, "images": 2480, "posts": 14, "label_sources": {"expert": 1240}, "holdout_id": "ab" * 32,
    "models": {"pap_smear": {"analysis": "pap_smear", "positive_classes": ["abnormal"], "exams": 1240, "passes": True,
                             "reasons": [], "sensitivity_champion": 0.91, "sensitivity_challenger": 0.94,
                             "false_alarm_champion": 0.12, "false_alarm_challenger": 0.10}}}


@pytest.fixture
def box_cfg(cfg, pack_key, tmp_path):
    cfg.inference.demo_pack = str(tmp_path / "no-demo-pack")
    return trusting(cfg, pack_key)


def _pack(tmp_path, tiny_pack, key, pack_id, version="2.0.0", comparison=None, drift_reference=None):
    def edit(manifest):
        manifest.update(pack_id=pack_id, version=version)
        if comparison is not None:
            manifest["comparison"] = comparison
        if drift_reference is not None:
            manifest["models"]["pap_smear"]["validation"]["drift"] = drift_reference
    return reseal(clone_pack(tiny_pack, tmp_path / "stick" / pack_id), key, edit)


def test_the_comparison_in_a_nurses_words(box_cfg, tiny_pack, pack_key, tmp_path):
    info = PackManager(box_cfg).describe(_pack(tmp_path, tiny_pack, pack_key, "pap-2", comparison=COMPARISON), "usb")
    assert info.recommended and not info.needs_confirmation
    assert info.comparison_lines() == [
        "Checked on 1,240 expert-confirmed cases from 14 health posts:",
        "Pap smear: Abnormal found 91 % → 94 %, false alarms 12 % → 10 %"]
    mixed = PackManager(box_cfg).describe(_pack(tmp_path, tiny_pack, pack_key, "pap-3", comparison={
        **COMPARISON, "label_sources": {"expert": 200, "clinician": 1040}}), "usb")
    assert mixed.comparison_lines()[0] == "Checked on 1,240 confirmed cases from 14 health posts:"
    assert PackManager(box_cfg).describe(tiny_pack, "usb").comparison_lines() == []   # never compared


def test_a_pack_not_recommended_needs_the_admins_yes(box_cfg, tiny_pack, pack_key, tmp_path, capsys, monkeypatch):
    manager = PackManager(box_cfg)
    manager.install(_pack(tmp_path, tiny_pack, pack_key, "pap-1", version="1.0.0"))
    failing = {**COMPARISON, "recommended": False, "rule_passed": False,
               "models": {"pap_smear": {**COMPARISON["models"]["pap_smear"], "sensitivity_challenger": 0.80,
                                        "passes": False}}}
    bad = _pack(tmp_path, tiny_pack, pack_key, "pap-bad", comparison=failing)
    before = sorted(p.name for p in box_cfg.packs_dir.iterdir())
    with pytest.raises(NotRecommended) as refused:
        manager.install(bad)
    assert "not recommended" in refused.value.message and refused.value.hint
    assert sorted(p.name for p in box_cfg.packs_dir.iterdir()) == before and manager.current().pack_id == "pap-1"

    options = ["--data-dir", str(box_cfg.data_dir)]
    config = tmp_path / "config.toml"
    config.write_text(f'[security]\ntrusted_model_keys = ["{box_cfg.security.trusted_model_keys[0]}"]\n'
                      f'[inference]\ndemo_pack = "{tmp_path / "no-demo-pack"}"\n')
    options = ["--config", str(config), *options]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))          # not a terminal: no question to answer
    assert appliance_main(["models", "install", str(bad), *options]) != 0
    out = capsys.readouterr()
    assert "Pap smear: Abnormal found 91 % → 80 %" in out.out and "Not recommended" in out.out
    assert "not recommended" in out.err and "Traceback" not in out.err
    assert manager.current().pack_id == "pap-1"

    assert appliance_main(["models", "install", str(bad), "--confirm-not-recommended", *options]) == 0
    assert manager.current().pack_id == "pap-bad"
    with Store.open(box_cfg) as store:
        entries, _ = store.audit.query(action="models.install")
        assert entries[0]["detail"]["confirmed_not_recommended"] is True
    assert appliance_main(["models", "rollback", *options]) == 0       # one command back
    assert manager.current().pack_id == "pap-1"


def test_the_self_check_shows_a_large_shift_with_a_next_step(box_cfg, tiny_pack, pack_key, tmp_path, datasets):
    rng = np.random.default_rng(2)
    probs = np.stack([p := rng.uniform(0.5, 1.0, 300), 1 - p], 1)
    metrics = [{"brightness": float(b), "contrast": 40.0 + float(c), "sharpness": 20.0}
               for b, c in zip(rng.normal(150, 8, 300), rng.normal(0, 3, 300))]
    reference = drift.reference(["normal", "abnormal"], probs, metrics)
    manager = PackManager(box_cfg)
    manager.install(_pack(tmp_path, tiny_pack, pack_key, "pap-2", drift_reference=reference))
    version = manager.current().models["pap_smear"].version
    image = next((datasets / "herlev" / "eval" / "normal_columnar").glob("*.jpg")).read_bytes()
    with Store.open(box_cfg) as store:
        assert check_drift(box_cfg, store)[0].status == "OK"
        patient = store.patients.register("D-1", "Drift Test", by="nurse1")
        for i in range(80):            # a new lamp: every image 40 grey levels brighter
            store.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear", "result": {
                "label": "normal", "steps": [{"model": "pap_smear", "version": version, "top": "normal",
                                              "confidence": float(probs[i, 0]),
                                              "probabilities": {"normal": float(probs[i, 0]),
                                                                "abnormal": float(probs[i, 1])}}],
                "quality": {"ok": True, "metrics": {**metrics[i], "brightness": metrics[i]["brightness"] + 40}}}},
                image, by="nurse1")
        (check,) = check_drift(box_cfg, store)
    assert check.status == "WARN" and "send images for review" in check.message
    assert "brightness PSI" in check.details[0] and "80 exams" in check.details[0]
    assert json.dumps(check.details)


# -- the Admin page -------------------------------------------------------------------------------
from webutil import ADMIN, browser, live_server, staffed_server, wait_until, web_config  # noqa: E402,F401 (fixtures)


@pytest.fixture
def web_cfg(cfg, tiny_pack, pack_key, tmp_path):
    cfg = web_config(cfg, tiny_pack, pack_key)
    cfg.exchange.usb_roots = [str(tmp_path / "media")]
    cfg.exchange.usb_folder_drives = True
    return cfg


def test_the_admin_page_shows_the_comparison_and_asks_before_a_pack_not_recommended(staffed_server, tiny_pack,
                                                                                     pack_key, tmp_path):
    admin = staffed_server.logged_in(ADMIN)
    failing = {**COMPARISON, "recommended": False, "rule_passed": False}
    source = reseal(clone_pack(tiny_pack, tmp_path / "media" / "STICK" / "pap-bad"), pack_key,
                    lambda m: m.update(pack_id="pap-bad", version="2.0.0", comparison=failing))
    page = admin.get("/admin").text
    assert 'data-recommended="no"' in page and "Abnormal found 91 % → 94 %" in page
    assert "Not recommended" in page
    in_use = staffed_server.ctx.engine.status()["packs"][0]["id"]

    asked = admin.post("/admin/models/install", {"pack": str(source)})     # "Check and install"
    assert asked.status == 200 and 'id="confirm-not-recommended"' in asked.text
    assert "Not recommended" in asked.text and "Abnormal found 91 % → 94 %" in asked.text
    assert 'href="/admin" id="do-not-install"' in asked.text
    assert staffed_server.ctx.jobs.current.get("models") is None          # nothing started
    assert staffed_server.ctx.engine.status()["packs"][0]["id"] == in_use

    admin.post("/admin/models/install", {"pack": str(source), "confirm_not_recommended": "yes"})

    def finished():
        text = admin.get("/admin/models").text
        return text if 'http-equiv="refresh"' not in text else None
    assert "pap-bad 2.0.0 is now in use" in wait_until(finished, timeout=120, interval=0.2)
    assert staffed_server.ctx.engine.status()["packs"][0]["id"] == "pap-bad"
    entries, _ = staffed_server.ctx.store.audit.query(action="models.install")
    assert entries[0]["detail"]["confirmed_not_recommended"] is True


@pytest.mark.browser
def test_the_confirmation_in_chromium_at_800x480(staffed_server, browser, tiny_pack, pack_key, tmp_path, artifacts_dir):
    """Touched in real Chromium: "Check and install" on a pack not recommended asks first; both answers
    are on the screen without scrolling; "Do not install" changes nothing, the other installs it."""
    failing = {**COMPARISON, "recommended": False, "rule_passed": False}
    reseal(clone_pack(tiny_pack, tmp_path / "media" / "ML-TEAM" / "pap-bad"), pack_key,
           lambda m: m.update(pack_id="pap-bad", version="2.0.0", comparison=failing))
    client = staffed_server.logged_in(ADMIN)
    in_use = staffed_server.ctx.engine.status()["packs"][0]["id"]
    shots = artifacts_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    context.add_cookies([{"name": k, "value": v, "url": staffed_server.url} for k, v in client.cookies.items()])
    page = context.new_page()

    def ask():
        page.goto(f"{staffed_server.url}/admin")
        page.locator('form.pack-candidate[data-pack="pap-bad"] button').tap()
        page.wait_for_selector("#confirm-not-recommended")
        for target in ("#install-anyway", "#do-not-install"):
            box = page.locator(target).bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= 480 and box["height"] >= 48, (target, box)

    ask()
    assert "Not recommended" in page.inner_text("#confirm-not-recommended")
    page.screenshot(path=str(shots / "admin-model-pack-not-recommended.png"))
    page.locator("#do-not-install").tap()
    page.wait_for_url(f"{staffed_server.url}/admin")
    assert staffed_server.ctx.engine.status()["packs"][0]["id"] == in_use
    ask()
    page.locator("#install-anyway").tap()
    page.wait_for_selector("#models-result", timeout=120_000)
    assert "pap-bad 2.0.0 is now in use" in page.inner_text("#models-result")
    context.close()
