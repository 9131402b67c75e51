"""The box side of the languages: the installer puts the Ethiopic fonts on every box and sets the
time zone the local dates depend on; `appliance doctor` checks the fonts. Nothing here touches the
machine: the installer runs into a temporary root (DESTDIR), which prints what it would run."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.doctor import FAIL, OK, check_fonts, run_checks
from appliance.i18n import error_text, fonts

REPO = Path(__file__).resolve().parents[1]
SOURCE_PATHS = ("install.sh", "systemd", "kiosk", "appliance", "export", "docs", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCE_PATHS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    return src


def install(source: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    """install.sh into ``root`` on a machine where no Debian package is installed yet."""
    fake_bin = root.parent / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "dpkg-query").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env.update(DESTDIR=str(root), PATH=f"{fake_bin}:{env['PATH']}")
    return subprocess.run(["bash", str(source / "install.sh"), "--prefix", str(root.parent / "opt"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_every_box_gets_the_ethiopic_fonts_and_the_ethiopian_time_zone(source, tmp_path):
    done = install(source, tmp_path / "server-only", "--no-kiosk")
    assert done.returncode == 0, done.stdout + done.stderr
    apt = [line for line in done.stdout.splitlines() if "would run: apt-get install" in line]
    assert apt and "fonts-noto-core" in apt[0] and "chromium" not in apt[0]     # the PDF needs it too
    assert "would run: timedatectl set-timezone Africa/Addis_Ababa" in done.stdout


def test_the_time_zone_can_be_chosen_or_kept(source, tmp_path):
    done = install(source, tmp_path / "nairobi", "--no-apt", "--timezone", "Africa/Nairobi")
    assert done.returncode == 0 and "timedatectl set-timezone Africa/Nairobi" in done.stdout
    done = install(source, tmp_path / "keep", "--no-apt", "--timezone", "keep")
    assert done.returncode == 0 and "timedatectl" not in done.stdout
    for zone in ("Mars/Olympus", "../../etc/passwd", ""):
        done = install(source, tmp_path / "bad", "--no-apt", "--timezone", zone)
        assert done.returncode != 0 and "zone" in done.stderr, zone
        assert not (tmp_path / "bad").exists()                                   # refused before anything


def test_doctor_checks_the_fonts(cfg, monkeypatch):
    assert [c.status for c in check_fonts(cfg)] == [OK]
    assert "fonts" in [c.name for c in run_checks(cfg, include_server=False).checks]
    monkeypatch.setitem(fonts._CANDIDATES, "ethiopic", (Path("/nonexistent/Ethiopic.ttf"),))
    [check] = check_fonts(cfg)
    assert check.status == FAIL and "ethiopic" in check.message and "fonts-noto-core" in " ".join(check.details)
    with pytest.raises(fonts.FontMissing) as exc:
        fonts.font_path("ethiopic")
    assert error_text(exc.value, "am")[0] != exc.value.message            # the kiosk shows it translated
