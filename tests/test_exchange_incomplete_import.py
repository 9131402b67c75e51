"""An import cut short (a crash, a power cut, a full disk part-way through the merge) is never silent:
the box remembers the bundle until it is imported again, which completes it; the self-check and the
supervisor's import page say so meanwhile."""
from __future__ import annotations

import pytest

from appliance.doctor import check_data_folder
from appliance.errors import StoreError
from appliance.exchange import importer
from appliance.exchange.export import export_bundle
from test_exchange_support import world  # noqa: F401
from webutil import SUPERVISOR, live_server, staffed_server, web_cfg  # noqa: F401


def test_an_import_cut_short_is_shown_and_completed_by_importing_again(world, monkeypatch):
    w = world
    exams = [w.add_exam(f"JU-{n}", "Almaz Kebede")[1] for n in range(3)]
    bundle = export_bundle(w.post.store, w.post.cfg, w.stick).path
    sup = w.supervisor.store

    def disk_full_at_the_exams(kind, records):
        if kind == "exams":
            raise StoreError("The disk is full, so the appliance could not save the record.", "Free some space.")
        return real(kind, records)

    real = sup.bulk_insert
    monkeypatch.setattr(sup, "bulk_insert", disk_full_at_the_exams)
    with pytest.raises(StoreError, match="disk is full"):
        importer.import_bundle(sup, w.supervisor.cfg, bundle)
    monkeypatch.undo()
    assert sup.patients.by_pid("JU-0") is not None and sup.exams.get(exams[0]["uuid"]) is None    # half merged
    [left] = importer.incomplete_imports(sup)
    assert (left["file"], left["post_id"]) == (bundle.name, w.post.store.post_id)
    [check] = check_data_folder(w.supervisor.cfg, store=sup)
    assert check.status == "WARN" and any(bundle.name in d and "did not finish" in d for d in check.details)

    report = importer.import_bundle(sup, w.supervisor.cfg, bundle)               # the same bundle again
    assert report.merged["exams"]["inserted"] == 3 and not report.already_imported
    assert all(sup.exams.get(e["uuid"]) for e in exams)
    assert importer.incomplete_imports(sup) == []
    assert not any("did not finish" in d for d in check_data_folder(w.supervisor.cfg, store=sup)[0].details)
    seq = sup.change_seq()
    importer.import_bundle(sup, w.supervisor.cfg, bundle)                          # done: a third time writes nothing
    assert sup.change_seq() == seq


def test_the_import_page_says_an_import_did_not_finish(staffed_server):
    store = staffed_server.ctx.store
    store.meta_set(importer.INCOMPLETE_META, {"b-1": {"file": "agaro-20261126T080000Z-records-1234abcd.bccdms",
                                                      "post_id": "post-agaro", "post_name": "Agaro health post",
                                                      "started_at": "2026-11-26T08:00:00.000Z", "by": "super1"}})
    supervisor = staffed_server.logged_in(SUPERVISOR)
    page = supervisor.get("/exchange/import").text
    assert "incomplete-import" in page and "agaro-20261126T080000Z-records-1234abcd.bccdms" in page
    assert "Import the same bundle again to complete it." in page
