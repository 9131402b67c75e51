"""Patients as on the paper's registration form: card number, name, address, phone, birth date.

The card number (``pid``) is what the nurse reads off the patient's card; it is unique within a
health post (``DuplicatePatient`` carries the existing record so the kiosk can open it) and
compared without case, spaces or dashes ("JU-000123" = "ju 000123"). Search finds a patient by
card number prefix, by name (each typed word a prefix of a word of the name, any script, see
``appliance.i18n.names``) or by phone number in any of its Ethiopian spellings.
"""
from __future__ import annotations

import itertools
import re
import sys
from datetime import date
from typing import Callable

from ..errors import NotFound, UserError
from ..i18n import N_, TranslatableError
from ..i18n.names import name_key, name_tokens, normalize_phone, phone_key
from .core import StoreCore
from .fields import iso_date, later_than, public, text
from .kinds import RecordKind, RowIndex
from .sorted_rows import SortedRows, WordIndex

MAX_PID = 40
MAX_NAME = 200
MAX_ADDRESS = 500
MAX_PHONE = 40
SEXES = {"": "", "f": "F", "female": "F", "m": "M", "male": "M"}
_PHONE_CHARS = re.compile(r"^[0-9+()\s./-]*$")
_PID_FOLD = re.compile(r"[\s\-_./\\#]+")
_UPDATABLE = ("pid", "full_name", "address", "phone", "birth_date", "age_years", "sex")


class DuplicatePatient(TranslatableError):
    """A patient with this card number is already registered here; ``existing`` is that record."""

    def __init__(self, existing: dict):
        super().__init__(N_("A patient with the card number %(pid)s is already registered (%(name)s)."),
                         N_("Open that patient's record instead, or check the card number."),
                         pid=existing["pid"], name=existing["full_name"])
        self.existing = existing


def pid_key(pid: str) -> str:
    return _PID_FOLD.sub("", (pid or "").casefold())


def check_pid(pid) -> str:
    value = text(pid, "card number", max_len=MAX_PID, required=True)
    if not pid_key(value):
        raise UserError(N_("The card number has no letters or digits."), N_("Type the number on the patient's card."))
    return value


def check_phone(phone) -> str:
    """The number as stored: ``+251911234567`` whatever Ethiopian spelling was typed (``BadPhone`` if invalid)."""
    return normalize_phone(text(phone, "phone number", max_len=MAX_PHONE))


def check_age(age_years) -> int | None:
    if age_years in (None, ""):
        return None
    if isinstance(age_years, bool):
        raise UserError("The age must be a number of years.", "Type the approximate age, for example 45.")
    try:
        age = int(str(age_years).strip()) if not isinstance(age_years, int) else age_years
    except ValueError:
        raise UserError(f"The age {age_years!r} is not a number of years.",
                        "Type the approximate age, for example 45.") from None
    if not 0 <= age <= 130:
        raise UserError(f"The age {age} is not possible.", "Type the approximate age in years, 0 to 130.")
    return age


def check_sex(sex) -> str:
    key = (sex or "").strip().casefold() if isinstance(sex, str) else None
    if key not in SEXES:
        raise UserError(f"The sex {sex!r} is not one of female or male.", "Choose female or male, or leave it empty.")
    return SEXES[key]


def _checked(fields: dict) -> dict:
    checks: dict[str, Callable] = {
        "pid": check_pid,
        "full_name": lambda v: text(v, "full name", max_len=MAX_NAME, required=True),
        "address": lambda v: text(v, "address", max_len=MAX_ADDRESS, multiline=True),
        "phone": check_phone,
        "birth_date": lambda v: iso_date(v, "date of birth"),
        "age_years": check_age,
        "sex": check_sex,
    }
    return {key: checks[key](value) for key, value in fields.items()}


def age_basis(birth_date: str | None, age_years: int | None, age_given_on: str) -> tuple[int, int, str] | None:
    """What an age is counted from: (years at the start, from year, "MM-DD"), or None if unknown.

    From a birth date: 0 years at birth. From an approximate age: that age on the day it was given.
    """
    try:
        if birth_date:
            return 0, int(birth_date[0:4]), birth_date[5:10]
        if age_years is not None:
            return int(age_years), int(age_given_on[0:4]), age_given_on[5:10]
    except (ValueError, TypeError):
        pass
    return None


def age_on(day: str, birth_date: str | None, age_years: int | None, age_given_on: str) -> int | None:
    """Age in whole years on ``day`` (``YYYY-MM-DD…``), from a birth date or an age given earlier."""
    return age_from(day, age_basis(birth_date, age_years, age_given_on))


