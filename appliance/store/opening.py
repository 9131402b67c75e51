"""How far the opening of a record store has got: for the log, systemd's status line and the
kiosk's start-up page.

Opening reads every chunk file's summary from the cache (a few seconds at 200,000 exams) or,
without it (the first start after an upgrade or a restore), parses the chunk files themselves.
``Store.open(cfg, progress=...)`` reports each step as ``progress(stage, done, total)``, the
convention of the exchange's progress callbacks:

- ``records``: chunk files read, ``done`` of ``total`` (all kinds together);
- ``indexes``: sorting the indexes and making the statistics cells;
- ``library``: re-filing the images of chunks written since the cache (after a crash);
- ``summaries``: saving the summary cache.

:class:`OpeningProgress` is such a callback that also writes a log line every few seconds and
keeps a snapshot that another thread (the server's start-up page, ``/healthz``) can read at any
time. ``Store.open`` makes one of its own (log lines only) when it is given none.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..i18n import N_

log = logging.getLogger("appliance.store")

STAGES = ("records", "indexes", "library", "summaries")
# What the kiosk's start-up page says for each stage (translated there).
STAGE_TEXT = {"records": N_("Reading the records"), "indexes": N_("Preparing the search lists"),
              "library": N_("Checking the image library"), "summaries": N_("Saving the summaries")}
# Reading the files is nearly all the work: the other stages share the last tenth.
_READ_SHARE = 90


class OpeningProgress:
    """A ``progress(stage, done, total)`` callback for ``Store.open`` that logs and can be read.

    ``on_change(snapshot)`` (optional) is called at most every ``every_s`` seconds, as the log
    line is written (the server passes systemd's STATUS= there)."""

    def __init__(self, *, every_s: float = 2.0, on_change: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._every = every_s
        self._on_change = on_change
        self._started = clock()
        self._last_note = self._started
        self._state = {"state": "opening", "stage": "records", "done": 0, "total": 0, "error": None}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        with self._lock:
            self._state.update(stage=stage, done=int(done), total=int(total))
            due = now - self._last_note >= self._every
            if due:
                self._last_note = now
        if due:
            self._note()

    def finished(self) -> None:
        with self._lock:
            self._state.update(state="open", stage="summaries", done=0, total=0)
        seconds = self._clock() - self._started
        # Only a slow opening is worth a line (every command opens the store).
        if seconds >= self._every:
            log.info("record store open after %.1f s", seconds)
        if self._on_change is not None:
            self._on_change(self.snapshot())

    def failed(self, message: str) -> None:
        with self._lock:
            self._state.update(state="failed", error=message)
        if self._on_change is not None:
            self._on_change(self.snapshot())

    def snapshot(self) -> dict:
        """``{state: opening|open|failed, stage, done, total, percent, seconds, error}``."""
        with self._lock:
            state = dict(self._state)
        state["seconds"] = round(self._clock() - self._started, 1)
        state["percent"] = percent(state)
        return state

    def line(self) -> str:
        """The log line (English: a technician's record, not a screen)."""
        s = self.snapshot()
        if s["stage"] == "records" and s["total"]:
            return (f"opening the record store: {s['percent']} % ({s['done']:,} of {s['total']:,} chunk files read, "
                    f"{s['seconds']:.0f} s)")
        return f"opening the record store: {s['percent']} % ({s['stage']}, {s['seconds']:.0f} s)"

    def _note(self) -> None:
        log.info("%s", self.line())
        if self._on_change is not None:
            self._on_change(self.snapshot())


def percent(state: dict) -> int:
    if state.get("state") == "open":
        return 100
    stage, done, total = state.get("stage"), state.get("done", 0), state.get("total", 0)
    if stage == "records":
        return int(_READ_SHARE * done / total) if total else 0
    later = STAGES.index(stage) if stage in STAGES else 1
    return _READ_SHARE + (100 - _READ_SHARE) * (later - 1) // (len(STAGES) - 1)


def scan_all(collections: dict, progress: Callable[[str, int, int], None]) -> dict[str, list]:
    """Bring every kind's index up to date from its summaries and files (``Collection.scan`` with
    the cache), in the order given; returns the chunks each kind had to parse. Progress counts
    chunk files across all kinds, so one bar covers the whole opening."""
    layouts = {name: collection.disk_layout() for name, collection in collections.items()}
    total = sum(len(found) for layout in layouts.values() for _, found in layout)
    parsed: dict[str, list] = {}
    before = 0
    progress("records", 0, total)
    for name, collection in collections.items():
        def tick(done: int, _total: int, before: int = before) -> None:
            progress("records", before + done, total)
        parsed[name] = collection.scan(use_cache=True, layout=layouts[name], progress=tick)
        before += sum(len(found) for _, found in layouts[name])
    return parsed
