"""The store's core: the one object every record kind depends on.

A record kind (users, patients, exams, audit, history: ``kinds.RecordKind``) is built with the
core and the neighbours it needs, passed in explicitly (``Exams(core, index, patients, images)``);
it reaches the disk, the locks and the rest of the store only through them. ``Store``
(``store.py``) builds the core and the kinds and wires them together. What the core offers:

- locks: ``reading()`` (other processes' writes are taken in first), ``writing()`` (the writer
  lock and one durable batch), ``transaction()`` (the same, for callers above the store);
- the change counter: ``next_seq()`` (under ``writing()``) and ``seq``;
- ``collection(kind, ...)``: a kind's record files, made here so the core can take in what other
  processes wrote, write the summary caches and close them;
- ``new_record(fields)``: a new record's uuid, post id and times;
- sinks: ``audit(...)`` (the store's own entry for a change it makes), ``keep_version(...)``
  (history of replaced or refused versions), ``warn(message)`` (``warnings``, for the doctor);
- ``meta`` (the small key/value file), ``post_id``, ``post_name``, ``cfg``, ``data_dir``, ``dir``.

Opening (``opening()``, ``start_counting()``) and ``close()`` are for ``Store`` only.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ..config import Config
from ..errors import StoreError, UserError
from . import durable
from .fields import new_uuid, utc_now
from .locking import InstanceLock, StoreLock
from .meta import Meta
from .partitions import Chunk, Collection, SummaryIndex

log = logging.getLogger("appliance.store")

CACHE_FORMAT = 3          # of the index summaries; 3: decisions named awaiting_decision / agrees / disagrees


class AuditSink(Protocol):
    def append(self, actor: str | None, action: str, target_type: str, target_id: Any = None,
               detail: Any = None) -> dict: ...


class HistorySink(Protocol):
    def keep(self, kind: str, record: dict, reason: str) -> None: ...


class StoreCore:
    def __init__(self, cfg: Config, *, warnings: list[str] | None = None,
                 before_use: Callable[[], None] | None = None):
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.dir = self.data_dir / "store"
        self.warnings: list[str] = warnings if warnings is not None else []
        self.post_id = ""
        self.meta: Meta | None = None
        # Called before every locked use: the store reopens itself there in a forked child.
        self._before_use = before_use or (lambda: None)
        self._collections: dict[str, Collection] = {}
        self._audit: AuditSink | None = None
        self._history: HistorySink | None = None
        self._seq = 0
        self._seen = -1
        self._closed = True
        self._lock: StoreLock | None = None
        self._instance: InstanceLock | None = None

    # --- opening and closing (Store only) ----------------------------------------------------

    @contextlib.contextmanager
    def opening(self) -> Iterator[None]:
        """Take the locks for opening the store: the instance lock shared (a restore needs it
        alone) and, while the body loads, the writer lock (shared on a read-only disk). When the
        body fails every lock is let go again; when it returns the store is open."""
        self._closed = True
        self._collections, self._audit, self._history = {}, None, None
        self._instance = InstanceLock(self.data_dir / "store.lock")
        self._instance.acquire_shared()
        self._lock = StoreLock(self.data_dir / "store.seq")
        try:
            with self._lock.thread_lock, (self._lock.shared() if self._lock.read_only else self._lock.exclusive()):
                yield
        except BaseException:
            self._lock.close()
            self._instance.release()
            raise
        self._closed = False

    @property
    def writable(self) -> bool:
        return not self._lock.read_only

    @property
    def is_open(self) -> bool:
        return not self._closed

    def open_meta(self) -> Meta:
        self.meta = Meta(self.dir / "meta.json", self.warn)
        return self.meta

    def connect(self, *, audit: AuditSink, history: HistorySink) -> None:
        """Where ``audit()`` and ``keep_version()`` write (kinds themselves, so made after the core)."""
        self._audit, self._history = audit, history

    def scan(self) -> dict[str, list[Chunk]]:
        """At opening: every collection's index from its files (summary cache first), in the order
        the kinds were made (patients before exams: exam rows share the patients' uuid strings).
        Returns the chunks each kind had to parse."""
        return {kind: collection.scan(use_cache=True) for kind, collection in self._collections.items()}

    def start_counting(self) -> None:
        """At opening, after ``scan``: the counter goes on from the larger of the lock file's value and
        the highest number in the records (never backwards after a power cut); leftovers of writers
        killed mid-write are removed."""
        self._seq = max([self._lock.read_seq()] + [c.max_seq for c in self._collections.values()])
        if self.writable:
            for collection in self._collections.values():
                collection.remove_stale_tmp_files()
            for folder in (self.dir, *(c.cache_dir for c in self._collections.values())):
                durable.remove_stale_tmp_files(folder)
            self._lock.write_seq(self._seq)
        self._seen = self._seq

    def forget_inherited(self) -> None:
        """Closing, in a forked child, a store inherited and never used there: nothing of it is
        open in this process (appliance.store.locking), so nothing is touched."""
        self._closed = True

    def close(self) -> None:
        if self._closed:
            return
        with self._lock.thread_lock:
            if self.writable:
                with contextlib.suppress(UserError, OSError), self._lock.exclusive():
                    self._sync()
                    self.write_caches()
            for collection in self._collections.values():
                collection.forget_all()
            self.meta.close()
            self._closed = True
            self._lock.close()
            self._instance.release()

    # --- the files of the kinds --------------------------------------------------------------

    def collection(self, kind: str, *, capacity: int, index: SummaryIndex, partition_of: Callable[[dict], str],
                   open_chunks: int) -> Collection:
        """The record files of one kind (``store/<kind>/``), indexed by ``index``."""
        collection = Collection(self.dir, kind, capacity=capacity, index=index, partition_of=partition_of,
                                warn=self.warn, open_chunks=open_chunks, cache_key=self.cache_key)
        self._collections[kind] = collection
        return collection

    @property
    def cache_key(self) -> str:
        # Summaries depend on the code that made them, on the post (local accounts, pids) and,
        # being marshal data, on the Python version.
        return f"{CACHE_FORMAT}:{sys.version_info[0]}.{sys.version_info[1]}:{self.post_id}"

    def write_caches(self) -> None:
        """Save the index summaries of what changed (a cache: losing it only costs start-up time)."""
        try:
            for collection in self._collections.values():
                collection.write_cache()
        except OSError as exc:
            log.info("index cache not written: %s", exc)

    # --- locks and the change counter ---------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Read consistently: this process's writers wait, and what other processes wrote since
        the last look is taken in first."""
        self._before_use()
        with self._lock.thread_lock:
            self._check_open()
            self._sync()
            yield

    @contextlib.contextmanager
    def writing(self, *, defer: bool = True) -> Iterator[None]:
        """The writer lock, and a batch: the record files written inside reach the disk together
        when the block ends (before the lock is released), or none of them does. ``defer=False``
        writes files as they fill (bulk loading of thousands of chunks)."""
        self._before_use()
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
        with self.writing():
            yield

    def next_seq(self) -> int:
        """The number of the write about to be made (under ``writing()``)."""
        assert self._lock.held_exclusive
        self._seq = max(self._seq, self._lock.read_seq()) + 1
        self._lock.write_seq(self._seq)
        self._seen = self._seq
        return self._seq

    @property
    def seq(self) -> int:
        """The change counter as this process last saw it (call under a lock)."""
        return self._seq

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
            for collection in self._collections.values():
                collection.scan()
            self._seq = max(self._seq, shared)
            self._seen = shared

    # --- new records and the sinks -----------------------------------------------------------

    @property
    def post_name(self) -> str:
        return self.cfg.post.name

    def new_record(self, fields: dict) -> dict:
        """A new record of this post: uuid, post id, created and updated now, then ``fields``."""
        now = utc_now()
        return {"uuid": new_uuid(), "post_id": self.post_id, "created_at": now, "updated_at": now, **fields}

    def audit(self, actor: str | None, action: str, target_type: str, target_id: Any = None,
              detail: Any = None) -> None:
        """The store's own entry for a change it is making (under ``writing()``). The change stands
        even when its entry cannot be written (a full disk): that is reported as a warning, not as
        a failed save."""
        try:
            self._audit.append(actor, action, target_type, target_id, detail)
        except StoreError as exc:
            self.warn(f"The audit entry for {action} {target_id} could not be written: {exc.message}")

    def keep_version(self, kind: str, record: dict, reason: str) -> None:
        """Keep a version of a record that is being replaced or refused (under ``writing()``)."""
        self._history.keep(kind, record, reason)

    def warn(self, message: str) -> None:
        """Something the store recovered from or could not do, for the log and ``warnings``."""
        log.warning(message)
        self.warnings.append(message)
        del self.warnings[:-50]