def age_from(day: str, basis: tuple[int, int, str] | None) -> int | None:
    """Age in whole years on ``day`` from an :func:`age_basis`; string slices compare as dates do."""
    if basis is None:
        return None
    start, year, month_day = basis
    try:
        return start + int(day[0:4]) - year - (day[5:10] < month_day)
    except ValueError:
        return None


class PatientRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "pid", "pid_key", "name_key", "phone_key", "birth_date",
                 "age_years", "created_at", "post_id", "key", "age_basis")

    def __init__(self, uuid, seq, chunk, doc_id, pid, full_name, phone, birth_date, age_years, created_at, post_id):
        self.uuid, self.seq, self.chunk, self.doc_id = uuid, seq, chunk, doc_id
        self.pid, self.pid_key, self.name_key = pid, pid_key(pid), name_key(full_name)
        self.phone_key = phone_key(phone)
        self.birth_date, self.age_years, self.created_at, self.post_id = birth_date, age_years, created_at, post_id
        self.key = (created_at, uuid)
        self.age_basis = age_basis(birth_date, age_years, created_at)


class PatientIndex(RowIndex):
    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.by_pid: dict[str, list[PatientRow]] = {}
        self.pids = SortedRows(plain=True)        # (pid_key, uuid)
        self.words = WordIndex()                  # name word -> uuids
        self.phones = SortedRows(plain=True)      # (phone_key, uuid)
        self.recent = SortedRows()                # rows by (created_at, uuid)
        self.on_change = on_change

    def row_from(self, chunk_no, doc_id, r):
        return PatientRow(r["uuid"], r.get("_seq", 0), chunk_no, doc_id, r.get("pid", ""), r.get("full_name", ""),
                          r.get("phone", ""), r.get("birth_date"), r.get("age_years"), r.get("created_at", ""),
                          r.get("post_id", ""))

    def to_summary(self, r):
        return [r.doc_id, r.seq, r.uuid, r.pid, r.name_key, r.phone_key, r.birth_date, r.age_years, r.created_at,
                r.post_id]

    def from_summary(self, chunk_no, item):
        doc_id, seq, uuid, pid, key, phone, birth_date, age_years, created_at, post_id = item
        row = PatientRow.__new__(PatientRow)
        row.uuid, row.seq, row.chunk, row.doc_id, row.pid, row.pid_key = uuid, seq, chunk_no, doc_id, pid, pid_key(pid)
        row.name_key, row.phone_key, row.birth_date, row.age_years = key, phone, birth_date, age_years
        row.created_at, row.post_id, row.key = created_at, post_id, (created_at, uuid)
        row.age_basis = age_basis(birth_date, age_years, created_at)
        return row

    def placement(self, row):
        return row.key, row.pid_key, row.name_key, row.phone_key

    def _add(self, row):
        self.by_pid.setdefault(row.pid_key, []).append(row)
        self.pids.add((row.pid_key, row.uuid))
        for word in set(row.name_key.split(" ")) - {""}:
            self.words.add(word, row.uuid)
        if row.phone_key:
            self.phones.add((row.phone_key, row.uuid))
        self.recent.add(row)
        if self.on_change:
            self.on_change(row.uuid)

    def _drop(self, row):
        same = self.by_pid.get(row.pid_key, [])
        same[:] = [r for r in same if r is not row]
        self.pids.remove((row.pid_key, row.uuid))
        for word in set(row.name_key.split(" ")) - {""}:
            self.words.remove(word, row.uuid)
        if row.phone_key:
            self.phones.remove((row.phone_key, row.uuid))
        self.recent.remove(row)

    # --- queries (under the store's lock) -------------------------------------------------

    def match_name(self, query: str) -> set[str]:
        """Patients whose name has, for every word typed, a word starting with it."""
        words = sorted(set(name_tokens(query)), key=len, reverse=True)
        if not words:
            return set()
        found = set(self.words.prefix(words[0]))
        for word in words[1:]:
            if not found:
                break
            found &= set(self.words.prefix(word))
        return found

    def finish_loading(self) -> None:
        """Sort what bulk loading left unsorted, so the first search is as fast as the next."""
        for rows in (self.pids, self.phones, self.recent):
            rows.rows()
        self.words.words()

    def with_pid(self, pid: str) -> set[str]:
        """The uuids of the patients (of any post) with this card number (ignoring case and dashes)."""
        return {r.uuid for r in self.by_pid.get(pid_key(pid), ())}

    def shared_uuid(self, patient_uuid: str) -> str:
        """The patient's own uuid string (one object per patient, for the rows that name it)."""
        row = self.by_uuid.get(patient_uuid)
        return row.uuid if row is not None else sys.intern(patient_uuid)

    def local_by_pid(self, key: str, post_id: str) -> PatientRow | None:
        rows = self.by_pid.get(key, [])
        return next((r for r in rows if r.post_id == post_id), rows[0] if rows else None)

    def age_at(self, patient_uuid: str, day: str) -> int | None:
        row = self.by_uuid.get(patient_uuid)
        return None if row is None else age_from(day, row.age_basis)


