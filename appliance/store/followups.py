"""Follow-ups: the next visit a woman is expected for, and what became of it.

A follow-up is *open* while its state is due, contacted or rescheduled, and *closed* when she
attended or was declared lost to follow-up (with a reason: lost is a state someone records, never
silence). Every change is an event in ``events``, oldest first.

Record::

    {"uuid", "post_id", "created_at", "updated_at", "created_by", "updated_by",
     "patient_uuid", "patient_pid", "programme", "visit_uuid", "referral_uuid",
     "purpose", "due_date", "proposed_date", "rule", "state", "lost_reason",
     "events": [{"action": "created" | "contacted" | "rescheduled" | "attended" | "lost" | "reopened",
                 "at", "by", "note", "method", "due_date", "visit_uuid", "reason"}]}
"""
from __future__ import annotations

import sys
from datetime import date

from ..i18n import N_, TranslatableError
from ..pathway.codes import (ATTENDED, CONTACT_METHOD, CONTACTED, DUE, FOLLOWUP_PURPOSE, FOLLOWUP_STATE, LOST,
                             LOST_REASON, NOT_RECORDED, OPEN_STATES, PROGRAMME, RESCHEDULED, BadCode)
from .core import StoreCore
from .fields import is_time, is_uuid, public, text
from .kinds import PatientRecords, RowIndex
from .sorted_rows import SortedRows

MAX_NOTE = 1000
MAX_EVENTS = 200
ACTIONS = ("created", CONTACTED, RESCHEDULED, ATTENDED, LOST, "reopened")
# The state each action leaves a follow-up in.
STATE_AFTER = {"created": DUE, CONTACTED: CONTACTED, RESCHEDULED: RESCHEDULED, ATTENDED: ATTENDED, LOST: LOST,
               "reopened": DUE}
_intern = sys.intern


class FollowupProblem(TranslatableError):
    """A follow-up or a change of one that cannot be saved (nothing is saved)."""


def due_day(value, *, not_before: str, within_years: int | None = 15) -> str:
    """A due date, an ISO day not before ``not_before`` (the visit's day) nor more than
    ``within_years`` after it."""
    if isinstance(value, date):
        value = value.isoformat()
    try:
        day = date.fromisoformat(value).isoformat() if isinstance(value, str) else None
    except ValueError:
        day = None
    if day is None:
        raise FollowupProblem(N_("The follow-up date %(value)r is not a date."), N_("Choose the day again."),
                              value=value)
    if day < not_before:
        raise FollowupProblem(N_("The follow-up date %(day)s is before the visit (%(visit)s)."),
                              N_("Choose a day after the visit."), day=day, visit=not_before)
    if within_years is not None and int(day[:4]) > int(not_before[:4]) + within_years:
        raise FollowupProblem(N_("The follow-up date %(day)s is too far away."), N_("Choose a day within 15 years."),
                              day=day)
    return day


def checked_event(value) -> dict:
    if not isinstance(value, dict) or value.get("action") not in ACTIONS or not is_time(value.get("at")):
        raise FollowupProblem(N_("A follow-up has an event that is not one of its actions."),
                              N_("Ask the post for a new export."))
    out = {"action": value["action"], "at": value["at"], "by": value.get("by")}
    if out["by"] is not None and not isinstance(out["by"], str):
        raise FollowupProblem(N_("A follow-up has an event that is not one of its actions."),
                              N_("Ask the post for a new export."))
    if value.get("note"):
        out["note"] = text(value["note"], "note", max_len=MAX_NOTE, multiline=True)
    try:
        if value.get("method"):
            out["method"] = CONTACT_METHOD.check(value["method"])
        if value.get("reason"):
            out["reason"] = LOST_REASON.check(value["reason"])
    except BadCode as exc:
        raise FollowupProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
    if value.get("due_date"):
        out["due_date"] = due_day(value["due_date"], not_before="1900-01-01", within_years=None)
    if value.get("visit_uuid"):
        if not is_uuid(value["visit_uuid"]):
            raise FollowupProblem(N_("A follow-up names a visit that is not a visit id."),
                                  N_("Ask the post for a new export."))
        out["visit_uuid"] = value["visit_uuid"]
    return out


