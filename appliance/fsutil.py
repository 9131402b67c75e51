"""Small file-system helpers shared by the store, the USB exchange and the keys.

One definition each of: what an image's content name looks like (a sha256 in lower-case hex),
how a folder is made durable (fsync of the folder, so a rename or a new file in it survives a
power cut), and how a secret (a private key) is written.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Any

# Images are named by the sha256 of their bytes, in lower-case hex (the store, the bundles and
# the kiosk's URLs all use this name). The pattern text is also what a Bottle route embeds.
SHA256_PATTERN = "[0-9a-f]{64}"
_SHA256 = re.compile(SHA256_PATTERN)


def is_sha256(value: Any) -> bool:
    """True for a sha256 written as 64 lower-case hex digits, and nothing else."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def fsync_dir(path: os.PathLike | str, *, best_effort: bool = False) -> None:
    """Make the folder's entries (new, renamed or removed files) durable.

    ``best_effort`` is for removable media: some file systems (vfat on a few kernels) refuse to
    open or fsync a folder, and there the files themselves being synced is all that can be had.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:
            raise
    finally:
        os.close(fd)


def write_secret(path: os.PathLike | str, data: bytes, *, replace: bool = False) -> bytes:
    """Write a secret (a private key) into a file only its owner may read; returns what the file holds.

    The bytes go to a new temporary file with a random name (``O_EXCL``: never an old file
    left by a killed writer, whose looser mode would be kept), are made 0600 whatever the umask,
    and are fsynced before the file takes its name; the folder is fsynced after. Without
    ``replace`` an existing file is never overwritten: when another process created the secret
    first, its bytes are returned (and the caller uses the winner's key, not its own).
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            with contextlib.suppress(PermissionError):      # vfat cannot store modes at all
                os.fchmod(fd, 0o600)
            _write_all(fd, data)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)          # fails, atomically, when the name is taken
            except FileExistsError:
                return path.read_bytes()
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # A file system without hard links (a key kept on a vfat stick): claim the name
                # itself exclusively; a crash while writing these few bytes leaves a short file
                # that reading reports as damaged, never a key silently replaced.
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                except FileExistsError:
                    return path.read_bytes()
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(folder)
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def write_durably(path: os.PathLike | str, data: bytes) -> None:
    """Write ``path`` whole or not at all, and make it survive a power cut: the bytes go to a
    temporary name beside it (``.<name>.tmp-…``), are fsynced, take the name by a rename, and
    the folder is fsynced. A reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
