"""The audit log: who viewed, created, changed or exported what. Append-only, filed by month.

The store writes an entry for every change it makes (``user.create``, ``patient.register``,
``patient.update``, ``exam.save``, ``exam.decide``, …); callers log what only they see (views,
logins, exports). Ten years of a busy post is millions of entries, so the index holds counts
per chunk, not entries: a page is read from the one or two months it falls in.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from ..errors import UserError
from .core import StoreCore
from .fields import public, text
from .kinds import RecordKind

MAX_DETAIL_BYTES = 8 * 1024
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SEP = "\x1f"


def _as_logged(value: Any, max_len: int) -> str | None:
    """A user-supplied name as the log keeps it: control characters shown as �, long ones cut."""
    if value is None or value == "":
        return None
    value = _UNPRINTABLE.sub("\ufffd", str(value))
    return value if len(value) <= max_len else value[: max_len - 1] + "…"


class AuditIndex:
    """Per chunk: entries counted by (actor, action). Follows the SummaryIndex protocol."""

    def __init__(self) -> None:
        self.pairs: dict[int, Counter] = {}
        self.uuids: dict[int, set[str]] = {}      # per chunk, filled only when a merge asks

    def summarize(self, records):
        return dict(Counter(f"{r.get('actor') or ''}{_SEP}{r.get('action') or ''}" for _, r in records))

    def load_chunk(self, chunk_no, summary):
        self.pairs[chunk_no] = Counter(summary)
        self.uuids.pop(chunk_no, None)

    def chunk_summary(self, chunk_no):
        return dict(self.pairs.get(chunk_no, {}))

    def written(self, chunk_no, doc_id, record):
        self.pairs.setdefault(chunk_no, Counter())[f"{record.get('actor') or ''}{_SEP}{record.get('action') or ''}"] += 1
        if chunk_no in self.uuids:
            self.uuids[chunk_no].add(record["uuid"])

    def count(self, chunk_no: int, actor: str | None, action: str | None) -> int:
        pairs = self.pairs.get(chunk_no, {})
        if actor is None and action is None:
            return sum(pairs.values())
        total = 0
        for key, n in pairs.items():
            who, what = key.split(_SEP, 1)
            if (actor is None or who == actor) and (action is None or what == action):
                total += n
        return total


class AuditLog(RecordKind):
    kind = "audit"
    capacity = 256         # ~64 KB a chunk

    def __init__(self, core: StoreCore):
        super().__init__(core, AuditIndex(), open_chunks=8)

    def log(self, actor: str | None, action: str, target_type: str, target_id: Any = None, detail: Any = None) -> dict:
        """Append one entry (durably). ``detail`` is any small JSON value."""
        entry = self._entry(actor, action, target_type, target_id, detail)
        with self._core.writing():
            return self._append(entry)

    def append(self, actor: str | None, action: str, target_type: str, target_id: Any = None,
               detail: Any = None) -> dict:
        """``log`` for a write already under the writer lock (the core's audit sink)."""
        return self._append(self._entry(actor, action, target_type, target_id, detail))

    def _entry(self, actor, action, target_type, target_id, detail) -> dict:
        # Who and what come from users (a mistyped login name): recorded as typed, never refused.
        entry = {"actor": _as_logged(actor, 64),
                 "action": text(action, "audit action", max_len=64, required=True),
                 "target_type": text(target_type, "audit target type", max_len=32, required=True),
                 "target_id": _as_logged(target_id, 128),
                 "detail": detail}
        try:
            size = len(json.dumps(detail, ensure_ascii=False, allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise UserError(f"An audit detail must be plain JSON data ({exc}).", "This is a bug: report it.") from None
        if size > MAX_DETAIL_BYTES:
            raise UserError("An audit detail is too large.", "This is a bug: report it.")
        return entry

    def _append(self, entry: dict) -> dict:
        record = self._core.new_record(entry)
        self.insert(record)
        return public(record)

    def query(self, *, actor: str | None = None, action: str | None = None, offset: int = 0,
              limit: int = 100) -> tuple[list[dict], int]:
        """Entries newest first (one page) and how many match."""
        offset, limit = max(0, int(offset)), max(0, min(int(limit), 1000))
        with self._core.reading():
            col, idx = self.collection, self.index
            months: dict[str, list] = {}
            for chunk in col.chunks:
                months.setdefault(chunk.partition, []).append(chunk)
            total = sum(idx.count(c.no, actor, action) for c in col.chunks)
            page: list[dict] = []
            skip = offset
            for month in sorted(months, reverse=True):
                if len(page) >= limit:
                    break
                in_month = sum(idx.count(c.no, actor, action) for c in months[month])
                if skip >= in_month:
                    skip -= in_month
                    continue
                found = [r for c in months[month] for _, r in col.records(c)
                         if (actor is None or r.get("actor") == actor) and (action is None or r.get("action") == action)]
                found.sort(key=lambda r: (r.get("created_at", ""), r["uuid"]), reverse=True)
                take = found[skip:skip + limit - len(page)]
                page.extend(public(r) for r in take)
                skip = 0
            return page, total

    # --- USB exchange (under the writer lock) ---------------------------------------------

    def contains(self, uuid: str, created_at: str) -> bool:
        """Is this entry here? Entries are filed by creation month, so only that month is read."""
        col, idx = self.collection, self.index
        for chunk in col.chunks:
            if chunk.partition == created_at[:7]:
                uuids = idx.uuids.get(chunk.no)
                if uuids is None:
                    uuids = idx.uuids[chunk.no] = {r["uuid"] for _, r in col.records(chunk)}
                if uuid in uuids:
                    return True
        return False

    def since(self, seq: int) -> list[tuple[int, int, int]]:
        """(seq, chunk, doc_id) of entries written after ``seq``, in order."""
        out = []
        for chunk in self.collection.chunks:
            if chunk.max_seq > seq:
                out.extend((r.get("_seq", 0), chunk.no, doc_id) for doc_id, r in self.collection.records(chunk)
                           if r.get("_seq", 0) > seq)
        out.sort()
        return out
