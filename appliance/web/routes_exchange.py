"""USB exchange in the kiosk: Admin "Export to USB", the supervisor's import page, statistics across posts.

Exports and imports run in a background thread (one of each at a time) and report progress;
their pages reload themselves every second while the job runs (no script needed). Paths of
sticks and bundles never come from the browser as such: a posted path is accepted only when
it is one of the drives (or one of the bundles on them) that the box itself detected.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import bottle

from ..catalogue import N_
from ..errors import UserError
from ..exchange import dhis2, export, importer, keys, stats, usb, workdir
from ..exchange.container import BundleRefused
from ..store.exams import DECISION_NAMES
from . import auth
from .context import AppContext, HomeButton, _, current_session

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


AGE_UNKNOWN = N_("Age unknown")


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
            log.exception("exchange job failed")
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


def _detected_drive(ctx: AppContext, path: str) -> usb.Drive:
    if not path:
        raise UserError(_("Choose a USB stick."), _("Plug the stick in and reload the page."))
    return usb.find_drive(ctx.cfg, path)


def _panel_values(ctx: AppContext) -> dict:
    """What the Admin panel "Export to USB" shows."""
    try:
        fingerprint = keys.fingerprint(keys.x25519_public_raw(keys.supervisor_public_key(ctx.cfg)))
    except UserError:
        fingerprint = None
    return {"drives": usb.list_drives(ctx.cfg), "supervisor_key": fingerprint,
            "last": export.last_export(ctx.store, ctx.cfg),
            "last_deidentified": export.last_export(ctx.store, ctx.cfg, deidentified=True)}


class Inspections:
    """What each bundle on a stick says about itself, checked once per file version: checking the
    signature hashes the whole file, and the import page is reloaded often."""

    def __init__(self, cfg, size: int = 512):
        self.cfg = cfg
        self._size = size
        self._seen: dict[tuple, dict] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> dict:
        try:
            st = path.stat()
        except OSError as exc:
            return {"path": str(path), "problem": exc.strerror, "signature_ok": False}
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            if key in self._seen:
                return self._seen[key]
        try:
            info = importer.inspect(path, self.cfg)
        except UserError as exc:
            info = {"path": str(path), "problem": exc.message, "signature_ok": False}
        with self._lock:
            if len(self._seen) >= self._size:
                self._seen.clear()
            self._seen[key] = info
        return info


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    jobs = Jobs()
    inspections = Inspections(ctx.cfg)
    try:
        keys.post_signing_key(ctx.cfg)        # the post's signing key exists from the first start
    except (UserError, OSError) as exc:
        log.warning("the post signing key could not be created: %s", exc)
    ctx.admin_panels.append((N_("Export to USB"), "exchange_admin_panel.html", _panel_values))
    ctx.home_buttons.append(HomeButton(N_("Import from USB"), "/exchange/import", ("supervisor",)))
    ctx.home_buttons.append(HomeButton(N_("Statistics across posts"), "/exchange/statistics",
                                       ("supervisor", "admin")))

    # -- export (admin, on the post) --------------------------------------------------------
    @app.post("/exchange/export")
    def start_export():
        user = auth.require_permission("export")
        drive = _detected_drive(ctx, bottle.request.forms.getunicode("drive", ""))
        options = {name: bottle.request.forms.get(name) == "1" for name in ("full", "deidentified", "csv")}
        folder = usb.export_folder(drive.path)
        keys.supervisor_public_key(ctx.cfg)   # refuse at once, not in the background, when no key is set

        def work(progress):
            result = export.export_bundle(ctx.store, ctx.cfg, folder, progress=progress, by=user["username"],
                                          **options)
            return {"result": result, "drive": drive}

        jobs.start("export", _("export"), work)
        bottle.redirect("/exchange/export")

    @app.get("/exchange/export")
    def export_status():
        auth.require_permission("export")
        return ctx.render("exchange_export.html", job=jobs.current.get("export"))

    @app.post("/exchange/eject")
    def eject():
        user = auth.require()
        if not (auth.allowed(user, "export") or auth.allowed(user, "import")):
            raise bottle.HTTPError(403, "forbidden")
        drive = _detected_drive(ctx, bottle.request.forms.getunicode("drive", ""))
        message = usb.eject(ctx.cfg, drive)
        current_session().flash(message, "ok")
        back = bottle.request.forms.getunicode("back", "/")
        bottle.redirect(back if back in ("/exchange/export", "/exchange/import", "/admin") else "/")

    # -- import (supervisor) ----------------------------------------------------------------
    @app.get("/exchange/import")
    def import_page():
        auth.require_permission("import")
        drives = []
        for drive in usb.list_drives(ctx.cfg):
            bundles = []
            for path in usb.bundles_on(drive.path):
                bundles.append(inspections.get(path))
            drives.append({"drive": drive, "bundles": bundles})
        return ctx.render("exchange_import.html", drives=drives, job=jobs.current.get("import"),
                          posts=importer.imported_posts(ctx.store), refused=_refused,
                          incomplete=importer.incomplete_imports(ctx.store))

    @app.post("/exchange/import")
    def start_import():
        user = auth.require_permission("import")
        wanted = set(bottle.request.forms.getall("bundle"))
        allowed = {str(p): p for d in usb.list_drives(ctx.cfg) for p in usb.bundles_on(d.path)}
        chosen = [allowed[p] for p in sorted(wanted) if p in allowed]
        if not chosen:
            raise UserError(_("Choose at least one bundle on a USB stick."), _("Tick the bundles to import."))
        accept_unknown = bottle.request.forms.get("accept_unknown") == "1"

        def work(progress):
            return importer.import_bundles(ctx.store, ctx.cfg, chosen, accept_unknown=accept_unknown,
                                           by=user["username"], progress=progress)

        jobs.start("import", _("import"), work)
        bottle.redirect("/exchange/import")

    # -- statistics across posts -------------------------------------------------------------
    @app.get("/exchange/statistics")
    def cross_post_statistics():
        auth.require_permission("statistics_by_post")
        date_from = bottle.request.query.getunicode("from") or None
        date_to = bottle.request.query.getunicode("to") or None
        summary = stats.cross_post(ctx.store, date_from=date_from, date_to=date_to)
        return ctx.render("exchange_statistics.html", summary=summary, date_from=date_from or "",
                          date_to=date_to or "", bars=_bars(summary))

    @app.get("/exchange/dhis2.<fmt:re:json|csv>")
    def dhis2_download(fmt):
        user = auth.require_permission("statistics_by_post")
        work = workdir.exchange_dir(ctx.cfg)
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            path = Path(tmp) / f"dhis2-data-values.{fmt}"
            summary = dhis2.write_data_value_set(ctx.store, ctx.cfg, path)
            data = path.read_bytes()
        ctx.store.audit.log(user["username"], "exchange.dhis2", "statistics", None,
                            {"values": summary["values"], "format": fmt})
        return bottle.HTTPResponse(body=data, headers={
            "Content-Type": "application/json" if fmt == "json" else "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="bccdms-dhis2-data-values.{fmt}"'})


def _bars(summary: dict) -> dict:
    """Bar lengths (percent of the largest) for the server-drawn charts."""
    def scale(items):
        top = max((n for _, n in items), default=0)
        return [(key, n, round(100 * n / top) if top else 0) for key, n in items]

    return {
        "posts": scale([(entry.get("name") or p, entry["exams"]) for p, entry in summary["by_post"].items()]),
        "months": scale([(m, entry["exams"]) for m, entry in summary["by_month"].items()]),
        "ages": scale([(_(AGE_UNKNOWN) if a == "unknown" else a, entry["exams"])
                       for a, entry in summary["by_age_group"].items()]),
        "decisions": scale([(_(DECISION_NAMES.get(d, d)), n) for d, n in summary["by_decision"].items()]),
    }


def _refused(item) -> bool:
    return isinstance(item, BundleRefused)
