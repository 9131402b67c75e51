"""What every kind of record (users, patients, exams, audit, history) shares: its files and its index.

A kind is made with the store's core (``appliance.store.core``) and the neighbours it needs; the
methods below (``stored``, ``insert``, ``replace``, ``exported``) are what the store's services
(``transfer``: USB exchange, bulk loading) use on every kind alike, under the core's writer lock.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import StoreError
from .core import StoreCore
from .fields import public
from .partitions import SummaryIndex


def month_of(record: dict) -> str:
    """Records are filed by the month they were created in (``2026-11``)."""
    return record["created_at"][:7]


class RowIndex:
    """Base of the in-memory indexes: one compact row per record, kept per chunk.

    A subclass defines ``row_from(chunk_no, doc_id, record)`` (a record to its row),
    ``to_summary(row)`` / ``from_summary(chunk_no, item)`` (a row to and from the JSON of the
    summary cache), ``_add(row)`` / ``_drop(row)`` for its own lookup structures, and
    ``placement(row)``: what decides a row's place in them (rows are ``__slots__`` classes).
    """

    def __init__(self) -> None:
        self.by_uuid: dict[str, Any] = {}
        self._chunk_rows: dict[int, dict[int, Any]] = {}

    # SummaryIndex protocol
    def summarize(self, records: list[tuple[int, dict]]) -> list:
        return [self.to_summary(self.row_from(-1, doc_id, record)) for doc_id, record in records]

    def load_chunk(self, chunk_no: int, summary: list) -> None:
        rows = [self.from_summary(chunk_no, item) for item in summary]
        before = self._chunk_rows.get(chunk_no)
        if before:      # a new version of a chunk no longer holding a record (restored from .prev)
            present = {row.uuid for row in rows}
            for old in [r for r in before.values() if r.uuid not in present]:
                self._drop(old)
                del before[old.doc_id]
                del self.by_uuid[old.uuid]
        for row in rows:
            self._put(row)

    def chunk_summary(self, chunk_no: int) -> list:
        return [self.to_summary(row) for row in self._chunk_rows.get(chunk_no, {}).values()]

    def written(self, chunk_no: int, doc_id: int, record: dict) -> None:
        self._put(self.row_from(chunk_no, doc_id, record))

    def _put(self, row) -> None:
        old = self.by_uuid.get(row.uuid)
        if old is not None and (old.chunk, old.doc_id) == (row.chunk, row.doc_id) \
                and self.placement(old) == self.placement(row):
            # Same place in every lookup structure: change the row in place (no list surgery).
            for name in type(row).__slots__:
                setattr(old, name, getattr(row, name))
            return
        if old is not None:
            self._drop(old)
            self._chunk_rows.get(old.chunk, {}).pop(old.doc_id, None)
        self.by_uuid[row.uuid] = row
        self._chunk_rows.setdefault(row.chunk, {})[row.doc_id] = row
        self._add(row)

    def rows_since(self, seq: int) -> list:
        return sorted((r for r in self.by_uuid.values() if r.seq > seq), key=lambda r: r.seq)

    # for subclasses
    def row_from(self, chunk_no: int, doc_id: int, record: dict):
        raise NotImplementedError

    def to_summary(self, row) -> list:
        raise NotImplementedError

    def from_summary(self, chunk_no: int, item: list):
        raise NotImplementedError

    def placement(self, row) -> tuple:
        """The fields that decide where a row sits in the lookup structures."""
        return ()

    def _add(self, row) -> None:
        pass

    def _drop(self, row) -> None:
        pass


class RecordKind:
    """One kind of record of a store: its :class:`Collection` and its index."""

    kind = ""
    capacity = 256

    def __init__(self, core: StoreCore, index: SummaryIndex, partition_of: Callable[[dict], str] = month_of,
                 open_chunks: int = 32):
        self._core = core
        self.index = index
        self.collection = core.collection(self.kind, capacity=self.capacity, index=index, partition_of=partition_of,
                                          open_chunks=open_chunks)

    def stored(self, row) -> dict:
        """The record an index row points to, as stored (not a copy: change a ``dict()`` of it)."""
        record = self.collection.get(row.chunk, row.doc_id)
        if record is None:   # its file was restored from the previous generation just now
            raise StoreError(f"This {self.kind[:-1]} record was lost when its damaged file was repaired.",
                             "See the appliance's warnings (appliance doctor); restore a backup if it is needed.")
        return record

    def exported(self, record: dict) -> dict:
        """A stored record as it leaves the store (USB bundles)."""
        return public(record)

    def insert(self, record: dict) -> None:
        """Write a finished new record (under the core's writer lock)."""
        record["_seq"] = self._core.next_seq()
        self.collection.insert(record)

    def replace(self, row, record: dict) -> None:
        """Write a new version of the record at ``row`` (under the core's writer lock)."""
        record["_seq"] = self._core.next_seq()
        self.collection.replace(row.chunk, row.doc_id, record)
