"""The shared file helpers: one sha256 name rule, one folder fsync and one secret writer for the whole appliance."""
from __future__ import annotations

import multiprocessing
import os
import re
import stat
from pathlib import Path

import pytest

from appliance import fsutil, signing
from appliance.errors import NotFound
from appliance.store import Store, durable

REPO = Path(__file__).resolve().parents[1]


def test_sha256_names():
    good = "ab" * 32
    assert fsutil.is_sha256(good)
    for bad in ("AB" * 32, "ab" * 31, good + "0", "zz" * 32, None, 12, b"ab" * 32, good + "\n"):
        assert not fsutil.is_sha256(bad), bad


def test_the_sha256_rule_and_the_folder_fsync_are_written_once():
    """Every module asks fsutil: no second regex or hand check of a sha256, no second folder fsync."""
    again = []
    for path in sorted((REPO / "appliance").rglob("*.py")):
        if path.name == "fsutil.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"0-9a-f\]\{64\}|len\(\w+\) != 64|def _?fsync_dir", text):
            again.append(path.relative_to(REPO).as_posix())
    assert not again
    assert durable.fsync_dir is fsutil.fsync_dir


def test_fsync_dir(tmp_path):
    fsutil.fsync_dir(tmp_path)
    with pytest.raises(OSError):
        fsutil.fsync_dir(tmp_path / "missing")
    fsutil.fsync_dir(tmp_path / "missing", best_effort=True)      # a pulled stick: nothing to do


def test_image_paths_take_only_sha256_names(cfg):
    with Store.open(cfg) as store:
        for bad in ("../" * 10 + "etc/passwd", "AB" * 32, "ab" * 31):
            with pytest.raises(NotFound):
                store.images.path(bad)


# --- the one secret writer --------------------------------------------------------------------

def test_a_key_is_owner_only_even_over_a_loose_leftover(tmp_path):
    """A killed writer's old temporary file (world-readable) must not lend its mode to a new key."""
    path = tmp_path / "keys" / "post_signing.key"
    path.parent.mkdir()
    leftover = path.with_name(path.name + ".tmp")
    leftover.write_text("old")
    leftover.chmod(0o666)
    old_umask = os.umask(0)
    try:
        key = signing.load_or_create_private_key(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.public_b64(signing.read_private_key(path)) == signing.public_b64(key)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []   # no temporary file left


def test_write_secret_never_overwrites_unless_asked(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(fsutil, "fsync_dir", lambda folder, **kw: synced.append(Path(folder)))
    path = tmp_path / "secret.key"
    assert fsutil.write_secret(path, b"first\n") == b"first\n"
    assert synced == [tmp_path]                                    # the new name is made durable
    assert fsutil.write_secret(path, b"second\n") == b"first\n"    # someone else's key wins
    assert path.read_bytes() == b"first\n"
    assert fsutil.write_secret(path, b"third\n", replace=True) == b"third\n"
    assert path.read_bytes() == b"third\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]


def test_an_existing_key_is_kept_when_a_second_process_creates_it_late(tmp_path, monkeypatch):
    """The race: both saw no file; the one that writes second must read and use the first one's key."""
    path = tmp_path / "post_signing.key"
    first = signing.new_private_key()
    real_exists = Path.exists

    def exists_but_create_meanwhile(self, *args, **kwargs):
        if self == path and not real_exists(self):
            signing.write_private_key(first, path)          # the other process, just in between
            return False
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists_but_create_meanwhile)
    got = signing.load_or_create_private_key(path)
    assert signing.public_b64(got) == signing.public_b64(first)
    assert signing.public_b64(signing.read_private_key(path)) == signing.public_b64(first)


def _first_use(data_dir: str, start, queue) -> None:
    from appliance.config import load_config
    from appliance.exchange import keys
    cfg = load_config(data_dir=data_dir, environ={})
    start.wait()
    queue.put((signing.public_b64(keys.post_signing_key(cfg)), keys.pseudonym_secret(cfg).hex()))


def test_processes_starting_at_once_share_one_key_and_one_pseudonym_secret(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_first_use, args=(str(tmp_path), start, queue)) for _ in range(6)]
    for w in workers:
        w.start()
    start.set()
    seen = {queue.get(timeout=30) for _ in workers}
    for w in workers:
        w.join(timeout=30)
    assert len(seen) == 1
    public, secret = seen.pop()
    assert signing.public_b64(signing.read_private_key(tmp_path / "keys" / "post_signing.key")) == public
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
