"""Self-check of the box: what a technician reads out over the phone.

``appliance doctor`` prints one line per check (``OK``, ``WARN`` or ``FAIL``, a name, one
sentence) and exits non-zero when anything fails; ``GET /healthz`` returns the same report as
JSON. The checks: configuration, inference runtime and CPU features, every model file's sha256,
camera, free disk, clock sanity, the Ethiopic and Latin fonts, the data folder, and drift (this
post's recent months against the models' validation images, ``appliance/drift.py``).

Some checks are expensive (hashing a pack reads a gigabyte from an SD card; importing a runtime
takes a second). ``HealthMonitor`` caches them for the server: a cached result is reused until
what it looked at changes (for models: any file's size or mtime, or which pack is current), and
stale results are refreshed in a background thread, so ``/healthz`` always answers at once.
"""
from __future__ import annotations

import datetime as dt
import http.client
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__, catalogue, clock, signing
from .config import PACKAGE_DIR, Config
from .errors import UserError
from .inference.pack import FILE_ROLES

OK, WARN, FAIL = "OK", "WARN", "FAIL"
_RANK = {OK: 0, WARN: 1, FAIL: 2}

# Free space on the data disk: below these the box cannot save images for long.
DISK_FAIL_BYTES = 200 * 1024 * 1024
DISK_WARN_BYTES = 1024 * 1024 * 1024
# No real clock on this appliance can be earlier than this (a Pi without RTC boots in 1970 or
# at its last shutdown time): appliance.clock says what is plausible.
EARLIEST_PLAUSIBLE = clock.EARLIEST_PLAUSIBLE
CLOCK_SLACK_S = 300
# The clock is compared with the box's latest writes: its audit entries since this many changes.
RECENT_CHANGES = 200


@dataclass
class Check:
    name: str
    status: str
    message: str
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.status:<4} {self.name:<8} {self.message}"
        return "\n".join([text, *(f"          {d}" for d in self.details)])


@dataclass
class Report:
    checks: list[Check]
    checked_at: str
    post_id: str | None = None

    @property
    def status(self) -> str:
        return max((c.status for c in self.checks), key=_RANK.__getitem__, default=OK)

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "status": self.status.lower(), "version": __version__,
                "post_id": self.post_id, "checked_at": self.checked_at,
                "checks": [asdict(c) for c in self.checks]}

    def text(self) -> str:
        fails = sum(c.status == FAIL for c in self.checks)
        warns = sum(c.status == WARN for c in self.checks)
        summary = ("All checks passed." if not fails and not warns else
                   f"{fails} failed, {warns} warning{'s' if warns != 1 else ''}." +
                   (" The appliance cannot work properly until the FAIL lines are fixed." if fails else ""))
        header = f"BCCDMS appliance {__version__} self-check, {self.checked_at}"
        return "\n".join([header, *(c.line() for c in self.checks), summary])


def _now() -> dt.datetime:
    return clock.now()


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


# -- configuration ---------------------------------------------------------------------------
def check_config(cfg: Config) -> list[Check]:
    problems, warnings = [], []
    source = str(cfg.config_file) if cfg.config_file else "built-in defaults (no configuration file)"
    for key in cfg.security.trusted_model_keys:
        try:
            signing.public_key_from_b64(key, "trusted model key")
        except UserError:
            problems.append(f"[security] trusted_model_keys has a key that is not a valid public key: {key[:16]}...")
    if cfg.clinical and not cfg.security.trusted_model_keys:
        problems.append("[post] mode is clinical but [security] trusted_model_keys is empty: no model pack can be used")
    if cfg.exchange.supervisor_public_key:
        from .exchange import keys
        try:
            keys.supervisor_public_key(cfg)
        except UserError as exc:
            problems.append(f"[exchange] supervisor_public_key: {exc.message}")
    else:
        warnings.append("[exchange] supervisor_public_key is empty: USB exports cannot be made until it is set")
    if cfg.post.name.strip() in ("", "Health post"):
        warnings.append("[post] name is not set: reports and USB bundles will say 'Health post'")
    if cfg.server.idle_logout_minutes <= 0:
        warnings.append("[server] idle_logout_minutes is 0: a shared kiosk never logs out by itself")
    if problems:
        return [Check("config", FAIL, f"{len(problems)} problem(s) in {source}", problems + warnings)]
    if warnings:
        return [Check("config", WARN, f"read from {source}; {len(warnings)} setting(s) to look at", warnings)]
    return [Check("config", OK, f"read from {source}; mode {cfg.post.mode}")]


