"""USB exchange in the kiosk: Admin "Export to USB", the supervisor's import page, statistics across posts.

Exports and imports run as background jobs (``ctx.jobs``, jobs.py: one of each at a time) and
report progress; their pages reload themselves every second while the job runs. Paths of
sticks and bundles never come from the browser as such: a posted path is accepted only when
it is one of the drives (or one of the bundles on them) that the box itself detected.
"""
from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import bottle

from ..catalogue import N_
from ..errors import UserError
from ..exchange import dhis2, export, importer, keys, stats, usb, workdir
from ..exchange.container import BundleRefused
from ..store.exams import DECISION_NAMES
from . import auth
from .context import AppContext, HomeButton
from .forms import check_period, date_value, query
from .request import _, current_session, request_calendar
from .responses import forbidden, redirect
from .routing import add_routes

log = logging.getLogger(__name__)

AGE_UNKNOWN = N_("Age unknown")
# Where "Eject" may go back to.
EJECT_BACK = ("/exchange/export", "/exchange/import", "/admin")


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


# -- export (admin, on the post) ------------------------------------------------------------
def start_export(ctx: AppContext):
    user = auth.require_permission("export")
    drive = _detected_drive(ctx, bottle.request.forms.getunicode("drive", ""))
    options = {name: bottle.request.forms.get(name) == "1" for name in ("full", "deidentified", "csv")}
    folder = usb.export_folder(drive.path)
    keys.supervisor_public_key(ctx.cfg)   # refuse at once, not in the background, when no key is set

    def work(progress):
        result = export.export_bundle(ctx.store, ctx.cfg, folder, progress=progress, by=user["username"],
                                      **options)
        return {"result": result, "drive": drive}

    ctx.jobs.start("export", _("export"), work)
    raise redirect("/exchange/export")


def export_status(ctx: AppContext):
    auth.require_permission("export")
    return ctx.render("exchange_export.html", job=ctx.jobs.current.get("export"))


def eject(ctx: AppContext):
    user = auth.require()
    if not (auth.allowed(user, "export") or auth.allowed(user, "import")):
        raise forbidden()
    drive = _detected_drive(ctx, bottle.request.forms.getunicode("drive", ""))
    message = usb.eject(ctx.cfg, drive)
    current_session().flash(message, "ok")
    back = bottle.request.forms.getunicode("back", "/")
    raise redirect(back if back in EJECT_BACK else "/")


# -- import (supervisor) --------------------------------------------------------------------
def import_page(ctx: AppContext):
    auth.require_permission("import")
    drives = [{"drive": drive, "bundles": [ctx.bundle_inspections.get(path) for path in usb.bundles_on(drive.path)]}
              for drive in usb.list_drives(ctx.cfg)]
    return ctx.render("exchange_import.html", drives=drives, job=ctx.jobs.current.get("import"),
                      posts=importer.imported_posts(ctx.store), refused=_refused,
                      incomplete=importer.incomplete_imports(ctx.store))


def start_import(ctx: AppContext):
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

    ctx.jobs.start("import", _("import"), work)
    raise redirect("/exchange/import")


# -- statistics across posts ------------------------------------------------------------------
def cross_post_statistics(ctx: AppContext):
    auth.require_permission("statistics_by_post")
    # Typed in the user's calendar on the date keypad, as on the post's own statistics; ISO for the store.
    calendar = request_calendar(ctx)
    date_from = date_value(query("from", max_len=40), calendar)
    date_to = date_value(query("to", max_len=40), calendar)
    check_period(date_from, date_to)
    summary = stats.cross_post(ctx.store, date_from=date_from, date_to=date_to)
    return ctx.render("exchange_statistics.html", summary=summary, date_from=date_from or "",
                      date_to=date_to or "", bars=_bars(summary))


def dhis2_download(ctx: AppContext, fmt: str):
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


ROUTES = (
    ("POST", "/exchange/export", start_export),
    ("GET", "/exchange/export", export_status),
    ("POST", "/exchange/eject", eject),
    ("GET", "/exchange/import", import_page),
    ("POST", "/exchange/import", start_import),
    ("GET", "/exchange/statistics", cross_post_statistics),
    ("GET", "/exchange/dhis2.<fmt:re:json|csv>", dhis2_download),
)


def install(app: bottle.Bottle, ctx: AppContext) -> None:
    ctx.bundle_inspections = Inspections(ctx.cfg)
    try:
        keys.post_signing_key(ctx.cfg)        # the post's signing key exists from the first start
    except (UserError, OSError) as exc:
        log.warning("the post signing key could not be created: %s", exc)
    ctx.admin_panels.append((N_("Export to USB"), "exchange_admin_panel.html", _panel_values))
    ctx.home_buttons.append(HomeButton(N_("Import from USB"), "/exchange/import", ("supervisor",)))
    ctx.home_buttons.append(HomeButton(N_("Statistics across posts"), "/exchange/statistics",
                                       ("supervisor", "admin")))
    add_routes(app, ctx, ROUTES)


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