def checked_followup(fields: dict, *, visit_day: str | None) -> dict:
    """The content of a follow-up record, checked (for a save and for an import). ``visit_day``:
    the day its dates may not be before (None: not known, an import)."""
    bounds = {"not_before": visit_day} if visit_day else {"not_before": "1900-01-01", "within_years": None}
    if not isinstance(fields, dict):
        raise FollowupProblem(N_("The follow-up must be a set of answers."), N_("Fill it in again."))
    try:
        out = {"programme": PROGRAMME.check(fields.get("programme")),
               "visit_uuid": fields.get("visit_uuid") or None, "referral_uuid": fields.get("referral_uuid") or None,
               "purpose": FOLLOWUP_PURPOSE.check(fields.get("purpose")),
               "due_date": due_day(fields.get("due_date"), **bounds),
               "proposed_date": None, "rule": None,
               "state": FOLLOWUP_STATE.check(fields.get("state")),
               "lost_reason": LOST_REASON.check(fields.get("lost_reason")) if fields.get("lost_reason") else None}
    except BadCode as exc:
        raise FollowupProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
    for key in ("visit_uuid", "referral_uuid"):
        if out[key] is not None and not is_uuid(out[key]):
            raise FollowupProblem(N_("The follow-up names a visit or referral that does not exist."),
                                  N_("Schedule it from the visit."))
    if fields.get("proposed_date"):
        out["proposed_date"] = due_day(fields["proposed_date"], **bounds)
    if fields.get("rule") is not None:
        out["rule"] = text(fields["rule"], "rule", max_len=64)
    if out["state"] == LOST and out["lost_reason"] in (None, NOT_RECORDED):
        raise FollowupProblem(N_("Lost to follow-up needs a reason."), N_("Choose why she is lost to follow-up."))
    events = fields.get("events") or []
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise FollowupProblem(N_("A follow-up has too many events."), N_("Ask the post for a new export."))
    out["events"] = [checked_event(e) for e in events]
    return out


class FollowupRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "post_id", "patient_uuid", "patient_pid", "visit_uuid", "programme",
                 "purpose", "due_date", "key", "state", "contacts", "last_event_at")

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


class FollowupIndex(RowIndex):
    """Follow-ups by due date (``ordered``), the open ones by due date (``open_rows``), and by woman."""

    def __init__(self) -> None:
        super().__init__()
        self.ordered = SortedRows()
        self.open_rows = SortedRows()
        self.by_patient: dict[str, list[FollowupRow]] = {}

    def _row(self, chunk_no, doc_id, seq, uuid, post_id, patient_uuid, patient_pid, visit_uuid, programme, purpose,
             due_date, state, contacts, last_event_at) -> FollowupRow:
        row = FollowupRow()
        row.uuid, row.seq, row.chunk, row.doc_id = uuid, seq, chunk_no, doc_id
        row.post_id, row.patient_uuid, row.patient_pid, row.visit_uuid = post_id, patient_uuid, patient_pid, visit_uuid
        row.programme, row.purpose, row.due_date, row.key = programme, purpose, due_date, (due_date, uuid)
        row.state, row.contacts, row.last_event_at = state, contacts, last_event_at
        return row

    def row_from(self, chunk_no, doc_id, r):
        events = r.get("events") if isinstance(r.get("events"), list) else []
        contacts = sum(1 for e in events if isinstance(e, dict) and e.get("action") == CONTACTED)
        return self._row(chunk_no, doc_id, r.get("_seq", 0), r["uuid"], _intern(r.get("post_id", "")),
                         _intern(r.get("patient_uuid") or ""), r.get("patient_pid") or "", r.get("visit_uuid") or "",
                         _intern(r.get("programme") or "cervical"), _intern(r.get("purpose") or "rescreen"),
                         r.get("due_date") or "", _intern(r.get("state") or DUE), contacts,
                         (events[-1].get("at") or "") if events and isinstance(events[-1], dict) else "")

    def to_summary(self, r):
        return [r.doc_id, r.seq, r.uuid, r.post_id, r.patient_uuid, r.patient_pid, r.visit_uuid, r.programme, r.purpose,
                r.due_date, r.state, r.contacts, r.last_event_at]

    def from_summary(self, chunk_no, item):
        return self._row(chunk_no, *item)

    def placement(self, row):
        return row.key, row.open, row.patient_uuid

    def _add(self, row):
        self.ordered.add(row)
        if row.open:
            self.open_rows.add(row)
        self.by_patient.setdefault(row.patient_uuid, []).append(row)

    def _drop(self, row):
        self.ordered.remove(row)
        if row.open:
            self.open_rows.remove(row)
        same = self.by_patient.get(row.patient_uuid, [])
        same[:] = [r for r in same if r is not row]

    def finish_loading(self) -> None:
        self.ordered.rows()
        self.open_rows.rows()


class Followups(PatientRecords):
    kind = "followups"
    capacity = 256

    def __init__(self, core: StoreCore):
        super().__init__(core, FollowupIndex(), open_chunks=16)