# -- CPU and runtime -------------------------------------------------------------------------
def cpu_features(cpuinfo: str | None = None, machine: str | None = None) -> dict[str, Any]:
    """The CPU features that decide INT8 speed, from /proc/cpuinfo."""
    machine = machine or platform.machine()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "model" and not value.strip().isdigit():
            model = model or value.strip()      # ARM boards: "Raspberry Pi 5 Model B Rev 1.0"
    x86 = machine in ("x86_64", "amd64", "AMD64", "i686", "i386")
    if x86:
        wanted = {"AVX2": {"avx2"}, "AVX-512": {"avx512f"}, "VNNI": {"avx512_vnni", "avx_vnni"},
                  "AMX": {"amx_int8", "amx_tile"}, "BF16": {"avx512_bf16", "amx_bf16"}}
    else:
        wanted = {"NEON": {"asimd", "neon"}, "dotprod": {"asimddp"}, "i8mm": {"i8mm"}, "BF16": {"bf16"}}
    return {"machine": machine, "model": model, "cores": os.cpu_count() or 1, "x86": x86,
            "features": {name: bool(alts & flags) for name, alts in wanted.items()}}


def check_cpu(cfg: Config) -> list[Check]:
    info = cpu_features()
    have = [n for n, v in info["features"].items() if v]
    lacking = [n for n, v in info["features"].items() if not v]
    desc = (f"{info['machine']}, {info['cores']} core(s)" + (f", {info['model']}" if info["model"] else "") +
            f"; has {', '.join(have) or 'none of the fast INT8 instructions'}" +
            (f"; lacks {', '.join(lacking)}" if lacking else ""))
    feats = info["features"]
    slow = (info["x86"] and not feats["AVX2"]) or (not info["x86"] and not feats["NEON"])
    if slow:
        return [Check("cpu", WARN, desc, ["INT8 inference will be slow on this CPU (no AVX2/NEON)"])]
    details = []
    if info["x86"] and feats["BF16"] and cfg.inference.openvino_float_precision == "bf16":
        details.append("OpenVINO runs float layers in BF16 ([inference] openvino_float_precision = bf16): "
                       "results differ slightly from the validated FP32 figures")
    return [Check("cpu", OK, desc, details)]


def _runtime(cfg: Config, engine=None):
    """The runtime the engine uses (the engine's own when given) and the problems met choosing it."""
    if engine is not None:
        return engine.runtime(), []
    from .inference.runtimes import base as runtimes
    return runtimes.choose(cfg.inference.runtime, runtimes.options_from_config(cfg.inference))


def check_runtime(cfg: Config, engine=None) -> list[Check]:
    how = "configured" if cfg.inference.runtime != "auto" else "chosen automatically for this CPU"
    try:
        runtime, problems = _runtime(cfg, engine)
    except UserError as exc:
        return [Check("runtime", FAIL, exc.message, [exc.hint] if exc.hint else [])]
    except Exception as exc:  # a broken native library: say so, never crash the doctor
        return [Check("runtime", FAIL, f"the inference runtime cannot be loaded ({type(exc).__name__}: {exc})",
                      ["Reinstall the appliance, or set [inference] runtime to the other runtime."])]
    version = (runtime.version() or "").split("-")[0]
    message = f"{runtime.name} {version}, {runtime.options.precision.upper()}, " \
              f"{runtime.options.threads} thread(s) ({how})"
    return [Check("runtime", WARN if problems else OK, message, problems)]


# -- models ----------------------------------------------------------------------------------
def _packs_in_use(cfg: Config) -> tuple[list[tuple[str, Any]], list[Check]]:
    """The packs the engine takes models from: the current pack, then the built-in (demo) pack."""
    from .models_admin import PackManager
    manager = PackManager(cfg)
    packs, checks = [], []
    current = manager.current_path()
    if current is not None:
        try:
            packs.append(("current", manager.load(current)))
        except UserError as exc:
            checks.append(Check("models", FAIL, f"the installed pack at {current} cannot be used: {exc.message}",
                                [exc.hint or ""]))
    demo_dir = cfg.demo_pack_dir
    if not cfg.clinical and (demo_dir / "manifest.json").is_file():
        try:
            packs.append(("built-in", manager.load(demo_dir)))
        except UserError as exc:
            checks.append(Check("models", FAIL, f"the built-in pack at {demo_dir} cannot be used: {exc.message}"))
    return packs, checks


