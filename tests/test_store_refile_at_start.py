"""An image whose class-folder link failed is filed at the next start (issue 3's note, issue 12).

The record is saved whole before its image is linked under ``library/<analysis>/…/<class>/``; a
disk error at that moment leaves a warning that says the image will be filed at the next start.
The next start re-files the images of chunks it parses, and the summary cache written since must
not hide that chunk from it.
"""
from __future__ import annotations

import shutil

from appliance.store import Store

from test_store_support import register, save_exam


def _block(folder) -> None:
    """A file where the class folder must go: creating the folder, and so the link, fails."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder")


def test_an_image_not_filed_at_save_is_filed_at_the_next_start(cfg):
    library = cfg.data_dir / "library" / "pap_smear" / "unconfirmed" / "normal"
    with Store.open(cfg) as store:
        patient = register(store)
        save_exam(store, patient, label="normal", seed=1)             # filed normally; the cache knows its chunk
        _block(library)
        exam = save_exam(store, patient, label="normal", seed=2)
        assert any("will be filed at the next start" in w for w in store.warnings)
        filed = store.images.filed_path(exam)
        assert not filed.is_file()
        library.unlink()                              # the disk is fine again
    # Closing wrote the summary cache; the next start must still re-file the exam's chunk.
    with Store.open(cfg) as store:
        assert filed.is_file(), "the image was not filed at the next start"
        assert filed.read_bytes() == store.images.path(exam["image"]["sha256"]).read_bytes()


def test_a_decision_whose_image_could_not_be_moved_is_filed_at_the_next_start(cfg):
    confirmed = cfg.data_dir / "library" / "pap_smear" / "confirmed" / "abnormal"
    with Store.open(cfg) as store:
        exam = save_exam(store, register(store), label="normal", seed=3, demo=False)
        _block(confirmed)
        decided = store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
        assert decided["final_label"] == "abnormal"
        filed = store.images.filed_path(decided)
        assert not filed.is_file() and any("will be filed at the next start" in w for w in store.warnings)
        confirmed.unlink()
        store.audit.log("nurse1", "view", "exam", exam["uuid"])      # more writes, then a clean close
    with Store.open(cfg) as store:
        assert filed.is_file()
        assert not store.images.filed_path(exam).is_file(), "the unconfirmed link is gone"
