"""Background tasks with progress (USB export and import, model packs): one of each kind at a
time; their pages reload themselves every second while the job runs (no script needed)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..catalogue import N_
from ..errors import UserError
from .request import _

log = logging.getLogger(__name__)

# What the progress bar says during each stage of an export or an import.
STAGE_LABELS = {
    "starting": N_("Starting"), "images": N_("Writing the images"), "records": N_("Writing the records"),
    "done": N_("finished"), "decrypt": N_("Checking and decrypting"), "check": N_("Checking the records"),
    "patients": N_("Adding the patients"), "exams": N_("Adding the exams"),
}

# Whole sentences (a translator cannot inflect a noun put into "An %(what)s is ...").
ALREADY_RUNNING = {"export": N_("An export to USB is already running."),
                   "import": N_("An import from USB is already running."),
                   "job": N_("This task is already running.")}


class Job:
    """One background task with progress; ``result`` or ``error`` when it is over."""

    def __init__(self, title: str, work: Callable[[Callable[[str, int, int], None]], Any]):
        self.title = title
        self.stage, self.done, self.total = "starting", 0, 0
        self.result: Any = None
        self.error: tuple[str, str | None] | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"exchange-{title}", daemon=True)
        self._thread.start()

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total

    def _run(self, work) -> None:
        try:
            self.result = work(self._progress)
        except UserError as exc:
            self.error = (exc.message, exc.hint)
        except Exception as exc:   # a bug: the page says so instead of spinning forever
            log.exception("background job failed")
            self.error = (f"The {self.title} stopped because of an unexpected problem ({type(exc).__name__}).",
                          "Try again; if it happens again, tell the technician (appliance doctor).")
        finally:
            self.finished = time.monotonic()

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def stage_label(self) -> str:
        return STAGE_LABELS.get(self.stage, self.stage)

    @property
    def percent(self) -> int:
        if not self.running:
            return 100
        return int(100 * self.done / self.total) if self.total else 0


class Jobs:
    """The current job of each kind ("export", "import", "models")."""

    def __init__(self):
        self._lock = threading.Lock()
        self.current: dict[str, Job] = {}

    def start(self, kind: str, title: str, work) -> Job:
        with self._lock:
            job = self.current.get(kind)
            if job is not None and job.running:
                raise UserError(_(ALREADY_RUNNING.get(kind, ALREADY_RUNNING["job"])),
                                _("Wait for it to finish; this page shows its progress."))
            job = self.current[kind] = Job(title, work)
            return job