def models_signature(cfg: Config) -> tuple:
    """Cheap fingerprint of everything the model check reads: which packs, every file's size and mtime."""
    from .models_admin import PackManager
    items = []
    for path in (PackManager(cfg).current_path(), cfg.demo_pack_dir):
        if path is None:
            items.append(None)
            continue
        try:
            for f in sorted(path.rglob("*")):
                st = f.stat()
                items.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            items.append((str(path), "unreadable"))
    return (cfg.clinical, tuple(cfg.security.trusted_model_keys), cfg.inference.runtime,
            cfg.inference.precision, tuple(items))


def check_models(cfg: Config, engine=None) -> list[Check]:
    packs, checks = _packs_in_use(cfg)
    if not packs and not checks:
        hint = ("install a trained pack with 'appliance models install PATH'" if cfg.clinical else
                "build the demo pack with 'bccdms-export demo --out weights/demo' or install a pack "
                "with 'appliance models install PATH'")
        return [Check("models", FAIL, "no model pack is installed", [hint])]
    try:
        runtime, _ = _runtime(cfg, engine)
        role_sets = runtime.file_roles()
    except Exception:  # the runtime check reports it; any model file then counts as runnable
        role_sets = tuple((r,) for r in FILE_ROLES)
    available: set[str] = set()
    for role, pack in packs:
        label = f"{role} pack {pack.pack_id} {pack.version}"
        # The engine takes a model from the first pack that has it: a fallback pack whose
        # models are all in the current pack is never used.
        if available and not set(pack.models) - available:
            checks.append(Check("models", OK, f"{label}: not used (the current pack has every model it has)"))
            continue
        problems = pack.verify_all()
        if problems:
            checks.append(Check("models", FAIL, f"{label}: {len(problems)} file(s) damaged or altered; "
                                "they will be refused", problems))
            continue
        runnable = [m for m in pack.models.values() if any(all(r in m.files for r in rs) for rs in role_sets)]
        missing_roles = [m.id for m in pack.models.values() if m not in runnable]
        details = [f"no file this runtime can run for {', '.join(missing_roles)}"] if missing_roles else []
        status = WARN if pack.demo or missing_roles else OK
        kind = "DEMO models (untrained: every result says DEMO)" if pack.demo else "signed by a trusted key"
        checks.append(Check("models", status, f"{label}: {len(pack.models)} models, {len(pack.files)} files, "
                            f"checksums OK, {kind}", details))
        available.update(m.id for m in runnable)
    unavailable = [a.name for a in catalogue.ANALYSES.values() if a.first_model not in available]
    if unavailable and packs:
        checks.append(Check("models", WARN, f"{len(unavailable)} analysis(es) unavailable: "
                            + ", ".join(unavailable)))
    return checks


# -- drift -----------------------------------------------------------------------------------
DRIFT_NEXT_STEP = ("send images for review: export this month's exams for the supervisor (USB) and tell the "
                   "ML team; check the camera, the light and the stain first")


def check_drift(cfg: Config, store=None) -> list[Check]:
    """This post's last months, per model version, against the pack's validation figures
    (``appliance/drift.py``: a large shift is one sampling alone makes in under 1 month in 100)."""
    packs, _problems = _packs_in_use(cfg)
    references = {(m.id, m.version): m.validation["drift"] for _role, pack in packs for m in pack.models.values()
                  if isinstance(m.validation.get("drift"), dict) and not m.demo}
    if not references:
        return [Check("drift", OK, "not watched: the packs in use carry no validation figures to compare with")]
    if store is None:
        if not cfg.data_dir.is_dir():
            return [Check("drift", OK, "no exams yet")]
        from .store import Store
        with Store.open(cfg) as opened:
            return _drift_checks(opened, references)
    return _drift_checks(store, references)


