"""Records of one kind spread over small TinyDB files, so a write rewrites one small file.

Stock TinyDB rewrites its whole JSON file on every insert, which gets linearly slower as the
file grows (tinydb #316, #347). Here each kind of record lives in chunk files
``<store>/<kind>/<partition>/<NNN>.json`` — the partition is the month the record was created
(``2026-11``) and a month holds as many chunks of ``capacity`` records as it needs — and each
chunk is an ordinary TinyDB database (one table named after the kind) on
:class:`~appliance.store.durable.DurableJSONStorage`. A record never moves once written.

A kind's *index* (exams, patients, …) keeps in memory what queries need. It sees each chunk
as a compact JSON *summary* it computes itself, so summaries can be kept in a cache and start-up
only parses the chunks that changed since (see :class:`SummaryIndex`). The cache is one small
marshal file per *segment* (``SEGMENT`` consecutive chunks of a partition,
``<store>/index/<kind>/<partition>.<segment>.marshal``): a write rewrites the summaries of its own
segment only, so keeping the cache costs the same in a store of 2,000 or 200,000 records.

A chunk that has to be parsed (no summary for it, or its file changed) is read for its index with
``msgspec``: only the fields the index names (``SummaryIndex.fields``) are decoded, and an exam's
model result, most of its bytes, is skipped. A file that is not plainly what this store writes
(missing, damaged, odd) goes the careful way instead: TinyDB on the durable storage, which restores
a damaged file from its previous generation. Parsed chunks are kept in a small LRU: records are
read from disk on demand, never all held in memory.
"""
from __future__ import annotations

import contextlib
import marshal
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, TypedDict

import msgspec
from tinydb import TinyDB

from . import durable
from .durable import DurableJSONStorage, atomic_write, remove_stale_tmp_files

# A chunk whose file is gone but whose previous generation is there is still a chunk: reading
# it restores the file from .prev (with a warning) instead of losing its records silently.
_CHUNK_FILE = re.compile(r"^(\d{3,})\.json(\.prev)?$")
_PARTITION = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
# Chunks per summary-cache file. 16 exam chunks are ~1,000 exams: a cache write stays small.
SEGMENT = 16
# A cache file of the layout before segments (one per partition): read by nothing, removed.
_OLD_CACHE_FILE = re.compile(r"^[0-9A-Za-z_-]{1,32}\.marshal$")
Layout = list[tuple[str, list[tuple[int, Path, os.stat_result]]]]


class SummaryIndex(Protocol):
    fields: tuple[str, ...]
    """Every record field ``summarize``/``load_records`` read (the only ones decoded at a parse)."""

    def summarize(self, records: list[tuple[int, dict]]) -> Any:
        """A JSON-able summary of one chunk's records (what the index needs of them)."""

    def load_chunk(self, chunk_no: int, summary: Any) -> None:
        """Take in a chunk's summary, replacing what an earlier version of that chunk said."""

    def load_records(self, chunk_no: int, records: list[tuple[int, dict]]) -> None:
        """Take in a chunk's records (``load_chunk(chunk_no, summarize(records))``, in one pass)."""

    def chunk_summary(self, chunk_no: int) -> Any:
        """The current summary of a chunk (for the summary cache)."""

    def written(self, chunk_no: int, doc_id: int, record: dict) -> None:
        """A record was inserted or replaced by this process."""


class Chunk:
    __slots__ = ("no", "partition", "number", "path", "ident", "count", "max_seq", "segment")

    def __init__(self, no: int, partition: str, number: int, path: Path):
        self.no, self.partition, self.number, self.path = no, partition, number, path
        self.segment = f"{partition}.{number // SEGMENT:03d}"     # its summary-cache file
        self.ident: tuple[int, int, int] | None = None
        self.count = 0
        self.max_seq = 0

    @property
    def name(self) -> str:
        return f"{self.partition}/{self.number:03d}"


