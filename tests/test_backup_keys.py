"""Keys and backups: left out by default; with --with-keys sealed under a passphrase (scrypt +
AES-GCM), asked for by restore, written back readable by the owner only."""
from __future__ import annotations

import io
import json
import os
import stat

import pytest

from appliance.cli import main as cli
from appliance.config import load_config
from appliance.errors import UserError
from appliance.exchange import keys
from appliance.store import Store, sealed_keys
from test_store_support import register, save_exam, snapshot

PASSPHRASE = "correct horse battery staple"


def _box(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    cfg = load_config(data_dir=folder, environ={})
    with Store.open(cfg) as store:
        save_exam(store, register(store, "JU-1", "Almaz Kebede"))
    keys.post_signing_key(cfg)
    keys.pseudonym_secret(cfg)
    keys.create_supervisor_key(keys.supervisor_key_path(cfg))
    return cfg


def _key_bytes(cfg) -> dict[str, bytes]:
    folder = cfg.data_dir / "keys"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _every_byte(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_keys_stay_off_the_stick_by_default(tmp_path):
    post = _box(tmp_path, "post")
    with Store.open(post) as store:
        backup = store.backup(tmp_path / "usb")
    on_stick = _every_byte(backup)
    for name, data in _key_bytes(post).items():
        assert data.strip() not in on_stick, name
    assert json.loads((backup / "manifest.json").read_text())["keys"] == "not included"

    other = _box(tmp_path, "other")
    theirs = _key_bytes(other)
    report = Store.restore(backup, other, force=True)
    assert report["keys"] == "not in the backup" and _key_bytes(other) == theirs   # the box keeps its keys


def test_keys_sealed_with_a_passphrase_and_restored_owner_only(tmp_path):
    post = _box(tmp_path, "post")
    mine = _key_bytes(post)
    with Store.open(post) as store:
        backup = store.backup(tmp_path / "usb", passphrase=PASSPHRASE)
        before = snapshot(store)
    sealed = backup / sealed_keys.FILE_NAME
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    on_stick = _every_byte(backup)
    for name, data in mine.items():
        assert data.strip() not in on_stick, name
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["keys"] == "sealed" and sealed_keys.FILE_NAME in manifest["files"]

    target = tmp_path / "new-box"
    target.mkdir()
    new_box = load_config(data_dir=target, environ={})
    with pytest.raises(UserError, match="sealed with a passphrase") as exc:
        Store.restore(backup, new_box)
    assert "--without-keys" in exc.value.hint
    with pytest.raises(UserError, match="passphrase does not open"):
        Store.restore(backup, new_box, passphrase="a wrong passphrase, long enough")
    assert not (target / "store").exists() and not (target / "keys").exists()     # nothing changed

    asked = []
    report = Store.restore(backup, new_box, passphrase=lambda: asked.append(1) or PASSPHRASE)
    assert asked == [1] and report["keys"] == "restored"
    assert _key_bytes(new_box) == mine
    assert stat.S_IMODE((target / "keys").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (target / "keys").iterdir())
    assert not (target / sealed_keys.FILE_NAME).exists()
    with Store.open(new_box) as store:
        assert snapshot(store) == before
    assert keys.fingerprint(keys.x25519_public_raw(keys.load_supervisor_key(new_box))) == \
        keys.fingerprint(keys.x25519_public_raw(keys.load_supervisor_key(post)))


def test_restore_without_keys_keeps_the_box_keys(tmp_path):
    post = _box(tmp_path, "post")
    with Store.open(post) as store:
        backup = store.backup(tmp_path / "usb", passphrase=PASSPHRASE)
    other = _box(tmp_path, "other")
    theirs = _key_bytes(other)
    report = Store.restore(backup, other, force=True, without_keys=True)
    assert report["keys"] == "left out" and _key_bytes(other) == theirs


def test_a_damaged_or_tampered_seal_is_refused(tmp_path):
    blob = sealed_keys.seal({"post_signing.key": b"k" * 44}, PASSPHRASE)
    doc = json.loads(blob)
    doc["kdf"]["n"] = 1 << 14                     # weakened parameters are authenticated too
    with pytest.raises(UserError, match="passphrase does not open"):
        sealed_keys.unseal(json.dumps(doc).encode(), PASSPHRASE)
    with pytest.raises(UserError, match="damaged or of an unknown format"):
        sealed_keys.unseal(blob[:40], PASSPHRASE)
    assert sealed_keys.unseal(blob, PASSPHRASE) == {"post_signing.key": b"k" * 44}


def test_a_short_passphrase_or_no_keys_writes_nothing(tmp_path, cfg):
    with Store.open(cfg) as store:
        with pytest.raises(UserError, match="at least 12 characters"):
            store.backup(tmp_path / "usb", passphrase="short")
        with pytest.raises(UserError, match="no keys"):
            store.backup(tmp_path / "usb", passphrase=PASSPHRASE)
    assert not (tmp_path / "usb").exists()


def test_old_backups_with_plain_keys_restore_them_owner_only(tmp_path):
    """Backups made before keys were sealed held keys/ as plain files: restored, but 0600 now."""
    post = _box(tmp_path, "post")
    with Store.open(post) as store:
        backup = store.backup(tmp_path / "usb")
    manifest = json.loads((backup / "manifest.json").read_text())
    (backup / "keys").mkdir()
    (backup / "keys" / "post_signing.key").write_bytes(b"old plain key\n")
    os.chmod(backup / "keys" / "post_signing.key", 0o644)
    manifest["files"]["keys/post_signing.key"] = {
        "sha256": "bf16f7fb6a4b8dc9d7a6e57ba1f1ce1c6c1b9ec2cb1e0bd8b7e07f4e0d7d0d7b", "size": 14}
    import hashlib
    manifest["files"]["keys/post_signing.key"]["sha256"] = hashlib.sha256(b"old plain key\n").hexdigest()
    (backup / "manifest.json").write_text(json.dumps(manifest))
    target = tmp_path / "box"
    target.mkdir()
    report = Store.restore(backup, load_config(data_dir=target, environ={}))
    assert report["keys"] == "restored"
    key = target / "keys" / "post_signing.key"
    assert key.read_bytes() == b"old plain key\n" and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_backup_and_restore_commands_with_keys(tmp_path, monkeypatch, capsys):
    post = _box(tmp_path, "post")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSPHRASE + "\n"))
    assert cli(["backup", "--with-keys", "--to", str(tmp_path / "usb"), "--data-dir", str(post.data_dir)]) == 0
    assert "encrypted" in capsys.readouterr().out
    [backup] = (tmp_path / "usb").iterdir()
    target = tmp_path / "box"
    target.mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO("not the passphrase at all\n"))
    assert cli(["restore", str(backup), "--data-dir", str(target)]) == 2
    assert "passphrase does not open" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli(["restore", str(backup), "--data-dir", str(target)]) == 2
    assert "No passphrase was given" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSPHRASE + "\n"))
    assert cli(["restore", str(backup), "--data-dir", str(target)]) == 0
    assert "keys were restored" in capsys.readouterr().out
    assert _key_bytes(load_config(data_dir=target, environ={})) == _key_bytes(post)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli(["backup", "--with-keys", "--to", str(tmp_path / "usb2"), "--data-dir", str(post.data_dir)]) == 2
    assert "at least 12" in capsys.readouterr().err and not (tmp_path / "usb2").exists()