def _drift_checks(store, references: dict) -> list[Check]:
    from . import drift
    since = (_now() - dt.timedelta(days=31 * drift.MONTHS_WATCHED)).strftime("%Y-%m-01")
    analyses = {catalogue.analysis_of_model(model).id for model, _ in references}
    exams = []
    for analysis in sorted(analyses):
        offset = 0
        while True:
            page, total = store.exams.query(analysis=analysis, date_from=since, post_id=store.post_id,
                                            offset=offset, limit=1000)
            exams += page
            offset += len(page)
            if not page or offset >= total:
                break
    shifts = drift.month_shifts(exams, references)
    judged = [s for s in shifts if s.judged]
    large = [s for s in judged if s.large]
    if not large:
        return [Check("drift", OK, f"{len(judged)} month(s) of {len({(s.model, s.version) for s in judged})} model "
                                   f"version(s) look like their validation images"
                      + (f"; {len(shifts) - len(judged)} month(s) with too few exams to judge"
                         if len(shifts) > len(judged) else ""))]
    details = [f"{s.month} {s.model} {s.version} ({s.exams} exams): "
               + ", ".join(f"{f.replace('_', ' ')} PSI {s.psi[f]:.2f} > {s.thresholds[f]:.2f}" for f in s.large)
               for s in large]
    return [Check("drift", WARN, f"{len(large)} month(s) differ a lot from the model's validation images "
                                 f"({', '.join(sorted({catalogue.ANALYSES[s.analysis].name for s in large}))}): "
                                 f"{DRIFT_NEXT_STEP}", details)]


# -- camera ----------------------------------------------------------------------------------
def check_camera(cfg: Config, cameras=None) -> list[Check]:
    if cfg.camera.backend == "none":
        return [Check("camera", OK, "camera disabled ([camera] backend = none); images come from files or phones")]
    try:
        if cameras is None:
            from .camera import CameraManager
            cameras = CameraManager(cfg)
        devices = cameras.devices()
    except ImportError:
        return [Check("camera", WARN, "camera support is not available in this installation")]
    except Exception as exc:
        return [Check("camera", WARN, f"the camera cannot be queried ({exc})",
                      ["Check the cable; images can still be taken from files or phones."])]
    if not devices:
        return [Check("camera", WARN, f"no camera found (backend {cfg.camera.backend})",
                      ["Check the camera cable; images can still be taken from files or phones."])]
    names = [f"{d.get('name') or d.get('id')} ({d.get('backend')})" for d in devices]
    return [Check("camera", OK, f"{len(devices)} camera(s): {', '.join(names)}")]


# -- disk, clock, data folder ----------------------------------------------------------------
def check_disk(cfg: Config) -> list[Check]:
    path = cfg.data_dir if cfg.data_dir.exists() else cfg.data_dir.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return [Check("disk", FAIL, f"cannot read the free space of {path} ({exc.strerror})")]
    msg = f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB at {path}"
    if usage.free < DISK_FAIL_BYTES:
        return [Check("disk", FAIL, msg, ["Images and records cannot be saved: export to USB and free space."])]
    if usage.free < DISK_WARN_BYTES:
        return [Check("disk", WARN, msg, ["Space is running out: export to USB and free space soon."])]
    return [Check("disk", OK, msg)]


def _newest_mtime(paths: Iterable[Path]) -> tuple[float, Path | None]:
    newest, which = 0.0, None
    for p in paths:
        try:
            m = p.stat().st_mtime
        except OSError:
            continue
        if m > newest:
            newest, which = m, p
    return newest, which


def check_clock(cfg: Config, now: dt.datetime | None = None, store=None) -> list[Check]:
    """A Pi without a battery clock can boot in the past, and a mistyped date can put it years
    ahead: new records would get wrong dates (merges do not depend on them: they follow the
    posts' change numbers, appliance.store.ordering)."""
    now = now or _now()
    data_files = list(cfg.data_dir.iterdir()) if cfg.data_dir.is_dir() else []
    newest_data, which = _newest_mtime(data_files)
    newest_software, _ = _newest_mtime(PACKAGE_DIR.glob("*.py"))
    details, ahead = [], []
    if now < EARLIEST_PLAUSIBLE:
        details.append(f"the clock says {_iso(now)}, before this software was written")
    if newest_software and now.timestamp() + CLOCK_SLACK_S < newest_software:
        details.append(f"the clock is behind the date this software was installed "
                       f"({_iso(dt.datetime.fromtimestamp(newest_software, dt.timezone.utc))})")
    if newest_data and now.timestamp() + CLOCK_SLACK_S < newest_data:
        details.append(f"the clock is behind the last change in the data folder "
                       f"({_iso(dt.datetime.fromtimestamp(newest_data, dt.timezone.utc))}, {which.name})")
    if store is not None:
        _clock_against_records(store, now, details, ahead)
    fix = "Set the date and time: sudo date -s 'YYYY-MM-DD HH:MM' (or fit a battery clock)."
    if details:
        return [Check("clock", WARN, f"the clock says {_iso(now)}, which is too early: new records would get "
                      "wrong dates", details + ahead + [fix])]
    if ahead:
        return [Check("clock", WARN, f"the clock says {_iso(now)}, which is implausibly far ahead: new records "
                      "would get wrong dates", ahead + ["If the box was really switched off that long, this goes "
                                                        "away as records are saved; otherwise: " + fix])]
    return [Check("clock", OK, f"{_iso(now)}")]


