"""Route handlers called directly against a context, without a server: a real store on disk, the
real engine on the ``tiny_pack`` models, and a Bottle request environ built here. What the
live-server tests check over HTTP, these check one handler at a time."""
from __future__ import annotations

import hashlib
import io
import re
import threading
import urllib.parse
from contextlib import contextmanager
from wsgiref.util import setup_testing_defaults

import bottle
import pytest

from appliance.config import load_config
from appliance.errors import NotFound, UserError
from appliance.inference.engine import Engine
from appliance.store import Store
from appliance.web import routes_api, routes_drafts, routes_exams, routes_patients
from appliance.web.context import AppContext
from appliance.web.lookups import exam_or_404, patient_or_404
from appliance.web.request import ENV_CTX, ENV_SESSION

from test_store_support import jpeg_bytes, result_json
from webutil import first_image, web_cfg  # noqa: F401

NURSE = {"username": "nurse1", "role": "nurse", "display_name": "Nurse", "language": "en"}


@pytest.fixture
def ctx(web_cfg):
    store = Store.open(web_cfg)
    context = AppContext(web_cfg, store, Engine.from_config(web_cfg))
    store.users.create(NURSE["username"], "nurse-pass-2026", "nurse", by=None)
    try:
        yield context
    finally:
        context.close()


@contextmanager
def request_as(ctx: AppContext, user: dict | None, method: str = "GET", path: str = "/", form: dict | None = None):
    """Bind bottle's thread-local request and response to a WSGI environ of this request, with
    the context and (for ``user``) a session, as the guard leaves them for the route."""
    body = urllib.parse.urlencode(form or {}).encode()
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    setup_testing_defaults(environ)
    environ[ENV_CTX] = ctx
    environ[ENV_SESSION] = ctx.sessions.create(user) if user else None
    bottle.request.bind(environ)
    bottle.response.bind()
    yield environ


def answer(call) -> bottle.HTTPResponse:
    """The response a handler raised (a redirect) or returned (a page)."""
    try:
        out = call()
    except bottle.HTTPResponse as res:
        return res
    res = bottle.HTTPResponse(body=out, status=bottle.response.status_code)
    return res


def _draft_with_image(ctx, datasets, patient):
    draft = ctx.drafts.create(NURSE["username"], patient["uuid"], "pap_smear")
    image = first_image(datasets, "herlev", "normal_superficiel", kind="originals")
    return ctx.drafts.attach_image(draft.id, image.read_bytes(), "file")


def test_start_processing_saves_the_exam_and_opens_its_result(ctx, datasets):
    patient = ctx.store.patients.register("HD-1", "Almaz Handler", age_years=41, by="nurse1")
    draft = _draft_with_image(ctx, datasets, patient)
    with request_as(ctx, NURSE, "POST", f"/drafts/{draft.id}/process", {"version": draft.version}):
        res = answer(lambda: routes_drafts.process(ctx, draft.id))
    assert res.status_code == 303
    exam_uuid = re.fullmatch(r"/exams/([0-9a-f-]{36})", res.headers["Location"]).group(1)
    exam = ctx.store.exams.get(exam_uuid)
    assert exam["patient_uuid"] == patient["uuid"] and exam["analysis"] == "pap_smear"
    assert exam["image"]["sha256"] == draft.image_info["sha256"] and ctx.results.get(exam_uuid) is not None
    with pytest.raises(NotFound):
        ctx.drafts.get(draft.id, NURSE["username"])          # the draft became the exam

    # A second tap on "Start processing" leads to the same exam and saves nothing more.
    with request_as(ctx, NURSE, "POST", f"/drafts/{draft.id}/process", {"version": draft.version}):
        again = answer(lambda: routes_drafts.process(ctx, draft.id))
    assert again.status_code == 303 and again.headers["Location"] == f"/exams/{exam_uuid}"
    assert ctx.store.exams.query(limit=1)[1] == 1


