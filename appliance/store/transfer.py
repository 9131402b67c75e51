"""Records in and out of the store as whole records: what changed since a point (for USB bundles),
taking in another store's records idempotently (``merge``), and bulk loading (migrations,
imports, benchmarks). A service over the kinds, made by ``Store`` with the core and the kinds.
"""
from __future__ import annotations

from typing import Iterator

from ..errors import UserError
from . import durable
from .core import StoreCore
from .exams import Exams
from .images import ImageLibrary
from .incoming import check_incoming
from .kinds import RecordKind

KINDS = ("users", "patients", "exams", "audit")
MERGE_RESULTS = ("inserted", "updated", "unchanged", "older")


class Transfer:
    def __init__(self, core: StoreCore, kinds: dict[str, RecordKind], exams: Exams, images: ImageLibrary):
        self._core = core
        self._kinds = kinds            # every kind by name, history included (bulk loading)
        self._exams = exams
        self._images = images

    def _kind(self, kind: str):
        if kind not in KINDS:
            raise UserError(f"There are no records of kind {kind!r}.", f"Use one of: {', '.join(KINDS)}.")
        return self._kinds[kind]

    def changes(self, kind: str, since_seq: int = 0) -> Iterator[dict]:
        """Records of ``kind`` written after ``since_seq`` (oldest change first), as they are now.
        User accounts come without password hashes or lockout state."""
        records = self._kind(kind)
        with self._core.reading():
            if kind == "audit":
                places = [(chunk, doc_id) for _, chunk, doc_id in records.since(int(since_seq))]
            else:
                places = [(r.chunk, r.doc_id) for r in records.index.rows_since(int(since_seq))]
        return self._records_at(records, places)

    def _records_at(self, records, places) -> Iterator[dict]:
        for chunk, doc_id in places:
            with self._core.reading():
                raw = records.collection.get(chunk, doc_id)
                if raw is None:
                    continue
                yield records.exported(raw)

    def merge(self, kind: str, record: dict) -> str:
        """Take in a record from another store, idempotently, by uuid. Returns "inserted", "updated"
        (ours was older; it is kept in history), "unchanged", or "older" (ours is newer; the incoming
        version is kept in history). Images of exams must be put (``images.put``) before their exams."""
        records = self._kind(kind)
        incoming = check_incoming(kind, record)
        with self._core.writing():
            if kind == "audit":
                if records.contains(incoming["uuid"], incoming["created_at"]):
                    return "unchanged"
                records.insert(incoming)
                return "inserted"
            row = records.index.by_uuid.get(incoming["uuid"])
            current = dict(records.stored(row)) if row else None
            if kind == "users":
                incoming = records.merged(incoming, current)
            if current is None:
                records.insert(incoming)
                self._after_merge(kind, incoming)
                return "inserted"
            current.pop("_seq", None)
            if current == incoming:
                return "unchanged"
            if incoming["updated_at"] > current["updated_at"]:
                self._core.keep_version(kind, current, "superseded by an import")
                records.replace(row, incoming)
                self._after_merge(kind, incoming)
                return "updated"
            self._core.keep_version(kind, incoming, "older than the version here")
            return "older"

    def _after_merge(self, kind: str, record: dict) -> None:
        if kind == "exams":
            image = record.get("image") or {}
            if image.get("sha256"):
                self._images.refile(self._exams.index.by_analysis[record["analysis"]].rows(), {image["sha256"]})

    def bulk_insert(self, kind: str, records: list[dict]) -> int:
        """Write many finished records at once, one file write per chunk, without audit entries.
        For migrations, imports and benchmarks; records must already be complete and valid. Inside
        a ``transaction()`` the chunk files are committed with the rest of it (or not at all)."""
        records_of = self._kinds[kind]
        with self._core.writing(defer=False):       # thousands of chunks: written as they fill
            for record in records:
                record["_seq"] = self._core.next_seq()
            n = records_of.collection.insert_many(records)
            # Summaries describe files as they are on disk: inside a transaction, once it commits.
            durable.when_committed(self._core.write_caches)
            return n
