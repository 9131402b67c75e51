"""Small file-system helpers shared by the store, the USB exchange and the keys.

One definition each of: what an image's content name looks like (a sha256 in lower-case hex),
and how a folder is made durable (fsync of the folder, so a rename or a new file in it
survives a power cut).
"""
from __future__ import annotations

import os
import re
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
