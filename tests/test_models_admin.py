"""Model packs from a USB stick: install, list, roll back, and every refusal changing nothing.

The packs are the real tiny pack (tests/conftest.py ``tiny_pack``: ONNX and OpenVINO INT8 of a
small ResNet, signed by the export code) with a new id and version, re-signed like bccdms-export
would (tests/inference_helpers.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import signing
from appliance.errors import PackError, UserError
from appliance.models_admin import PackManager
from inference_helpers import clone_pack, own_copy, reseal, trusting
from webutil import ADMIN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def box_cfg(cfg, pack_key, tmp_path):
    """A box that trusts the test key and has no built-in demo pack to fall back on."""
    cfg.inference.demo_pack = str(tmp_path / "no-demo-pack")
    return trusting(cfg, pack_key)


@pytest.fixture
def stick(tmp_path) -> Path:
    path = tmp_path / "media" / "bccdms" / "STICK"
    path.mkdir(parents=True)
    return path


def pack_on(stick: Path, tiny_pack: Path, key, pack_id: str, version: str = "1.0.0", **changes) -> Path:
    """A signed pack named ``pack_id`` on the stick, built from the tiny pack."""
    def edit(manifest: dict) -> None:
        manifest.update(pack_id=pack_id, version=version, **changes)
        if changes.get("demo"):
            for model in manifest["models"].values():
                model["demo"] = True
    return reseal(clone_pack(tiny_pack, stick / pack_id), key, edit)


def state(cfg) -> dict:
    """Everything an install may change: the packs folder's entries, links and file sizes."""
    root = cfg.packs_dir
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else p.stat().st_size if p.is_file() else "dir")
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


def current_id(cfg) -> str | None:
    link = cfg.packs_dir / "current"
    return os.readlink(link) if link.is_symlink() else None


# -- install, list, rollback -----------------------------------------------------------------
def test_install_copies_the_verified_pack_and_makes_it_current(box_cfg, tiny_pack, pack_key, stick):
    source = pack_on(stick, tiny_pack, pack_key, "breast-2026.1")
    (source / "autorun.sh").write_text("echo not part of the signed pack\n")
    manager = PackManager(box_cfg)
    assert not manager.is_installed()

    info = manager.install(source)

    assert (info.pack_id, info.version, info.role, info.demo, info.trusted) == ("breast-2026.1", "1.0.0", "current", False, True)
    assert len(info.models) == 7
    installed = box_cfg.packs_dir / "breast-2026.1"
    assert current_id(box_cfg) == "breast-2026.1"
    assert manager.is_installed() and manager.current().pack_id == "breast-2026.1"
    # Real copies of exactly what the manifest lists (the stick can be pulled out now).
    copied = {str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file()}
    assert copied == set(manager.current().files) | {"manifest.json", "manifest.json.sig"}
    assert not any(p.is_symlink() for p in installed.rglob("*"))
    assert not list(box_cfg.packs_dir.glob("*.tmp"))
    assert manager.current().verify_all() == []


def test_second_install_keeps_the_first_for_rollback(box_cfg, tiny_pack, pack_key, stick):
    manager = PackManager(box_cfg)
    manager.install(pack_on(stick, tiny_pack, pack_key, "pack-a", "1.0.0"))
    manager.install(pack_on(stick, tiny_pack, pack_key, "pack-b", "2.0.0"))
    roles = {p.pack_id: p.role for p in manager.list()}
    assert roles == {"pack-b": "current", "pack-a": "previous"}

    back = manager.rollback()
    assert back.pack_id == "pack-a" and current_id(box_cfg) == "pack-a"
    assert {p.pack_id: p.role for p in manager.list()} == {"pack-a": "current", "pack-b": "previous"}
    # Rolling back again is "undo the rollback".
    assert manager.rollback().pack_id == "pack-b"