def test_the_image_steps_poll_follows_the_draft_to_its_exam(ctx, datasets):
    """While "Start processing" runs, the page's long poll waits for the exam instead of answering
    "not found"; processing that failed gives the open draft back to the poll."""
    patient = ctx.store.patients.register("HD-5", "Poll Handler", age_years=38, by="nurse1")
    draft = _draft_with_image(ctx, datasets, patient)
    claimed = ctx.drafts.claim(draft.id, NURSE["username"], draft.version)
    finisher = threading.Timer(0.3, ctx.drafts.finish, (claimed, "0" * 8 + "-exam-of-the-draft"))
    finisher.start()
    with request_as(ctx, NURSE, "GET", f"/api/drafts/{draft.id}/wait?version={draft.version}"):
        assert routes_api.draft_wait(ctx, draft.id) == {"id": draft.id, "exam": "0" * 8 + "-exam-of-the-draft"}
    finisher.join()

    other = _draft_with_image(ctx, datasets, patient)
    failed = threading.Timer(0.3, ctx.drafts.give_back, (ctx.drafts.claim(other.id, NURSE["username"], other.version),))
    failed.start()
    with request_as(ctx, NURSE, "GET", f"/api/drafts/{other.id}/wait?version={other.version}"):
        reopened = routes_api.draft_wait(ctx, other.id)
    failed.join()
    assert reopened["id"] == other.id and reopened["version"] == other.version and reopened["has_image"]


def test_start_processing_on_an_image_that_changed_saves_nothing(ctx, datasets):
    patient = ctx.store.patients.register("HD-2", "Hana Handler", age_years=35, by="nurse1")
    draft = _draft_with_image(ctx, datasets, patient)
    with request_as(ctx, NURSE, "POST", f"/drafts/{draft.id}/process", {"version": draft.version + 5}):
        res = answer(lambda: routes_drafts.process(ctx, draft.id))
    assert res.status_code == 409 and "Start processing" in res.body
    assert ctx.store.exams.query(limit=1)[1] == 0
    assert ctx.drafts.get(draft.id, NURSE["username"]).has_image        # still open, image kept


def test_registration_refuses_a_bad_patient_id_with_a_sentence(ctx):
    form = {"pid": "<script>", "full_name": "Bad Id", "age_years": "30"}
    with request_as(ctx, NURSE, "POST", "/patients", form):
        res = answer(lambda: routes_patients.register_patient(ctx))
    assert res.status_code == 400 and "may only contain letters, digits" in res.body
    assert ctx.store.patients.search("Bad Id", limit=5) == []


def test_another_posts_record_does_not_exist_for_a_nurse(ctx, tmp_path):
    """Records merged from another post (as an import does): the supervisor opens them, a nurse
    of this post gets "does not exist" from every lookup and every exam handler."""
    other_cfg = load_config(data_dir=tmp_path / "other-post", environ={})
    other = Store.open(other_cfg)
    try:
        patient = other.patients.register("OTH-1", "Hana Other", age_years=33, by="nurse9")
        image = jpeg_bytes(7)
        result = result_json("pap_smear", "normal")
        result["image_info"]["sha256"] = hashlib.sha256(image).hexdigest()
        exam = other.exams.save({"patient_uuid": patient["uuid"], "analysis": "pap_smear", "source": "file",
                                 "result": result}, image, by="nurse9")
        ctx.store.merge("patients", other.patients.get(patient["uuid"]))
        ctx.store.images.put(image)
        ctx.store.merge("exams", other.exams.get(exam["uuid"]))
    finally:
        other.close()
    supervisor = {"username": "super1", "role": "supervisor", "display_name": "Super", "language": "en"}
    with request_as(ctx, supervisor):
        assert patient_or_404(ctx, patient["uuid"])["pid"] == "OTH-1"
        assert answer(lambda: routes_exams.exam_thumbnail(ctx, exam["uuid"])).body[:2] == b"\xff\xd8"
    with request_as(ctx, NURSE):
        for lookup, uuid in ((patient_or_404, patient["uuid"]), (exam_or_404, exam["uuid"]),
                             (routes_patients.patient_page, patient["uuid"]), (routes_exams.exam_page, exam["uuid"]),
                             (routes_exams.exam_thumbnail, exam["uuid"]), (routes_exams.exam_image, exam["uuid"])):
            with pytest.raises(NotFound):
                lookup(ctx, uuid)


def test_a_new_draft_for_an_analysis_the_box_lacks_is_refused(ctx):
    patient = ctx.store.patients.register("HD-4", "No Model", age_years=30, by="nurse1")
    with request_as(ctx, NURSE, "POST", "/drafts", {"patient_uuid": patient["uuid"], "analysis": "no_such"}):
        with pytest.raises(UserError, match="not available on this box"):
            routes_drafts.new_draft(ctx)
