"""The result belongs to the image it was made from: what the kiosk saves, shows and draws.

Against the real server (waitress on 127.0.0.1), store and tiny models: an image arriving while
"Start processing" runs, an image the nurse has not looked at, a double tap on the button, and
the store's own refusal of a result paired with another image.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time

import pytest

from webutil import NURSE, live_server, staffed_server, web_cfg  # noqa: F401

SLIDES = "herlev/originals/normal_superficiel"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def two_images(datasets) -> tuple[bytes, bytes]:
    files = sorted((datasets / SLIDES).glob("*.jpg"))[:2]
    first, second = (f.read_bytes() for f in files)
    assert sha(first) != sha(second)
    return first, second


@pytest.fixture
def nurse(staffed_server):
    return staffed_server.logged_in(NURSE)


def open_draft(live, nurse, pid="INT-1", analysis="pap_smear") -> str:
    res = nurse.register_patient(pid, "Integrity Test")
    assert res.status == 303, res.text[:500]
    return nurse.new_draft(res.location.rsplit("/", 1)[-1], analysis)


def exams(live) -> list[dict]:
    return live.ctx.store.exams.query(limit=100)[0]


def same_browser(client):
    """A second connection of the same logged-in browser (another tab, the phone's upload)."""
    twin = type(client)(f"http://{client.host}:{client.port}")
    twin.cookies, twin.csrf = dict(client.cookies), client.csrf
    return twin


def slow_engine(live, monkeypatch, during=None, seconds=0.0):
    """The real engine, with ``during()`` run (or a pause) while "Start processing" is in the models."""
    real = live.ctx.engine.diagnose

    def diagnose(*args, **kwargs):
        if during is not None:
            during()
        time.sleep(seconds)
        return real(*args, **kwargs)
    monkeypatch.setattr(live.ctx.engine, "diagnose", diagnose)


def test_an_image_arriving_while_processing_never_pairs_with_the_result(staffed_server, nurse, two_images,
                                                                         monkeypatch):
    live = staffed_server
    first, second = two_images
    draft = open_draft(live, nurse)
    assert nurse.upload(draft, first).status == 303
    late = {}

    def upload_meanwhile():
        # A second source (another tab, a phone) sends an image while the models run.
        worker = threading.Thread(target=lambda: late.update(res=same_browser(nurse).upload(draft, second)))
        worker.start()
        worker.join(30)
    slow_engine(live, monkeypatch, during=upload_meanwhile)
    res = nurse.process(draft)
    assert res.status == 303, res.text[:500]
    assert late["res"].status == 404                      # the exam was already being processed
    [exam] = exams(live)
    stored = live.ctx.store.images.path(exam["image"]["sha256"]).read_bytes()
    assert sha(stored) == sha(first) == exam["result"]["image_info"]["sha256"] == exam["image"]["sha256"]


def test_processing_refuses_an_image_the_nurse_has_not_seen(staffed_server, nurse, two_images):
    live = staffed_server
    first, second = two_images
    draft = open_draft(live, nurse)
    nurse.upload(draft, first)
    seen = live.ctx.drafts.get(draft).version
    same_browser(nurse).upload(draft, second)            # arrives after she looked at the page
    res = nurse.process(draft, version=seen)
    assert res.status == 409
    assert "The image changed" in res.text and "look at it again" in res.text
    assert exams(live) == [] and live.ctx.drafts.get(draft).image_info["sha256"] == sha(second)
    ok = nurse.process(draft)                            # she looks again and starts processing
    assert ok.status == 303
    [exam] = exams(live)
    assert exam["image"]["sha256"] == exam["result"]["image_info"]["sha256"] == sha(second)


@pytest.mark.parametrize("version", ["", "abc", "-1"])
def test_processing_without_a_valid_image_version_is_refused(staffed_server, nurse, two_images, version):
    live = staffed_server
    draft = open_draft(live, nurse)
    nurse.upload(draft, two_images[0])
    nurse.get(f"/drafts/{draft}")
    res = nurse.post(f"/drafts/{draft}/process", {"version": version})
    assert res.status == 409 and "The image changed" in res.text
    assert exams(live) == [] and live.ctx.drafts.get(draft).has_image


def test_a_double_tap_on_start_processing_makes_one_exam(staffed_server, nurse, two_images, monkeypatch):
    live = staffed_server
    draft = open_draft(live, nurse)
    nurse.upload(draft, two_images[0])
    version = live.ctx.drafts.get(draft).version
    slow_engine(live, monkeypatch, seconds=0.5)          # the second tap lands while the first runs
    answers = []
    taps = [threading.Thread(target=lambda: answers.append(same_browser(nurse).process(draft, version)))
            for _ in range(2)]
    for tap in taps:
        tap.start()
    for tap in taps:
        tap.join(60)
    assert [a.status for a in answers] == [303, 303], [a.text[:300] for a in answers]
    assert answers[0].location == answers[1].location and re.search(r"/exams/[0-9a-f-]{36}$", answers[0].location)
    assert len(exams(live)) == 1


def test_a_failed_save_leaves_the_image_ready_to_process_again(staffed_server, nurse, two_images, monkeypatch):
    from appliance.errors import StoreError
    live = staffed_server
    draft = open_draft(live, nurse)
    nurse.upload(draft, two_images[0])
    real_save = live.ctx.store.exams.save

    def full_disk(*args, **kwargs):
        raise StoreError("The disk is full: the record could not be saved.", "Nothing was changed.")
    monkeypatch.setattr(live.ctx.store.exams, "save", full_disk)
    res = nurse.process(draft)
    assert res.status == 400 and "disk is full" in res.text
    assert exams(live) == [] and live.ctx.drafts.get(draft).has_image
    monkeypatch.setattr(live.ctx.store.exams, "save", real_save)
    assert nurse.process(draft).status == 303 and len(exams(live)) == 1


def test_the_store_refuses_a_result_made_from_another_image(cfg, two_images):
    from appliance.errors import UserError
    from appliance.store import Store
    first, second = two_images
    with Store.open(cfg) as store:
        patient = store.patients.register("INT-9", "Store Check", age_years=30, by="nurse1")
        result = {"analysis": "pap_smear", "label": "normal", "demo": False,
                  "image_info": {"sha256": sha(first), "width": 1, "height": 1, "format": "JPEG"}}
        exam = {"patient_uuid": patient["uuid"], "analysis": "pap_smear", "result": result, "label": "normal"}
        with pytest.raises(UserError, match="not the image"):
            store.exams.save(exam, second, by="nurse1")
        assert store.exams.query()[1] == 0
        assert not list((cfg.data_dir / "images").rglob(f"{sha(second)}.*"))
        assert store.exams.save(exam, first, by="nurse1")["image"]["sha256"] == sha(first)


# --- the heatmap of a saved record -----------------------------------------------------------------
def forget_results(live) -> None:
    """What a restart of the server does to the in-memory results (the heatmap is then redrawn)."""
    live.ctx.results = type(live.ctx.results)()


def processed_exam(live, nurse, image: bytes, pid: str, analysis="pap_smear") -> str:
    draft = open_draft(live, nurse, pid=pid, analysis=analysis)
    nurse.upload(draft, image)
    res = nurse.process(draft)
    assert res.status == 303, res.text[:500]
    return res.location.rsplit("/", 1)[-1]


def count_model_runs(live, monkeypatch) -> list:
    runs = []
    real = live.ctx.engine.run_model
    monkeypatch.setattr(live.ctx.engine, "run_model", lambda *a, **k: runs.append(a[0]) or real(*a, **k))
    return runs


def test_a_redrawn_heatmap_is_the_one_the_result_had(staffed_server, nurse, two_images, monkeypatch):
    live = staffed_server
    exam_uuid = processed_exam(live, nurse, two_images[0], "HM-1")
    drawn = nurse.get(f"/exams/{exam_uuid}/heatmap.png")
    assert drawn.status == 200 and drawn.body.startswith(b"\x89PNG")
    forget_results(live)
    runs = count_model_runs(live, monkeypatch)
    assert 'id="heatmap-toggle"' in nurse.get(f"/exams/{exam_uuid}").text
    again = nurse.get(f"/exams/{exam_uuid}/heatmap.png")
    assert again.status == 200 and again.body == drawn.body
    assert runs == ["pap_smear"]                     # the final step's model alone, once


def test_no_heatmap_from_other_models_after_a_pack_change(staffed_server, nurse, two_images, pack_key,
                                                          tmp_path, monkeypatch):
    from inference_helpers import clone_pack, reseal
    live = staffed_server
    exam_uuid = processed_exam(live, nurse, two_images[0], "HM-2")
    # A newer pack is installed and the server restarts: the record's models are gone.
    newer = clone_pack(live.cfg.demo_pack_dir, tmp_path / "newer")

    def bump(manifest):
        manifest["pack_id"] = "tiny-newer"
        for entry in manifest["models"].values():
            entry["version"] += ".1"
    reseal(newer, pack_key, bump)
    live.cfg.packs_dir.mkdir(parents=True, exist_ok=True)
    (live.cfg.packs_dir / "current").symlink_to(newer)
    live.ctx.engine.reload()
    forget_results(live)
    runs = count_model_runs(live, monkeypatch)
    page = nurse.get(f"/exams/{exam_uuid}")
    assert 'id="heatmap-toggle"' not in page.text and "Heatmap not available for this record" in page.text
    res = nurse.get(f"/exams/{exam_uuid}/heatmap.png")
    assert res.status == 404 and not res.body.startswith(b"\x89PNG")
    assert runs == []


def test_viewing_a_record_never_runs_a_model_for_a_supervisor(staffed_server, nurse, two_images, monkeypatch):
    from webutil import SUPERVISOR
    live = staffed_server
    exam_uuid = processed_exam(live, nurse, two_images[0], "HM-3")
    forget_results(live)
    runs = count_model_runs(live, monkeypatch)
    supervisor = live.client()
    supervisor.login(*SUPERVISOR)
    page = supervisor.get(f"/exams/{exam_uuid}")
    assert page.status == 200 and "Heatmap not available for this record" in page.text
    assert supervisor.get(f"/exams/{exam_uuid}/heatmap.png").status == 404
    assert runs == []
