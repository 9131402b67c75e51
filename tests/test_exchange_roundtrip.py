"""Post -> stick -> supervisor, on real data folders with real keys: merge, increments, history, replay."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import UserError
from appliance.exchange import importer, layout, usb
from appliance.exchange.container import BundleRefused
from appliance.exchange.export import export_bundle

from test_exchange_support import snapshot, world  # noqa: F401


def _export(w, **options):
    return export_bundle(w.post.store, w.post.cfg, w.stick, **options)


def _import(w, *paths, **options):
    results = importer.import_bundles(w.supervisor.store, w.supervisor.cfg, list(paths), **options)
    for item in results:
        if isinstance(item, BundleRefused):
            raise item
    return results


def test_round_trip_brings_records_and_images_to_the_supervisor(world):
    w = world
    patient, exam = w.add_exam("JU-000123", "Almaz Kebede", phone="0911223344", address="Kebele 3",
                               birth_date="1984-02-11")
    _, breast = w.add_exam("JU-000124", "Tigist Alemu", analysis="breast_histopathology", label="fibroadenoma")
    w.post.store.exams.decide(exam["uuid"], "abnormal", note="cells look atypical", by="doctor1")

    result = _export(w)
    assert result.path.parent == w.stick and result.path.name.endswith(".bccdms")
    assert result.counts["patients"] == 2 and result.counts["exams"] == 2 and result.counts["images"] == 2
    assert usb.bundles_on(w.stick) == [result.path]

    (report,) = _import(w, result.path)
    assert report.known_post and report.merged["patients"]["inserted"] == 2
    assert report.merged["exams"]["inserted"] == 2 and report.images_added == 2

    sup = w.supervisor.store
    assert sup.patients.get(patient["uuid"]) == w.post.store.patients.get(patient["uuid"])
    assert sup.exams.get(exam["uuid"]) == w.post.store.exams.get(exam["uuid"])
    assert sup.exams.get(exam["uuid"])["decision"]["label"] == "abnormal"
    for e in (exam, breast):
        sha = e["image"]["sha256"]
        assert sup.images.path(sha).read_bytes() == w.post.store.images.path(sha).read_bytes()
    filed, _ = sup.images.browse(analysis="pap_smear", label="abnormal")
    assert [i["sha256"] for i in filed] == [exam["image"]["sha256"]] and Path(filed[0]["path"]).is_file()
    stats = sup.stats()
    assert stats["by_post"] == {w.post.store.post_id: 2}
    assert importer.imported_posts(sup)[w.post.store.post_id]["name"] == "Agaro health post"
    entries, _ = sup.audit.query(action="exchange.import")
    assert entries and entries[0]["detail"]["post_id"] == w.post.store.post_id


def test_incremental_exports_carry_only_what_is_new(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    first = _export(w)
    assert first.counts["exams"] == 1 and first.full

    nothing = _export(w)
    assert nothing.empty and not any(p.name.startswith(".") for p in w.stick.iterdir())

    w.add_exam("JU-2", "Hana Girma")
    second = _export(w)
    assert not second.full and second.seq_from == first.seq_to
    assert second.counts["exams"] == 1 and second.counts["patients"] == 1

    full = _export(w, full=True)
    assert full.counts["exams"] == 2 and full.seq_from == 0

    reports = _import(w, first.path, second.path, full.path)
    sup = w.supervisor.store
    assert sup.stats()["exams"] == 2
    assert reports[-1].merged["exams"]["unchanged"] == 2, "a full re-export must not duplicate anything"


def test_reimporting_a_bundle_changes_nothing(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    bundle = _export(w).path
    _import(w, bundle)
    before, seq = snapshot(w.supervisor.cfg.data_dir), w.supervisor.store.change_seq()

    (again,) = _import(w, bundle)
    assert again.already_imported and not again.changed
    assert again.merged["exams"] == {"inserted": 0, "updated": 0, "unchanged": 1, "older": 0}
    assert w.supervisor.store.change_seq() == seq
    assert snapshot(w.supervisor.cfg.data_dir) == before


def test_newer_edit_wins_and_the_older_version_is_kept_in_history(world):
    w = world
    _, exam = w.add_exam("JU-1", "Almaz Kebede")
    old = _export(w).path
    _import(w, old)
    w.post.store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
    (report,) = _import(w, _export(w).path)
    assert report.merged["exams"]["updated"] == 1

    sup = w.supervisor.store
    assert sup.exams.get(exam["uuid"])["final_label"] == "abnormal"
    versions = sup._history.versions(exam["uuid"])
    assert [v["final_label"] for v in versions] == ["normal"]


def test_a_replayed_older_bundle_is_refused_and_changes_nothing(world):
    w = world
    _, exam = w.add_exam("JU-1", "Almaz Kebede")
    old = _export(w).path
    w.post.store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
    new = _export(w, full=True).path
    _import(w, new)
    before = snapshot(w.supervisor.cfg.data_dir)

    with pytest.raises(BundleRefused) as err:
        _import(w, old)
    assert "older than records already imported" in err.value.message and "roll records back" in err.value.message
    assert snapshot(w.supervisor.cfg.data_dir) == before
    assert w.supervisor.store.exams.get(exam["uuid"])["final_label"] == "abnormal"


def test_bundles_given_together_are_imported_oldest_first(world):
    w = world
    _, exam = w.add_exam("JU-1", "Almaz Kebede")
    old = _export(w).path
    w.post.store.exams.decide(exam["uuid"], "abnormal", by="doctor1")
    w.add_exam("JU-2", "Hana Girma")
    new = _export(w).path
    reports = _import(w, new, old)
    assert [r.path for r in reports] == [old, new]
    assert w.supervisor.store.exams.get(exam["uuid"])["final_label"] == "abnormal"
    assert w.supervisor.store.stats()["exams"] == 2


def test_a_missing_bundle_is_reported(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    first = _export(w).path
    w.add_exam("JU-2", "Hana Girma")
    _export(w)                                   # this stick is lost on the way
    w.add_exam("JU-3", "Selam Tesfaye")
    third = _export(w).path
    _import(w, first)
    (report,) = _import(w, third)
    assert any("seems to be missing" in warning for warning in report.warnings)


def test_two_posts_are_counted_apart(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    other = w.new_post("Bedele health post")
    w.trust(other)
    w.add_exam("BD-1", "Meron Assefa", box=other, analysis="cervix_type", label="type_2")
    _import(w, _export(w).path, export_bundle(other.store, other.cfg, w.stick).path)
    stats = w.supervisor.store.stats()
    assert stats["by_post"] == {w.post.store.post_id: 1, other.store.post_id: 1}
    other.store.close()


def test_unknown_posts_are_refused_unless_accepted(world):
    w = world
    stranger, bundle = w.bundle_from_new_post("Unlisted post")
    before = snapshot(w.supervisor.cfg.data_dir)
    with pytest.raises(BundleRefused) as err:
        _import(w, bundle)
    assert "not in [exchange] known_posts" in err.value.message
    assert snapshot(w.supervisor.cfg.data_dir) == before

    (report,) = _import(w, bundle, accept_unknown=True)
    assert not report.known_post and report.warnings and report.merged["exams"]["inserted"] == 1
    stranger.store.close()


def test_export_needs_the_supervisor_key_and_a_writable_folder(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    w.post.cfg.exchange.supervisor_public_key = ""
    with pytest.raises(UserError, match="No supervisor key"):
        _export(w)
    w.post.cfg.exchange.supervisor_public_key = "not base64!"
    with pytest.raises(UserError, match="not valid base64"):
        _export(w)
    w.post.cfg.exchange.supervisor_public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    with pytest.raises(UserError, match="not a usable key"):
        _export(w)
    w.post.cfg.exchange.supervisor_public_key = w.supervisor_public_key
    with pytest.raises(UserError, match="does not exist"):
        export_bundle(w.post.store, w.post.cfg, w.tmp / "no-such-stick")
    assert list(w.stick.iterdir()) == []


def test_a_bundle_made_on_this_box_is_not_imported_into_it(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    bundle = _export(w).path
    with pytest.raises(BundleRefused, match="made by this very box"):
        importer.import_bundle(w.post.store, w.post.cfg, bundle)


def test_extract_refuses_an_existing_folder(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    bundle = _export(w, deidentified=True).path
    out = w.tmp / "research"
    report = importer.extract_bundle(w.supervisor.cfg, bundle, out)
    assert (report.extracted_to / layout.MANIFEST).is_file()
    with pytest.raises(UserError, match="already exists"):
        importer.extract_bundle(w.supervisor.cfg, bundle, out)