def _clock_against_records(store, now: dt.datetime, behind: list[str], ahead: list[str]) -> None:
    """The clock against the box's own latest writes (its audit entries, in change order: every
    change the box makes, logins and imports included). Behind the newest of them: wrong now, or
    wrong when that was written. More than ``clock.MAX_AHEAD`` ahead of the newest written before
    the clock last jumped that far (or of the newest of all): implausibly far ahead."""
    try:
        since = max(0, store.change_seq() - RECENT_CHANGES)
        written = [clock.parse(str(e.get("created_at", ""))) for e in store.changes("audit", since)
                   if e.get("post_id") == store.post_id]
    except (UserError, OSError):
        return                  # the data check says what is wrong with the store
    written = [t for t in written if t is not None]
    if not written:
        return
    newest = written[-1]
    if (newest - now).total_seconds() > CLOCK_SLACK_S:
        behind.append(f"the clock is behind the newest record made on this box ({_iso(newest)}): either the "
                      "clock is wrong now or it was when that record was made")
    before_jump, jump = newest, None
    for earlier, later in zip(written, written[1:]):
        if later - earlier > clock.MAX_AHEAD:
            before_jump, jump = earlier, (earlier, later)
    if now - before_jump > clock.MAX_AHEAD:
        ahead.append(f"the clock is more than a year ahead of the newest record made on this box "
                     f"({_iso(before_jump)})" + (f"; between two records it jumped from {_iso(jump[0])} to "
                                                 f"{_iso(jump[1])}" if jump else ""))


def check_fonts(cfg: Config) -> list[Check]:
    """The fonts for Ge'ez (Ethiopic) and Latin text: the kiosk shows them, the PDF embeds them."""
    from .i18n.fonts import FONT_KINDS, FontMissing, font_path
    found, missing = [], []
    for kind in FONT_KINDS:
        try:
            found.append(f"{kind}: {font_path(kind)}")
        except FontMissing:
            missing.append(kind)
    if missing:
        return [Check("fonts", FAIL, f"no font for {', '.join(k.replace('-', ' ') for k in missing)} text: "
                      "Amharic names and reports cannot be shown or printed",
                      found + ["Install the Debian package fonts-noto-core (sudo apt-get install fonts-noto-core)."])]
    fallbacks = [line for line in found if "/noto/" not in line]
    if fallbacks:
        return [Check("fonts", WARN, "Noto fonts are missing; fallback fonts are used",
                      fallbacks + ["Install the Debian package fonts-noto-core for the intended look."])]
    return [Check("fonts", OK, "Ethiopic and Latin fonts for the kiosk and the PDF")]


def check_data_folder(cfg: Config, store=None) -> list[Check]:
    d = cfg.data_dir
    if not d.exists():
        return [Check("data", WARN, f"the data folder {d} does not exist yet; it is created at first start")]
    if not d.is_dir():
        return [Check("data", FAIL, f"{d} is not a folder")]
    problems, warnings = [], []
    st = d.stat()
    if st.st_uid != os.geteuid():
        warnings.append(f"owned by user id {st.st_uid}, but this check runs as user id {os.geteuid()}: "
                        "run it as the appliance's user (the installed 'appliance' command does)")
    if st.st_mode & 0o077:
        warnings.append(f"permissions {st.st_mode & 0o777:04o} let other users read patient data: chmod 700 {d}")
    try:
        with tempfile.NamedTemporaryFile(dir=d, prefix=".doctor-") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        problems.append(f"cannot write in {d} ({exc.strerror}): nothing can be saved")
    _check_keys(cfg, problems, warnings)
    store_note = _check_store(cfg, store, problems, warnings)
    if problems:
        return [Check("data", FAIL, f"{d}: {len(problems)} problem(s)", problems + warnings)]
    msg = f"{d} is writable" + (f"; {store_note}" if store_note else "")
    return [Check("data", WARN if warnings else OK, msg, warnings)]


