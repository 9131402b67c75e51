"""Versions of records that a merge replaced or refused: nothing is silently dropped."""
from __future__ import annotations

import hashlib

from . import durable
from .core import StoreCore
from .fields import public
from .kinds import RecordKind


def _fingerprint(kind: str, record: dict) -> str:
    return f"{kind}:{record.get('uuid')}:{hashlib.sha256(durable.encode(public(record))).hexdigest()[:32]}"


class HistoryIndex:
    """The fingerprints of the versions kept, so importing a bundle twice keeps each once."""

    def __init__(self) -> None:
        self.keys: dict[int, set[str]] = {}

    def summarize(self, records):
        return sorted(r.get("fingerprint", "") for _, r in records)

    def load_chunk(self, chunk_no, summary):
        self.keys[chunk_no] = set(summary)

    def chunk_summary(self, chunk_no):
        return sorted(self.keys.get(chunk_no, ()))

    def written(self, chunk_no, doc_id, record):
        self.keys.setdefault(chunk_no, set()).add(record.get("fingerprint", ""))

    def __contains__(self, key: str) -> bool:
        return any(key in keys for keys in self.keys.values())


class History(RecordKind):
    kind = "history"
    capacity = 256

    def __init__(self, core: StoreCore):
        super().__init__(core, HistoryIndex(), open_chunks=2)

    def keep(self, kind: str, record: dict, reason: str) -> None:
        """Keep a version (call under the writer lock)."""
        version = public(record)
        key = _fingerprint(kind, version)
        if key in self.index:
            return
        self.insert(self._core.new_record({"kind": kind, "record_uuid": version.get("uuid"),
                                              "fingerprint": key, "reason": reason, "record": version}))

    def versions(self, record_uuid: str) -> list[dict]:
        """Every kept version of one record, oldest first."""
        with self._core.reading():
            found = [public(r["record"]) for _, _, r in self.collection.iter_records()
                     if r.get("record_uuid") == record_uuid]
        return sorted(found, key=lambda r: r.get("updated_at", ""))