def test_a_third_install_removes_the_oldest_pack(box_cfg, tiny_pack, pack_key, stick):
    manager = PackManager(box_cfg)
    for n in (1, 2, 3):
        manager.install(pack_on(stick, tiny_pack, pack_key, f"pack-{n}", f"{n}.0.0"))
    assert sorted(p.name for p in box_cfg.packs_dir.iterdir() if p.is_dir() and not p.is_symlink()) == ["pack-2", "pack-3"]


def test_installing_the_current_pack_again_changes_nothing(box_cfg, tiny_pack, pack_key, stick):
    manager = PackManager(box_cfg)
    source = pack_on(stick, tiny_pack, pack_key, "pack-a")
    manager.install(source)
    before = state(box_cfg)
    assert manager.install(source / "manifest.json").pack_id == "pack-a"     # the manifest's path works too
    assert state(box_cfg) == before


def test_list_shows_the_built_in_demo_pack_last(box_cfg, tiny_pack, pack_key, stick, tmp_path):
    demo = pack_on(tmp_path / "weights", tiny_pack, pack_key, "demo", "0.1.0", demo=True)
    box_cfg.inference.demo_pack = str(demo)
    manager = PackManager(box_cfg)
    manager.install(pack_on(stick, tiny_pack, pack_key, "pack-a"))
    listed = manager.list()
    assert [(p.pack_id, p.role, p.demo) for p in listed] == [("pack-a", "current", False), ("demo", "built-in", True)]


# -- refusals: a clear message, and nothing changed ------------------------------------------
@pytest.fixture
def installed_box(box_cfg, tiny_pack, pack_key, stick):
    """A box with pack-a current, and its state to compare against after a refusal."""
    PackManager(box_cfg).install(pack_on(stick, tiny_pack, pack_key, "pack-a"))
    return box_cfg


def refused(cfg, source, *expected: str) -> PackError | UserError:
    before = state(cfg)
    with pytest.raises(UserError) as caught:
        PackManager(cfg).install(source)
    assert state(cfg) == before, "a refused install changed the packs folder"
    assert current_id(cfg) == "pack-a"
    message = str(caught.value)
    for text in expected:
        assert text in message, message
    return caught.value


def test_tampered_model_file_is_refused_and_named(installed_box, tiny_pack, pack_key, stick):
    source = pack_on(stick, tiny_pack, pack_key, "pack-b")
    model = own_copy(source / "pap_smear" / "model.int8.onnx")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF                       # same size, one byte flipped
    model.write_bytes(bytes(data))
    refused(installed_box, source, "pap_smear/model.int8.onnx", "damaged or altered")


def test_pack_signed_by_an_untrusted_key_is_refused(installed_box, tiny_pack, stick):
    stranger = signing.new_private_key()
    refused(installed_box, pack_on(stick, tiny_pack, stranger, "pack-b"), "does not trust")


def test_manifest_changed_after_signing_is_refused(installed_box, tiny_pack, pack_key, stick):
    source = pack_on(stick, tiny_pack, pack_key, "pack-b")
    manifest = source / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "1.0.0"', '"version": "9.9.9"'))
    refused(installed_box, source, "signature", "altered")


def test_missing_model_file_is_refused(installed_box, tiny_pack, pack_key, stick):
    source = pack_on(stick, tiny_pack, pack_key, "pack-b")
    (source / "cervix_type" / "model.int8.xml").unlink()
    refused(installed_box, source, "missing the file cervix_type/model.int8.xml")


def test_demo_pack_is_refused_on_a_clinical_box_even_when_signed_by_a_trusted_key(installed_box, tiny_pack, pack_key, stick):
    installed_box.post.mode = "clinical"
    refused(installed_box, pack_on(stick, tiny_pack, pack_key, "demo-2", demo=True), "demo pack", "clinical")


def test_demo_pack_is_accepted_outside_clinical_mode(box_cfg, tiny_pack, stick):
    info = PackManager(box_cfg).install(pack_on(stick, tiny_pack, signing.new_private_key(), "demo", demo=True))
    assert info.demo and not info.trusted