def _check_keys(cfg: Config, problems: list[str], warnings: list[str]) -> None:
    """The post's signing key signs every USB bundle: missing is normal before the first start,
    damaged is not (bundles could no longer be tied to this post)."""
    from .exchange import keys
    path = keys.keys_dir(cfg) / keys.POST_SIGNING_KEY
    if not path.exists():
        warnings.append(f"no post signing key yet ({path}); the server creates it at its first start")
        return
    try:
        signing.read_private_key(path)
    except UserError as exc:
        problems.append(f"the post signing key is unusable: {exc.message}")


def _check_store(cfg: Config, store, problems: list[str], warnings: list[str]) -> str:
    """Open the record store (or ask the server's open one) and count what it holds."""
    try:
        if store is None:
            from .store import Store
            with Store.open(cfg) as opened:
                return _store_summary(opened, warnings)
        return _store_summary(store, warnings)
    except ImportError:
        return ""
    except UserError as exc:
        problems.append(f"the record store cannot be opened: {exc.message}")
    except Exception as exc:
        problems.append(f"the record store cannot be opened ({type(exc).__name__}: {exc})")
    return ""


def _store_summary(store, warnings: list[str]) -> str:
    # Files the store had to restore from their previous copy (after a power cut) and the like.
    warnings.extend(f"record store: {w}" for w in getattr(store, "warnings", []))
    from .exchange.importer import incomplete_imports
    for item in incomplete_imports(store):
        warnings.append(f"the import of the bundle {item.get('file')} (post {item.get('post_id')}), started "
                        f"{item.get('started_at')}, did not finish: import the same bundle again to complete it")
    users = store.users.count()
    note = f"store opens, {users} user(s)"
    return note + ("; no user yet: the kiosk asks for the first admin" if users == 0 else "")


def check_server(cfg: Config) -> list[Check]:
    """From the command line: is the kiosk server answering?"""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(cfg.server.host, cfg.server.host)
    conn = http.client.HTTPConnection(host, cfg.server.port, timeout=3)
    try:
        conn.request("GET", "/healthz?live=1")
        resp = conn.getresponse()
        resp.read()
        if resp.status == 200:
            return [Check("server", OK, f"answering on http://{host}:{cfg.server.port}/")]
        return [Check("server", WARN, f"http://{host}:{cfg.server.port}/ answers with HTTP {resp.status}")]
    except (OSError, http.client.HTTPException):
        return [Check("server", WARN, f"not answering on http://{host}:{cfg.server.port}/",
                      ["Start it: sudo systemctl start bccdms (or ./start.sh in a checkout)."])]
    finally:
        conn.close()


# -- running the checks ----------------------------------------------------------------------
def run_checks(cfg: Config, *, store=None, engine=None, cameras=None, include_server: bool = True) -> Report:
    """Every check once, in the order a technician reads them (for ``appliance doctor``)."""
    checks: list[Check] = []
    opened = _open_quietly(cfg) if store is None else None   # one opening for the clock and data checks
    records = store if store is not None else opened
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_config(cfg), lambda: check_runtime(cfg, engine), lambda: check_cpu(cfg),
        lambda: check_models(cfg, engine), lambda: check_camera(cfg, cameras), lambda: check_disk(cfg),
        lambda: check_clock(cfg, store=records), lambda: check_fonts(cfg), lambda: check_data_folder(cfg, records),
        lambda: check_drift(cfg, records),
    ]
    if include_server:
        steps.append(lambda: check_server(cfg))
    try:
        for step in steps:
            checks.extend(_guarded(step))
    finally:
        if opened is not None:
            opened.close()
    return Report(checks, _iso(_now()), _post_id(cfg, records))


def _open_quietly(cfg: Config):
    """The record store, or None when it cannot be opened (the data check then opens it itself
    and says why)."""
    if not cfg.data_dir.is_dir():
        return None
    try:
        from .store import Store
        return Store.open(cfg)
    except Exception:   # noqa: BLE001 - reported by check_data_folder
        return None


