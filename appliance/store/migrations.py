"""Schema versions of the data folder and the migrations between them.

``store/meta.json`` holds ``schema_version``. Opening a store runs, in order, every migration
registered from the stored version up to :data:`SCHEMA_VERSION`, under the writer lock. A
migration builds its result beside the old data and switches over with a rename, so a power
cut during a migration leaves the old layout, which is migrated again at the next start.

Versions:

1. The prototype's layout: one stock TinyDB file ``<data>/db.json`` with tables ``users``,
   ``patients``, ``exams`` and ``audit``. Records had no uuid, post id or ``updated_at``; exams
   named their patient by card number (``pid``).
2. This layout: records partitioned by month under ``<data>/store/`` (see ``store.py``), every
   record with a uuid, post id, ``created_at`` and ``updated_at``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

from .. import catalogue
from ..errors import StoreError
from . import durable
from .audit import AuditLog
from .durable import DurableJSONStorage, fsync_dir, load_json, utc_stamp
from .exams import Exams
from .fields import is_time, new_uuid, utc_now
from .kinds import month_of
from .partitions import Collection
from .patients import Patients
from .users import Users

log = logging.getLogger("appliance.store")

SCHEMA_VERSION = 2
LEGACY_FILE = "db.json"

Migration = Callable[[Path, Callable[[str], None], str], None]
_MIGRATIONS: dict[int, Migration] = {}


def migration(from_version: int) -> Callable[[Migration], Migration]:
    """Register a migration from ``from_version`` to ``from_version + 1``."""
    def register(fn: Migration) -> Migration:
        _MIGRATIONS[from_version] = fn
        return fn
    return register


def stored_version(data_dir: Path, warn: Callable[[str], None] = lambda message: None) -> int | None:
    """The schema version of the data folder; None for a new, empty one."""
    meta = data_dir / "store" / "meta.json"
    if meta.exists() or meta.with_name("meta.json.prev").exists():
        doc = load_json(meta, warn) or {}
        values = {d.get("key"): d.get("value") for d in doc.get("meta", {}).values()}
        return int(values.get("schema_version") or SCHEMA_VERSION)
    if (data_dir / LEGACY_FILE).exists():
        return 1
    return None


def upgrade(data_dir: Path, warn: Callable[[str], None], post_id: str = "") -> None:
    """Bring the data folder to :data:`SCHEMA_VERSION` (call with the writer lock held)."""
    version = stored_version(data_dir, warn)
    if version is None or version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(f"The records were written by a newer version of the appliance (format {version}; "
                         f"this one reads format {SCHEMA_VERSION}).",
                         "Install the newer version again, or restore a backup made with this version.")
    while version < SCHEMA_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise StoreError(f"There is no way to upgrade records of format {version}.",
                             "Ask the technician; the records were not changed.")
        log.warning("upgrading the records in %s from format %d to %d", data_dir, version, version + 1)
        step(data_dir, warn, post_id)
        version = stored_version(data_dir) or SCHEMA_VERSION
        warn(f"The records were upgraded to format {version}.")


class _NoIndex:
    def summarize(self, records):
        return None

    def load_chunk(self, chunk_no, summary):
        pass

    def chunk_summary(self, chunk_no):
        return None

    def written(self, chunk_no, doc_id, record):
        pass


def _capacity(kind: str) -> int:
    """Chunk sizes of the layout this migration writes: the kinds' own."""
    return {"users": Users, "patients": Patients, "exams": Exams, "audit": AuditLog}[kind].capacity


@migration(1)
def _single_file_to_partitions(data_dir: Path, warn: Callable[[str], None], post_id: str) -> None:
    legacy = data_dir / LEGACY_FILE
    try:
        doc = json.loads(legacy.read_bytes() or b"{}")
        tables = {name: list(doc.get(name, {}).values()) for name in ("users", "patients", "exams", "audit")}
    except (OSError, ValueError, AttributeError) as exc:
        raise StoreError(f"The old record file {legacy} cannot be read ({exc}).",
                         "Restore a backup, or ask the technician; it was not changed.") from None
    post_id = post_id or "post-" + secrets.token_hex(5)
    now = utc_now()
    seq = 0

    def stamp(record: dict) -> dict:
        nonlocal seq
        seq += 1
        created = record.get("created_at") if is_time(record.get("created_at")) else now
        return {**record, "uuid": record.get("uuid") or new_uuid(), "post_id": record.get("post_id") or post_id,
                "created_at": created, "updated_at": record.get("updated_at") or created, "_seq": seq}

    users = [stamp({"display_name": u.get("username", ""), "language": "en", "calendar": "gregorian",
                    "disabled": False, "created_by": None, "failed_logins": 0, "locked_until": None,
                    "last_login_at": None, **u, "username": str(u.get("username", "")).strip().casefold()})
             for u in tables["users"]]
    patients = [stamp({"address": "", "phone": "", "birth_date": None, "age_years": None, "sex": "",
                       "created_by": None, **p}) for p in tables["patients"]]
    by_pid = {p.get("pid"): p for p in patients}
    exams = []
    for e in tables["exams"]:
        patient = by_pid.get(e.get("pid"))
        if patient is None:     # never drop an exam: give it the patient its card number names
            patient = stamp({"pid": e.get("pid") or "unknown", "full_name": "(unknown: from old records)",
                             "address": "", "phone": "", "birth_date": None, "age_years": None, "sex": "",
                             "created_by": None, "created_at": e.get("created_at")})
            patients.append(patient)
            by_pid[patient["pid"]] = patient
        decision = e.get("decision")
        label = e.get("label")
        exams.append(stamp({"created_by": None, "source": "file", "result": {}, "demo": False, "image": None,
                            **{k: v for k, v in e.items() if k != "pid"},
                            "patient_uuid": patient["uuid"], "patient_pid": patient["pid"], "decision": decision,
                            "final_label": (decision or {}).get("label") or label,
                            "status": "decided" if decision else "awaiting_decision"}))
        if exams[-1].get("analysis") not in catalogue.ANALYSES:
            warn(f"An old exam has an unknown analysis {exams[-1].get('analysis')!r}; it is kept as it was.")
    audit = [stamp({"target_id": None, "detail": None, **a}) for a in tables["audit"]]

    staging = data_dir / "store.migrating"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        with durable.batch():
            for kind, records in (("users", users), ("patients", patients), ("exams", exams), ("audit", audit)):
                partition = (lambda r: "all") if kind == "users" else month_of
                Collection(staging, kind, capacity=_capacity(kind), index=_NoIndex(), partition_of=partition,
                           warn=warn).insert_many(records)
            DurableJSONStorage(staging / "meta.json").write({"meta": {
                "1": {"key": "schema_version", "value": 2},
                "2": {"key": "post_id", "value": post_id},
                "3": {"key": "migrated_from", "value": f"{LEGACY_FILE} (format 1) on {now}"}}})
        current = data_dir / "store"
        if current.exists():      # a store folder without meta.json: an unfinished start; keep it aside
            os.replace(current, data_dir / f"store.incomplete-{utc_stamp()}")
        os.replace(staging, current)
        fsync_dir(data_dir)
        os.replace(legacy, data_dir / f"{LEGACY_FILE}.format1")
        fsync_dir(data_dir)
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise durable.os_error(exc, data_dir, "upgrade the records") from None
    warn(f"The old record file {legacy} was converted ({len(users)} users, {len(patients)} patients, "
         f"{len(exams)} exams, {len(audit)} audit entries); it is kept as {LEGACY_FILE}.format1.")
