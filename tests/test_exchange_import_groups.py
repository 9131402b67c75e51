"""Import commits in groups: images in batches made durable together before any record, records a
few hundred per store transaction. A disk that fills up in the middle leaves whole groups and no
half one, and importing the same bundle again completes it."""
from __future__ import annotations

import contextlib
import errno
import os

import pytest

from appliance.errors import StoreError
from appliance.exchange import importer
from appliance.exchange.export import export_bundle
from appliance.store import durable

from test_exchange_support import world  # noqa: F401

PATIENTS = 12


@pytest.fixture
def bundle(world, monkeypatch):
    """A post's bundle of 12 patients with one exam each; groups small enough to have several."""
    for n in range(PATIENTS):
        world.add_exam(f"JU-{n:03d}", f"Patient {n}")
    monkeypatch.setattr(importer, "IMAGE_GROUP", 5)        # image batches: 5, 5, 2
    monkeypatch.setattr(importer, "MERGE_GROUP", 5)        # transactions: patients 5, 5, 2; exams 5, 5, 2
    return export_bundle(world.post.store, world.post.cfg, world.stick).path


def _disk_fills_during(monkeypatch, owner, group: str, nth: int) -> None:
    """The disk is full just as the ``nth`` group (``owner.<group>()``: an image batch or a store
    transaction) is committed, and only then."""
    full, count = {"now": False}, {"n": 0}
    real_fsync, real_group = durable._fsync_file, getattr(owner, group)

    def fsync(path):
        if full["now"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_fsync(path)

    @contextlib.contextmanager
    def counted():
        count["n"] += 1
        try:
            with real_group():
                yield
                full["now"] = count["n"] == nth
        finally:
            full["now"] = False
    monkeypatch.setattr(durable, "_fsync_file", fsync)
    monkeypatch.setattr(owner, group, counted)


def _library(store) -> set[str]:
    return {p.name for p in store.images.root.glob("??/*") if p.is_file()}


def _leftovers(data_dir) -> list:
    return [p for p in data_dir.rglob(".*.tmp-*") if "exchange" not in p.parts]


def test_a_full_disk_during_the_records_leaves_whole_groups_and_a_second_import_completes(world, bundle,
                                                                                           monkeypatch):
    sup = world.supervisor
    _disk_fills_during(monkeypatch, sup.store, "transaction", 3 + 2)   # 3 patient groups, then exams
    with pytest.raises(StoreError, match="disk is full"):
        importer.import_bundles(sup.store, sup.cfg, [bundle])
    assert len(_library(sup.store)) == PATIENTS                    # every image, before any record
    assert len(sup.store.patients.search("Patient", limit=50)) == PATIENTS
    assert sup.store.exams.query(limit=50)[1] == 5                 # the first exam group, not half the second
    assert not _leftovers(sup.cfg.data_dir)
    sup.reopen()                                                    # and so it is on disk
    assert sup.store.exams.query(limit=50)[1] == 5 and not sup.store.warnings

    monkeypatch.undo()
    monkeypatch.setattr(importer, "MERGE_GROUP", 5)
    (report,) = importer.import_bundles(sup.store, sup.cfg, [bundle])
    assert report.merged["exams"]["inserted"] == PATIENTS - 5 and report.merged["exams"]["unchanged"] == 5
    assert report.images_present == PATIENTS and report.images_added == 0
    assert sup.store.exams.query(limit=50)[1] == PATIENTS


def test_a_full_disk_during_the_images_merges_no_record(world, bundle, monkeypatch):
    sup = world.supervisor
    _disk_fills_during(monkeypatch, sup.store.images, "batch", 2)      # the second image batch
    with pytest.raises(StoreError, match="disk is full"):
        importer.import_bundles(sup.store, sup.cfg, [bundle])
    assert len(_library(sup.store)) == 5                           # the first batch only, whole
    assert not sup.store.patients.search("Patient", limit=50) and sup.store.exams.query()[1] == 0
    assert not _leftovers(sup.cfg.data_dir)

    monkeypatch.undo()
    (report,) = importer.import_bundles(sup.store, sup.cfg, [bundle])
    assert report.images_added == PATIENTS - 5 and report.images_present == 5
    assert report.merged["patients"]["inserted"] == PATIENTS and report.merged["exams"]["inserted"] == PATIENTS
    for exam in sup.store.exams.query(limit=50)[0]:
        assert sup.store.images.path(exam["image"]["sha256"], exam["image"]["ext"]).is_file()


def _filed(store, analysis: str) -> dict[str, set[str]]:
    """'<folder>/<class>' -> image names under the supervisor's library for ``analysis``."""
    root = store.images.library / analysis
    return {f"{p.parent.parent.name}/{p.parent.name}": {q.name for q in p.parent.iterdir()}
            for p in root.glob("*/*/*") if p.is_file()}


def test_imported_images_are_filed_by_class_and_a_later_decision_moves_them(world):
    """The supervisor's library files each imported exam's image (unconfirmed until decided); a
    decision made at the post and brought by the next bundle moves it to confirmed, and images
    the supervisor already had stay where they are."""
    sup = world.supervisor
    _, own = world.add_exam("SUP-1", "Own Patient", box=sup, decide="abnormal")
    _, exam = world.add_exam("JU-100", "Lensa Tesfaye", label="abnormal")
    importer.import_bundles(sup.store, sup.cfg, [export_bundle(world.post.store, world.post.cfg, world.stick).path])
    sha = exam["image"]["sha256"]
    filed = _filed(sup.store, "pap_smear")
    assert any(name.startswith(sha) for name in filed["unconfirmed/abnormal"])
    assert any(name.startswith(own["image"]["sha256"]) for name in filed["confirmed/abnormal"])

    world.post.store.exams.decide(exam["uuid"], "normal", by="doctor1")
    importer.import_bundles(sup.store, sup.cfg, [export_bundle(world.post.store, world.post.cfg, world.stick).path])
    filed = _filed(sup.store, "pap_smear")
    assert any(name.startswith(sha) for name in filed["confirmed/normal"])
    assert not any(name.startswith(sha) for name in filed.get("unconfirmed/abnormal", ()))
    assert any(name.startswith(own["image"]["sha256"]) for name in filed["confirmed/abnormal"])
