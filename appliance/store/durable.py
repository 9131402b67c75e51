"""Crash-safe files, and the TinyDB storage built on them.

Every write goes to a temporary file in the same folder, is fsynced, then atomically
replaces the old file (``os.replace``), and the folder is fsynced so the rename itself
survives a power cut. A reader therefore sees either the old or the new file, never half
of one. Before the replace the current file is hard-linked to ``<name>.prev`` (no data is
copied): that previous generation is what :func:`load_json` falls back to when the disk
itself damages the current file. The damaged file is kept aside as
``<name>.damaged-<UTC time>`` and the recovery is reported, never silent.

Folder fsyncs are batched per store operation (:func:`batch`): a save that touches an
image, a record file and the audit log syncs each folder once, right before it returns.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from tinydb.storages import Storage

from ..errors import StoreError

log = logging.getLogger("appliance.store")

TMP_MARK = ".tmp-"
PREV_SUFFIX = ".prev"
DAMAGED_MARK = ".damaged-"

_local = threading.local()


def os_error(exc: OSError, path: os.PathLike | str, doing: str = "save the record") -> StoreError:
    """Turn an OSError into the sentence a nurse or a technician can act on."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return StoreError(f"The disk is full, so the appliance could not {doing}.",
                          "Nothing was changed. Free some space (move old images to a USB stick or "
                          "ask the technician), then try again.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(f"The data folder is read-only ({path}), so the appliance could not {doing}.",
                          "Nothing was changed. The disk may be failing or mounted read-only: "
                          "ask the technician to check it, then try again.")
    return StoreError(f"The appliance could not {doing}: {exc.strerror or exc} ({path}).",
                      "Nothing was changed. Try again; if it happens again, ask the technician.")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """Defer folder fsyncs of the writes inside to one fsync per folder at the end.

    Nested batches join the outer one. The folders are synced even when the body raises,
    so whatever did reach the disk is durable before the error is reported.
    """
    if getattr(_local, "dirs", None) is not None:
        yield
        return
    _local.dirs = dirs = set()
    try:
        yield
    finally:
        _local.dirs = None
        for d in sorted(dirs):
            fsync_dir(d)


def _sync_dir_later(path: Path) -> None:
    dirs = getattr(_local, "dirs", None)
    if dirs is None:
        fsync_dir(path)
    else:
        dirs.add(path)


def tmp_path_for(path: Path, tmp_dir: Path | None = None) -> Path:
    name = f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    return (tmp_dir or path.parent) / name


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name


def make_dirs(folder: Path) -> None:
    """Create ``folder`` and missing parents durably: a new folder's own name lives in its
    parent, which must be synced too, or a power cut can lose the folder and all inside it."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir()
        _sync_dir_later(new.parent)


def write_fsynced(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) with ``data`` and fsync it; creates its folder."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        make_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, keep_previous: bool = False, sync: bool = True,
                 tmp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole.

    ``keep_previous`` keeps the replaced generation as ``<name>.prev``. ``sync=False`` is
    for derived files (caches, thumbnails) that may be lost but must never be torn.
    ``tmp_dir`` (same file system) keeps temporary files out of big folders, so leftovers are
    cheap to find. Outside a :func:`batch` the folder is synced before this returns.
    """
    tmp = tmp_path_for(path, tmp_dir)
    if tmp_dir is not None:
        make_dirs(path.parent)
    try:
        if sync:
            write_fsynced(tmp, data)
        else:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
        if keep_previous and path.exists():
            prev = path.with_name(path.name + PREV_SUFFIX)
            prev_tmp = tmp_path_for(prev)
            os.link(path, prev_tmp)
            os.replace(prev_tmp, prev)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync:
        _sync_dir_later(path.parent)