def file_ident(st: os.stat_result) -> tuple[int, int, int]:
    # Every write replaces the file, so the inode changes even within one mtime tick.
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Collection:
    def __init__(self, store_dir: Path, kind: str, *, capacity: int, index: SummaryIndex,
                 partition_of: Callable[[dict], str], warn: Callable[[str], None], open_chunks: int = 32,
                 cache_key: str = ""):
        self.kind = kind
        self.root = store_dir / kind
        # The summary cache: one small file per segment, rewritten only when that segment changed.
        self.cache_dir = store_dir / "index" / kind
        self.cache_key = cache_key
        self._stale: set[str] = set()              # segments whose saved summaries are out of date
        self._uncached: set[int] = set()           # chunks start-up must parse (keep_out_of_cache)
        self._old_layout_checked = False
        self._repaired: set[int] = set()
        self.capacity = capacity
        self.index = index
        self.partition_of = partition_of
        self._warn = warn
        self._open_limit = open_chunks
        self.chunks: list[Chunk] = []
        self._by_name: dict[str, Chunk] = {}
        self._last: dict[str, Chunk] = {}          # partition -> its highest-numbered chunk
        self._segments: dict[str, list[Chunk]] = {}
        self._open: OrderedDict[int, TinyDB] = OrderedDict()
        fields = getattr(index, "fields", None)
        # Only what the index reads; every value as it is (Any), so no record is refused here.
        self._decoder = None if fields is None else msgspec.json.Decoder(
            dict[str, dict[str, TypedDict(f"{kind}_indexed", {name: Any for name in fields}, total=False)]])

    # --- discovering chunks on disk -------------------------------------------------------

    def _disk_partitions(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and _PARTITION.match(e.name))
        except FileNotFoundError:
            return []

    def _disk_chunks(self, partition: str) -> list[tuple[int, Path, os.stat_result]]:
        """The chunk files of a partition, in order."""
        folder = self.root / partition
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                m = _CHUNK_FILE.match(entry.name)
                if m and m.group(2) and (folder / f"{m.group(1)}.json").exists():
                    continue
                if m:
                    with contextlib.suppress(FileNotFoundError):
                        found.append((int(m.group(1)), folder / f"{m.group(1)}.json", entry.stat()))
        return sorted(found, key=lambda f: f[0])

    def _chunk(self, partition: str, number: int) -> Chunk:
        name = f"{partition}/{number:03d}"
        chunk = self._by_name.get(name)
        if chunk is None:
            path = self.root / partition / f"{number:03d}.json"
            chunk = Chunk(len(self.chunks), partition, number, path)
            self.chunks.append(chunk)
            self._by_name[name] = chunk
            self._segments.setdefault(chunk.segment, []).append(chunk)
            last = self._last.get(partition)
            if last is None or last.number < number:
                self._last[partition] = chunk
        return chunk

    def disk_layout(self) -> Layout:
        """The chunk files on disk, by partition (what ``scan`` works through; its length tells
        the opening's progress how much there is to do)."""
        return [(partition, self._disk_chunks(partition)) for partition in self._disk_partitions()]

    def scan(self, use_cache: bool = False, layout: Layout | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Chunk]:
        """Bring the index up to date with the files on disk; returns the chunks it had to parse.

        With ``use_cache`` (at start-up) a chunk whose file is unchanged since its summary was
        cached is taken from the cache without parsing; the cache is read a segment at a time.
        ``progress(done, total)`` is told after each chunk file of ``layout`` (default: listed now).
        """
        parsed: list[Chunk] = []
        layout = self.disk_layout() if layout is None else layout
        total = sum(len(found) for _, found in layout)
        done = 0
        cached: dict[str, dict[str, dict]] = {}
        for partition, found in layout:
            for number, path, st in found:
                done += 1
                ident = file_ident(st)
                chunk = self._chunk(partition, number)
                if chunk.ident == ident:
                    continue
                entry = None
                if use_cache:
                    saved = cached.get(chunk.segment)
                    if saved is None:
                        saved = cached[chunk.segment] = self._read_cache(chunk.segment)
                    entry = saved.get(chunk.name)
                if entry and tuple(entry["ident"]) == ident:
                    chunk.count, chunk.max_seq = entry["count"], entry["max_seq"]
                    self.index.load_chunk(chunk.no, entry["summary"])
                else:
                    self._parse(chunk)
                    parsed.append(chunk)
                    # A recovery from .prev replaced the file: take the identity of what we read.
                    with contextlib.suppress(FileNotFoundError):
                        ident = file_ident(chunk.path.stat())
                chunk.ident = ident
                if progress is not None:
                    progress(done, total)
        return parsed

    def _parse(self, chunk: Chunk) -> None:
        """Index a chunk from its file (another process wrote it, or its summary is not cached)."""
        self.forget(chunk)
        records = self._indexed_fields(chunk)
        if records is None:
            records = self.records(chunk)      # the careful way: a damaged file is restored from .prev
        chunk.count = len(records)
        chunk.max_seq = max((r.get("_seq", 0) for _, r in records), default=0)
        self.index.load_records(chunk.no, records)
        self._stale.add(chunk.segment)

    def _indexed_fields(self, chunk: Chunk) -> list[tuple[int, dict]] | None:
        """The chunk's records with only the fields the index reads, decoded straight from the file;
        None when the file is not plainly a chunk this store wrote (missing, damaged, odd)."""
        if self._decoder is None:
            return None
        try:
            doc = self._decoder.decode(chunk.path.read_bytes())
        except (OSError, ValueError):          # msgspec's DecodeError and ValidationError are ValueErrors
            return None
        table = doc.get(self.kind, {})
        if not all(doc_id.isdigit() for doc_id in table):
            return None
        return [(int(doc_id), record) for doc_id, record in table.items()]

    # The summary cache is marshal, not JSON: five times faster to load, and it only ever holds
    # plain lists, numbers and strings this code wrote. Its key names the Python version
    # (marshal's format depends on it), the cache layout and the post.
    def _read_cache(self, segment: str) -> dict[str, dict]:
        """A segment's saved summaries; anything unreadable or written for another key is ignored."""
        try:
            doc = marshal.loads((self.cache_dir / f"{segment}.marshal").read_bytes())
            if isinstance(doc, dict) and doc.get("key") == self.cache_key and isinstance(doc.get("chunks"), dict):
                return doc["chunks"]
        except (OSError, ValueError, EOFError, TypeError):
            pass
        return {}

    def write_cache(self) -> None:
        """Save the summaries of the segments that changed (losing them only costs start-up time).

        A segment's file is made whole from memory, which follows every chunk file it has read or
        written (the same identity test start-up trusts), so a write costs one segment's summaries
        however large the store has grown."""
        self._remove_old_layout()
        for segment in sorted(self._stale):
            members = self._segments.get(segment, [])
            if any(self._pending(c) for c in members):
                continue        # a write waits for its batch: memory is ahead of the file, for now
            chunks = {c.name: {"ident": c.ident, "count": c.count, "max_seq": c.max_seq,
                               "summary": self.index.chunk_summary(c.no)}
                      for c in members if c.ident is not None and c.no not in self._uncached}
            doc = {"key": self.cache_key, "chunks": chunks}
            atomic_write(self.cache_dir / f"{segment}.marshal", marshal.dumps(doc), sync=False)
            self._stale.discard(segment)

    def keep_out_of_cache(self, chunk_no: int) -> None:
        """Leave a chunk's summary out of the cache from now on, so the next start parses it (and
        does what it does for chunks written since the cache: re-file their exams' images)."""
        chunk = self.chunks[chunk_no]
        self._uncached.add(chunk_no)
        self._stale.add(chunk.segment)

    def _remove_old_layout(self) -> None:
        if self._old_layout_checked:
            return
        self._old_layout_checked = True
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.cache_dir):
                if _OLD_CACHE_FILE.match(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    def _pending(self, chunk: Chunk) -> bool:
        db = self._open.get(chunk.no)
        return db is not None and db.storage.pending

    def remove_stale_tmp_files(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if entry.is_dir():
                    remove_stale_tmp_files(Path(entry.path))

    @property
    def max_seq(self) -> int:
        return max((c.max_seq for c in self.chunks), default=0)

    @property
    def count(self) -> int:
        return sum(c.count for c in self.chunks)

    # --- reading and writing records ------------------------------------------------------

    def _table(self, chunk: Chunk):
        db = self._open.get(chunk.no)
        if db is None:
            db = TinyDB(chunk.path, storage=DurableJSONStorage,
                        warn=lambda message, no=chunk.no: self._repaired_while_reading(no, message))
            self._open[chunk.no] = db
            while len(self._open) > self._open_limit:
                # The least recently used, but never one whose write waits for its batch to
                # commit: reading that chunk again from disk would lose the write.
                victim = next((n for n, d in self._open.items() if not d.storage.pending), chunk.no)
                if victim == chunk.no:
                    break
                self._open.pop(victim).close()
        else:
            self._open.move_to_end(chunk.no)
        return db.table(self.kind, cache_size=0)

    def forget(self, chunk: Chunk) -> None:
        """Drop the parsed copy of a chunk (another process replaced its file)."""
        db = self._open.pop(chunk.no, None)
        if db is not None:
            db.close()

    def forget_all(self) -> None:
        for db in self._open.values():
            db.close()
        self._open.clear()

    def _repaired_while_reading(self, chunk_no: int, message: str) -> None:
        self._repaired.add(chunk_no)
        self._warn(message)

    def _read(self, chunk: Chunk) -> dict[str, dict]:
        table = self._table(chunk).storage.read() or {}
        if chunk.no in self._repaired:
            # The file was damaged and restored from .prev as it was read: the index must now
            # follow what the file holds (the last write to it may be gone).
            self._repaired.discard(chunk.no)
            records = [(int(doc_id), record) for doc_id, record in table.get(self.kind, {}).items()]
            chunk.count = len(records)
            self.index.load_records(chunk.no, records)
            chunk.ident = file_ident(chunk.path.stat())
            self._stale.add(chunk.segment)
        return table.get(self.kind, {})

    def records(self, chunk: Chunk) -> list[tuple[int, dict]]:
        """The chunk's records as stored (shared: callers must not change them)."""
        return [(int(doc_id), record) for doc_id, record in self._read(chunk).items()]

    def get(self, chunk_no: int, doc_id: int) -> dict | None:
        """A stored record (shared: callers must copy it before changing it)."""
        return self._read(self.chunks[chunk_no]).get(str(doc_id))

    def iter_records(self, chunks: Iterable[Chunk] | None = None) -> Iterator[tuple[int, int, dict]]:
        for chunk in self.chunks if chunks is None else chunks:
            for doc_id, record in self.records(chunk):
                yield chunk.no, doc_id, record

    def _target(self, partition: str) -> Chunk:
        if not _PARTITION.match(partition):
            raise ValueError(f"bad partition name {partition!r}")
        last = self._last.get(partition)
        if last is not None and last.count < self.capacity:
            return last
        return self._chunk(partition, 0 if last is None else last.number + 1)

    def _after_write(self, chunk: Chunk, seq: int) -> None:
        self._stale.add(chunk.segment)
        chunk.max_seq = max(chunk.max_seq, seq)
        durable.when_committed(lambda: self._take_ident(chunk))
        durable.if_aborted(lambda: self.reload(chunk))

    def _take_ident(self, chunk: Chunk) -> None:
        chunk.ident = file_ident(chunk.path.stat())

    def reload(self, chunk: Chunk) -> None:
        """Make memory follow the chunk's file again (after a write that did not reach it)."""
        self.forget(chunk)
        records = self.records(chunk)
        chunk.count = len(records)
        chunk.max_seq = max((r.get("_seq", 0) for _, r in records), default=0)
        self.index.load_records(chunk.no, records)
        self._stale.add(chunk.segment)           # a summary saved meanwhile may hold the lost write
        with contextlib.suppress(FileNotFoundError):
            self._take_ident(chunk)

    def insert(self, record: dict) -> tuple[int, int]:
        """Write a new record durably; returns its place ``(chunk_no, doc_id)``."""
        chunk = self._target(self.partition_of(record))
        doc_id = self._table(chunk).insert(record)
        chunk.count += 1
        self._after_write(chunk, record.get("_seq", 0))
        self.index.written(chunk.no, doc_id, self.get(chunk.no, doc_id))
        return chunk.no, doc_id

    def replace(self, chunk_no: int, doc_id: int, record: dict) -> None:
        """Write a new version of a record, durably, in the same place."""
        chunk = self.chunks[chunk_no]

        def swap(doc: dict) -> None:
            doc.clear()
            doc.update(record)

        self._table(chunk).update(swap, doc_ids=[doc_id])
        self._after_write(chunk, record.get("_seq", 0))
        self.index.written(chunk.no, doc_id, self.get(chunk.no, doc_id))

    def insert_many(self, records: list[dict]) -> int:
        """Bulk path for migrations and benchmarks: one file write per chunk filled."""
        by_partition: dict[str, list[dict]] = {}
        for record in records:
            by_partition.setdefault(self.partition_of(record), []).append(record)
        for partition, group in by_partition.items():
            while group:
                chunk = self._target(partition)
                room = self.capacity - chunk.count
                part, group = group[:room], group[room:]
                doc_ids = self._table(chunk).insert_multiple(part)
                chunk.count += len(part)
                self._after_write(chunk, max(r.get("_seq", 0) for r in part))
                for doc_id in doc_ids:
                    self.index.written(chunk.no, doc_id, self.get(chunk.no, doc_id))
        return len(records)
