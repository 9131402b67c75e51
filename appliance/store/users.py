"""User accounts: argon2id password hashes, lockout after wrong passwords, roles.

There is no default account and no default password: the kiosk asks for the first
administrator when ``count()`` is 0. Accounts that arrive from another health post through
a USB bundle are kept (their names appear on that post's records) but can never log in here.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import NotFound, StoreError, UserError
from ..i18n import N_, TranslatableError
from .core import StoreCore
from .fields import format_time, later_than, public, text, utc_now
from .kinds import RecordKind, RowIndex
from .vocabulary import ROLES

CALENDARS = ("gregorian", "ethiopian")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
_USERNAME = re.compile(r"^[\w.-]{3,32}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z]{2,4})?$")
# Fields that never leave the store: not in get()/list(), not in USB bundles.
SECRET_FIELDS = ("password_hash", "failed_logins", "locked_until")
_UPDATABLE = ("display_name", "language", "calendar", "role")

# argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane): a login takes about a tenth of a
# second on a 2-core box; more lanes buy nothing there. Older hashes are upgraded at login.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verifying against a throw-away hash for unknown usernames takes as long as for real ones.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AuthError(UserError):
    """Login refused. ``reason`` is "wrong", "locked" or "disabled"; messages are fixed
    sentences so the kiosk can translate them."""

    def __init__(self, reason: str, message: str, hint: str, retry_at: str | None = None):
        super().__init__(message, hint)
        self.reason = reason
        self.retry_at = retry_at


def normalise_username(username: str) -> str:
    return unicodedata.normalize("NFC", username or "").strip().casefold()


def check_username(username: str) -> str:
    name = normalise_username(text(username, "username", max_len=64, required=True))
    if not _USERNAME.match(name):
        raise UserError(N_("The username must be 3 to 32 letters or digits (dots, dashes and underscores allowed, "
                           "no spaces)."), N_("Choose another username, for example 'almaz.t'."))
    return name


def check_password(password: str, username: str) -> str:
    if not isinstance(password, str):
        raise UserError(N_("The password must be text."), N_("Type the password again."))
    if len(password) < MIN_PASSWORD:
        raise TranslatableError(N_("The password is too short (at least %(min)d characters)."),
                                N_("Choose a longer password; a short sentence is easy to remember."), min=MIN_PASSWORD)
    if len(password) > MAX_PASSWORD:
        raise TranslatableError(N_("The password is too long (at most %(max)d characters)."),
                                N_("Choose a shorter password."), max=MAX_PASSWORD)
    if not password.strip():
        raise UserError(N_("The password cannot be only spaces."), N_("Choose another password."))
    if normalise_username(password) == normalise_username(username):
        raise UserError(N_("The password must not be the same as the username."), N_("Choose another password."))
    return password


def _one_of(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise UserError(f"There is no {what} called {value!r}.", f"Choose one of: {', '.join(choices)}.")
    return value


def _role(role: str) -> str:
    return _one_of(role, ROLES, "role")


def _language(language: str) -> str:
    language = text(language, "language", max_len=10) or "en"
    if not _LANGUAGE.match(language):
        raise UserError(f"The language code {language!r} is not valid.", "Use a code such as en, am or om.")
    return language


def _calendar(calendar: str) -> str:
    return _one_of(calendar, CALENDARS, "calendar")


def shown(record: dict) -> dict:
    """A user record as callers see it: no password hash, no lockout bookkeeping."""
    out = public(record)
    for key in SECRET_FIELDS:
        out.pop(key, None)
    return out


class UserRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "username", "role", "disabled", "remote")

    def __init__(self, uuid, seq, chunk, doc_id, username, role, disabled, remote):
        self.uuid, self.seq, self.chunk, self.doc_id = uuid, seq, chunk, doc_id
        self.username, self.role, self.disabled, self.remote = username, role, disabled, remote


class UserIndex(RowIndex):
    def __init__(self) -> None:
        super().__init__()
        self.local: dict[str, UserRow] = {}      # username -> row, accounts of this box only

    def row_from(self, chunk_no, doc_id, record):
        return UserRow(record["uuid"], record.get("_seq", 0), chunk_no, doc_id, record.get("username", ""),
                       record.get("role", ""), bool(record.get("disabled")), bool(record.get("remote")))

    def to_summary(self, r):
        return [r.doc_id, r.seq, r.uuid, r.username, r.role, r.disabled, r.remote]

    def from_summary(self, chunk_no, item):
        doc_id, seq, uuid, username, role, disabled, remote = item
        return UserRow(uuid, seq, chunk_no, doc_id, username, role, disabled, remote)

    def placement(self, row):
        return row.username, row.remote

    def _add(self, row):
        if not row.remote:
            self.local[row.username] = row

    def _drop(self, row):
        if self.local.get(row.username) is row:
            del self.local[row.username]


class Users(RecordKind):
    kind = "users"
    capacity = 1000

    def __init__(self, core: StoreCore):
        super().__init__(core, UserIndex(), partition_of=lambda record: "all", open_chunks=4)

    # --- reading -------------------------------------------------------------------------

    def count(self) -> int:
        with self._core.reading():
            return len(self.index.local)

    def get(self, username: str) -> dict | None:
        with self._core.reading():
            row = self.index.local.get(normalise_username(username))
            return shown(self.stored(row)) if row else None

    def access(self, username: str) -> tuple[str, bool, str] | None:
        """``(role, disabled, password stamp)`` of a local account, None when there is none. The
        kiosk checks a live session against it on every request (the index row and the cached
        record: cheap), so a change made by the CLI or another process takes effect at once. The
        stamp changes with the password, not with logins or failed attempts."""
        with self._core.reading():
            row = self.index.local.get(normalise_username(username))
            if row is None:
                return None
            password_hash = self.stored(row).get("password_hash") or ""
            return row.role, row.disabled, hashlib.sha256(password_hash.encode()).hexdigest()[:32]

    def list(self, *, include_other_posts: bool = False) -> list[dict]:
        with self._core.reading():
            rows = self.index.by_uuid.values() if include_other_posts else self.index.local.values()
            return sorted((shown(self.stored(r)) for r in rows), key=lambda u: (u.get("remote", False), u["username"]))

    def _row(self, username: str) -> UserRow:
        row = self.index.local.get(normalise_username(username))
        if row is None:
            raise NotFound(f"There is no user called {username!r}.", "Check the spelling, or list users with "
                           "'appliance user list'.")
        return row

    # --- changing ------------------------------------------------------------------------

    def create(self, username: str, password: str, role: str, *, display_name: str = "", language: str = "en",
               calendar: str | None = None, by: str | None = None) -> dict:
        name = check_username(username)
        check_password(password, name)
        record = {
            "username": name,
            "display_name": text(display_name, "display name", max_len=100) or name,
            "role": _role(role),
            "language": _language(language),
            "calendar": _calendar(calendar or self._core.cfg.ui.calendar),
            "disabled": False,
            "created_by": by,
            "password_hash": _hasher.hash(password),   # slow on purpose: outside the writer lock
            "failed_logins": 0,
            "locked_until": None,
            "last_login_at": None,
        }
        with self._core.writing():
            if name in self.index.local:
                raise TranslatableError(N_("There is already a user called %(name)r."), N_("Choose another username."),
                                        name=name)
            record = self._core.new_record(record)
            self.insert(record)
            self._core.audit(by, "user.create", "user", name, {"role": record["role"]})
            return shown(record)

    def authenticate(self, username: str, password: str) -> dict:
        name = normalise_username(username if isinstance(username, str) else "")
        password = password if isinstance(password, str) else ""
        with self._core.reading():
            row = self.index.local.get(name)
            stored = self.stored(row) if row else None
            password_hash = stored.get("password_hash") if stored else None
        wrong = AuthError("wrong", N_("The username or password is wrong."),
                          N_("Check the keyboard language and Caps Lock, then try again."))
        # The hash check runs outside the lock: it takes a tenth of a second on purpose.
        ok = _verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        if stored is None:
            raise wrong
        cfg = self._core.cfg.server
        refusal, record = None, None
        # A refusal is raised after the block: raising inside would undo the failure count.
        try:
            with self._core.writing():
                row = self.index.local.get(name)
                if row is None:
                    raise wrong
                record = dict(self.stored(row))
                now = utc_now()
                locked_until = record.get("locked_until")
                if locked_until and now < locked_until:
                    refusal = _locked(locked_until)
                elif not ok:
                    failed = int(record.get("failed_logins") or 0) + 1
                    record["failed_logins"] = failed
                    refusal = wrong
                    if failed >= cfg.lockout_failures:
                        record["locked_until"] = format_time(datetime.now(timezone.utc)
                                                             + timedelta(minutes=cfg.lockout_minutes))
                        record["failed_logins"] = 0
                        refusal = _locked(record["locked_until"])
                    self._update(row, record)
                elif record.get("disabled"):
                    refusal = AuthError("disabled", N_("This account is disabled."), N_("Ask an administrator to enable it."))
                else:
                    record.update(failed_logins=0, locked_until=None, last_login_at=now)
                    if _hasher.check_needs_rehash(record["password_hash"]):
                        record["password_hash"] = _hasher.hash(password)
                    self._update(row, record)
        except StoreError as exc:
            if record is None:
                raise
            # A full or failing disk must not lock everyone out of reading the records: the verdict
            # stands, only its bookkeeping (failure count, last login) is lost, with a warning.
            self._core.warn(f"The login of {name} could not be recorded: {exc.message}")
        if refusal is not None:
            raise refusal
        return shown(record)

    def set_password(self, username: str, password: str, *, by: str | None) -> None:
        with self._core.reading():
            name = self._row(username).username
        check_password(password, name)
        new_hash = _hasher.hash(password)
        with self._core.writing():
            row = self._row(name)
            record = dict(self.stored(row))
            record.update(password_hash=new_hash, failed_logins=0, locked_until=None)
            self._update(row, record)
            self._core.audit(by, "user.password", "user", name)

    def set_disabled(self, username: str, disabled: bool, *, by: str | None) -> None:
        with self._core.writing():
            row = self._row(username)
            record = dict(self.stored(row))
            if bool(record.get("disabled")) == bool(disabled):
                return
            if disabled:
                self._refuse_losing_last_admin(row)
            record["disabled"] = bool(disabled)
            self._update(row, record)
            self._core.audit(by, "user.disable" if disabled else "user.enable", "user", row.username)

    def update(self, username: str, *, by: str | None, **fields) -> dict:
        unknown = set(fields) - set(_UPDATABLE)
        if unknown:
            raise UserError(f"A user has no field {sorted(unknown)[0]!r} that can be changed here.",
                            f"Fields that can be changed: {', '.join(_UPDATABLE)}.")
        checks = {"display_name": lambda v: text(v, "display name", max_len=100, required=True),
                  "language": _language, "calendar": _calendar, "role": _role}
        changes = {key: checks[key](value) for key, value in fields.items()}
        with self._core.writing():
            row = self._row(username)
            record = dict(self.stored(row))
            changes = {k: v for k, v in changes.items() if record.get(k) != v}
            if not changes:
                return shown(record)
            if "role" in changes and row.role == "admin":
                self._refuse_losing_last_admin(row)
            record.update(changes)
            self._update(row, record)
            self._core.audit(by, "user.update", "user", row.username, changes)
            return shown(record)

    def _refuse_losing_last_admin(self, row: UserRow) -> None:
        others = [r for r in self.index.local.values() if r.role == "admin" and not r.disabled and r is not row]
        if row.role == "admin" and not row.disabled and not others:
            raise UserError(N_("This is the only active administrator account."),
                            N_("Create or enable another administrator first."))

    def _update(self, row: UserRow, record: dict) -> None:
        record["updated_at"] = later_than(record.get("updated_at"))
        self.replace(row, record)

    # --- USB exchange --------------------------------------------------------------------

    def exported(self, record: dict) -> dict:
        out = shown(record)
        out.pop("remote", None)
        return out

    def merged(self, incoming: dict, current: dict | None) -> dict:
        """The record to store for an incoming account: never a password from elsewhere."""
        record = {k: v for k, v in incoming.items() if k not in SECRET_FIELDS}
        if current is not None:
            for key in SECRET_FIELDS + ("remote",):
                if key in current:
                    record[key] = current[key]
            return record
        if incoming.get("post_id") != self._core.post_id or incoming.get("username") in self.index.local:
            record["remote"] = True
        else:
            record.update(password_hash=None, failed_logins=0, locked_until=None)
        return record


def _locked(until: str) -> AuthError:
    return AuthError("locked", N_("This account is locked for a while after too many wrong passwords."),
                     N_("Wait a few minutes and try again, or ask an administrator to set a new password."),
                     retry_at=until)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