@pytest.mark.parametrize("pack_id", ["../escape", "current", "previous", "pack.tmp", ".hidden"])
def test_pack_ids_that_are_not_plain_folder_names_are_refused(installed_box, tiny_pack, pack_key, stick, pack_id):
    source = pack_on(stick, tiny_pack, pack_key, "odd")
    reseal(source, pack_key, lambda m: m.update(pack_id=pack_id))
    refused(installed_box, source, "id")


def test_a_folder_that_is_no_pack_is_refused(installed_box, stick):
    (stick / "photos").mkdir()
    refused(installed_box, stick / "photos", "no model pack", "manifest.json")
    refused(installed_box, stick / "not-there", "There is no model pack at")


def test_a_full_disk_is_refused_before_copying(installed_box, tiny_pack, pack_key, stick, monkeypatch):
    import appliance.models_admin as models_admin
    monkeypatch.setattr(models_admin, "RESERVE_BYTES", 1 << 60)     # more than any disk holds
    refused(installed_box, pack_on(stick, tiny_pack, pack_key, "pack-b"), "not enough free space")


def test_a_second_installation_at_the_same_time_is_refused(installed_box, tiny_pack, pack_key, stick):
    source = pack_on(stick, tiny_pack, pack_key, "pack-b")
    with open(installed_box.packs_dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused(installed_box, source, "Another model-pack installation is running")


def test_a_different_pack_with_a_taken_id_is_refused(installed_box, tiny_pack, pack_key, stick, tmp_path):
    other = pack_on(tmp_path / "other-stick", tiny_pack, pack_key, "pack-a", "7.0.0")
    refused(installed_box, other, "same id pack-a")


def test_rollback_without_a_previous_pack_is_refused(installed_box):
    before = state(installed_box)
    with pytest.raises(UserError, match="no previous model pack"):
        PackManager(installed_box).rollback()
    assert state(installed_box) == before


def test_rollback_to_a_previous_pack_damaged_on_disk_is_refused(installed_box, tiny_pack, pack_key, stick):
    manager = PackManager(installed_box)
    manager.install(pack_on(stick, tiny_pack, pack_key, "pack-b"))
    damaged = installed_box.packs_dir / "pack-a" / "breast_binary" / "model.int8.bin"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    before = state(installed_box)
    with pytest.raises(PackError, match="breast_binary/model.int8.bin"):
        manager.rollback()
    assert state(installed_box) == before and current_id(installed_box) == "pack-b"


# -- the command line ------------------------------------------------------------------------
def cli(cfg, *args: str) -> subprocess.CompletedProcess:
    config = cfg.data_dir.parent / "config.toml"
    config.write_text("[security]\ntrusted_model_keys = %s\n[inference]\ndemo_pack = %s\n[post]\nmode = %s\n" % (
        json.dumps(cfg.security.trusted_model_keys), json.dumps(cfg.inference.demo_pack), json.dumps(cfg.post.mode)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env.update(BCCDMS_DATA_DIR=str(cfg.data_dir), BCCDMS_CONFIG=str(config))
    appliance = Path(sys.executable).with_name("appliance")     # the console script of this venv
    return subprocess.run([str(appliance), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_cli_install_list_rollback(box_cfg, tiny_pack, pack_key, stick):
    assert cli(box_cfg, "models", "list", "--quiet").returncode == 1     # start.sh: nothing installed yet
    first = cli(box_cfg, "models", "install", str(pack_on(stick, tiny_pack, pack_key, "pack-a", "1.0.0")))
    assert first.returncode == 0, first.stderr
    assert "Installed and switched to model pack pack-a 1.0.0 (7 models)" in first.stdout
    quiet = cli(box_cfg, "models", "list", "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert cli(box_cfg, "models", "install", str(pack_on(stick, tiny_pack, pack_key, "pack-b", "2.0.0"))).returncode == 0
    listing = cli(box_cfg, "models", "list")
    assert listing.returncode == 0
    assert listing.stdout.index("current   pack-b") < listing.stdout.index("previous  pack-a")
    as_json = json.loads(cli(box_cfg, "models", "list", "--json").stdout)
    assert [(p["pack_id"], p["role"]) for p in as_json["packs"]] == [("pack-b", "current"), ("pack-a", "previous")]
    back = cli(box_cfg, "models", "rollback")
    assert back.returncode == 0 and "pack-a 1.0.0 is current again" in back.stdout
    from appliance.store import Store
    store = Store.open(box_cfg)
    try:
        entries, _ = store.audit.query()
    finally:
        store.close()
    changes = [(e["action"], e["target_id"]) for e in entries if e["action"].startswith("models.")]
    assert sorted(changes) == sorted([("models.install", "pack-a"), ("models.install", "pack-b"),
                                      ("models.rollback", "pack-a")])
    assert all(e["actor"].startswith("cli:") for e in entries if e["action"].startswith("models."))


def test_cli_refusal_is_one_sentence_and_no_traceback(box_cfg, tiny_pack, stick):
    stranger = pack_on(stick, tiny_pack, signing.new_private_key(), "pack-x")
    proc = cli(box_cfg, "models", "install", str(stranger))
    assert proc.returncode == 2
    assert proc.stderr.startswith("appliance: The model pack pack-x is signed by a key this box does not trust.")
    assert "Traceback" not in proc.stderr
    assert not box_cfg.packs_dir.exists() or current_id(box_cfg) is None
    proc = cli(box_cfg, "models", "rollback")
    assert proc.returncode == 2 and "no previous model pack" in proc.stderr and "Traceback" not in proc.stderr


# -- the Admin page --------------------------------------------------------------------------
from webutil import NURSE, browser, live_server, staffed_server, wait_until, web_config  # noqa: E402,F401


@pytest.fixture
def web_cfg(cfg, tiny_pack, pack_key, tmp_path):
    """The kiosk on the tiny pack, with USB sticks looked for under a temporary /media."""
    cfg = web_config(cfg, tiny_pack, pack_key)
    cfg.exchange.usb_roots = [str(tmp_path / "media")]
    cfg.exchange.usb_folder_drives = True       # every folder there counts as a mounted stick
    return cfg


@pytest.fixture
def admin(staffed_server):
    return staffed_server.logged_in(ADMIN)


def finished_job_page(client) -> str:
    """The /admin/models page once the background job has ended."""
    def done():
        page = client.get("/admin/models").text
        return page if 'http-equiv="refresh"' not in page else None
    return wait_until(done, timeout=120, interval=0.2)


def engine_pack(live) -> str:
    return live.ctx.engine.status()["packs"][0]["id"]


def test_admin_installs_a_pack_from_a_usb_stick_and_the_engine_uses_it(staffed_server, admin, tiny_pack, pack_key, tmp_path):
    page = admin.get("/admin").text
    assert "Model packs" in page and 'id="no-pack-on-stick"' in page
    source = pack_on(tmp_path / "media" / "STICK", tiny_pack, pack_key, "breast-2026.2", "2.0.0")
    page = admin.get("/admin").text
    assert 'data-pack="breast-2026.2"' in page and "Check and install" in page

    res = admin.post("/admin/models/install", {"pack": str(source)})
    assert res.status == 303 and res.location.endswith("/admin/models")
    page = finished_job_page(admin)
    assert "Model pack breast-2026.2 2.0.0 is now in use." in page
    assert engine_pack(staffed_server) == "breast-2026.2"
    assert "This pack is the one in use." in admin.get("/admin").text
    entries, _total = staffed_server.ctx.store.audit.query(action="models.install")
    assert [(e["actor"], e["target_id"]) for e in entries] == [(ADMIN[0], "breast-2026.2")]


def test_admin_rolls_back_and_the_engine_follows(staffed_server, admin, tiny_pack, pack_key, tmp_path):
    stick = tmp_path / "media" / "STICK"
    for pack_id in ("pack-a", "pack-b"):
        admin.post("/admin/models/install", {"pack": str(pack_on(stick, tiny_pack, pack_key, pack_id))})
        finished_job_page(admin)
    assert engine_pack(staffed_server) == "pack-b"
    assert 'id="rollback-form"' in admin.get("/admin").text
    assert admin.post("/admin/models/rollback").status == 303
    assert "Model pack pack-a 1.0.0 is now in use." in finished_job_page(admin)
    assert engine_pack(staffed_server) == "pack-a"


def test_untrusted_pack_on_the_stick_is_shown_with_its_problem_and_refused(staffed_server, admin, tiny_pack, tmp_path):
    source = pack_on(tmp_path / "media" / "STICK", tiny_pack, signing.new_private_key(), "stranger")
    page = admin.get("/admin").text
    assert "signed by a key this box does not trust" in page
    before, in_use = state(staffed_server.cfg), engine_pack(staffed_server)
    admin.post("/admin/models/install", {"pack": str(source)})      # posted anyway, by hand
    page = finished_job_page(admin)
    assert "does not trust" in page and "Nothing was changed" in page
    assert state(staffed_server.cfg) == before
    assert engine_pack(staffed_server) == in_use


def test_a_path_that_is_not_a_pack_on_a_detected_stick_is_refused(staffed_server, admin, tiny_pack, pack_key, tmp_path):
    elsewhere = pack_on(tmp_path / "not-a-stick", tiny_pack, pack_key, "sneaky")
    res = admin.post("/admin/models/install", {"pack": str(elsewhere)})
    assert res.status == 400 and "There is no model pack there on a USB stick." in res.text
    assert not staffed_server.cfg.packs_dir.exists() or current_id(staffed_server.cfg) is None


def test_only_the_administrator_manages_model_packs(staffed_server, tiny_pack, pack_key, tmp_path):
    source = pack_on(tmp_path / "media" / "STICK", tiny_pack, pack_key, "pack-a")
    nurse = staffed_server.logged_in(NURSE)
    assert nurse.get("/admin/models").status == 403
    assert nurse.post("/admin/models/install", {"pack": str(source)}).status == 403
    assert nurse.post("/admin/models/rollback").status == 403
    anonymous = staffed_server.client()
    assert anonymous.get("/admin/models").status in (302, 303, 401)
    assert current_id(staffed_server.cfg) is None


@pytest.mark.browser
def test_admin_installs_a_pack_in_chromium(staffed_server, browser, tiny_pack, pack_key, tmp_path, artifacts_dir):
    """The Admin page at the kiosk's 800x480, touched in real Chromium: install a pack from the
    stick, then the Self-check panel (the doctor's report). Screenshots for the admin guide."""
    pack_on(tmp_path / "media" / "ML-TEAM", tiny_pack, pack_key, "breast-2026.2", "2.0.0")
    client = staffed_server.logged_in(ADMIN)
    shots = artifacts_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    context.add_cookies([{"name": k, "value": v, "url": staffed_server.url} for k, v in client.cookies.items()])
    page = context.new_page()
    page.goto(f"{staffed_server.url}/admin")
    panel = page.locator("#models-panel")
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(shots / "admin-model-packs.png"))
    page.locator('form.pack-candidate[data-pack="breast-2026.2"] button').tap()
    page.wait_for_selector("#models-result", timeout=120_000)
    assert "breast-2026.2 2.0.0 is now in use" in page.inner_text("#models-result")
    page.screenshot(path=str(shots / "admin-model-pack-installed.png"))
    wait_until(lambda: 'data-check="models" data-status="OK"' in client.get("/admin").text, timeout=60)
    page.goto(f"{staffed_server.url}/admin")
    doctor_panel = page.locator("#doctor-panel")
    doctor_panel.scroll_into_view_if_needed()
    assert "breast-2026.2" in doctor_panel.locator('tr[data-check="models"]').first.inner_text()
    doctor_panel.screenshot(path=str(shots / "admin-self-check.png"))
    assert engine_pack(staffed_server) == "breast-2026.2"
