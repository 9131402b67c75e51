"""Camera and phone routes through the real kiosk server (waitress on 127.0.0.1), over HTTP.

The camera is the folder backend playing one real sample image; the phone is a second HTTP
client without a login. What gets analysed is checked in the record store.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webutil import NURSE, DOCTOR, make_users, start_server, web_config, wait_until

SLIDE = "herlev/originals/carcinoma_in_situ"                                   # Pap smear cells
COLPOSCOPY = "iarc_colposcopy/originals/type_2/AAAZ_3_After_acetic_acid.jpg"


def first_file(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0]


@pytest.fixture
def slide(datasets) -> Path:
    return first_file(datasets / SLIDE)


@pytest.fixture
def camera_cfg(cfg, tiny_pack, pack_key, tmp_path, slide):
    web_config(cfg, tiny_pack, pack_key, lan_host="127.0.0.1")
    folder = tmp_path / "microscope"
    folder.mkdir()
    shutil.copy(slide, folder / slide.name)
    cfg.camera.backend, cfg.camera.folder = "folder", str(folder)
    cfg.camera.preview_idle_seconds = 3
    return cfg


@pytest.fixture
def server(camera_cfg):
    live = start_server(camera_cfg)
    make_users(live)
    try:
        yield live
    finally:
        live.stop()


def login(live, who=NURSE):
    client = live.client()
    assert client.login(*who).status == 303
    return client


def open_exam(live, client, analysis: str, pid: str = "JU-000777") -> str:
    store = live.ctx.store
    patient = store.patients.by_pid(pid) or store.patients.register(pid, "Almaz Bekele", age_years=41, by="nurse1")
    return client.new_draft(patient["uuid"], analysis)


def api_post(client, path: str, payload: dict, *, csrf: bool = True):
    headers = {"Content-Type": "application/json"}
    if csrf:
        headers["X-CSRF-Token"] = client.csrf
    return client.request("POST", path, body=json.dumps(payload).encode(), headers=headers)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def draft_of(live, draft_id):
    return live.ctx.drafts.get(draft_id)


# --- preview and capture ----------------------------------------------------------------------------
def test_preview_capture_and_the_captured_image_is_what_gets_analysed(server, slide):
    nurse = login(server)
    draft_id = open_exam(server, nurse, "pap_smear")
    page = nurse.get(f"/drafts/{draft_id}")
    assert 'id="camera-panel"' in page.text and "/static/js/camera.js" in page.text

    shot = nurse.get("/api/camera/preview.jpg")
    assert shot.status == 200 and shot.headers["content-type"] == "image/jpeg"
    preview = decode(shot.body)
    assert preview.shape[0] <= 480 and preview.shape[1] <= 640
    seq = int(shot.headers["x-frame-seq"])
    newer = nurse.get(f"/api/camera/preview.jpg?after={seq}")
    assert int(newer.headers["x-frame-seq"]) > seq                     # a long poll for the next frame

    status = nurse.get("/api/camera?passive=1").json()
    assert status["state"] == "live" and status["backend"] == "folder" and status["source"] == slide.name

    res = api_post(nurse, "/api/camera/capture", {"draft": draft_id})
    assert res.status == 200, res.text
    summary = res.json()["draft"]
    assert summary["has_image"] and summary["source"] == "camera"
    captured_sha = summary["image_info"]["sha256"]
    captured = draft_of(server, draft_id).image_bytes
    assert hashlib.sha256(captured).hexdigest() == captured_sha
    # Full resolution, and the very picture on the microscope stage (JPEG q95 of the file).
    source = np.asarray(Image.open(slide).convert("RGB"))
    assert decode(captured).shape == source.shape
    assert np.abs(decode(captured).astype(int) - source.astype(int)).mean() < 3

    page = nurse.get(f"/drafts/{draft_id}")
    assert "from the camera" in page.text
    done = nurse.process(draft_id)
    assert done.status == 303, done.text[:400]
    exams, total = server.ctx.store.exams.query(limit=5)
    assert total == 1
    exam = exams[0]
    assert exam["source"] == "camera" and exam["image"]["sha256"] == captured_sha
    assert server.ctx.store.images.path(captured_sha).read_bytes() == captured


def test_live_stream_keeps_sending_new_frames(server):
    """The MJPEG stream sends one new preview frame after another (how many per second is a figure
    of bench/bench_camera.py, not a pass/fail line on a loaded CI machine)."""
    nurse = login(server)
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)
    conn.request("GET", "/api/camera/stream.mjpg",
                 headers={"Cookie": "; ".join(f"{k}={v}" for k, v in nurse.cookies.items())})
    res = conn.getresponse()
    try:
        assert res.status == 200
        boundary = res.headers["Content-Type"].split("boundary=")[1].encode()
        seqs, buffer = [], b""
        while len(seqs) < 8:
            chunk = res.read1(65536)
            assert chunk, f"the stream ended after {len(seqs)} frames"
            buffer += chunk
            while True:
                start = buffer.find(b"--" + boundary)
                head_end = buffer.find(b"\r\n\r\n", start)
                if start < 0 or head_end < 0:
                    break
                headers = dict(line.split(b":", 1) for line in buffer[start:head_end].split(b"\r\n")[1:])
                headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
                length = int(headers[b"content-length"])
                if len(buffer) < head_end + 4 + length:
                    break
                jpeg = buffer[head_end + 4: head_end + 4 + length]
                assert decode(jpeg).shape[1] <= 640
                seqs.append(int(headers[b"x-frame-seq"]))
                buffer = buffer[head_end + 4 + length:]
        # Every part is a newer frame than the one before: the picture is live, not one frame resent.
        assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
    finally:
        conn.close()


def test_abandoned_streams_never_use_up_the_server(server, tmp_path):
    """More streams opened and dropped (page reloads) than the server has threads, while the
    camera is unplugged: the server still answers, and picks the camera up again."""
    nurse = login(server)
    cookie = "; ".join(f"{k}={v}" for k, v in nurse.cookies.items())
    folder = Path(server.cfg.camera.folder)
    folder.rename(tmp_path / "unplugged")
    port = int(server.url.rsplit(":", 1)[1])

    def open_and_drop(_):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/camera/stream.mjpg", headers={"Cookie": cookie})
        status = conn.getresponse().status
        conn.close()
        return status
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(open_and_drop, range(server.cfg.server.threads + 4))) == {200}
    # Answered at all (the client gives up after 60 s) means a thread was free to answer.
    status = nurse.get("/api/camera?passive=1")
    assert status.status == 200 and status.json()["state"] == "unavailable"
    (tmp_path / "unplugged").rename(folder)
    wait_until(lambda: nurse.get("/api/camera/preview.jpg").status == 200, timeout=10)


def test_watching_the_preview_does_not_keep_an_idle_kiosk_logged_in(server):
    nurse = login(server)
    sid = nurse.cookies["bccdms_session"]
    before = server.ctx.sessions.get(sid, touch=False).last_active
    server.clock.advance(30)
    assert nurse.get("/api/camera/preview.jpg").status == 200
    assert nurse.get("/api/camera?passive=1").status == 200
    assert server.ctx.sessions.get(sid, touch=False).last_active == before


def test_the_preview_yields_to_requests_and_no_hold_is_left_behind(server):
    nurse = login(server)
    draft_id = open_exam(server, nurse, "pap_smear")
    cameras = server.ctx.cameras
    first = nurse.get("/api/camera/preview.jpg")
    # Pages, refusals, errors and polls: every hold a request took is given back.
    nurse.get(f"/drafts/{draft_id}")
    nurse.get("/no-such-page")
    nurse.post(f"/drafts/{draft_id}/process", csrf=False)                 # CSRF refusal
    nurse.post(f"/drafts/{draft_id}/process")                             # no image yet: UserError
    server.client().get("/records")                                       # anonymous: redirected
    nurse.get(f"/api/drafts/{draft_id}/wait?version=1", headers={"X-Passive": "1"})   # answers at once
    assert cameras._holds == 0 and not cameras.paused
    seq = int(first.headers["x-frame-seq"])
    assert int(nurse.get(f"/api/camera/preview.jpg?after={seq}").headers["x-frame-seq"]) > seq


def test_capture_refuses_what_it_must_and_changes_nothing(server, tmp_path):
    nurse = login(server)
    draft_id = open_exam(server, nurse, "pap_smear")
    doctor = login(server, DOCTOR)
    doctors_draft = open_exam(server, doctor, "pap_smear", pid="JU-000778")

    assert api_post(nurse, "/api/camera/capture", {"draft": draft_id}, csrf=False).status == 403
    other = api_post(nurse, "/api/camera/capture", {"draft": doctors_draft})
    assert other.status == 404 and other.json()["error"]
    assert api_post(nurse, "/api/camera/capture", {"draft": "A" * 22}).status == 404
    anonymous = server.client()
    assert anonymous.request("POST", "/api/camera/capture", body=b"{}").status == 401
    assert server.client().get("/api/camera/preview.jpg").status == 401

    # The camera unplugged: a message, and the exam keeps having no image.
    folder = Path(server.cfg.camera.folder)
    folder.rename(tmp_path / "unplugged")
    res = api_post(nurse, "/api/camera/capture", {"draft": draft_id})
    assert res.status == 503 and "gone" in res.json()["error"] and res.json()["hint"]
    status = wait_until(lambda: (s := nurse.get("/api/camera?passive=1").json())["state"] == "unavailable" and s)
    assert status["message"] and status["hint"]
    for check in (draft_id, doctors_draft):
        assert not draft_of(server, check).has_image and draft_of(server, check).version == 0
    (tmp_path / "unplugged").rename(folder)
    assert api_post(nurse, "/api/camera/capture", {"draft": draft_id}).status == 200


def test_admin_page_shows_the_camera(server):
    from webutil import ADMIN
    admin = login(server, ADMIN)
    login(server).get("/api/camera/preview.jpg")                 # a nurse's preview opened the camera
    page = admin.get("/admin")
    assert page.status == 200
    assert 'class="kv camera-admin"' in page.text and "folder" in page.text and "Show a test picture" in page.text
    assert "http://127.0.0.1/" in page.text                      # where phone links point
    assert admin.get("/api/camera/preview.jpg").status == 200    # the test picture
    # The admin checks the camera but cannot capture into anyone's exam.
    res = api_post(admin, "/api/camera/capture", {"draft": "A" * 22})
    assert res.status == 403


def test_no_camera_configured_says_so(cfg, tiny_pack, pack_key):
    live = start_server(web_config(cfg, tiny_pack, pack_key))       # [camera] backend = "none"
    try:
        make_users(live)
        nurse = login(live)
        draft_id = open_exam(live, nurse, "pap_smear")
        status = nurse.get("/api/camera?passive=1").json()
        assert status["state"] == "none" and "switched off" in status["message"]
        assert status["phone"]["available"] is False                  # 127.0.0.1 only
        res = api_post(nurse, "/api/camera/capture", {"draft": draft_id})
        assert res.status == 503 and "switched off" in res.json()["error"]
        link = api_post(nurse, "/api/camera/phone-link", {"draft": draft_id})
        assert link.status == 400 and "listens on this box only" in link.json()["error"]
        assert "lan_host" in link.json()["hint"]
    finally:
        live.stop()


# --- the phone ---------------------------------------------------------------------------------------
def phone_link(live, client, draft_id) -> str:
    res = api_post(client, "/api/camera/phone-link", {"draft": draft_id})
    assert res.status == 200, res.text
    body = res.json()
    assert body["qr_svg"].startswith("<svg") and "<script" not in body["qr_svg"]
    assert body["url"].startswith(live.url.replace("127.0.0.1", "127.0.0.1") + "/phone/")
    assert 0 < body["expires_in"] <= live.cfg.camera.phone_link_minutes * 60
    return body["url"][len(live.url):]


def send_photo(phone, path: str, data: bytes, name="photo.jpg", ctype="image/jpeg"):
    return phone.post(path, files={"image": (name, data, ctype)}, csrf=False)


def test_phone_link_upload_once_and_nothing_else(server, datasets):
    nurse = login(server)
    draft_id = open_exam(server, nurse, "cervix_type")
    path = phone_link(server, nurse, draft_id)
    phone = server.client()

    page = phone.get(path)
    assert page.status == 200
    assert 'accept="image/*"' in page.text and 'capture="environment"' in page.text
    for private in ("Almaz", "JU-000777", "Test health post", "nurse1", draft_id):
        assert private not in page.text                 # no patient, post, user or exam data

    # Not an image: refused, nothing changes, the link still works.
    bad = send_photo(phone, path, b"%PDF-1.4 not a photo", "scan.pdf", "application/pdf")
    assert bad.status == 400 and "not an image" in bad.text and 'id="phone-form"' in bad.text
    assert not draft_of(server, draft_id).has_image
    # An empty form: the same.
    assert phone.post(path, data={}, csrf=False).status == 400

    photo = (datasets / COLPOSCOPY).read_bytes()
    sent = send_photo(phone, path, photo)
    assert sent.status == 200 and 'id="phone-done"' in sent.text
    draft = draft_of(server, draft_id)
    assert draft.source == "phone" and draft.image_info["sha256"] == hashlib.sha256(photo).hexdigest()
    # The kiosk's page learns of it through its own long poll.
    waited = nurse.get(f"/api/drafts/{draft_id}/wait?version=0", headers={"X-Passive": "1"})
    assert waited.status == 200 and waited.json()["version"] == 1

    # Used: refused, and the exam keeps the first photo.
    again = send_photo(phone, path, (datasets / "iarc_colposcopy/originals/type_1/AAAX_4_After_acetic_acid.jpg")
                       .read_bytes())
    assert again.status == 410 and "already used" in again.text
    assert phone.get(path).status == 410
    assert draft_of(server, draft_id).version == 1 and draft_of(server, draft_id).image_bytes == photo

    # Nothing else is reachable with the phone.
    assert phone.get("/").status == 303
    assert phone.get(f"/drafts/{draft_id}").status == 303
    assert phone.get(f"/drafts/{draft_id}/image.jpg").status == 303
    assert phone.get("/api/camera/preview.jpg").status == 401
    assert phone.get(f"/api/drafts/{draft_id}/wait?version=0").status == 401
    assert phone.get("/phone/" + "x" * 32).status == 410


def test_expired_link_is_refused_and_changes_nothing(server, datasets):
    server.ctx.phone_links._clock = server.clock          # the test moves time forward
    nurse = login(server)
    draft_id = open_exam(server, nurse, "cervix_type")
    path = phone_link(server, nurse, draft_id)
    phone = server.client()
    assert phone.get(path).status == 200
    server.clock.advance(server.cfg.camera.phone_link_minutes * 60 + 1)
    res = send_photo(phone, path, (datasets / COLPOSCOPY).read_bytes())
    assert res.status == 410 and "expired" in res.text and "new QR code" in res.text
    assert not draft_of(server, draft_id).has_image


def test_a_link_for_another_exam_is_refused(server, datasets):
    nurse = login(server)
    first_exam = open_exam(server, nurse, "cervix_type")
    old_path = phone_link(server, nurse, first_exam)
    doctor = login(server, DOCTOR)
    doctors_exam = open_exam(server, doctor, "cervix_type", pid="JU-000778")
    doctors_path = phone_link(server, doctor, doctors_exam)
    # The nurse moves on to the next patient: the old link's exam is closed.
    second_exam = open_exam(server, nurse, "cervix_type", pid="JU-000779")
    photo = (datasets / COLPOSCOPY).read_bytes()
    res = send_photo(server.client(), old_path, photo)
    assert res.status == 410 and "closed on the kiosk" in res.text
    assert not draft_of(server, second_exam).has_image and not draft_of(server, doctors_exam).has_image
    # A newer QR code replaces the older one of the same exam.
    newer_path = phone_link(server, doctor, doctors_exam)
    assert send_photo(server.client(), doctors_path, photo).status == 410
    assert not draft_of(server, doctors_exam).has_image
    assert send_photo(server.client(), newer_path, photo).status == 200
    assert draft_of(server, doctors_exam).has_image and not draft_of(server, second_exam).has_image


@pytest.fixture
def one_mb_phone_exam(camera_cfg):
    """A kiosk with a 1 MB upload limit, a nurse's open exam and its phone link."""
    camera_cfg.server.max_upload_mb = 1
    live = start_server(camera_cfg)
    try:
        make_users(live)
        nurse = login(live)
        draft_id = open_exam(live, nurse, "cervix_type")
        yield live, draft_id, phone_link(live, nurse, draft_id)
    finally:
        live.stop()


