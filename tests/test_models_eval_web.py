"""The Admin page shows each model's validation figures from its pack and links to its model
card (real kiosk under waitress, the evaluated tiny Pap-smear pack from `tiny_pap`)."""
from __future__ import annotations

import pytest

from webutil import ADMIN, NURSE, live_server, staffed_server, web_config  # noqa: F401


@pytest.fixture
def web_cfg(cfg, tiny_pap, pack_key):
    """The kiosk on the evaluated tiny Pap-smear pack (instead of webutil's untrained tiny pack)."""
    return web_config(cfg, tiny_pap["pack"], pack_key)


@pytest.fixture
def kiosk(staffed_server):
    return staffed_server


def _as(kiosk, who):
    client = kiosk.client()
    assert client.login(*who).status == 303
    return client


def test_admin_page_shows_the_figures_and_links_the_card(kiosk, tiny_pap):
    page = _as(kiosk, ADMIN).get("/admin")
    assert page.status == 200
    figures = tiny_pap["report"]["forms"]["torch"]["metrics"]
    assert 'href="/admin/models/pap_smear/card"' in page.text
    assert f"{figures['accuracy'] * 100:.1f} %" in page.text
    assert f"{tiny_pap['report']['refer_below']:.2f}" in page.text
    assert "caught" in page.text and "false alarms" in page.text


def test_the_card_page_its_figures_and_its_markdown(kiosk):
    admin = _as(kiosk, ADMIN)
    card = admin.get("/admin/models/pap_smear/card")
    assert card.status == 200
    assert "# Model card: pap_smear" in card.text and "Refer band" in card.text and "87.27 %" in card.text
    for name in ("roc.png", "reliability.png"):
        assert f'src="/admin/models/pap_smear/card/{name}"' in card.text
        png = admin.get(f"/admin/models/pap_smear/card/{name}")
        assert png.status == 200 and png.headers["content-type"] == "image/png" and png.body[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = admin.get("/admin/models/pap_smear/model_card.md")
    assert markdown.status == 200 and markdown.text.startswith("# Model card: pap_smear")
    assert "attachment" in markdown.headers["content-disposition"]


def test_cards_are_for_the_admin_only_and_only_for_installed_models(kiosk):
    nurse = _as(kiosk, NURSE)
    assert nurse.get("/admin/models/pap_smear/card").status in (302, 303, 403)
    admin = _as(kiosk, ADMIN)
    assert admin.get("/admin/models/breast_binary/card").status == 404          # not in this pack
    assert admin.get("/admin/models/pap_smear/card/other.png").status == 404


def _result_page(kiosk, image: bytes, name: str, pid: str) -> str:
    """A nurse's whole kiosk workflow for one Pap-smear image; returns the result page."""
    nurse = _as(kiosk, NURSE)
    patient = nurse.register_patient(pid, "Tigist Alemu")
    assert patient.status == 303
    draft = nurse.new_draft(patient.location.rsplit("/", 1)[-1], "pap_smear")
    assert nurse.upload(draft, image, filename=name).status == 303
    done = nurse.process(draft)
    assert done.status == 303, done.text[:300]
    return nurse.get(done.location).text


def test_the_result_screen_warns_about_an_out_of_scope_image(kiosk, datasets):
    slide = datasets / "breakhis/originals/ductal_carcinoma/SOB_M_DC-14-10926-100-001.png"
    page = _result_page(kiosk, slide.read_bytes(), slide.name, "JU-000901")
    assert 'class="alert-scope"' in page and "does not look like the images the model was trained on" in page


def test_the_result_screen_says_uncertain_refer_below_the_band(kiosk, datasets, tiny_pap, pack_key, tmp_path):
    """With refer_below at 0.999 every result is in the band: the kiosk must say so."""
    from inference_helpers import clone_pack, reseal
    pack = reseal(clone_pack(tiny_pap["pack"], tmp_path / "strict"), pack_key,
                  lambda m: m["models"]["pap_smear"].update(refer_below=0.999))
    kiosk.ctx.engine.cfg.inference.demo_pack = str(pack)      # the pack this kiosk serves
    kiosk.ctx.engine.reload()
    cell = sorted((datasets / "herlev/originals/normal_columnar").iterdir())[0]
    page = _result_page(kiosk, cell.read_bytes(), cell.name, "JU-000902")
    assert 'class="alert-uncertain"' in page and "Uncertain — refer" in page
