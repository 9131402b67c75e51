"""Referrals: a woman sent to another facility from a visit (cervical) or after an exam (a breast
histopathology result), and what came back.

Record::

    {"uuid", "post_id", "created_at", "updated_at", "created_by", "updated_by",
     "patient_uuid", "patient_pid", "programme": "cervical" | "breast",
     "visit_uuid": null | "...", "exam_uuid": null | "...", "date": "2026-03-12",
     "facility": {"id": "jumc" | "other", "name": "...", "registry_code": "..."},
     "reason", "urgency", "note",
     "outcome": {"status": "pending" | "attended" | "not_attended", "date", "hospital_result",
                 "result_exam_uuid", "treatment", "note", "by", "at"},
     "outcome_history": [earlier outcomes, oldest first]}

An outcome is recorded on an existing referral only; a changed outcome keeps the earlier one in
``outcome_history`` and the whole earlier version in the store's history.
"""
from __future__ import annotations

import sys
from datetime import date

from ..i18n import N_, TranslatableError
from ..pathway.codes import (HOSPITAL_RESULT, HOSPITAL_TREATMENT, NOT_RECORDED, PENDING, PROGRAMME, REFERRAL_OUTCOME,
                             REFERRAL_REASON, URGENCY, BadCode)
from .core import StoreCore
from .fields import is_uuid, past_day, public, text
from .kinds import PatientRecords, RowIndex
from .sorted_rows import SortedRows

MAX_NOTE = 2000
OTHER_FACILITY = "other"
_intern = sys.intern


class ReferralProblem(TranslatableError):
    """A referral or an outcome that cannot be saved as it is (nothing is saved)."""


def checked_facility(value) -> dict:
    if not isinstance(value, dict):
        raise ReferralProblem(N_("The referral names no facility."), N_("Choose where she is referred."))
    fid = value.get("id")
    if not isinstance(fid, str) or not fid.strip() or len(fid) > 64:
        raise ReferralProblem(N_("The referral names no facility."), N_("Choose where she is referred."))
    name = text(value.get("name"), "facility name", max_len=200, required=True)
    return {"id": fid.strip(), "name": name, "registry_code": text(value.get("registry_code"), "registry code",
                                                                     max_len=64)}


def checked_outcome(value, *, referred_on: str, today: date | None) -> dict:
    if not isinstance(value, dict):
        raise ReferralProblem(N_("The referral outcome must be a set of answers."), N_("Fill it in again."))
    unknown = set(value) - {"status", "date", "hospital_result", "result_exam_uuid", "treatment", "note", "by", "at"}
    if unknown:
        raise ReferralProblem(N_("The referral outcome has an unknown answer %(key)r."), N_("Fill it in again."),
                              key=sorted(unknown)[0])
    try:
        status = REFERRAL_OUTCOME.check(value.get("status"))
        out = {"status": status, "date": None, "hospital_result": HOSPITAL_RESULT.check(value.get("hospital_result")),
               "result_exam_uuid": None, "treatment": HOSPITAL_TREATMENT.check(value.get("treatment")),
               "note": text(value.get("note"), "outcome note", max_len=MAX_NOTE, multiline=True)}
    except BadCode as exc:
        raise ReferralProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
    if value.get("date"):
        out["date"] = past_day(value["date"], "outcome date", today=today, problem=ReferralProblem)
        if out["date"] < referred_on:
            raise ReferralProblem(N_("The outcome date %(day)s is before the referral."), N_("Check the date."),
                                  day=out["date"])
    if value.get("result_exam_uuid") not in (None, ""):
        if not is_uuid(value["result_exam_uuid"]):
            raise ReferralProblem(N_("The hospital's result names an exam that is not an exam id."),
                                  N_("Choose the exam again."))
        out["result_exam_uuid"] = value["result_exam_uuid"]
    if status != "attended" and (out["hospital_result"] != NOT_RECORDED or out["treatment"] != NOT_RECORDED):
        raise ReferralProblem(N_("A hospital result or treatment is given, but she is not recorded as attended."),
                              N_("Mark the referral as attended, or remove the result."))
    for key in ("by", "at"):
        if value.get(key):
            out[key] = value[key]
    return out


def pending_outcome() -> dict:
    return {"status": PENDING, "date": None, "hospital_result": NOT_RECORDED, "result_exam_uuid": None,
            "treatment": NOT_RECORDED, "note": ""}


