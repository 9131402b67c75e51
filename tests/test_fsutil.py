"""The shared file helpers: one sha256 name rule and one folder fsync for the whole appliance."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance import fsutil
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
