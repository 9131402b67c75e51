"""One writer at a time, across threads and processes, and a shared change counter.

The kiosk server and a command (``appliance diagnose --save``, ``user add``, ``import``)
may write the same store at once. Threads of one process share a re-entrant lock; processes
share ``fcntl.flock`` on the ``seq`` file, which also holds the store's change counter.

The counter is bumped (under the exclusive lock) *before* the records it numbers are
written, and it is not fsynced: after a power cut the store takes the larger of the file's
value and the highest number found in the records, so numbers never go backwards for
anything that survived. A process that sees the counter move refreshes what another
process wrote, under the shared lock so it never reads a write in progress.

Fork: a child gets copies of the parent's locks as they were at that instant. A thread lock
another thread held is held forever in the child (nobody is left to release it), and the
inherited descriptor shares the parent's open file description, so ``flock`` on it is the
*parent's* lock: the child would "hold" the writer lock while the parent writes too, and its
unlock would release the parent's. So in a child every inherited lock is made inert at once
(fresh thread lock, nothing held, the inherited descriptors closed, which leaves the parent's
locks alone); :class:`~appliance.store.store.Store` then opens the store afresh in that process.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import weakref
from pathlib import Path
from typing import Iterator

from ..i18n import N_
from .durable import StoreDiskError, os_error

_WIDTH = 20

# The locks of every open store in this process, to be made inert in a forked child.
_live: "weakref.WeakSet[StoreLock | InstanceLock]" = weakref.WeakSet()


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class StoreLock:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            self.read_only = False
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise os_error(exc, path, "open the record store") from None
            try:
                self._fd = os.open(path, os.O_RDONLY)
            except OSError as exc2:
                raise os_error(exc2, path, "open the record store") from None
            self.read_only = True
        self._thread_lock = threading.RLock()
        self._held = 0            # depth of exclusive/shared holds by the owning thread
        self._mode = None
        self.inherited = False    # copied into a forked child: unusable there
        _live.add(self)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _live.discard(self)

    def _forget_in_child(self) -> None:
        """Called in a forked child: drop the parent's lock state without touching the parent's locks
        (closing our copy of the descriptor never releases a flock the parent still holds)."""
        self._thread_lock = threading.RLock()
        self._held, self._mode = 0, None
        self.inherited = True
        if self._fd >= 0:
            _close_quietly(self._fd)
            self._fd = -1

    @property
    def thread_lock(self) -> threading.RLock:
        return self._thread_lock

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The writer lock. Re-entrant; a shared hold cannot be upgraded (never nest them so)."""
        if self.read_only:
            raise StoreDiskError(N_("The data folder is read-only (%(path)s), so nothing can be saved."),
                                 N_("Ask the technician to check the disk; the records can still be viewed."),
                                 path=str(self.path.parent))
        with self._thread_lock:
            if self._held and self._mode != fcntl.LOCK_EX:
                raise RuntimeError("cannot upgrade a shared store lock to exclusive")
            yield from self._hold(fcntl.LOCK_EX)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold off writers of other processes (for reading what they wrote, whole)."""
        with self._thread_lock:
            yield from self._hold(fcntl.LOCK_SH)

    def _hold(self, mode: int) -> Iterator[None]:
        if self.inherited:
            raise RuntimeError("a store lock was used in a forked child; open the store again there")
        if self._held == 0:
            fcntl.flock(self._fd, mode)
            self._mode = mode
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if self._held == 0:
                self._mode = None
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @property
    def held_exclusive(self) -> bool:
        return self._held > 0 and self._mode == fcntl.LOCK_EX

    def read_seq(self) -> int:
        raw = os.pread(self._fd, _WIDTH + 1, 0)
        try:
            return int(raw.strip() or b"0")
        except ValueError:
            return 0          # a torn counter (power cut): the records' numbers take over

    def write_seq(self, value: int) -> None:
        try:
            os.pwrite(self._fd, f"{value:0{_WIDTH}d}\n".encode(), 0)
        except OSError as exc:
            raise os_error(exc, self.path) from None


class InstanceLock:
    """Held (shared) by every open store; ``restore`` needs it exclusively (nobody has the store open)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = -1
        _live.add(self)

    def acquire_shared(self) -> None:
        self._fd = _open_for_lock(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        self._fd = _open_for_lock(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            self.release()
            return False

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _forget_in_child(self) -> None:
        # A child that kept the parent's shared hold would stop 'restore' for as long as it lives.
        if self._fd >= 0:
            _close_quietly(self._fd)
            self._fd = -1


def _open_for_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise os_error(exc, path, "open the record store") from None


_forks = 0


def fork_generation() -> int:
    """How many forks lie between this process and the one that imported the store (0 there)."""
    return _forks


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1
    for lock in list(_live):
        lock._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
