"""Each health post's records stay with its own staff: on a box that holds records imported
from other posts (a supervisor's), nurses and doctors browse, search, open and count only
their own post's records; the supervisor sees every post (read-only). Real kiosk under
waitress; the other post's records come from a second real store, merged as an import does."""
from __future__ import annotations

import hashlib
import re

import pytest

from appliance.config import load_config
from appliance.store import Store

from test_store_support import jpeg_bytes, result_json
from webutil import DOCTOR, NURSE, SUPERVISOR, live_server, staffed_server, web_cfg  # noqa: F401


def _exam(store, patient, label, seed):
    image = jpeg_bytes(seed)
    result = result_json("pap_smear", label)
    result["demo"] = False
    result["image_info"]["sha256"] = hashlib.sha256(image).hexdigest()
    exam = store.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear", "source": "file",
                             "result": result}, image, by="nurse1")
    return store.exams.decide(exam["uuid"], label, by="nurse1"), image


@pytest.fixture
def two_posts(staffed_server, tmp_path):
    """The kiosk's own post (Almaz, abnormal) and another post's records (Hana, normal x2) merged in."""
    own_store = staffed_server.ctx.store
    almaz = own_store.patients.register("OWN-1", "Almaz Kebede", age_years=40, by="nurse1")
    own_exam, _ = _exam(own_store, almaz, "abnormal", 1)

    other_cfg = load_config(data_dir=tmp_path / "other-post", environ={})
    other_cfg.post.name = "Bedele health post"
    other = Store.open(other_cfg)
    try:
        hana = other.patients.register("OTH-1", "Hana Girma", age_years=33, by="nurse9")
        exams = [_exam(other, hana, "normal", 10 + i) for i in range(2)]
        own_store.merge("patients", other.patients.get(hana["uuid"]))
        for exam, image in exams:
            own_store.images.put(image)
            own_store.merge("exams", other.exams.get(exam["uuid"]))
        own_store.images.reconcile()
        other_post = other.post_id
    finally:
        other.close()
    assert other_post != own_store.post_id
    return {"own_exam": own_exam, "own_patient": almaz, "other_patient": hana,
            "other_exams": [e for e, _ in exams], "other_post": other_post}


def login(live, who):
    client = live.client()
    assert client.login(*who).status == 303
    return client


@pytest.mark.parametrize("who", [NURSE, DOCTOR], ids=["nurse", "doctor"])
def test_clinicians_see_only_their_own_posts_records(staffed_server, two_posts, who):
    client = login(staffed_server, who)
    records = client.get("/records").text
    assert two_posts["own_exam"]["uuid"] in records
    assert not any(e["uuid"] in records for e in two_posts["other_exams"]) and "Hana Girma" not in records

    images = client.get("/images").text
    assert two_posts["own_exam"]["image"]["sha256"] in images
    assert not any(e["image"]["sha256"] in images for e in two_posts["other_exams"])

    client.get("/diagnose")
    client.post("/diagnose/search", {"q": "OTH-1"})
    assert "Hana Girma" not in client.get("/diagnose").text
    client.post("/diagnose/search", {"q": "Hana"})
    assert "Hana Girma" not in client.get("/diagnose").text
    client.post("/diagnose/search", {"q": "OWN-1"})
    assert "Almaz Kebede" in client.get("/diagnose").text

    # Opened by address, another post's records do not exist for them.
    other_exam = two_posts["other_exams"][0]["uuid"]
    for path in (f"/patients/{two_posts['other_patient']['uuid']}", f"/exams/{other_exam}",
                 f"/exams/{other_exam}/image.jpg", f"/exams/{other_exam}/print",
                 f"/exams/{other_exam}/report.pdf"):
        assert client.get(path).status == 404, path
    assert client.get(f"/exams/{two_posts['own_exam']['uuid']}").status == 200

    statistics = client.get("/statistics").text
    assert '<strong id="stat-exams">1</strong>' in statistics and '<strong id="stat-patients">1</strong>' in statistics


def test_the_supervisor_sees_every_post(staffed_server, two_posts):
    supervisor = login(staffed_server, SUPERVISOR)
    records = supervisor.get("/records").text
    assert two_posts["own_exam"]["uuid"] in records and all(e["uuid"] in records for e in two_posts["other_exams"])
    assert supervisor.get(f"/exams/{two_posts['other_exams'][0]['uuid']}").status == 200
    assert '<strong id="stat-exams">3</strong>' in supervisor.get("/statistics").text


