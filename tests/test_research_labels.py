"""Labelled datasets never hold a model's guess as a label: the on-box library and the research
export file images under a class only when a clinician decided it on an exam made with trained
models; undecided results (uncertain and out-of-scope ones too) and demo exams are kept apart."""
from __future__ import annotations

import json
import os
import re

from appliance.exchange import importer
from appliance.exchange.export import export_bundle
from appliance.store import Store
from test_exchange_support import world  # noqa: F401
from test_store_support import register, result_json, save_exam
from webutil import NURSE, live_server, staffed_server, web_cfg  # noqa: F401


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_library_keeps_model_labels_apart_from_clinicians_classes(cfg):
    with Store.open(cfg) as store:
        patient = register(store)
        waiting = save_exam(store, patient, seed=1, demo=False)                      # the model said abnormal
        decided = save_exam(store, patient, seed=2, demo=False)
        store.exams.decide(decided["uuid"], "normal", by="doctor1")
        demo = save_exam(store, patient, seed=3)                                      # untrained models
        store.exams.decide(demo["uuid"], "abnormal", by="doctor1")
        flagged = result_json("pap_smear", "abnormal") | {"demo": False, "out_of_scope": {"flagged": True}}
        out_of_scope = save_exam(store, patient, seed=4, result=flagged, demo=False)
        library = store.images.library
        sha = {e["uuid"]: e["image"]["sha256"] for e in (waiting, decided, demo, out_of_scope)}
        assert _files(library / "pap_smear") == sorted([
            f"confirmed/normal/{sha[decided['uuid']]}.jpg",
            f"unconfirmed/abnormal/{sha[waiting['uuid']]}.jpg",
            f"unconfirmed/abnormal/{sha[demo['uuid']]}.jpg",
            f"unconfirmed/abnormal/{sha[out_of_scope['uuid']]}.jpg"])
        assert "Never train on these" in (library / "README.txt").read_text()

        # Deciding moves the image from the model's guess to the clinician's class.
        store.exams.decide(waiting["uuid"], "abnormal", by="doctor1")
        assert (library / "pap_smear" / "confirmed" / "abnormal" / f"{sha[waiting['uuid']]}.jpg").exists()
        assert not (library / "pap_smear" / "unconfirmed" / "abnormal" / f"{sha[waiting['uuid']]}.jpg").exists()
        assert store.images.filed_path(store.exams.get(waiting["uuid"])).exists()
        items = {i["exam_uuid"]: i for i in store.images.browse(analysis="pap_smear")[0]}
        assert (items[demo["uuid"]]["demo"], items[demo["uuid"]]["confirmed"]) == (True, False)
        assert (items[out_of_scope["uuid"]]["decided"], items[waiting["uuid"]]["confirmed"]) == (False, True)
        before = _files(library)
    with Store.open(cfg) as store:
        assert store.images.reconcile() == 0 and _files(store.images.library) == before


def test_a_library_of_the_older_layout_is_refiled_at_start(cfg):
    with Store.open(cfg) as store:
        exam = save_exam(store, register(store), seed=1, demo=False)
        stored = store.images.path(exam["image"]["sha256"])
    library = cfg.data_dir / "library"
    for folder in library.iterdir():
        if folder.is_dir():
            for path in [p for p in folder.rglob("*") if p.is_file()]:
                path.unlink()
    old = library / "pap_smear" / "abnormal"                     # the model's class, as the old layout filed it
    old.mkdir(parents=True, exist_ok=True)
    os.link(stored, old / stored.name)
    (old / f"{'f' * 64}.jpg").write_bytes(b"a file whose original is gone: kept")
    (library / "README.txt").unlink()
    with Store.open(cfg) as store:
        assert store.images.filed_path(exam).exists() and "unconfirmed" in store.images.filed_path(exam).parts
    assert _files(old) == [f"{'f' * 64}.jpg"] and (library / "README.txt").exists()


def test_research_export_files_only_confirmed_classes(world):
    w = world
    store = w.post.store
    _, confirmed = w.add_exam("R-1", "Almaz Kebede", label="abnormal", decide="normal")
    _, waiting = w.add_exam("R-2", "Hana Girma", label="abnormal")
    _, demo = w.add_exam("R-3", "Demo Patient", label="abnormal", decide="abnormal", demo=True)
    _, referred = w.add_exam("R-4", "Selam Tesfaye", label="abnormal", decide="not_suitable")
    result = export_bundle(store, w.post.cfg, w.stick, deidentified=True)
    assert result.counts["images"] == 4
    out = importer.extract_bundle(w.supervisor.cfg, result.path, w.tmp / "research").extracted_to
    records = {r["id"]: r for r in map(json.loads, (out / "records" / "exams.jsonl").read_text().splitlines())}
    [labelled] = [p for p in _files(out) if p.startswith("images/")]        # the one clinician's class
    assert re.fullmatch(r"images/pap_smear/normal/[0-9a-f]{24}\.jpg", labelled)
    assert labelled == next(r["image"] for r in records.values() if r["final_label"] == "normal")
    unconfirmed = [p for p in _files(out) if p.startswith("unconfirmed/")]
    assert len(unconfirmed) == 6                                   # three images, each with its record
    for record in records.values():
        if record["image"].startswith("unconfirmed/"):
            assert record["image"] == f"unconfirmed/pap_smear/{record['id']}.jpg"
            assert json.loads((out / f"unconfirmed/pap_smear/{record['id']}.json").read_text()) == record
    kinds = {(r["status"], r["demo"], r["final_label"]) for r in records.values() if r["image"].startswith("unconfirmed/")}
    assert kinds == {("awaiting_decision", False, "abnormal"), ("decided", True, "abnormal"),
                     ("decided", False, "not_suitable")}

    # An identified bundle names the same exams' image folder "unconfirmed" (the importer files by records).
    bundle = export_bundle(store, w.post.cfg, w.stick, full=True)
    folders = {p.split("/")[2] for p in _files(importer.extract_bundle(w.supervisor.cfg, bundle.path,
                                                                        w.tmp / "identified").extracted_to)
               if p.startswith("images/")}
    assert folders == {"normal", "unconfirmed"}
    assert {confirmed["uuid"], waiting["uuid"], demo["uuid"], referred["uuid"]} <= set(store.exams.index.by_uuid)


def test_browse_images_badges_demo_and_awaiting(staffed_server):
    store = staffed_server.ctx.store
    patient = register(store)
    waiting = save_exam(store, patient, seed=11, demo=False)
    demo = save_exam(store, patient, seed=12)
    store.exams.decide(demo["uuid"], "abnormal", by="doctor1")
    decided = save_exam(store, patient, seed=13, demo=False)
    store.exams.decide(decided["uuid"], "normal", by="doctor1")
    nurse = staffed_server.logged_in(NURSE)
    page = nurse.get("/images?analysis=pap_smear").text
    thumbs = {m.group(1): m.group(2) for m in re.finditer(r'href="/exams/([0-9a-f-]{36})">(.*?)</a>', page, re.S)}
    assert "badge-wait" in thumbs[waiting["uuid"]] and "badge-demo" not in thumbs[waiting["uuid"]]
    assert "badge-demo" in thumbs[demo["uuid"]] and "badge-wait" not in thumbs[demo["uuid"]]
    assert "badge" not in thumbs[decided["uuid"]]