def test_phone_upload_over_the_size_limit_is_refused(one_mb_phone_exam, datasets):
    live, draft_id, path = one_mb_phone_exam
    photo = Image.open(datasets / COLPOSCOPY).resize((3000, 2250))
    buf = io.BytesIO()
    photo.save(buf, "PNG")                                   # ~ a few MB, over 1 MB
    big = buf.getvalue()[: 1024 * 1024 + 200_000]            # under the guard's margin, over the limit
    res = send_photo(live.client(), path, big, "big.png", "image/png")
    assert res.status == 413 and "too large" in res.text
    assert not draft_of(live, draft_id).has_image
    small = (datasets / COLPOSCOPY).read_bytes()
    assert len(small) < 1024 * 1024
    assert send_photo(live.client(), path, small).status == 200          # the link was not spent


def test_phone_upload_far_over_the_limit_gets_a_plain_phone_page(one_mb_phone_exam, datasets):
    """The guard refuses it before reading it; the phone still sees only a phone page."""
    live, draft_id, path = one_mb_phone_exam
    huge = b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)           # over the limit and the form margin
    phone = live.client()
    res = send_photo(phone, path, huge, "huge.jpg")
    assert res.status == 413
    assert "The photo is too large" in res.text and 'class="phone-page"' in res.text
    for kiosk_only in ('class="topbar"', "Test health post", "Log out", 'href="/"', "keyboard"):
        assert kiosk_only not in res.text
    assert not draft_of(live, draft_id).has_image
    assert f'href="{path}"' in res.text                       # the link still works: try again
    assert send_photo(phone, path, (datasets / COLPOSCOPY).read_bytes()).status == 200
    lost = phone.get(path + "/more")                          # any other error: a phone page too
    assert lost.status == 404 and 'class="phone-page"' in lost.text and 'class="topbar"' not in lost.text
