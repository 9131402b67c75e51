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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from tinydb.storages import Storage

from .. import clock
from ..errors import StoreError
from ..i18n import N_, translatable
from ..fsutil import fsync_dir  # noqa: F401 (the store's modules import it from here)

log = logging.getLogger("appliance.store")

TMP_MARK = ".tmp-"
PREV_SUFFIX = ".prev"
DAMAGED_MARK = ".damaged-"

_local = threading.local()


# What the store was doing when the disk failed, as whole sentences the kiosk can translate (a
# verb phrase pasted into a sentence cannot be): for each, (disk full, read-only, other error).
_FAILED = {
    "save the record": (
        N_("The disk is full, so the appliance could not save the record."),
        N_("The data folder is read-only (%(path)s), so the appliance could not save the record."),
        N_("The appliance could not save the record: %(reason)s (%(path)s).")),
    "save the image": (
        N_("The disk is full, so the appliance could not save the image."),
        N_("The data folder is read-only (%(path)s), so the appliance could not save the image."),
        N_("The appliance could not save the image: %(reason)s (%(path)s).")),
    "open the record store": (
        N_("The disk is full, so the appliance could not open the record store."),
        N_("The data folder is read-only (%(path)s), so the appliance could not open the record store."),
        N_("The appliance could not open the record store: %(reason)s (%(path)s).")),
    "read the records": (
        N_("The disk is full, so the appliance could not read the records."),
        N_("The data folder is read-only (%(path)s), so the appliance could not read the records."),
        N_("The appliance could not read the records: %(reason)s (%(path)s).")),
    "make the backup": (
        N_("The disk is full, so the appliance could not make the backup."),
        N_("The folder is read-only (%(path)s), so the appliance could not make the backup."),
        N_("The appliance could not make the backup: %(reason)s (%(path)s).")),
    "restore the backup": (
        N_("The disk is full, so the appliance could not restore the backup."),
        N_("The data folder is read-only (%(path)s), so the appliance could not restore the backup."),
        N_("The appliance could not restore the backup: %(reason)s (%(path)s).")),
    "upgrade the records": (
        N_("The disk is full, so the appliance could not upgrade the records."),
        N_("The data folder is read-only (%(path)s), so the appliance could not upgrade the records."),
        N_("The appliance could not upgrade the records: %(reason)s (%(path)s).")),
}
# Callers' words for the same thing.
_SAME_AS = {"create the data folder": "open the record store", "repair a damaged record file": "read the records",
            "read the keys": "make the backup", "start the backup": "make the backup",
            "write the backup": "make the backup"}
_HINTS = (N_("Nothing was changed. Free some space (move old images to a USB stick or ask the technician), "
             "then try again."),
          N_("Nothing was changed. The disk may be failing or mounted read-only: ask the technician to check it, "
             "then try again."),
          N_("Nothing was changed. Try again; if it happens again, ask the technician."))
StoreDiskError = translatable(StoreError)


def os_error(exc: OSError, path: os.PathLike | str, doing: str = "save the record") -> StoreError:
    """Turn an OSError into the sentence a nurse or a technician can act on (translatable: a
    ``StoreError`` with ``msgid``/``fields``). ``doing`` is a key of ``_FAILED`` (or ``_SAME_AS``)."""
    sentences = _FAILED[_SAME_AS.get(doing, doing)]
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        which = 0
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        which = 1
    else:
        which = 2
    return StoreDiskError(sentences[which], _HINTS[which], path=str(path), reason=str(exc.strerror or exc))


def utc_stamp() -> str:
    return clock.now().strftime("%Y%m%dT%H%M%S%fZ")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    # A forked child has none of the parent's threads: it must start its own pool.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _each(fn: Callable[[Path], None], paths: list[Path]) -> None:
    """``fn`` on every path, at the same time: fsync releases the GIL, and a journalling file
    system commits fsyncs that wait together in one go, so two cost about as much as one."""
    global _pool
    if len(paths) <= 1:
        for path in paths:
            fn(path)
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fsync")
    for future in [_pool.submit(fn, path) for path in paths]:
        future.result()


class _Pending:
    __slots__ = ("tmp", "keep_previous")

    def __init__(self, tmp: Path, keep_previous: bool):
        self.tmp, self.keep_previous = tmp, keep_previous


class _Batch:
    def __init__(self, defer: bool):
        self.defer = defer
        self.dirs: set[Path] = set()
        self.pending: dict[Path, _Pending] = {}
        self.on_commit: list[Callable[[], None]] = []
        self.on_abort: list[Callable[[], None]] = []


def _current() -> _Batch | None:
    return getattr(_local, "batch", None)