def _writer_alive(name: str) -> bool:
    """Is the process that named this temporary file still running (it may be writing it)?"""
    try:
        pid = int(name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp_files(folder: Path) -> int:
    """Delete temporary files that killed writers left (files of running processes are kept)."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if is_tmp_name(entry.name) and entry.is_file(follow_symlinks=False) and not _writer_alive(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


# --- reading, with recovery from the previous generation --------------------------------------

class Damaged(ValueError):
    """A file whose content is not what this store writes."""


def _decode_tinydb(raw: bytes) -> dict[str, dict[str, Any]]:
    if not raw:
        raise Damaged("it is empty")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Damaged(f"it is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(t, dict) for t in doc.values()):
        raise Damaged("it does not hold TinyDB tables")
    for table in doc.values():
        for doc_id, record in table.items():
            if not doc_id.isdigit() or not isinstance(record, dict):
                raise Damaged("a table holds something that is not a record")
    return doc


def load_json(path: Path, warn: Callable[[str], None]) -> dict[str, dict[str, Any]] | None:
    """Read a TinyDB JSON file; ``None`` when it does not exist yet.

    A damaged file is replaced by its previous generation with a warning naming both
    files; the damaged one is kept aside. With no good previous generation this raises
    a ``StoreError`` and leaves the damaged file where it is, so nothing is lost silently.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not path.with_name(path.name + PREV_SUFFIX).exists():
            return None
        raw, problem = None, "it is missing but its previous copy is there"
    except OSError as exc:
        raise os_error(exc, path, "read the records") from None
    else:
        try:
            return _decode_tinydb(raw)
        except Damaged as exc:
            problem = str(exc)
    return _recover(path, problem, warn)


def _recover(path: Path, problem: str, warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    prev = path.with_name(path.name + PREV_SUFFIX)
    try:
        good = _decode_tinydb(prev.read_bytes())
    except (OSError, Damaged) as exc:
        why = "it is missing" if isinstance(exc, FileNotFoundError) else str(exc)
        raise StoreError(
            f"The record file {path} is damaged ({problem}) and its previous copy {prev} cannot be used ({why}).",
            "Restore the last backup with 'appliance restore', or ask the technician. To start without the "
            "records in that file, move it out of the data folder; nothing was deleted.") from None
    try:
        kept = None
        if path.exists():
            kept = path.with_name(f"{path.name}{DAMAGED_MARK}{utc_stamp()}")
            os.replace(path, kept)
        atomic_write(path, prev.read_bytes())
    except OSError as exc:
        raise os_error(exc, path, "repair a damaged record file") from None
    message = (f"The record file {path} was damaged ({problem}); it was restored from its previous copy {prev}. "
               + (f"The damaged file is kept as {kept}. " if kept else "")
               + "The last change written to that file may be missing: check the most recent records.")
    log.warning(message)
    warn(message)
    return good


def encode(data: Any) -> bytes:
    # ensure_ascii=False: Ge'ez names stay readable and take 3 bytes, not 6.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DurableJSONStorage(Storage):
    """A TinyDB storage that writes atomically, keeps ``.prev`` and recovers from it.

    The parsed content is cached: TinyDB reads the whole database before every operation,
    and the store invalidates this cache when another process replaces the file. TinyDB
    updates documents in place before it calls :meth:`write`; when the write fails the
    cache is dropped, so memory never holds a change the disk does not.
    """

    def __init__(self, path: str | os.PathLike, warn: Callable[[str], None] | None = None):
        super().__init__()
        self.path = Path(path)
        self._warn = warn or (lambda message: None)
        self._data: dict[str, dict[str, Any]] | None = None
        self._loaded = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._loaded:
            self._data = load_json(self.path, self._warn)
            self._loaded = True
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        try:
            atomic_write(self.path, encode(data), keep_previous=True)
        except OSError as exc:
            self.invalidate()
            raise os_error(exc, self.path) from None
        except BaseException:
            self.invalidate()
            raise
        self._data = data
        self._loaded = True

    def invalidate(self) -> None:
        self._data = None
        self._loaded = False