def _guarded(step: Callable[[], list[Check]]) -> list[Check]:
    try:
        return step()
    except Exception as exc:  # one broken check must not hide the others
        name = getattr(step, "__name__", "check")
        return [Check(name, FAIL, f"the check itself failed ({type(exc).__name__}: {exc})")]


def _post_id(cfg: Config, store) -> str | None:
    if store is not None:
        return getattr(store, "post_id", None)
    return cfg.post.id or None


class HealthMonitor:
    """The doctor's report for ``/healthz``: cheap checks each time, expensive ones cached.

    The model check is redone only when ``models_signature`` changes; runtime, CPU and camera
    are refreshed every ``ttl`` seconds. Refreshes run in a background thread; until the first
    one ends, the report says the check is running (WARN), so the first request never waits.
    """

    def __init__(self, cfg: Config, *, store=None, engine=None, cameras=None, ttl: float = 300.0):
        self.cfg, self.store, self.engine, self.cameras = cfg, store, engine, cameras
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, float, list[Check]]] = {}
        self._refreshing: set[str] = set()
        self.runs: dict[str, int] = {}            # how often each expensive check really ran
        self._clock: tuple[float, Check] | None = None
        self._heavy: dict[str, tuple[Callable[[], Any], Callable[[], list[Check]]]] = {
            "runtime": (lambda: None, lambda: check_runtime(cfg, engine)),
            "cpu": (lambda: None, lambda: check_cpu(cfg)),
            "models": (lambda: models_signature(cfg), lambda: check_models(cfg, engine)),
            "camera": (lambda: None, lambda: check_camera(cfg, cameras)),
            "drift": (lambda: None, lambda: check_drift(cfg, store)),
        }

    def start(self) -> "HealthMonitor":
        """Begin the expensive checks now (at server start) rather than at the first request."""
        for name in self._heavy:
            self._cached(name)
        return self

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the running refreshes end (tests, and ``appliance doctor`` in-process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._refreshing:
                    return
            time.sleep(0.05)

    def _cached(self, name: str) -> list[Check]:
        key_fn, run = self._heavy[name]
        try:
            key = key_fn()
        except OSError:
            key = object()      # unreadable right now: never equal, so the check runs again
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(name)
            fresh = entry is not None and entry[0] == key and (key is not None or now - entry[1] < self.ttl)
            if fresh:
                return entry[2]
            if name not in self._refreshing:
                self._refreshing.add(name)
                threading.Thread(target=self._refresh, args=(name, key, run), daemon=True,
                                 name=f"health-{name}").start()
        # A result for other inputs (say, the pack that was in use before an install) would
        # tell the technician about the wrong thing: only an expired result for the same inputs
        # is shown while the check runs again.
        if entry is not None and entry[0] == key:
            return entry[2]
        return [Check(name, WARN, "check running (started moments ago); ask again in a few seconds")]

    def _refresh(self, name: str, key, run: Callable[[], list[Check]]) -> None:
        result = _guarded(run)      # never raises
        with self._lock:
            self.runs[name] = self.runs.get(name, 0) + 1
            self._cache[name] = (key, time.monotonic(), result)
            self._refreshing.discard(name)

    def clock(self, max_age_s: float = 60.0) -> Check:
        """The clock check, at most ``max_age_s`` old: every kiosk page asks it (its banner)."""
        now = time.monotonic()
        with self._lock:
            entry = self._clock
        if entry is None or now - entry[0] > max_age_s:
            checks = _guarded(lambda: check_clock(self.cfg, store=self.store))
            entry = (now, next((c for c in checks if c.name == "clock"), checks[0]))
            with self._lock:
                self._clock = entry
        return entry[1]

    def report(self) -> Report:
        checks: list[Check] = []
        checks += _guarded(lambda: check_config(self.cfg))
        checks += self._cached("runtime") + self._cached("cpu") + self._cached("models") + self._cached("camera")
        checks += _guarded(lambda: check_disk(self.cfg))
        checks += [self.clock(max_age_s=0)]
        checks += _guarded(lambda: check_fonts(self.cfg))
        checks += _guarded(lambda: check_data_folder(self.cfg, self.store))
        checks += self._cached("drift")
        return Report(checks, _iso(_now()), _post_id(self.cfg, self.store))