def checked_referral(fields: dict, *, today: date | None = None) -> dict:
    """The content of a referral, checked: programme, source (visit or exam), date, facility,
    reason, urgency, note and outcome."""
    if not isinstance(fields, dict):
        raise ReferralProblem(N_("The referral must be a set of answers."), N_("Fill in the referral again."))
    try:
        out = {"programme": PROGRAMME.check(fields.get("programme")),
               "visit_uuid": fields.get("visit_uuid") or None, "exam_uuid": fields.get("exam_uuid") or None,
               "date": past_day(fields.get("date"), "referral date", today=today, problem=ReferralProblem),
               "facility": checked_facility(fields.get("facility")),
               "reason": REFERRAL_REASON.check(fields.get("reason")),
               "urgency": URGENCY.check(fields.get("urgency")),
               "note": text(fields.get("note"), "referral note", max_len=MAX_NOTE, multiline=True)}
    except BadCode as exc:
        raise ReferralProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
    for key in ("visit_uuid", "exam_uuid"):
        if out[key] is not None and not is_uuid(out[key]):
            raise ReferralProblem(N_("The referral names a visit or exam that does not exist."),
                                  N_("Refer from the visit or the exam."))
    if out["visit_uuid"] is None and out["exam_uuid"] is None:
        raise ReferralProblem(N_("A referral is made from a visit or from an exam result."),
                              N_("Refer from the visit or the exam."))
    out["outcome"] = checked_outcome(fields.get("outcome") or pending_outcome(), referred_on=out["date"], today=today)
    history = fields.get("outcome_history") or []
    if not isinstance(history, list):
        raise ReferralProblem(N_("The referral's earlier outcomes are not a list."), N_("Fill it in again."))
    out["outcome_history"] = [checked_outcome(h, referred_on=out["date"], today=today) for h in history]
    return out


class ReferralRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "post_id", "patient_uuid", "patient_pid", "visit_uuid", "date",
                 "key", "programme", "reason", "outcome", "treated")


class ReferralIndex(RowIndex):
    """Referrals by day (``ordered``), by visit, and those still without news (``pending``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ordered = SortedRows()
        self.pending = SortedRows()
        self.by_visit: dict[str, list[ReferralRow]] = {}

    def _row(self, chunk_no, doc_id, seq, uuid, post_id, patient_uuid, patient_pid, visit_uuid, day, programme,
             reason, outcome, treated) -> ReferralRow:
        row = ReferralRow()
        row.uuid, row.seq, row.chunk, row.doc_id = uuid, seq, chunk_no, doc_id
        row.post_id, row.patient_uuid, row.patient_pid, row.visit_uuid = post_id, patient_uuid, patient_pid, visit_uuid
        row.date, row.key, row.programme, row.reason = day, (day, uuid), programme, reason
        row.outcome, row.treated = outcome, treated
        return row

    def row_from(self, chunk_no, doc_id, r):
        outcome = r.get("outcome") if isinstance(r.get("outcome"), dict) else {}
        treatment = outcome.get("treatment") or NOT_RECORDED
        return self._row(chunk_no, doc_id, r.get("_seq", 0), r["uuid"], _intern(r.get("post_id", "")),
                         _intern(r.get("patient_uuid") or ""), r.get("patient_pid") or "", r.get("visit_uuid") or "",
                         _intern(r.get("date") or ""), _intern(r.get("programme") or "cervical"),
                         _intern(r.get("reason") or NOT_RECORDED), _intern(outcome.get("status") or PENDING),
                         treatment not in (NOT_RECORDED, "none"))

    def to_summary(self, r):
        return [r.doc_id, r.seq, r.uuid, r.post_id, r.patient_uuid, r.patient_pid, r.visit_uuid, r.date, r.programme,
                r.reason, r.outcome, r.treated]

    def from_summary(self, chunk_no, item):
        return self._row(chunk_no, *item)

    def placement(self, row):
        return row.key, row.outcome == PENDING, row.visit_uuid

    def _add(self, row):
        self.ordered.add(row)
        if row.outcome == PENDING:
            self.pending.add(row)
        if row.visit_uuid:
            self.by_visit.setdefault(row.visit_uuid, []).append(row)

    def _drop(self, row):
        self.ordered.remove(row)
        if row.outcome == PENDING:
            self.pending.remove(row)
        same = self.by_visit.get(row.visit_uuid, [])
        same[:] = [r for r in same if r is not row]

    def finish_loading(self) -> None:
        self.ordered.rows()
        self.pending.rows()


class Referrals(PatientRecords):
    kind = "referrals"
    capacity = 256

    def __init__(self, core: StoreCore):
        super().__init__(core, ReferralIndex(), open_chunks=8)

    def for_patient(self, patient_uuid: str) -> list[dict]:
        """Her referrals, newest first."""
        with self._core.reading():
            rows = [r for r in self.index.by_uuid.values() if r.patient_uuid == patient_uuid]
            return [public(self.stored(r)) for r in sorted(rows, key=lambda r: r.key, reverse=True)]

    def of_visit(self, visit_uuid: str) -> list[dict]:
        with self._core.reading():
            return [public(self.stored(r)) for r in self.index.by_visit.get(visit_uuid, ())]
