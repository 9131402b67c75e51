"""USB sticks: find the mounted ones, list bundles on them, and eject them safely.

A drive is a mounted volume below one of ``[exchange] usb_roots`` (udisks2 mounts sticks at
``/media/<user>/<label>`` or ``/run/media/<user>/<label>``). With ``usb_folder_drives`` every
folder directly under a root also counts as a drive: for tests, and for boxes where sticks
are mounted by hand under one folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .container import SUFFIX

BUNDLE_FOLDER = "BCCDMS"
_EJECT_TIMEOUT = 120


@dataclass
class Drive:
    path: Path
    label: str
    device: str | None          # /dev/sdb1 for a real mount, None for a folder drive
    free: int
    total: int

    def to_json(self) -> dict:
        return {"path": str(self.path), "label": self.label, "device": self.device,
                "free": self.free, "total": self.total}


def _unescape(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


# Filesystems that are never a stick (a tmpfs on /media, automount placeholders).
_NOT_STICKS = {"tmpfs", "devtmpfs", "autofs", "proc", "sysfs", "overlay", "squashfs", "ramfs"}


def mounts(mountinfo: str = "/proc/self/mountinfo") -> dict[Path, str]:
    """Mount point -> source device, for every mounted filesystem that could be a stick."""
    found: dict[Path, str] = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                parts, tail = left.split(), right.split()
                if len(parts) >= 5 and len(tail) >= 2 and tail[0] not in _NOT_STICKS:
                    found[Path(_unescape(parts[4]))] = _unescape(tail[1])
    except OSError:
        pass
    return found


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_drives(cfg, mountinfo: str = "/proc/self/mountinfo") -> list[Drive]:
    roots = [Path(r) for r in cfg.exchange.usb_roots if r]
    table = mounts(mountinfo)
    seen: dict[Path, str | None] = {}
    for point, device in table.items():
        if any(_under(point, root) for root in roots):
            seen[point] = device
    if cfg.exchange.usb_folder_drives:
        for root in roots:
            try:
                entries = sorted(os.scandir(root), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    seen.setdefault(Path(entry.path), None)
    drives = []
    for path, device in sorted(seen.items()):
        # A mount point that holds another mount point (/media/user) is not itself a stick.
        if any(other != path and path in other.parents for other in seen):
            continue
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        drives.append(Drive(path, path.name, device, usage.free, usage.total))
    return drives


def bundles_on(path: Path) -> list[Path]:
    """Bundles on a stick: in its top folder and in its BCCDMS folder (never deeper)."""
    found = []
    for folder in (path, path / BUNDLE_FOLDER):
        try:
            found += [Path(e.path) for e in os.scandir(folder)
                      if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
        except OSError:
            continue
    return sorted(found)


def export_folder(drive: Path) -> Path:
    folder = drive / BUNDLE_FOLDER
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"The stick {drive} cannot be written to ({exc.strerror}).",
                        "Check that it is not write-protected and not full.") from None
    return folder


def find_drive(cfg, path: str | os.PathLike) -> Drive:
    """The drive at ``path``, refusing anything that is not one of the detected drives."""
    wanted = Path(path)
    for drive in list_drives(cfg):
        if drive.path == wanted:
            return drive
    raise UserError(f"There is no USB stick at {wanted}.", "Plug the stick in again and reload the page.")


def eject(cfg, drive: Drive) -> str:
    """Flush everything to the stick and unmount it; return what to tell the user."""
    os.sync()
    if drive.device is None:
        return f"Everything is written to {drive.path}; it is safe to remove."
    if shutil.which("udisksctl") and drive.device.startswith("/dev/"):
        done = _run(["udisksctl", "unmount", "--no-user-interaction", "-b", drive.device])
        if done.returncode == 0:
            # Powering the stick off is a courtesy; when it is refused the stick is still safe to pull.
            _run(["udisksctl", "power-off", "--no-user-interaction", "-b", drive.device])
            return f"The stick {drive.label} is safely ejected; you can remove it now."
        error = done.stderr.strip()
    else:
        done = _run(["umount", str(drive.path)])
        if done.returncode == 0:
            return f"The stick {drive.label} is safely ejected; you can remove it now."
        error = done.stderr.strip()
    if "busy" in error.lower():
        raise UserError(f"The stick {drive.label} is still in use, so it was not ejected.",
                        "Close any window showing files on it, wait a moment and press Eject again.")
    raise UserError(f"The stick {drive.label} could not be ejected ({error or 'no reason given'}).",
                    "Everything was written to it (sync); wait until its light stops blinking, then remove it.")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_EJECT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 1, "", str(exc))
