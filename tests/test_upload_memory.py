"""Memory stays bounded when several people upload huge images at once (issue 13, item 1).

The attack that failed on the first build: users each upload a 7,700×7,700 PNG (tens of KB on
the wire, inside ``max_image_pixels``) at the same moment. Then the server's RSS rose by about
390 MB per upload (1.5 GB for 4 users, 2.6 GB for 8, measured by bench/bench_upload_memory.py)
and most of it stayed after the drafts were gone. Now every decode reserves its memory from one
budget (``[inference] decode_memory_mb``, 384 MB by default), huge images are reduced to the
working size, drafts keep only what was prepared (their files are on disk) and freed memory
goes back to the system.

Against the real ``appliance serve`` process and its real store, with the tiny models.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from serve_process import ServeProcess
from webutil import NURSE, Client, make_users, start_server, web_cfg  # noqa: F401

BUSY = "The box is busy analysing other images; try again in a moment."
USERS = 6
PASSWORD = "memory-pass-2026"
# The default budget (384 MB) plus what six open requests and their answers take beside it:
# four times below what the first build used for four such uploads.
PEAK_BOUND_MB = 600
RETAINED_BOUND_MB = 200


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (7700, 7700), 200).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


@pytest.fixture
def served(tmp_path, tiny_pack, pack_key):
    """``appliance serve`` on a fresh data folder with USERS nurses, made in its real store."""
    from appliance import signing
    from appliance.config import load_config
    from appliance.store import Store
    config = tmp_path / "config.toml"
    config.write_text(
        f'[inference]\ndemo_pack = {json.dumps(str(tiny_pack))}\nruntime = "onnxruntime"\n'
        '[camera]\nbackend = "none"\n'
        f'[security]\ntrusted_model_keys = [{json.dumps(signing.public_b64(pack_key))}]\n')
    with Store.open(load_config(config, tmp_path / "data", environ={})) as store:
        for i in range(USERS):
            store.users.create(f"nurse{i}", PASSWORD, "nurse", by=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCDMS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(BCCDMS_DATA_DIR=str(tmp_path / "data"), BCCDMS_CONFIG=str(config))
    server = ServeProcess(env, tmp_path / "serve.log")
    try:
        server.port
        yield server
    finally:
        server.kill()


def test_concurrent_huge_uploads_are_all_answered_and_memory_stays_bounded(served, huge_png, datasets):
    normal = sorted((datasets / "herlev" / "originals" / "normal_superficiel").glob("*.jpg"))[0].read_bytes()
    clients, patients = [], []
    for i in range(USERS):
        client = Client(served.url)
        assert client.login(f"nurse{i}", PASSWORD).status == 303
        res = client.register_patient(f"MEM-{i}", "Memory Test")
        assert res.status == 303, res.text[:300]
        patients.append(res.location.rsplit("/", 1)[-1])
        assert client.upload(client.new_draft(patients[-1], "pap_smear"), normal).status == 303   # warm
        clients.append(client)
    drafts = [c.new_draft(p, "pap_smear") for c, p in zip(clients, patients)]
    time.sleep(1)
    baseline = rss_mb(served.proc.pid)
    Path(f"/proc/{served.proc.pid}/clear_refs").write_text("5")        # VmHWM from now on

    answers: list = [None] * USERS
    start = threading.Barrier(USERS)

    def upload(i: int) -> None:
        start.wait()
        res = clients[i].post(f"/drafts/{drafts[i]}/image", files={"image": ("huge.png", huge_png, "image/png")})
        answers[i] = (res.status, res.text)
    threads = [threading.Thread(target=upload, args=(i,)) for i in range(USERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    peak = rss_mb(served.proc.pid, "VmHWM")

    # Every upload was answered: accepted (to the image step) or refused with the sentence.
    assert all(a is not None for a in answers)
    accepted = [i for i, (status, _) in enumerate(answers) if status == 303]
    refused = [i for i, (status, text) in enumerate(answers) if status == 400 and BUSY in text]
    assert sorted(accepted + refused) == list(range(USERS)), [a[0] for a in answers]
    assert accepted, "at least the first upload is decoded"
    for i in range(USERS):
        summary = clients[i].get(f"/api/drafts/{drafts[i]}").json()
        assert summary["has_image"] == (i in accepted)
        if i in accepted:
            assert summary["image_info"]["width"] == 7700 and summary["image_info"]["bytes"] == len(huge_png)
            assert clients[i].get(f"/drafts/{drafts[i]}/image.jpg").status == 200
    assert peak - baseline <= PEAK_BOUND_MB, f"peak {peak:.0f} MB, baseline {baseline:.0f} MB"

    for client, patient in zip(clients, patients):        # every big draft replaced
        client.new_draft(patient, "pap_smear")
    time.sleep(1)
    retained = rss_mb(served.proc.pid)
    assert retained - baseline <= RETAINED_BOUND_MB, f"retained {retained:.0f} MB, baseline {baseline:.0f} MB"
    assert "Traceback" not in served.output()


@pytest.fixture
def impatient_server(web_cfg):  # noqa: F811 - the fixture above, with a short wait for memory
    web_cfg.inference.decode_wait_seconds = 0.3
    live = start_server(web_cfg)
    make_users(live)
    try:
        yield live
    finally:
        live.stop()


def test_an_upload_that_finds_no_memory_free_is_refused_with_a_sentence_and_changes_nothing(impatient_server, datasets):
    live = impatient_server
    first, second = sorted((datasets / "herlev" / "originals" / "normal_superficiel").glob("*.jpg"))[:2]
    nurse = live.logged_in(NURSE)
    res = nurse.register_patient("MEM-B", "Busy Test")
    draft = nurse.new_draft(res.location.rsplit("/", 1)[-1], "pap_smear")
    assert nurse.upload(draft, first.read_bytes()).status == 303
    before = live.ctx.drafts.get(draft)
    version, info = before.version, before.image_info

    budget = live.ctx.engine.decode_budget
    with budget.reserve(budget.total_bytes):          # every byte of decoding memory is in use
        refused = nurse.upload(draft, second.read_bytes())
    assert refused.status == 400 and BUSY in refused.text
    after = live.ctx.drafts.get(draft)
    assert after.version == version and after.image_info == info        # the earlier image is still the one
    assert after.image_bytes == first.read_bytes()

    assert nurse.upload(draft, second.read_bytes()).status == 303       # once memory is free again
    assert live.ctx.drafts.get(draft).image_bytes == second.read_bytes()
