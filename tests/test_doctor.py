"""``appliance doctor`` on a healthy box and on broken ones, and the cached checks behind /healthz.

The box is a real data folder with the real tiny pack installed through ``appliance models
install``'s code; the doctor runs as the console script, as a technician would run it.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from appliance import doctor
from appliance.exchange import keys
from appliance.models_admin import PackManager
from inference_helpers import clone_pack, reseal, trusting

REPO = Path(__file__).resolve().parents[1]

# /proc/cpuinfo of the boards the appliance runs on (feature lines as the kernel prints them).
PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
PI4_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm crc32 cpuid
CPU part\t: 0xd08
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
NUC_CPUINFO = """processor\t: 0
model\t\t: 140
model name\t: 11th Gen Intel(R) Core(TM) i5-1135G7 @ 2.40GHz
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 avx512f avx512dq avx512_vnni
"""
OLD_X86_CPUINFO = """model name\t: Intel(R) Atom(TM) CPU D525 @ 1.80GHz
flags\t\t: fpu sse sse2 ssse3
"""


def supervisor_public_b64() -> str:
    raw = X25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@pytest.fixture
def healthy(cfg, tiny_pack, pack_key, tmp_path):
    """A set-up box: named post, supervisor key, trusted ML key, the tiny pack installed, no camera."""
    trusting(cfg, pack_key)
    cfg.post.name = "Agaro health post"
    cfg.exchange.supervisor_public_key = supervisor_public_b64()
    cfg.inference.demo_pack = str(tmp_path / "no-demo-pack")
    cfg.inference.runtime = "onnxruntime"
    cfg.camera.backend = "none"
    cfg.server.port = 1           # nothing listens there: the server check must say so, not fail
    os.chmod(cfg.data_dir, 0o700)
    stick = tmp_path / "stick"
    stick.mkdir()
    source = reseal(clone_pack(tiny_pack, stick / "pack-1"), pack_key, lambda m: m.update(pack_id="pack-1"))
    PackManager(cfg).install(source)
    keys.post_signing_key(cfg)
    return cfg


def run_doctor(cfg, *args: str) -> subprocess.CompletedProcess:
    """``appliance doctor`` with this configuration written to a file, as on a box."""
    config = cfg.data_dir.parent / "config.toml"
    config.write_text(
        f"[post]\nname = {json.dumps(cfg.post.name)}\nmode = {json.dumps(cfg.post.mode)}\n"
        f"[server]\nport = {cfg.server.port}\n"
        f"[inference]\ndemo_pack = {json.dumps(cfg.inference.demo_pack)}\nruntime = {json.dumps(cfg.inference.runtime)}\n"
        f"[camera]\nbackend = {json.dumps(cfg.camera.backend)}\n"
        f"[exchange]\nsupervisor_public_key = {json.dumps(cfg.exchange.supervisor_public_key)}\n"
        f"[security]\ntrusted_model_keys = {json.dumps(cfg.security.trusted_model_keys)}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env.update(BCCDMS_DATA_DIR=str(cfg.data_dir), BCCDMS_CONFIG=str(config))
    return subprocess.run([str(Path(sys.executable).with_name("appliance")), "doctor", *args],
                          capture_output=True, text=True, env=env, timeout=180)


def lines(out: str, status: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{status:<4} {name}")]


# -- the command -----------------------------------------------------------------------------
def test_healthy_box_passes_with_a_report_a_technician_can_read(healthy):
    proc = run_doctor(healthy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert not [line for line in out.splitlines() if line.startswith("FAIL")], out
    assert lines(out, "OK", "config")
    assert lines(out, "OK", "runtime") and "onnxruntime" in lines(out, "OK", "runtime")[0]
    assert lines(out, "OK", "cpu")
    models = lines(out, "OK", "models")
    assert models and "pack-1" in models[0] and "7 models" in models[0] and "checksums OK" in models[0]
    assert lines(out, "OK", "camera") and lines(out, "OK", "disk") and lines(out, "OK", "clock")
    assert lines(out, "OK", "data")
    assert lines(out, "WARN", "server") and "not answering" in out
    assert out.rstrip().splitlines()[-1].startswith("0 failed, 1 warning")


def test_json_report_is_the_healthz_format(healthy):
    proc = run_doctor(healthy, "--json")
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["status"] == "warn"
    names = [c["name"] for c in report["checks"]]
    for name in ("config", "runtime", "cpu", "models", "camera", "disk", "clock", "data"):
        assert name in names
    assert all(set(c) == {"name", "status", "message", "details"} for c in report["checks"])


def test_tampered_model_file_fails_and_the_fail_line_names_it(healthy):
    model = healthy.packs_dir / "pack-1" / "pap_smear" / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0x01
    model.write_bytes(bytes(data))
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    fail = lines(proc.stdout, "FAIL", "models")
    assert fail, proc.stdout
    assert "pap_smear/model.int8.onnx: checksum does not match" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_data_folder_that_is_not_a_folder_fails(healthy, tmp_path):
    healthy.data_dir = tmp_path / "data-is-a-file"
    healthy.data_dir.write_text("not a folder")
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    assert lines(proc.stdout, "FAIL", "data") and "is not a folder" in proc.stdout


def test_damaged_post_key_fails(healthy):
    (keys.keys_dir(healthy) / keys.POST_SIGNING_KEY).write_text("this is not a key\n")
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    assert "the post signing key is unusable" in proc.stdout


def test_damaged_record_store_fails_and_names_the_file(healthy):
    from appliance.store import Store
    store = Store.open(healthy)
    store.users.create("admin", "admin-pass-2026", "admin", by=None)
    store.close()
    damaged = sorted((healthy.data_dir / "store").glob("users/**/*.json"))[0]
    damaged.write_text('{"_default": {"1": {"username": "adm')     # cut off by a power failure
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    assert lines(proc.stdout, "FAIL", "data")
    assert "the record store cannot be opened" in proc.stdout and str(damaged) in proc.stdout


def test_store_restored_after_a_power_cut_warns_and_says_what_to_check(healthy):
    from appliance.store import Store
    with Store.open(healthy) as store:
        store.users.create("admin", "admin-pass-2026", "admin", by=None)
        store.users.create("nurse1", "nurse-pass-2026", "nurse", by=None)   # leaves a previous copy
    damaged = sorted((healthy.data_dir / "store").glob("users/**/*.json"))[0]
    damaged.write_text('{"_default": {"1": {')
    proc = run_doctor(healthy)
    assert proc.returncode == 0, proc.stdout
    data = "\n".join(lines(proc.stdout, "WARN", "data")) + proc.stdout
    assert lines(proc.stdout, "WARN", "data") and "record store:" in data and "restored from its previous copy" in data


def test_box_without_any_pack_fails_and_says_how_to_get_one(cfg, tmp_path):
    cfg.inference.demo_pack = str(tmp_path / "no-demo-pack")
    proc = run_doctor(cfg)
    assert proc.returncode == 1
    assert lines(proc.stdout, "FAIL", "models") and "no model pack is installed" in proc.stdout
    assert "appliance models install PATH" in proc.stdout


def test_clinical_box_without_trusted_keys_fails_config(healthy):
    healthy.post.mode = "clinical"
    healthy.security.trusted_model_keys = []
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    assert lines(proc.stdout, "FAIL", "config")
    assert "trusted_model_keys is empty" in proc.stdout


def test_bad_supervisor_key_fails_config(healthy):
    healthy.exchange.supervisor_public_key = base64.b64encode(b"too short").decode()
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    assert "supervisor_public_key" in "\n".join(lines(proc.stdout, "FAIL", "config") + proc.stdout.splitlines())


def test_demo_pack_in_use_on_a_clinical_box_fails(healthy, tiny_pack, pack_key, tmp_path):
    stick = tmp_path / "stick2"
    stick.mkdir()
    demo = reseal(clone_pack(tiny_pack, stick / "demo"), pack_key, lambda m: m.update(
        pack_id="demo", demo=True, models={k: {**v, "demo": True} for k, v in m["models"].items()}))
    PackManager(healthy).install(demo)
    healthy.post.mode = "clinical"
    proc = run_doctor(healthy)
    assert proc.returncode == 1
    assert "demo pack" in "\n".join(lines(proc.stdout, "FAIL", "models"))


# -- single checks ---------------------------------------------------------------------------
def test_clock_behind_the_last_saved_record_warns(healthy):
    record = healthy.data_dir / "exams.json"
    record.write_text("{}")
    tomorrow = time.time() + 86400
    os.utime(record, (tomorrow, tomorrow))
    (check,) = doctor.check_clock(healthy)
    assert check.status == doctor.WARN
    assert "exams.json" in " ".join(check.details) and "sudo date -s" in " ".join(check.details)


def test_clock_before_the_software_existed_warns(healthy):
    (check,) = doctor.check_clock(healthy, now=dt.datetime(1970, 1, 1, 0, 2, tzinfo=dt.timezone.utc))
    assert check.status == doctor.WARN and "1970-01-01" in check.message


def test_low_disk_warns_then_fails(healthy, monkeypatch):
    free = doctor.shutil.disk_usage(healthy.data_dir).free
    monkeypatch.setattr(doctor, "DISK_WARN_BYTES", free + 1)
    assert doctor.check_disk(healthy)[0].status == doctor.WARN
    monkeypatch.setattr(doctor, "DISK_FAIL_BYTES", free + 1)
    assert doctor.check_disk(healthy)[0].status == doctor.FAIL


def test_group_readable_data_folder_warns(healthy):
    os.chmod(healthy.data_dir, 0o755)
    (check,) = doctor.check_data_folder(healthy)
    assert check.status == doctor.WARN and "chmod 700" in " ".join(check.details)


@pytest.mark.parametrize("cpuinfo, machine, have, lack", [
    (PI5_CPUINFO, "aarch64", {"NEON", "dotprod"}, {"i8mm"}),
    (PI4_CPUINFO, "aarch64", {"NEON"}, {"dotprod"}),
    (NUC_CPUINFO, "x86_64", {"AVX2", "AVX-512", "VNNI"}, {"AMX"}),
])
def test_cpu_features_are_read_from_cpuinfo(cpuinfo, machine, have, lack):
    info = doctor.cpu_features(cpuinfo, machine)
    assert {n for n, v in info["features"].items() if v} >= have
    assert not {n for n, v in info["features"].items() if v} & lack
    assert info["model"] and not info["model"].isdigit()


def test_cpu_without_avx2_warns(healthy, monkeypatch):
    real = doctor.cpu_features
    monkeypatch.setattr(doctor, "cpu_features", lambda: real(OLD_X86_CPUINFO, "x86_64"))
    (check,) = doctor.check_cpu(healthy)
    assert check.status == doctor.WARN and "slow" in check.details[0]


def test_a_check_that_breaks_is_reported_not_raised(healthy, monkeypatch):
    def broken(cfg):
        raise RuntimeError("sensor on fire")
    monkeypatch.setattr(doctor, "check_disk", broken)
    report = doctor.run_checks(healthy, include_server=False)
    assert any(c.status == doctor.FAIL and "sensor on fire" in c.message for c in report.checks)


# -- the cache behind /healthz ---------------------------------------------------------------
def test_health_monitor_hashes_models_once_and_again_only_when_a_file_changes(healthy):
    monitor = doctor.HealthMonitor(healthy).start()
    monitor.wait()
    for _ in range(5):
        report = monitor.report()
    assert monitor.runs["models"] == 1
    assert [c.status for c in report.checks if c.name == "models"] == ["OK"]
    model = healthy.packs_dir / "pack-1" / "cervix_type" / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    monitor.report()              # sees the change: a refresh starts, this answer is the old one
    monitor.wait()
    report = monitor.report()
    assert monitor.runs["models"] == 2
    models = [c for c in report.checks if c.name == "models"]
    assert models[0].status == doctor.FAIL and "cervix_type/model.int8.onnx" in " ".join(models[0].details)
    assert not report.ok


def test_first_health_report_does_not_wait_for_the_expensive_checks(healthy, monkeypatch):
    release = __import__("threading").Event()
    real = doctor.check_models

    def slow_models(cfg, engine=None):
        release.wait(10)
        return real(cfg, engine)
    monkeypatch.setattr(doctor, "check_models", slow_models)
    monitor = doctor.HealthMonitor(healthy)
    report = monitor.report()
    # The model check is held until release is set below: a report that waited for it would come
    # back only after its 10 s and say OK, so "check running" proves it did not wait.
    assert [c.message for c in report.checks if c.name == "models"][0].startswith("check running")
    release.set()
    monitor.wait()
    assert [c.status for c in monitor.report().checks if c.name == "models"] == ["OK"]


# -- GET /healthz on the real server ---------------------------------------------------------
from webutil import live_server, wait_until, web_cfg  # noqa: E402,F401


def test_healthz_is_the_doctor_report_as_json_without_login(live_server):
    client = live_server.client()

    def settled():
        res = client.get("/healthz")
        report = res.json()
        running = any(c["message"].startswith("check running") for c in report["checks"])
        return None if running else (res, report)
    res, report = wait_until(settled, timeout=60, interval=0.2)
    assert res.status == 200 and res.headers["content-type"].startswith("application/json")
    assert res.headers["cache-control"] == "no-store"
    assert report["post_id"] == live_server.ctx.store.post_id
    by_name = {c["name"]: c for c in report["checks"]}
    assert set(by_name) >= {"config", "runtime", "cpu", "models", "camera", "disk", "clock", "data"}
    assert by_name["models"]["status"] == "OK" and "checksums OK" in by_name["models"]["message"]
    assert by_name["runtime"]["message"].startswith("onnxruntime")
    assert "store opens" in by_name["data"]["message"]
    live = client.get("/healthz?live=1").json()
    assert live == {"ok": True, "live": True, "version": report["version"]}


def test_demo_fallback_that_the_current_pack_replaces_is_not_a_warning(healthy, tiny_pack, pack_key, tmp_path):
    demo = reseal(clone_pack(tiny_pack, tmp_path / "weights" / "demo"), pack_key, lambda m: m.update(
        pack_id="demo", demo=True, models={k: {**v, "demo": True} for k, v in m["models"].items()}))
    healthy.inference.demo_pack = str(demo)
    checks = doctor.check_models(healthy)
    assert [c.status for c in checks] == ["OK", "OK"]
    assert "not used" in checks[1].message
    # Without a current pack the demo pack is what runs: every result will say DEMO.
    os.unlink(healthy.packs_dir / "current")
    (check,) = doctor.check_models(healthy)
    assert check.status == doctor.WARN and "DEMO" in check.message


def test_admin_page_shows_the_self_check(live_server):
    from webutil import ADMIN, make_users
    make_users(live_server)
    admin = live_server.logged_in(ADMIN)

    def models_checked():
        page = admin.get("/admin").text
        return page if 'data-check="models" data-status="OK"' in page else None
    page = wait_until(models_checked, timeout=60, interval=0.2)
    assert "Self-check" in page and 'id="doctor-table"' in page
    for name in ("config", "runtime", "cpu", "disk", "clock", "data"):
        assert f'data-check="{name}"' in page

