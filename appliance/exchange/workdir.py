"""The exchange work folder (``<data>/exchange``): locks, temporary and staging folders."""
from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator

from .. import clock
from ..errors import UserError


def exchange_dir(cfg) -> Path:
    return Path(cfg.data_dir) / "exchange"


def now_iso() -> str:
    return clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextlib.contextmanager
def exclusive(cfg, name: str, what: str) -> Iterator[Path]:
    """Hold ``<data>/exchange/<name>.lock`` (one export, or one import, at a time per box, across
    the kiosk and the command line); yields the work folder."""
    work = exchange_dir(cfg)
    work.mkdir(parents=True, exist_ok=True)
    with open(work / f"{name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"Another {what} is running on this box.", "Wait for it to finish, then try again.") from None
        yield work
