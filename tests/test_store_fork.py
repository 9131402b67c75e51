"""A store and ``fork()``: a child made while other threads use the store must work on its own.

A forked child gets the parent's locks as they were at that instant: a thread lock another
thread held stays held forever (nobody is left to release it), and the inherited ``flock``
descriptor is the parent's own lock, not a second one. Each test runs the child with a time
limit, so a hang fails the test instead of stopping the suite.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import pytest

from appliance.store import Store
from test_store_support import jpeg_bytes, register, result_json

CHILD_LIMIT_S = 60


def _exam(patient: dict) -> dict:
    return {"patient_uuid": patient["uuid"], "analysis": "pap_smear", "source": "cli", "result": result_json()}


def _fork(child) -> int:
    """Run ``child()`` in a forked process; exit status 0 when it returned, 1 when it raised."""
    pid = os.fork()
    if pid == 0:           # never returns into pytest
        status = 1
        try:
            child()
            status = 0
        except BaseException as exc:   # reported on the test's stderr
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(status)
    return pid


def _wait(pid: int, limit: float = CHILD_LIMIT_S) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung for {limit:.0f} s")


def test_child_forked_while_threads_save_writes_through_the_inherited_store(cfg):
    store = Store.open(cfg)
    patient = register(store)
    stop, saved, errors = threading.Event(), Counter(), []

    def kiosk_thread(tag: str) -> None:
        n = 0
        try:
            while not stop.is_set():        # saving without pause: the lock is held at the fork
                store.exams.save(_exam(patient), jpeg_bytes(n % 20), by=tag)
                saved[tag] += 1
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=kiosk_thread, args=(f"thread{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        while sum(saved.values()) < 5:
            time.sleep(0.01)
        pid = _fork(lambda: [store.exams.save(_exam(patient), jpeg_bytes(100 + i), by="child") for i in range(10)])
        status = _wait(pid)
    finally:
        stop.set()
        for t in threads:
            t.join()
        store.close()
    assert status == 0 and not errors
    with Store.open(cfg) as fresh:
        by_writer = Counter(fresh.exams.get(u)["created_by"] for u in fresh.exams.index.by_uuid)
        assert by_writer == {"child": 10, **saved}                 # nothing lost, nothing twice
        seqs = [row.seq for row in fresh.exams.index.by_uuid.values()]
        assert len(set(seqs)) == len(seqs)                          # one writer at a time, always
        assert not fresh.warnings


def test_forked_child_waits_for_the_writer_lock_the_parent_holds(cfg):
    store = Store.open(cfg)
    patient = register(store)
    in_transaction, release = threading.Event(), threading.Event()

    def long_transaction() -> None:
        with store.transaction():
            store.exams.save(_exam(patient), jpeg_bytes(1), by="parent")
            in_transaction.set()
            release.wait(30)

    holder = threading.Thread(target=long_transaction)
    holder.start()
    try:
        assert in_transaction.wait(30)
        pid = _fork(lambda: store.exams.save(_exam(patient), jpeg_bytes(2), by="child"))
        time.sleep(0.5)                        # the child must be waiting now, not writing
        release.set()
        holder.join()
        assert _wait(pid) == 0
    finally:
        release.set()
        holder.join()
        store.close()
    with Store.open(cfg) as fresh:
        rows = {fresh.exams.get(u)["created_by"]: row for u, row in fresh.exams.index.by_uuid.items()}
        assert set(rows) == {"parent", "child"}
        assert rows["child"].seq > rows["parent"].seq     # the child wrote after the parent's commit


def test_forked_child_does_not_keep_the_parents_store_open(cfg, tmp_path):
    with Store.open(cfg) as store:
        register(store)
        backup = store.backup(tmp_path / "usb")
    store = Store.open(cfg)
    read, write = os.pipe()
    started_r, started_w = os.pipe()
    # A helper process that never touches the store: it says it runs, then waits to be told to end.
    pid = _fork(lambda: (os.write(started_w, b"s"), os.read(read, 1)))
    try:
        assert os.read(started_r, 1) == b"s"
        store.close()
        # Restore needs the store closed everywhere; the child's inherited copy must not count.
        report = Store.restore(backup, cfg, force=True)
        assert report["patients"] == 1
    finally:
        os.write(write, b"x")
        for fd in (write, read, started_r, started_w):
            os.close(fd)
        assert _wait(pid) == 0
