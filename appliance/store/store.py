"""The record store: ``Store.open(cfg)`` and everything docs/ARCHITECTURE.md "Record store" lists.

Layout of the data folder::

    store/meta.json                 schema version, generated post id, meta_set() values
    store/<kind>/<YYYY-MM>/NNN.json records (TinyDB files; .prev = previous generation)
    store/index/<kind>/<YYYY-MM>.<NNN>.marshal  summary cache, one file per 16 chunks: start-up parses
                                    only chunks changed since (appliance.store.partitions)
    store.seq                       writer lock (flock) and change counter
    store.lock                      held shared by every open store; restore needs it alone
    images/, library/, thumbs/      see appliance.store.images

Thread- and process-safe: one writer at a time (``store.seq``), readers in a process share
one lock with its writers, and a process notices another's writes through the counter.

Fork-safe: a store inherited by a forked child is opened afresh from disk in the child at its
first use (its own locks, its own memory), never through the parent's locks or the half-made
state of a write another thread of the parent was doing at that instant (appliance.store.locking).
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from ..config import Config
from ..errors import StoreError, UserError
from . import durable, migrations, ordering
from .incoming import check_incoming
from .audit import AuditLog
from .durable import os_error
from .exams import Exams
from .fields import day_bound, new_uuid, utc_now
from .history import History
from .images import ImageLibrary
from . import locking
from .locking import InstanceLock, StoreLock
from .meta import Meta
from .opening import OpeningProgress, scan_all
from .partitions import Chunk
from .patients import Patients
from .users import Users

log = logging.getLogger("appliance.store")

KINDS = ("users", "patients", "exams", "audit")
CACHE_FORMAT = 3          # 3: decisions named awaiting_decision / agrees / disagrees
MERGE_RESULTS = ("inserted", "updated", "unchanged", "older")

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
        self.post_id = ""
        self._seq = 0
        self._seen = -1
        self._closed = True
        self._generation = locking.fork_generation()   # which process's locks and memory it holds
        self._reopener: int | None = None
        self._parts: dict[str, Any] = {}

    # --- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, cfg: Config, *, progress: OpeningProgress | None = None) -> "Store":
        """Open (creating if needed) the store in ``cfg.data_dir``; upgrades an older layout.
        ``progress`` follows the opening (appliance.store.opening; by default: log lines only)."""
        store = cls(cfg)
        opening = progress if progress is not None else OpeningProgress()
        try:
            store._open(opening)
        except UserError as exc:
            opening.failed(exc.message)
            raise
        opening.finished()
        return store

    def _open(self, progress: OpeningProgress | None = None) -> None:
        from .backup import finish_interrupted_restore
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.data_dir, "create the data folder") from None
        finish_interrupted_restore(self.data_dir)
        self._instance = InstanceLock(self.data_dir / "store.lock")
        self._instance.acquire_shared()
        self._lock = StoreLock(self.data_dir / "store.seq")
        try:
            with self._lock.thread_lock, (self._lock.shared() if self._lock.read_only else self._lock.exclusive()):
                self._load(progress or OpeningProgress())
        except BaseException:
            self._lock.close()
            self._instance.release()
            raise
        self._closed = False

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
                if not self._closed:
                    log.info("record store inherited by a forked process: opening it afresh in process %d",
                             os.getpid())
                    self._closed = True     # the parent's copies are inert; none of their state is reused
                    self._open()
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
    meta = property(lambda self: self._follow_fork() or self._parts["meta"])

    def _part(self, name: str, fresh):
        """Install a freshly loaded part, into the object already there when reopening."""
        old = self._parts.get(name)
        if old is None:
            self._parts[name] = fresh
            return fresh
        old.__dict__.clear()
        old.__dict__.update(fresh.__dict__)
        return old

    def _load(self, progress: OpeningProgress) -> None:
        writable = not self._lock.read_only
        if writable:
            migrations.upgrade(self.data_dir, self._warn, self.cfg.post.id)
        elif not migrations.readable_as_is(self.data_dir, self._warn):
            raise StoreError("The records are in an older format and the data folder is read-only.",
                             "Open them once on a writable disk to upgrade them.")
        self._part("meta", Meta(self.dir / "meta.json", self._warn))
        self.post_id = self.cfg.post.id or self.meta.get("post_id") or ""
        if writable and self.meta.get("schema_version") is None:
            self.meta.set("schema_version", migrations.SCHEMA_VERSION)
        if not self.post_id and writable:
            self.post_id = "post-" + secrets.token_hex(5)
            self.meta.set("post_id", self.post_id)
        self._part("users", Users(self))
        self._part("exams", Exams(self, age_at=lambda p, day: self._parts["patients"].index.age_at(p, day),
                                  patient_uuid=self._shared_patient_uuid))
        self._part("patients", Patients(self, on_change=self.exams.index.patient_changed))
        self._part("audit", AuditLog(self))
        self._history = self._part("history", History(self))
        self._part("images", ImageLibrary(self))
        self._kinds = {"users": self.users, "patients": self.patients, "exams": self.exams,
                       "audit": self.audit, "history": self._history}
        # Patients before exams: exam rows need ages.
        parsed: dict[str, list[Chunk]] = scan_all(self._kinds, progress)
        progress("indexes", 0, 0)
        self.patients.index.finish_loading()
        self.exams.index.finish_loading()
        self._seq = max([self._lock.read_seq()] + [k.collection.max_seq for k in self._kinds.values()])
        if writable:
            for kind in self._kinds.values():
                kind.collection.remove_stale_tmp_files()
            self.images.remove_leftovers()
            for folder in (self.dir, *(k.collection.cache_dir for k in self._kinds.values())):
                durable.remove_stale_tmp_files(folder)
            self._lock.write_seq(self._seq)
            progress("library", 0, 0)
            self._refile_after_crash(parsed["exams"])
            self.images.check_layout()
            progress("summaries", 0, 0)
            self._write_caches()
        self._seen = self._seq

    def _shared_patient_uuid(self, patient_uuid: str) -> str:
        row = self._parts["patients"].index.by_uuid.get(patient_uuid)   # per exam row: not the property
        return row.uuid if row is not None else sys.intern(patient_uuid)

    def _refile_after_crash(self, parsed: list[Chunk]) -> None:
        """Chunks written since the last summary cache may belong to a save cut short before its
        image reached its class folder (or one whose filing failed: images.file_under): re-file
        their images."""
        if not parsed:
            return
        if len(parsed) * 2 >= len(self.exams.collection.chunks):
            self.images.refile(list(self.exams.index.by_uuid.values()))
            return
        index = self.exams.index
        self.images.refile_images({r.sha256 for c in parsed for r in index.rows_in(c.no) if r.sha256})

    @property
    def _cache_key(self) -> str:
        # Summaries depend on the code that made them, on the post (local accounts, pids) and,
        # being marshal data, on the Python version.
        return f"{CACHE_FORMAT}:{sys.version_info[0]}.{sys.version_info[1]}:{self.post_id}"

    def _write_caches(self) -> None:
        """Save the index summaries of what changed (a cache: losing it only costs start-up time)."""
        try:
            for kind in self._kinds.values():
                kind.collection.write_cache()
        except OSError as exc:
            log.info("index cache not written: %s", exc)

    def close(self) -> None:
        if self._generation != locking.fork_generation() and self._reopener is None:
            # Inherited and never used in this process: nothing of it is open here (see locking).
            self._closed, self._generation = True, locking.fork_generation()
            return
        if self._closed:
            return
        with self._lock.thread_lock:
            if not self._lock.read_only:
                with contextlib.suppress(UserError, OSError), self._lock.exclusive():
                    self._sync()
                    self._write_caches()
            for kind in self._kinds.values():
                kind.collection.forget_all()
            self.meta.close()
            self._closed = True
            self._lock.close()
            self._instance.release()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def post_name(self) -> str:
        return self.cfg.post.name

    # --- locking and the change counter ---------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._follow_fork()
        with self._lock.thread_lock:
            self._check_open()
            self._sync()
            yield

    @contextlib.contextmanager
    def _writing(self, *, defer: bool = True) -> Iterator[None]:
        """The writer lock, and a batch: the record files written inside reach the disk together
        when the block ends (before the lock is released), or none of them does."""
        self._follow_fork()
        with self._lock.thread_lock:
            self._check_open()
            with self._lock.exclusive(), durable.batch(defer=defer):
                self._sync()
                yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Many writes as one: everything written inside is committed when the block ends. An
        exception leaving the block, or a failure while the files are written and fsynced (a full
        disk), undoes every write in it: nothing reaches the disk. A crash (power cut, kill -9)
        during the commit's renames — after every file is on disk, a few milliseconds — can leave
        some of the block's record files new and others old, each whole (``durable.batch``);
        callers that need to notice that keep their own marker (an import does). Holds the writer
        lock throughout (other writers, here and in other processes, wait), so keep it to a few
        hundred records; an import commits every few hundred records."""
        with self._writing():
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("The record store is closed.", "Restart the appliance.")

    def _sync(self) -> None:
        """Take in what other processes wrote since we last looked."""
        if self._lock.read_seq() == self._seen:
            return
        with self._lock.shared():
            shared = self._lock.read_seq()
            if self.meta.changed_on_disk():
                self.meta.reload()
            for kind in self._kinds.values():
                kind.collection.scan()
            self._seq = max(self._seq, shared)
            self._seen = shared

    def _next_seq(self) -> int:
        assert self._lock.held_exclusive
        self._seq = max(self._seq, self._lock.read_seq()) + 1
        self._lock.write_seq(self._seq)
        self._seen = self._seq
        return self._seq

    def _new_record(self, fields: dict) -> dict:
        now = utc_now()
        return {"uuid": new_uuid(), "post_id": self.post_id,
                "created_at": now, "updated_at": now, **fields}

    def _audit(self, actor, action, target_type, target_id=None, detail=None) -> None:
        """The store's own entry for a change it is making. The change stands even when its entry
        cannot be written (a full disk): that is reported as a warning, not as a failed save."""
        try:
            self.audit._append(self.audit._entry(actor, action, target_type, target_id, detail))
        except StoreError as exc:
            self._warn(f"The audit entry for {action} {target_id} could not be written: {exc.message}")

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)
        del self.warnings[:-50]

    # --- statistics ------------------------------------------------------------------------

    def stats(self, *, date_from=None, date_to=None, include_demo: bool = False, post_id: str | None = None) -> dict:
        """Counts for the dashboard, ``appliance stats`` and the DHIS2/CSV outputs.

        Prevalence comes from clinicians' decisions only. Exams made with demo (untrained) models
        are left out of every figure and counted apart in ``demo_exams`` (``include_demo`` counts
        them like the others); an exam without a decision is counted in ``awaiting_decision``,
        never under the model's class.

        ``exams``: exams in the period (demo left out) = ``decided`` (with a class) +
        ``awaiting_decision`` + ``referred`` (decided without a class); ``demo_exams``;
        ``patients`` (registered in the period); ``patients_examined``; ``by_analysis``
        ({analysis: exams}); ``awaiting_by_analysis``; ``by_class`` ({analysis: {final class:
        decided exams}}: the prevalence figures); ``by_month``; ``by_decision`` (awaiting_decision /
        agrees / disagrees); ``by_post``; ``by_age_group`` (age at the exam); ``cells`` (every
        exam, demo ones included, by post, month, analysis, class, decision, age group and demo
        flag, for exports).
        """
        low, high = day_bound(date_from, "start date", end=False), day_bound(date_to, "end date", end=True)
        with self._reading():
            out = self.exams.index.stats(low, high, include_demo=bool(include_demo), post_id=post_id)
            recent = self.patients.index.recent
            if post_id is None:
                out["patients"] = len(recent.between(low, high)) if (low or high) else len(recent)
            else:         # one health post's figures only
                rows = recent.between(low, high) if (low or high) else recent.rows()
                out["patients"] = sum(1 for r in rows if r.post_id == post_id)
        out.update(post_id=self.post_id, post_name=self.post_name, date_from=low, date_to=high,
                   generated_at=utc_now())
        return out

    # --- backup ---------------------------------------------------------------------------

    def backup(self, to_dir, *, passphrase: str | None = None) -> Path:
        """A backup folder in ``to_dir``; the keys are left out unless a ``passphrase`` seals them in."""
        from .backup import backup
        return backup(self, Path(to_dir), passphrase=passphrase)

    @classmethod
    def restore(cls, from_path, cfg: Config, *, force: bool = False, passphrase=None,
                without_keys: bool = False) -> dict:
        from .backup import restore
        return restore(Path(from_path), cfg, force=force, passphrase=passphrase, without_keys=without_keys)

    # --- USB exchange ---------------------------------------------------------------------

    def meta_get(self, key: str, default: Any = None) -> Any:
        with self._reading():
            return self.meta.get(key, default)

    def meta_set(self, key: str, value: Any) -> None:
        with self._writing():
            self._next_seq()
            self.meta.set(key, value)

    def change_seq(self) -> int:
        with self._reading():
            return self._seq

    def _kind(self, kind: str):
        if kind not in KINDS:
            raise UserError(f"There are no records of kind {kind!r}.", f"Use one of: {', '.join(KINDS)}.")
        return self._kinds[kind]

    def changes(self, kind: str, since_seq: int = 0) -> Iterator[dict]:
        """Records of ``kind`` written after ``since_seq`` (oldest change first), as they are now.
        User accounts come without password hashes or lockout state."""
        records = self._kind(kind)
        with self._reading():
            if kind == "audit":
                places = [(chunk, doc_id) for _, chunk, doc_id in records.since(int(since_seq))]
            else:
                places = [(r.chunk, r.doc_id) for r in records.index.rows_since(int(since_seq))]
        return self._records_at(records, places)

    def _records_at(self, records, places) -> Iterator[dict]:
        for chunk, doc_id in places:
            with self._reading():
                raw = records.collection.get(chunk, doc_id)
                if raw is None:
                    continue
                yield records.exported(raw)

    def merge(self, kind: str, record: dict) -> str:
        """Take in a record from another store, idempotently, by uuid. Returns "inserted", "updated"
        (ours was older; it is kept in history), "unchanged", or "older" (ours is newer; the incoming
        version is kept in history). Older and newer by the home post's change numbers
        (appliance.store.ordering), not by clocks. Images of exams must be put (``images.put``)
        before their exams."""
        records = self._kind(kind)
        incoming = check_incoming(kind, record)
        with self._writing():
            if kind == "audit":
                if records.contains(incoming["uuid"], incoming["created_at"]):
                    return "unchanged"
                records._insert(incoming)
                return "inserted"
            row = records.index.by_uuid.get(incoming["uuid"])
            current = dict(records._raw(row)) if row else None
            if kind == "users":
                incoming = records.merged(incoming, current)
            if current is None:
                records._insert(incoming)
                self._after_merge(kind, incoming)
                return "inserted"
            current.pop("_seq", None)
            if current == incoming:
                return "unchanged"
            if ordering.is_later(incoming, current):        # by change numbers, not clocks
                self._history.keep(kind, current, "superseded by an import")
                records._replace(row, incoming)
                self._after_merge(kind, incoming)
                return "updated"
            self._history.keep(kind, incoming, "older than the version here")
            return "older"

    def _after_merge(self, kind: str, record: dict) -> None:
        if kind == "exams":
            image = record.get("image") or {}
            if image.get("sha256"):
                self.images.refile_images({image["sha256"]})

    # --- bulk loading (migrations, benchmarks) -----------------------------------------------

    def bulk_insert(self, kind: str, records: list[dict]) -> int:
        """Write many finished records at once, one file write per chunk, without audit entries.
        For migrations, imports and benchmarks; records must already be complete and valid. Inside
        a ``transaction()`` the chunk files are committed with the rest of it (or not at all)."""
        records_of = self._kinds[kind]
        with self._writing(defer=False):       # thousands of chunks: written as they fill
            for record in records:
                ordering.stamp(record, self._next_seq(), self.post_id)
            n = records_of.collection.insert_many(records)
            # Summaries describe files as they are on disk: inside a transaction, once it commits.
            durable.when_committed(self._write_caches)
            return n
