"""A cascade with a gap: a step whose model is not installed (or only as a demo model) is said
on the result page, the print page and the PDF, and a trusted result never gets the demo's red
banner from a demo model it did not use.

Real tiny packs whose heads are set to answer "malignant" then "ductal carcinoma" (the cascade's
branches driven through real INT8 models), served by the real kiosk."""
from __future__ import annotations

import io

import pytest

from webutil import NURSE, make_users, start_server, web_config

from inference_helpers import bias_heads, clone_pack, make_demo_pack, reseal

BREAST = "breakhis/originals/ductal_carcinoma/SOB_M_DC-14-10926-100-001.png"


@pytest.fixture(scope="module")
def malignant_ductal(tiny_pack, pack_key, tmp_path_factory):
    """The tiny pack, answering malignant → ductal carcinoma."""
    pack = clone_pack(tiny_pack, tmp_path_factory.mktemp("gaps") / "biased")
    return bias_heads(pack, pack_key, {"breast_binary": "malignant", "breast_malignant_subtype": "ductal_carcinoma"})


def without(pack, key, dst, *model_ids):
    """A copy of ``pack`` whose manifest lacks ``model_ids`` (a trained pack still missing them)."""
    copy = clone_pack(pack, dst)

    def drop(manifest):
        manifest["pack_id"] = "clinic-2026"
        for model_id in model_ids:
            del manifest["models"][model_id]
    return reseal(copy, key, drop)


def serve(cfg, pack, key, *, current=None):
    web_config(cfg, pack, key)
    if current is not None:
        cfg.packs_dir.mkdir(parents=True, exist_ok=True)
        (cfg.packs_dir / "current").symlink_to(current)
    live = start_server(cfg)
    make_users(live)
    return live


def breast_exam(live, datasets) -> tuple:
    nurse = live.client()
    assert nurse.login(*NURSE).status == 303
    patient = live.ctx.store.patients.register("GAP-1", "Gap Test", age_years=50, by="nurse1")
    draft = nurse.new_draft(patient["uuid"], "breast_histopathology")
    nurse.upload(draft, (datasets / BREAST).read_bytes(), filename="slide.png", content_type="image/png")
    res = nurse.process(draft)
    assert res.status == 303, res.text[:500]
    exam_uuid = res.location.rsplit("/", 1)[-1]
    return nurse, exam_uuid, live.ctx.store.exams.get(exam_uuid)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_a_subtype_model_not_installed_is_said_everywhere(cfg, pack_key, malignant_ductal, tmp_path, datasets):
    pack = without(malignant_ductal, pack_key, tmp_path / "no-subtype", "breast_malignant_subtype")
    live = serve(cfg, pack, pack_key)
    try:
        nurse, exam_uuid, exam = breast_exam(live, datasets)
        assert exam["result"]["skipped"] == [{"model": "breast_malignant_subtype", "reason": "not installed"}]
        assert exam["label"] == "malignant"
        said = "Breast: malignant subtype — not assessed: model not installed"
        page = nurse.get(f"/exams/{exam_uuid}").text
        assert said in page and 'class="alert-skipped"' in page
        assert said in nurse.get(f"/exams/{exam_uuid}/print").text
        assert "not assessed: model not installed" in pdf_text(nurse.get(f"/exams/{exam_uuid}/report.pdf").body)
    finally:
        live.stop()
