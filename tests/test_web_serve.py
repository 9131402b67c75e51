"""``appliance serve`` as a technician meets it, and the kiosk on an untrained demo pack."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import pytest

from webutil import NURSE, first_image, make_users, start_server, web_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _appliance(*args, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env.update(env_extra or {})
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "appliance"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_a_busy_port_with_one_sentence(tmp_path, tiny_pack):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _appliance("--data-dir", str(tmp_path / "data"), "serve", "--port", str(port),
                         env_extra={"BCCDMS_INFERENCE_DEMO_PACK": str(tiny_pack), "BCCDMS_CAMERA_BACKEND": "none"})
    assert res.returncode != 0
    assert "already in use" in res.stderr and "Traceback" not in res.stderr


def test_serve_refuses_a_port_out_of_range(tmp_path):
    res = _appliance("--data-dir", str(tmp_path / "data"), "serve", "--port", "70000")
    assert res.returncode != 0 and "out of range" in res.stderr and "Traceback" not in res.stderr


@pytest.fixture(scope="session")
def tiny_demo_pack(tmp_path_factory):
    """The tiny models sealed as a DEMO pack (untrained, allowed only outside clinical mode)."""
    from export.demo import build_demo_pack
    out = tmp_path_factory.mktemp("packs") / "tiny-demo"
    build_demo_pack(out, arch="tiny", demo=True, progress=False)
    return out


def test_demo_models_say_demo_in_red_everywhere(cfg, tiny_demo_pack, pack_key, datasets):
    from pypdf import PdfReader
    live = start_server(web_config(cfg, tiny_demo_pack, pack_key))
    try:
        make_users(live)
        nurse = live.client()
        nurse.login(*NURSE)
        assert "demo-banner" in nurse.get("/").text
        res = nurse.register_patient("DEMO-1", "Demo Patient")
        uuid = res.location.rsplit("/", 1)[-1]
        draft = nurse.new_draft(uuid, "pap_smear")
        nurse.upload(draft, first_image(datasets, "herlev").read_bytes())
        exam_url = nurse.process(draft).location
        page = nurse.get(exam_url).text
        assert "DEMO RESULT" in page and 'class="demo-banner result-demo"' in page
        assert live.ctx.store.exams.get(exam_url.rsplit("/", 1)[-1])["demo"] is True
        assert "DEMO RESULT" in nurse.get(exam_url + "/print").text
        pdf = nurse.get(exam_url + "/report.pdf").body
        assert "DEMO RESULT" in "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
        assert "badge-demo" in nurse.get("/records").text
    finally:
        live.stop()
