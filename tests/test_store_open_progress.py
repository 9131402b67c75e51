"""Opening a big store shows its progress (issue 12, item 7): in the log, in ``/healthz`` and on the
kiosk's start-up page, which the server answers with while the records open."""
from __future__ import annotations

import http.client
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import waitress

from appliance.store import Store
from appliance.store.opening import OpeningProgress
from appliance.web.startup import StartupGate

REPO = Path(__file__).resolve().parents[1]


def _bulk_store(cfg, exams: int) -> None:
    """A store of ``exams`` finished exams (bench_store's records), closed, its summary cache removed."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from bench_store import synthetic_records
    finally:
        sys.path.remove(str(REPO / "bench"))
    with Store.open(cfg) as store:
        patients, records = synthetic_records(store, exams, 0, random.Random(7))
        store.bulk_insert("patients", patients)
        store.bulk_insert("exams", records)
    shutil.rmtree(cfg.data_dir / "store" / "index")


def test_opening_without_the_summary_cache_reports_every_chunk_file_and_logs(cfg, caplog):
    _bulk_store(cfg, 3000)
    seen: list[tuple[str, int, int]] = []

    class Recording(OpeningProgress):
        def __call__(self, stage, done, total):
            seen.append((stage, done, total))
            super().__call__(stage, done, total)

    progress = Recording(every_s=0)        # a log line at every step: the test needs no slow disk
    with caplog.at_level(logging.INFO, logger="appliance.store"), Store.open(cfg, progress=progress) as store:
        assert store.stats(include_demo=True)["exams"] == 3000
    reading = [(done, total) for stage, done, total in seen if stage == "records"]
    total = reading[-1][1]
    assert total >= 3000 // 64 and reading[-1] == (total, total)
    assert [d for d, _ in reading] == sorted(d for d, _ in reading), "progress only goes forward"
    assert [s for s, _, _ in seen if s != "records"] == ["indexes", "library", "summaries"]
    assert progress.snapshot()["state"] == "open" and progress.snapshot()["percent"] == 100
    lines = [r.getMessage() for r in caplog.records if "opening the record store" in r.getMessage()]
    assert any(f"of {total:,} chunk files read" in line for line in lines)
    assert any("record store open after" in r.getMessage() for r in caplog.records)


def test_a_failed_opening_is_in_the_snapshot(cfg):
    with Store.open(cfg) as store:
        store.patients.register("JU-1", "Almaz Kebede", by="nurse1")
    [chunk] = (cfg.data_dir / "store" / "patients").rglob("000.json")
    chunk.write_bytes(b"{damaged")
    chunk.with_name("000.json.prev").unlink(missing_ok=True)
    shutil.rmtree(cfg.data_dir / "store" / "index")
    progress = OpeningProgress()
    with pytest.raises(Exception, match="damaged"):
        Store.open(cfg, progress=progress)
    state = progress.snapshot()
    assert state["state"] == "failed" and "damaged" in state["error"]


@pytest.fixture
def gate_server(cfg):
    """The start-up gate served by a real waitress server, with a progress the test moves."""
    progress = OpeningProgress()
    gate = StartupGate(cfg, progress)
    server = waitress.create_server(gate, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server.effective_port, gate, progress
    server.close()
    thread.join(5)


def _get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read().decode()
    finally:
        conn.close()


def test_the_kiosk_shows_the_opening_until_the_app_is_ready(gate_server):
    port, gate, progress = gate_server
    progress("records", 1200, 3000)
    status, headers, body = _get(port, "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "starting" and "version" in health     # the launcher opens the kiosk
    assert health["starting"]["done"] == 1200 and health["starting"]["percent"] == 36
    assert health["checks"][0]["message"].startswith("opening the record store: 36 %")
    status, headers, page = _get(port, "/patients/anything")
    assert status == 503 and headers["Retry-After"] == "2"
    assert 'http-equiv="refresh"' in page and "The appliance is starting." in page
    assert "Reading the records: 36 %" in page and 'aria-valuenow="36"' in page
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in headers["Content-Security-Policy"]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the kiosk"]
    gate.ready(app)
    assert _get(port, "/patients/anything")[2] == "the kiosk"


def test_the_start_up_page_says_when_the_records_cannot_be_opened(gate_server):
    port, gate, progress = gate_server
    progress.failed("The record file x.json is damaged.")
    health = json.loads(_get(port, "/healthz")[2])
    assert health["status"] == "fail" and not health["ok"]
    page = _get(port, "/")[2]
    assert "The records could not be opened." in page and "x.json is damaged" in page and "appliance doctor" in page


def test_appliance_serve_answers_while_the_records_open_then_serves_the_kiosk(cfg, tmp_path, tiny_pack):
    from serve_process import ServeProcess
    _bulk_store(cfg, 2000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env.update(BCCDMS_DATA_DIR=str(cfg.data_dir), BCCDMS_INFERENCE_DEMO_PACK=str(tiny_pack),
               BCCDMS_CAMERA_BACKEND="none")
    server = ServeProcess(env, tmp_path / "serve.log")
    try:
        port = server.port              # "listening": the kiosk is ready
        out = server.output()
        assert out.index("BCCDMS kiosk starting on") < out.index("BCCDMS kiosk listening on")
        status, _, body = _get(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] in ("ok", "warn", "fail")
        assert "starting" not in json.loads(body)
        status, headers, _ = _get(port, "/login")
        assert status in (200, 303) and headers.get("Location", "/setup").endswith("/setup")   # the kiosk itself
    finally:
        assert server.stop() == 0


def test_appliance_serve_stops_with_the_stores_sentence_when_it_cannot_open(cfg, tmp_path, tiny_pack):
    with Store.open(cfg) as store:
        store.patients.register("JU-1", "Almaz Kebede", by="nurse1")
    [chunk] = (cfg.data_dir / "store" / "patients").rglob("000.json")
    chunk.write_bytes(b"{damaged")
    chunk.with_name("000.json.prev").unlink(missing_ok=True)
    shutil.rmtree(cfg.data_dir / "store" / "index")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env.update(BCCDMS_INFERENCE_DEMO_PACK=str(tiny_pack), BCCDMS_CAMERA_BACKEND="none")
    res = subprocess.run([str(Path(sys.executable).with_name("appliance")), "--data-dir", str(cfg.data_dir),
                          "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "damaged" in res.stderr and "Traceback" not in res.stderr
