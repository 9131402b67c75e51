"""``./start.sh`` on a fresh Debian: it installs the Debian packages the appliance needs at run time
(only the missing ones, with sudo when not root), so the self-check's Ethiopic font is there.
Nothing here touches the machine: start.sh runs in a copy of the checkout with stand-ins for
dpkg-query, apt-get, sudo and id on PATH that record what would have run."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A checkout already installed (its .venv stands in, newer than pyproject.toml) with a pack."""
    root = tmp_path / "bccdms"
    root.mkdir()
    shutil.copy2(REPO / "start.sh", root / "start.sh")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / ".venv" / "bin").mkdir(parents=True)
    script(root / ".venv" / "bin" / "python", "exit 0\n")
    (root / ".venv" / ".installed").touch()
    os.utime(root / "pyproject.toml", (1, 1))
    (root / "weights" / "demo").mkdir(parents=True)
    (root / "weights" / "demo" / "manifest.json").write_text("{}")
    return root


def start(checkout: Path, *, fonts_installed: bool, uid: int) -> list[str]:
    """Run ``start.sh --install-only``; the commands the stand-ins saw, one a line."""
    fake = checkout.parent / "fake-bin"
    fake.mkdir(exist_ok=True)
    log = checkout.parent / "commands.log"
    log.write_text("")
    status = "install ok installed" if fonts_installed else "unknown ok not-installed"
    script(fake / "dpkg-query", f'case "$*" in *fonts-noto-core*) printf "{status}";; *) exit 1;; esac\n')
    script(fake / "apt-get", f'echo "apt-get $*" >> {log}\n')
    script(fake / "sudo", f'echo "sudo $1 $2" >> {log}\nexec "$@"\n')
    script(fake / "id", f'echo {uid}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    env["PATH"] = f"{fake}:{env['PATH']}"
    done = subprocess.run(["bash", str(checkout / "start.sh"), "--install-only"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return log.read_text().splitlines()


def test_start_installs_the_ethiopic_fonts_when_they_are_missing(checkout):
    commands = start(checkout, fonts_installed=False, uid=1000)
    assert "apt-get install -y fonts-noto-core" in commands
    assert "sudo apt-get install" in commands               # not root: through sudo
    assert commands.index("apt-get update -qq") < commands.index("apt-get install -y fonts-noto-core")


def test_start_installs_nothing_that_is_there_and_needs_no_sudo_as_root(checkout):
    assert start(checkout, fonts_installed=True, uid=1000) == []
    commands = start(checkout, fonts_installed=False, uid=0)
    assert "apt-get install -y fonts-noto-core" in commands and not any(c.startswith("sudo") for c in commands)
