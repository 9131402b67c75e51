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
    nurse = live.logged_in(NURSE)
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


def test_a_demo_model_never_follows_trusted_steps(cfg, pack_key, malignant_ductal, tmp_path, datasets):
    """A trained pack lacking only the grade model, on a box whose demo pack has one: the grade
    is not assessed (said so), and the trusted result carries no DEMO banner."""
    trusted = without(malignant_ductal, pack_key, tmp_path / "no-grade", "breast_grade")
    demo = make_demo_pack(malignant_ductal, tmp_path / "demo")
    live = serve(cfg, demo, pack_key, current=trusted)
    try:
        nurse, exam_uuid, exam = breast_exam(live, datasets)
        result = exam["result"]
        assert [s["model"] for s in result["steps"]] == ["breast_binary", "breast_malignant_subtype"]
        assert {s["pack"] for s in result["steps"]} == {"clinic-2026"} and not any(s["demo"] for s in result["steps"])
        assert result["skipped"] == [{"model": "breast_grade", "reason": "only a demo model is installed"}]
        assert exam["demo"] is False and result["demo"] is False and exam["label"] == "ductal_carcinoma"
        page = nurse.get(f"/exams/{exam_uuid}").text
        assert "DEMO" not in page                         # neither the result's banner nor the box's
        assert "Breast: grade of ductal carcinoma — not assessed: only a demo model is installed" in page
        assert "clinic-2026" in page
        printed = nurse.get(f"/exams/{exam_uuid}/print").text
        assert "DEMO" not in printed and "only a demo model is installed" in printed
        assert "DEMO" not in pdf_text(nurse.get(f"/exams/{exam_uuid}/report.pdf").body)
    finally:
        live.stop()


def test_a_result_whose_first_model_is_demo_stays_demo_throughout(cfg, pack_key, malignant_ductal, tmp_path, datasets):
    """No trained breast_binary: the whole cascade runs on demo models and says DEMO in red."""
    trusted = without(malignant_ductal, pack_key, tmp_path / "no-binary", "breast_binary")
    demo = make_demo_pack(malignant_ductal, tmp_path / "demo")
    live = serve(cfg, demo, pack_key, current=trusted)
    try:
        nurse, exam_uuid, exam = breast_exam(live, datasets)
        assert exam["demo"] is True and exam["result"]["skipped"] == []
        assert [s["model"] for s in exam["result"]["steps"]] == ["breast_binary", "breast_malignant_subtype", "breast_grade"]
        page = nurse.get(f"/exams/{exam_uuid}").text
        assert "DEMO RESULT" in page and "clinic-2026" in page and "demo" in page
    finally:
        live.stop()