class Patients(RecordKind):
    kind = "patients"
    capacity = 256         # ~100 KB a chunk

    def __init__(self, core: StoreCore):
        super().__init__(core, PatientIndex())

    def watch(self, on_change: Callable[[str], None]) -> None:
        """Call ``on_change(patient_uuid)`` whenever a patient is indexed anew (a change to a birth
        date or an age changes the age groups of that patient's exams)."""
        self.index.on_change = on_change

    def get(self, uuid: str) -> dict | None:
        with self._core.reading():
            row = self.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            return public(self.stored(row)) if row else None

    def by_pid(self, pid: str) -> dict | None:
        with self._core.reading():
            row = self.index.local_by_pid(pid_key(pid if isinstance(pid, str) else ""), self._core.post_id)
            return public(self.stored(row)) if row else None

    def search(self, query: str, limit: int = 25, *, post_id: str | None = None) -> list[dict]:
        """Card number prefix, then names, then phone numbers; the newest patients for an empty query.
        ``post_id``: one health post's patients only (a supervisor's box holds many posts')."""
        query = query.strip() if isinstance(query, str) else ""
        limit = max(0, min(int(limit), 500))
        with self._core.reading():
            idx = self.index

            def wanted(uuid: str) -> bool:
                return post_id is None or idx.by_uuid[uuid].post_id == post_id
            if not query:
                rows = list(itertools.islice((r for r in reversed(idx.recent.rows()) if wanted(r.uuid)), limit))
                return [public(self.stored(r)) for r in rows]
            order: dict[str, None] = {}
            qpid = pid_key(query)
            if qpid:
                for r in idx.by_pid.get(qpid, []):
                    if wanted(r.uuid):
                        order[r.uuid] = None
                for _, uuid in idx.pids.prefix(qpid):
                    if len(order) >= limit:
                        break
                    if wanted(uuid):
                        order[uuid] = None
            if len(order) < limit:
                named = sorted((idx.by_uuid[u] for u in idx.match_name(query) if wanted(u)),
                               key=lambda r: (r.name_key, r.pid_key))
                for r in named[:limit]:
                    order[r.uuid] = None
            digits = phone_key(query)
            if len(order) < limit and len(digits) >= 3 and _PHONE_CHARS.match(query):
                for _, uuid in idx.phones.prefix(digits):
                    if len(order) >= limit:
                        break
                    if wanted(uuid):
                        order[uuid] = None
            return [public(self.stored(idx.by_uuid[u])) for u in list(order)[:limit]]

    def register(self, pid: str, full_name: str, *, address: str = "", phone: str = "", birth_date=None,
                 age_years=None, sex: str = "", by: str | None) -> dict:
        fields = _checked({"pid": pid, "full_name": full_name, "address": address, "phone": phone,
                           "birth_date": birth_date, "age_years": age_years, "sex": sex})
        with self._core.writing():
            self._refuse_duplicate(fields["pid"])
            record = self._core.new_record({**fields, "created_by": by})
            self.insert(record)
            self._core.audit(by, "patient.register", "patient", record["uuid"], {"pid": record["pid"]})
            return public(record)

    def update(self, uuid: str, *, by: str | None, **fields) -> dict:
        unknown = set(fields) - set(_UPDATABLE)
        if unknown:
            raise UserError(f"A patient has no field {sorted(unknown)[0]!r} that can be changed.",
                            f"Fields that can be changed: {', '.join(_UPDATABLE)}.")
        changes = _checked(fields)
        with self._core.writing():
            row = self.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if row is None:
                raise NotFound(N_("This patient is not registered."), N_("Search for the patient again."))
            record = dict(self.stored(row))
            changes = {k: v for k, v in changes.items() if record.get(k) != v}
            if not changes:
                return public(record)
            if "pid" in changes and pid_key(changes["pid"]) != row.pid_key:
                self._refuse_duplicate(changes["pid"])
            before = {k: record.get(k) for k in changes}
            record.update(changes)
            record["updated_at"] = later_than(record.get("updated_at"))
            record["updated_by"] = by
            self.replace(row, record)
            self._core.audit(by, "patient.update", "patient", uuid, {"before": before, "after": changes})
            return public(record)

    def _refuse_duplicate(self, pid: str) -> None:
        existing = [r for r in self.index.by_pid.get(pid_key(pid), []) if r.post_id == self._core.post_id]
        if existing:
            raise DuplicatePatient(public(self.stored(existing[0])))

    def age_today(self, patient: dict) -> int | None:
        return age_on(date.today().isoformat(), patient.get("birth_date"), patient.get("age_years"),
                      patient.get("created_at", ""))
