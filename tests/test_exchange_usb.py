"""Finding USB sticks, listing their bundles, ejecting them."""
from __future__ import annotations

import pytest

from appliance.errors import UserError
from appliance.exchange import usb


def _mountinfo(tmp_path, lines: list[str]):
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_mounted_sticks_below_the_roots_are_drives(cfg, tmp_path):
    media = tmp_path / "media"
    stick = media / "nurse" / "MY STICK"
    other = media / "nurse" / "CAMERA"
    for folder in (stick, other, tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    info = _mountinfo(tmp_path, [
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
        f"90 22 8:17 / {str(stick).replace(' ', chr(92) + '040')} rw,nosuid shared:50 - vfat /dev/sdb1 rw",
        f"91 22 8:33 / {other} rw shared:51 - exfat /dev/sdc1 rw",
        f"92 22 0:50 / {media} rw shared:52 - tmpfs tmpfs rw",
        f"93 22 8:49 / {tmp_path / 'elsewhere'} rw shared:53 - ext4 /dev/sdd1 rw",
    ])
    cfg.exchange.usb_roots = [str(media)]
    drives = usb.list_drives(cfg, mountinfo=info)
    assert [(d.path, d.device, d.label) for d in drives] == [(other, "/dev/sdc1", "CAMERA"),
                                                              (stick, "/dev/sdb1", "MY STICK")]
    assert all(d.total > 0 for d in drives)


def test_folder_drives_and_the_bundles_on_them(cfg, tmp_path):
    root = tmp_path / "usb"
    stick = root / "STICK"
    (stick / usb.BUNDLE_FOLDER).mkdir(parents=True)
    (root / ".hidden").mkdir()
    cfg.exchange.usb_roots = [str(root)]
    assert usb.list_drives(cfg, mountinfo=_mountinfo(tmp_path, [])) == []
    cfg.exchange.usb_folder_drives = True
    (drive,) = usb.list_drives(cfg, mountinfo=_mountinfo(tmp_path, []))
    assert drive.path == stick and drive.device is None

    wanted = [stick / "a.bccdms", stick / usb.BUNDLE_FOLDER / "b.bccdms"]
    for path in wanted + [stick / ".c.bccdms.partial", stick / "notes.txt", stick / ".d.bccdms"]:
        path.write_bytes(b"x")
    (stick / "deeper").mkdir()
    (stick / "deeper" / "e.bccdms").write_bytes(b"x")
    assert usb.bundles_on(stick) == sorted(wanted)
    assert usb.export_folder(stick) == stick / usb.BUNDLE_FOLDER


def test_eject(cfg, tmp_path):
    root = tmp_path / "usb"
    (root / "STICK").mkdir(parents=True)
    cfg.exchange.usb_roots = [str(root)]
    cfg.exchange.usb_folder_drives = True
    drive = usb.find_drive(cfg, root / "STICK")
    assert "safe to remove" in usb.eject(cfg, drive)
    with pytest.raises(UserError, match="There is no USB stick at"):
        usb.find_drive(cfg, "/etc")
    # A stick the system cannot unmount gives a sentence, never a traceback.
    not_mounted = usb.Drive(root / "STICK", "STICK", "/dev/bccdms-test-none", 0, 0)
    with pytest.raises(UserError, match="could not be ejected|still in use"):
        usb.eject(cfg, not_mounted)