@contextlib.contextmanager
def batch(*, defer: bool = False) -> Iterator[None]:
    """Group the durable writes inside, so they wait for the disk together, once.

    Folder fsyncs are deferred to the end, one per folder. With ``defer`` files are also only
    *prepared* inside: written to temporary files, then at the end all fsynced at once (in
    parallel: the file system commits fsyncs that wait together in one go), renamed into place,
    and their folders fsynced at once. For record files the store's writer lock must be held all
    through (no other process may read the chunk meanwhile); new content-addressed files (the
    image library's ``batch``) need no lock. What the body changed in memory is told to follow with
    :func:`when_committed`, and to fall back to the disk with :func:`if_aborted` when the body
    or the commit fails. What holds: an exception in the body, or a failure while the files are
    written or fsynced (a full disk shows up there), renames nothing — the disk is unchanged. The
    renames come after every file is on disk, one file at a time (milliseconds): a crash or a
    failed rename among them leaves each file whole, old or new, but some of the batch's files new
    and others old. A batch is all-or-nothing against errors, not against a power cut mid-commit.
    Nested batches join the outer one.
    """
    if _current() is not None:
        yield
        return
    current = _local.batch = _Batch(defer)
    try:
        yield
    except BaseException:
        _local.batch = None
        _abort(current)
        raise
    _local.batch = None
    try:
        _commit(current)
    except OSError as exc:
        _abort(current)
        raise os_error(exc, exc.filename or "", "save the record") from None
    except BaseException:
        _abort(current)
        raise
    for callback in current.on_commit:
        callback()


def _commit(b: _Batch) -> None:
    items = list(b.pending.items())
    _each(_fsync_file, [p.tmp for _, p in items])
    while items:
        path, pending = items[0]
        _install(pending.tmp, path, pending.keep_previous)
        del b.pending[path]
        items.pop(0)
        b.dirs.add(path.parent)
    _each(fsync_dir, sorted(b.dirs))


def _abort(b: _Batch) -> None:
    for pending in b.pending.values():
        with contextlib.suppress(OSError):
            pending.tmp.unlink()
    b.pending.clear()
    for callback in b.on_abort:
        callback()
    with contextlib.suppress(OSError):   # what did reach the disk (folders made) is made durable
        _each(fsync_dir, sorted(d for d in b.dirs if d.exists()))


def when_committed(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current batch's writes are on disk (now, outside a batch)."""
    b = _current()
    if b is None or not b.pending:
        callback()
    else:
        b.on_commit.append(callback)


def if_aborted(callback: Callable[[], None]) -> None:
    """Run ``callback`` if the current batch fails, so memory goes back to what the disk holds."""
    b = _current()
    if b is not None:
        b.on_abort.append(callback)


def _sync_dir_later(path: Path) -> None:
    b = _current()
    if b is None:
        fsync_dir(path)
    else:
        b.dirs.add(path)


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


def _write_new(path: Path, data: bytes, fsync: bool) -> None:
    """Create ``path`` (which must not exist) with ``data``; creates its folder."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        make_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_fsynced(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) with ``data`` and fsync it; creates its folder."""
    _write_new(path, data, fsync=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return False
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


def _install(tmp: Path, path: Path, keep_previous: bool) -> None:
    """Rename a finished temporary file into place, the replaced file kept as ``.prev``."""
    prev = path.with_name(path.name + PREV_SUFFIX)
    # After a crash between the two renames below, .prev already is the current file; renaming
    # one link of a file onto another link of it does nothing and would leave the temporary one.
    if keep_previous and path.exists() and not _same_file(path, prev):
        prev_tmp = tmp_path_for(prev)
        os.link(path, prev_tmp)
        os.replace(prev_tmp, prev)
    os.replace(tmp, path)


def atomic_write(path: Path, data: bytes, *, keep_previous: bool = False, sync: bool = True,
                 tmp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole.

    ``keep_previous`` keeps the replaced generation as ``<name>.prev``. ``sync=False`` is
    for derived files (caches, thumbnails) that may be lost but must never be torn.
    ``tmp_dir`` (same file system) keeps temporary files out of big folders, so leftovers are
    cheap to find. Outside a :func:`batch` the file is on disk, folder entry included, when this
    returns; in a deferring batch it is on disk when the batch ends.
    """
    tmp = tmp_path_for(path, tmp_dir)
    if tmp_dir is not None:
        make_dirs(path.parent)
    b = _current()
    deferred = sync and b is not None and b.defer
    try:
        _write_new(tmp, data, fsync=sync and not deferred)
        if deferred:
            replaced = b.pending.pop(path, None)
            if replaced is not None:          # written twice in one batch: the last one wins
                with contextlib.suppress(OSError):
                    replaced.tmp.unlink()
            b.pending[path] = _Pending(tmp, keep_previous)
            return
        _install(tmp, path, keep_previous)
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
        raise StoreDiskError(
            N_("The record file %(path)s is damaged (%(problem)s) and its previous copy %(prev)s cannot be used "
               "(%(why)s)."),
            N_("Restore the last backup with 'appliance restore', or ask the technician. To start without the "
               "records in that file, move it out of the data folder; nothing was deleted."),
            path=str(path), problem=problem, prev=str(prev), why=why) from None
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
        self.pending = False        # holds a write a deferring batch has not committed yet

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
        if _current() is not None and _current().defer:
            self.pending = True
            when_committed(self._committed)
            if_aborted(self.invalidate)

    def _committed(self) -> None:
        self.pending = False

    def invalidate(self) -> None:
        self._data = None
        self._loaded = False
        self.pending = False
