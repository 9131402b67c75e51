"""The record store: ``Store.open(cfg)`` and everything docs/ARCHITECTURE.md "Record store" lists.

Layout of the data folder::

    store/meta.json                 schema version, generated post id, meta_set() values
    store/<kind>/<YYYY-MM>/NNN.json records (TinyDB files; .prev = previous generation)
    store/index/<kind>/<YYYY-MM>.json  summary cache: start-up parses only chunks changed since
    store.seq                       writer lock (flock) and change counter
    store.lock                      held shared by every open store; restore needs it alone
    images/, library/, thumbs/      see appliance.store.images

Thread- and process-safe: one writer at a time (``store.seq``), readers in a process share
one lock with its writers, and a process notices another's writes through the counter.

Fork-safe: a store inherited by a forked child is opened afresh from disk in the child at its
first use (its own locks, its own memory), never through the parent's locks or the half-made
state of a write another thread of the parent was doing at that instant (appliance.store.locking).

``Store`` is the wiring: it opens the core (``core.py``: locks, counter, new records, audit,
history and warnings), makes the record kinds with the core and their neighbours, and offers the
services above them (``statistics``, ``transfer``: USB exchange and bulk loading, ``backup``).
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Iterator

from ..config import Config
from ..errors import StoreError
from . import backup as backups
from . import locking, migrations
from .audit import AuditLog
from .core import StoreCore
from .durable import os_error
from .exam_index import ExamIndex
from .exams import Exams
from .history import History
from .images import ImageLibrary
from .partitions import Chunk
from .patients import Patients
from .statistics import Statistics
from .transfer import KINDS, MERGE_RESULTS, Transfer
from .users import Users

__all__ = ["Store", "KINDS", "MERGE_RESULTS"]

log = logging.getLogger("appliance.store")

# Held while a forked child opens its inherited stores afresh (made new in every child, so a
# parent thread's hold at the instant of a fork can never block a child).
_reopening = threading.RLock()


def _new_reopening_lock() -> None:
    global _reopening
    _reopening = threading.RLock()


os.register_at_fork(after_in_child=_new_reopening_lock)


class Store:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.dir = self.data_dir / "store"
        self.warnings: list[str] = []
        self._core = StoreCore(cfg, warnings=self.warnings, before_use=self._follow_fork)
        self._generation = locking.fork_generation()   # which process's locks and memory it holds
        self._reopener: int | None = None
        self._parts: dict[str, Any] = {}

    # --- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, cfg: Config) -> "Store":
        """Open (creating if needed) the store in ``cfg.data_dir``; upgrades an older layout."""
        store = cls(cfg)
        store._open()
        return store

    def _open(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.data_dir, "create the data folder") from None
        backups.finish_interrupted_restore(self.data_dir)
        with self._core.opening():
            self._load()

    def _follow_fork(self) -> None:
        """In a forked child, open the store again before its first use there (see the module doc).
        Other threads of the child wait for that; the opening thread's own calls go straight on."""
        if self._generation == locking.fork_generation() and self._reopener is None:
            return
        if self._reopener == threading.get_ident():
            return
        with _reopening:
            if self._generation == locking.fork_generation():
                return
            self._reopener = threading.get_ident()
            try:
                if self._core.is_open:
                    log.info("record store inherited by a forked process: opening it afresh in process %d",
                             os.getpid())
                    self._open()    # the parent's copies are inert; none of their state is reused
                self._generation = locking.fork_generation()
            finally:
                self._reopener = None

    # The parts, reached through properties so that a forked child's first touch opens its own
    # store first; on reopening, fresh state is moved into the existing objects (_part), so a
    # reference taken before the fork never writes through the parent's stale copies.
    users = property(lambda self: self._follow_fork() or self._parts["users"])
    patients = property(lambda self: self._follow_fork() or self._parts["patients"])
    exams = property(lambda self: self._follow_fork() or self._parts["exams"])
    audit = property(lambda self: self._follow_fork() or self._parts["audit"])
    images = property(lambda self: self._follow_fork() or self._parts["images"])
    history = property(lambda self: self._follow_fork() or self._parts["history"])
    core = property(lambda self: self._follow_fork() or self._core)
    _history = history          # the name tests used before ``history`` was public

    def _part(self, name: str, fresh):
        """Install a freshly made part. When reopening, the object already there takes the fresh
        one's attributes — the very same dict, so the two stay one object in all but identity
        (the fresh kinds name each other, the old ones are what callers hold)."""
        old = self._parts.get(name)
        if old is None:
            self._parts[name] = fresh
            return fresh
        old.__dict__ = fresh.__dict__
        return old

    def _load(self) -> None:
        core = self._core
        writable = core.writable
        if writable:
            migrations.upgrade(self.data_dir, core.warn, self.cfg.post.id)
        elif migrations.stored_version(self.data_dir, core.warn) not in (None, migrations.SCHEMA_VERSION):
            raise StoreError("The records are in an older format and the data folder is read-only.",
                             "Open them once on a writable disk to upgrade them.")
        meta = core.open_meta()
        core.post_id = self.cfg.post.id or meta.get("post_id") or ""
        if writable and meta.get("schema_version") is None:
            meta.set("schema_version", migrations.SCHEMA_VERSION)
        if not core.post_id and writable:
            core.post_id = "post-" + secrets.token_hex(5)
            meta.set("post_id", core.post_id)
        # The kinds, each made with the core and its neighbours; their files are scanned in this
        # order (patients before exams: exam rows share the patients' uuid strings).
        users = self._part("users", Users(core))
        patients = self._part("patients", Patients(core))
        exam_index = ExamIndex(age_at=patients.index.age_at, patient_uuid=patients.index.shared_uuid)
        patients.watch(exam_index.patient_changed)
        images = self._part("images", ImageLibrary(core, exam_index))
        exams = self._part("exams", Exams(core, exam_index, patients, images))
        audit = self._part("audit", AuditLog(core))
        history = self._part("history", History(core))
        core.connect(audit=audit, history=history)
        kinds = {"users": users, "patients": patients, "exams": exams, "audit": audit, "history": history}
        self._statistics = Statistics(core, exams, patients)
        self._transfer = Transfer(core, kinds, exams, images)
        parsed = core.scan()
        patients.index.finish_loading()
        exams.index.finish_loading()
        core.start_counting()
        if writable:
            images.remove_leftovers()
            self._refile_after_crash(parsed["exams"])
            images.check_layout()
            core.write_caches()

    def _refile_after_crash(self, parsed: list[Chunk]) -> None:
        """Chunks written since the last summary cache may belong to a save cut short before its
        image reached its class folder: re-file their images."""
        if not parsed:
            return
        exams, images = self._parts["exams"], self._parts["images"]
        rows = list(exams.index.by_uuid.values())
        if len(parsed) * 2 >= len(exams.collection.chunks):
            images.refile(rows)
            return
        numbers = {c.no for c in parsed}
        shas = {r.sha256 for r in rows if r.chunk in numbers and r.sha256}
        images.refile(rows, shas)

    def close(self) -> None:
        if self._generation != locking.fork_generation() and self._reopener is None:
            # Inherited and never used in this process: nothing of it is open here (see locking).
            self._core.forget_inherited()
            self._generation = locking.fork_generation()
            return
        self._core.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def post_id(self) -> str:
        return self._core.post_id

    @property
    def post_name(self) -> str:
        return self.cfg.post.name

    def warn(self, message: str) -> None:
        """Log a problem the store or its caller recovered from, and list it in ``warnings``."""
        self._core.warn(message)

    _warn = warn                # the name callers used before ``warn`` was public

    def transaction(self):
        """Many writes as one (``StoreCore.transaction``: what it guarantees, and what it does not)."""
        return self.core.transaction()

    # --- statistics ------------------------------------------------------------------------

    def stats(self, *, date_from=None, date_to=None, include_demo: bool = False, post_id: str | None = None) -> dict:
        """Counts for the dashboard, ``appliance stats`` and the DHIS2/CSV outputs
        (``Statistics.stats`` says what each one means)."""
        self._follow_fork()
        return self._statistics.stats(date_from=date_from, date_to=date_to, include_demo=include_demo,
                                      post_id=post_id)

    # --- backup ---------------------------------------------------------------------------

    def backup(self, to_dir, *, passphrase: str | None = None) -> Path:
        """A backup folder in ``to_dir``; the keys are left out unless a ``passphrase`` seals them in."""
        return backups.backup(self, Path(to_dir), passphrase=passphrase)

    @classmethod
    def restore(cls, from_path, cfg: Config, *, force: bool = False, passphrase=None,
                without_keys: bool = False) -> dict:
        return backups.restore(Path(from_path), cfg, open_store=cls.open, force=force, passphrase=passphrase,
                               without_keys=without_keys)

    # --- USB exchange ---------------------------------------------------------------------

    def meta_get(self, key: str, default: Any = None) -> Any:
        core = self.core
        with core.reading():
            return core.meta.get(key, default)

    def meta_set(self, key: str, value: Any) -> None:
        core = self.core
        with core.writing():
            core.next_seq()
            core.meta.set(key, value)

    def change_seq(self) -> int:
        core = self.core
        with core.reading():
            return core.seq

    def changes(self, kind: str, since_seq: int = 0) -> Iterator[dict]:
        """Records of ``kind`` written after ``since_seq`` (``Transfer.changes``)."""
        self._follow_fork()
        return self._transfer.changes(kind, since_seq)

    def merge(self, kind: str, record: dict) -> str:
        """Take in a record from another store, idempotently, by uuid (``Transfer.merge``)."""
        self._follow_fork()
        return self._transfer.merge(kind, record)

    # --- bulk loading (migrations, benchmarks) -----------------------------------------------

    def bulk_insert(self, kind: str, records: list[dict]) -> int:
        """Write many finished records at once, without audit entries (``Transfer.bulk_insert``)."""
        self._follow_fork()
        return self._transfer.bulk_insert(kind, records)
