"""A writer process killed with SIGKILL at random moments, hundreds of times.

The child writes without pause (patients, exams with images, decisions, audit entries, meta
values) and reports each write on a pipe *after* the call returned. After every kill the store
must open cleanly and hold every reported write. Some kills land while the child is still
opening the store (index cache, counter, leftovers), most in the middle of a write.

The writers are forked by multiprocessing's fork server (a clean single-threaded process started
once), not by pytest itself: earlier tests may leave threads running in pytest, and a fork copies
whatever lock they hold at that instant (tests/test_store_fork.py is where the store meets fork).
"""
from __future__ import annotations

import multiprocessing
import random
import time

import pytest

from appliance.config import load_config
from appliance.store import Store
from test_store_support import jpeg_bytes, result_json

LABELS = ("normal", "abnormal")


def _child(data_dir: str, out, seed: int) -> None:
    rnd = random.Random(seed)

    def say(line: str) -> None:
        out.send_bytes(line.encode())

    store = Store.open(load_config(data_dir=data_dir, environ={}))
    say("OPEN")
    patients = list(store.patients.index.by_uuid)
    exams = list(store.exams.index.by_uuid)
    for i in range(10**6):
        op = rnd.choice(("register", "save", "save", "decide", "audit", "meta"))
        if op == "register" or not patients:
            pid = f"K{seed}-{i}"
            say(f"B register {pid}")
            p = store.patients.register(pid, f"ከበደ Kill {seed} {i}", by="killer")
            patients.append(p["uuid"])
            say(f"R register {p['uuid']} {pid}")
        elif op == "save" or not exams:
            patient = rnd.choice(patients)
            say(f"B save {patient}")
            exam = {"patient_uuid": patient, "analysis": "pap_smear", "result": result_json("pap_smear")}
            e = store.exams.save(exam, jpeg_bytes(seed * 1000 + i), by="killer")
            exams.append(e["uuid"])
            say(f"R save {e['uuid']} {patient}")
        elif op == "decide":
            uuid, label = rnd.choice(exams), rnd.choice(LABELS)
            say(f"B decide {uuid} {label}")
            store.exams.decide(uuid, label, by="killer")
            say(f"R decide {uuid} {label}")
        elif op == "audit":
            say("B audit")
            entry = store.audit.log("killer", "kill.test", "patient", f"{seed}-{i}")
            say(f"R audit {entry['uuid']} {entry['created_at']}")
        else:
            say(f"B meta {seed} {i}")
            store.meta_set("kill.last", i)
            say(f"R meta {seed} {i}")


def _writers():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["appliance.store", "test_store_support", __name__])
    return ctx


def _run_child(ctx, cfg, seed: int, kill_while_opening: bool, rnd: random.Random) -> list[list[str]]:
    reports, out = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=_child, args=(str(cfg.data_dir), out, seed))
    writer.start()
    out.close()
    lines: list[bytes] = []

    def read(timeout: float) -> None:
        while reports.poll(timeout):
            try:
                lines.append(reports.recv_bytes())
            except (EOFError, OSError):      # the writer is gone
                return
            timeout = 0
    if kill_while_opening:
        time.sleep(rnd.uniform(0, 0.03))
    else:
        deadline = time.monotonic() + 30
        while b"OPEN" not in lines and time.monotonic() < deadline:
            read(0.5)
        assert b"OPEN" in lines, "the writer did not open the store"
        time.sleep(rnd.uniform(0.002, 0.12))
    writer.kill()
    writer.join()
    read(0)
    reports.close()
    return [line.decode().split(" ") for line in lines]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_returned_write(cfg):
    rnd = random.Random(1234)
    kills, mid_write, kept_exams = 200, 0, set()
    ctx = _writers()
    for n in range(kills):
        lines = _run_child(ctx, cfg, n, kill_while_opening=(n % 8 == 0), rnd=rnd)
        in_flight = lines[-1] if lines and lines[-1][0] == "B" else None
        mid_write += in_flight is not None
        with Store.open(cfg) as store:
            assert not [w for w in store.warnings if "damaged" in w], store.warnings
            audit_uuids = {e["uuid"] for e in store.audit.query(action="kill.test", limit=1000)[0]}
            decided: dict[str, str] = {}
            last_meta = None
            for line in lines:
                if line[0] != "R":
                    continue
                kind = line[1]
                if kind == "register":
                    assert store.patients.get(line[2])["pid"] == line[3]
                elif kind == "save":
                    assert store.exams.get(line[2])["patient_uuid"] == line[3]
                    kept_exams.add(line[2])
                elif kind == "decide":
                    decided[line[2]] = line[3]
                elif kind == "audit":
                    assert line[2] in audit_uuids or store.audit.contains(line[2], line[3])
                elif kind == "meta":
                    last_meta = int(line[3])
            if last_meta is not None:
                allowed = {last_meta}
                if in_flight and in_flight[1] == "meta":
                    allowed.add(int(in_flight[3]))
                assert store.meta_get("kill.last") in allowed
            for uuid, label in decided.items():
                allowed = {label}
                if in_flight and in_flight[1] == "decide" and in_flight[2] == uuid:
                    allowed.add(in_flight[3])
                assert store.exams.get(uuid)["final_label"] in allowed
            assert not list(cfg.data_dir.rglob(".*.tmp-*")), "leftovers of the killed writer remain"
    with Store.open(cfg) as store:
        assert kept_exams <= set(store.exams.index.by_uuid)
        assert store.exams.query(limit=1)[1] == len(store.exams.index.by_uuid)
        for uuid in kept_exams:     # every saved image is filed in the library as its record says
            exam = store.exams.get(uuid)
            assert store.images.filed_path(exam).exists()
    print(f"{kills} kills, {mid_write} in the middle of a write, {len(kept_exams)} exams verified")
    assert mid_write >= kills // 2