def test_store_queries_take_a_post_filter(staffed_server, two_posts):
    store = staffed_server.ctx.store
    own, other = store.post_id, two_posts["other_post"]
    assert store.exams.query(post_id=own)[1] == 1 and store.exams.query(post_id=other)[1] == 2
    assert store.exams.query()[1] == 3
    assert [p["pid"] for p in store.patients.search("", post_id=own)] == ["OWN-1"]
    assert store.patients.search("Hana", post_id=own) == [] and store.patients.search("OTH", post_id=own) == []
    assert [p["pid"] for p in store.patients.search("Hana", post_id=other)] == ["OTH-1"]
    assert store.images.browse(post_id=own)[1] == 1 and store.images.browse(post_id=other)[1] == 2
    assert store.stats(post_id=own)["exams"] == 1 and store.stats(post_id=other)["exams"] == 2
    assert store.stats(post_id=own)["patients"] == 1 and store.stats()["exams"] == 3


# Route arguments that name no record of a post (filled with a harmless value of their shape).
NEUTRAL_ARGS = {"draft_id": "A" * 22, "username": "nurse1", "path": "css/kiosk.css", "token": "x" * 20,
                "model_id": "pap_smear", "name": "roc.png", "fmt": "json"}


def _paths(rule: str, record_ids: list[str]) -> list[str]:
    """Concrete paths for a route rule: each record argument filled with each of the other post's
    record ids (the rule must refuse them all), the others with a neutral value."""
    names = [m.split(":")[0] for m in re.findall(r"<([^>]+)>", rule)]
    if not names:
        return [rule]
    if all(n in NEUTRAL_ARGS for n in names):
        return [re.sub(r"<([^>]+)>", lambda m: NEUTRAL_ARGS[m.group(1).split(":")[0]], rule)]
    return [re.sub(r"<([^>]+)>", lambda m, rid=rid: NEUTRAL_ARGS.get(m.group(1).split(":")[0], rid), rule)
            for rid in record_ids]


@pytest.mark.parametrize("who", [NURSE, DOCTOR], ids=["nurse", "doctor"])
def test_every_route_applies_the_post_rule(staffed_server, two_posts, who):
    """Every route of the app, asked by a clinician for another post's records: an address that names
    one (exam, patient, image) answers an error, and no answer anywhere shows another post's data.
    A new route that forgets auth.records_post / lookups.*_or_404 fails here."""
    live = staffed_server
    other_exams = two_posts["other_exams"]
    record_ids = [e["uuid"] for e in other_exams] + [two_posts["other_patient"]["uuid"]] \
        + [e["image"]["sha256"] for e in other_exams]
    secrets_of_other_post = ["Hana Girma", "OTH-1", *record_ids]
    # Searches and filters that match the other post's patient (the pages echo what was typed).
    form = {"patient_uuid": two_posts["other_patient"]["uuid"], "q": "OTH", "pid": "OTH", "name": "Hana",
            "analysis": "pap_smear", "draft": "A" * 22}
    client = login(live, who)
    routes = sorted(live.ctx.app.routes, key=lambda r: r.method != "POST")   # POSTs first: searches, filters
    checked = 0
    for route in routes:
        if route.rule.startswith("/static/") or route.rule == "/logout":
            continue
        method = route.method if route.method != "ANY" else "GET"
        named = bool(re.search(r"<", route.rule)) and not all(
            m.split(":")[0] in NEUTRAL_ARGS for m in re.findall(r"<([^>]+)>", route.rule))
        for path in _paths(route.rule, record_ids):
            res = client.post(path, form) if method == "POST" else client.get(path)
            if named:
                assert res.status >= 400, (method, route.rule, path, res.status)
            leaked = [s for s in secrets_of_other_post if s.encode() in res.body]
            assert not leaked, (method, route.rule, path, res.status, leaked)
            checked += 1
        if method == "POST":
            # What a POST stored in the session (a search, a filter) shows on the next pages.
            for page in ("/diagnose", "/records", "/images", "/statistics"):
                shown = client.get(page).body
                assert not [s for s in secrets_of_other_post if s.encode() in shown], (route.rule, page)
    assert checked >= 40, "the app's route list looks too short"
