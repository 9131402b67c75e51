"""The Admin page shows each model's validation figures from its pack and links to its model
card (real kiosk under waitress, the evaluated tiny Pap-smear pack from `tiny_pap`)."""
from __future__ import annotations

import pytest

from webutil import ADMIN, NURSE, make_users, start_server, web_config


@pytest.fixture(scope="module")
def kiosk(tiny_pap, pack_key, tmp_path_factory):
    from appliance.config import load_config
    cfg = web_config(load_config(data_dir=tmp_path_factory.mktemp("kiosk"), environ={}), tiny_pap["pack"], pack_key)
    live = start_server(cfg)
    make_users(live)
    try:
        yield live
    finally:
        live.stop()


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
