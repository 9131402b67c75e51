"""Screening visits: one record per encounter of a woman with the cervical screening pathway.

A visit holds the visit type, the HIV status, the tests (HPV, VIA, cytology from the visit's Pap
smear exam, colposcopy with the transformation zone from its cervix type exam), the exams made
at it (``exam_uuids``), the ablation checklist and the treatment. Codes are the value sets of
``appliance.pathway.codes``; every part defaults to "not done" / "unknown".

Record::

    {"uuid", "post_id", "created_at", "updated_at", "created_by", "updated_by",
     "patient_uuid", "patient_pid", "date": "2026-03-12", "visit_type", "hiv_status",
     "hpv": {"result", "genotype", "sample"}, "via": {"result"},
     "cytology": {"result", "exam_uuid"},
     "colposcopy": {"result", "tz_type", "exam_uuid", "model_tz", "clinician_tz"},
     "exam_uuids": [...], "model_assisted": false,
     "eligibility": {"items": {...}, "suggested", "outcome", "tz3_confirmed", "reason", "by", "at"},
     "treatment": {"status", "offered", "date", "method", "method_other", "not_treated_reason",
                   "reason_other", "provider", "note"},
     "note": ""}

``cytology`` and ``colposcopy``'s exam parts are what the linked exams said when the visit was
saved; statistics read the exams' current decisions (``appliance.store.care``). The kinds'
indexes keep one small row per visit for the follow-up list and the indicators.
"""
from __future__ import annotations

import sys
from datetime import date

from ..i18n import N_, TranslatableError
from ..pathway import eligibility as checklist
from ..pathway import outcomes
from ..pathway.indicators import screening_flags
from ..pathway.codes import (ABLATIVE_METHODS, COLPOSCOPY_RESULT, CYTOLOGY_RESULT, ELIGIBLE_ABLATION, HIV_STATUS,
                             HPV_GENOTYPE, HPV_RESULT, HPV_SAMPLE, NOT_DONE, NOT_RECORDED, NOT_TREATED_REASON, OFFERED,
                             RECEIVED, TREATMENT_METHOD, TREATMENT_STATUS, TZ_TYPE, VIA_RESULT, VISIT_TYPE, BadCode)
from .core import StoreCore
from .fields import is_uuid, past_day, public, text
from .kinds import PatientRecords, RowIndex
from .sorted_rows import SortedRows

MAX_NOTE = 2000
MAX_SHORT = 200
MAX_EXAMS = 50
CONTENT = ("date", "visit_type", "hiv_status", "hpv", "via", "cytology", "colposcopy", "exam_uuids",
           "model_assisted", "eligibility", "treatment", "note")
_intern = sys.intern


class VisitProblem(TranslatableError):
    """A visit that cannot be saved as it is (nothing is saved)."""


class DuplicateVisit(TranslatableError):
    """This woman already has a visit on that day at this post; ``existing`` is that visit."""

    def __init__(self, existing: dict):
        super().__init__(N_("This woman already has a visit on %(day)s at this health post."),
                         N_("Open that visit to add to it, or confirm that this is a second visit on the same day."),
                         day=existing.get("date"))
        self.existing = existing


def _part(value, name: str) -> dict:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise VisitProblem(N_("The %(part)s part of the visit must be a set of answers."), N_("Fill it in again."),
                           part=name)
    return value


def _only(part: dict, keys: tuple[str, ...], name: str) -> None:
    unknown = set(part) - set(keys)
    if unknown:
        raise VisitProblem(N_("The %(part)s part of the visit has an unknown answer %(key)r."),
                           N_("Fill it in again."), part=name, key=sorted(unknown)[0])


def visit_day(value, label: str, *, today: date | None) -> str:
    """An ISO date, not after ``today`` (when given), not before 1900."""
    return past_day(value, label, today=today, problem=VisitProblem)


def checked_treatment(value, visit: dict, *, today: date | None) -> dict:
    """The treatment part, consistent with the visit's screening and checklist."""
    part = _part(value, "treatment")
    _only(part, ("status", "offered", "date", "method", "method_other", "not_treated_reason", "reason_other",
                 "provider", "note"), "treatment")
    status = TREATMENT_STATUS.check(part.get("status"))
    out = {"status": status, "offered": OFFERED.check(part.get("offered")), "date": None,
           "method": TREATMENT_METHOD.check(part.get("method")),
           "method_other": text(part.get("method_other"), "other treatment method", max_len=MAX_SHORT),
           "not_treated_reason": NOT_TREATED_REASON.check(part.get("not_treated_reason")),
           "reason_other": text(part.get("reason_other"), "reason not treated", max_len=MAX_SHORT),
           "provider": text(part.get("provider"), "name of who treated", max_len=MAX_SHORT),
           "note": text(part.get("note"), "treatment note", max_len=MAX_NOTE, multiline=True)}
    if status == RECEIVED:
        if not outcomes.screen_positive(visit):
            raise VisitProblem(N_("A treatment cannot be recorded for a visit without a positive screening test."),
                               N_("Record the positive test result first, or remove the treatment."))
        if out["method"] == NOT_DONE:
            raise VisitProblem(N_("The treatment method is missing."), N_("Choose how she was treated."))
        if out["method"] in ABLATIVE_METHODS and visit["eligibility"]["outcome"] != ELIGIBLE_ABLATION:
            raise VisitProblem(N_("Ablation needs the checklist's outcome \"eligible for ablation\" first."),
                               N_("Complete the ablation checklist, or choose another treatment."))
        out["date"] = visit_day(part.get("date") or visit["date"], "treatment date", today=today)
        if out["date"] < visit["date"]:
            raise VisitProblem(N_("The treatment date %(day)s is before the visit."),
                               N_("Choose the day she was treated."), day=out["date"])
        if out["not_treated_reason"] != NOT_RECORDED:
            raise VisitProblem(N_("A treated woman cannot also have a reason for not being treated."),
                               N_("Remove the reason, or record that she was not treated."))
        out["offered"] = "yes"
    elif out["method"] != NOT_DONE or part.get("date"):
        raise VisitProblem(N_("A treatment method or date is given, but the treatment is not marked as received."),
                           N_("Mark the treatment as received, or remove the method and the date."))
    return out


def checked_visit(fields: dict, *, today: date | None = None) -> dict:
    """The clinical content of a visit (``CONTENT``), checked and complete, or a ``UserError``.

    Codes must be in their value sets, parts must agree with each other (a genotype needs a
    positive HPV test, a treatment a positive screen, ablation the checklist's "eligible"), and
    missing answers take the value set's default ("not done", "unknown").
    """
    if not isinstance(fields, dict):
        raise VisitProblem(N_("The visit must be a set of answers."), N_("Fill in the visit again."))
    try:
        out = {"date": visit_day(fields.get("date"), "visit date", today=today),
               "visit_type": VISIT_TYPE.check(fields.get("visit_type")),
               "hiv_status": HIV_STATUS.check(fields.get("hiv_status"))}
        hpv = _part(fields.get("hpv"), "HPV")
        _only(hpv, ("result", "genotype", "sample"), "HPV")
        out["hpv"] = {"result": HPV_RESULT.check(hpv.get("result")), "genotype": HPV_GENOTYPE.check(hpv.get("genotype")),
                      "sample": HPV_SAMPLE.check(hpv.get("sample"))}
        if out["hpv"]["genotype"] != NOT_DONE and out["hpv"]["result"] != "positive":
            raise VisitProblem(N_("An HPV genotype is given, but the HPV test is not positive."),
                               N_("Record the HPV result first, or remove the genotype."))
        if out["hpv"]["sample"] != NOT_RECORDED and out["hpv"]["result"] == NOT_DONE:
            raise VisitProblem(N_("An HPV sample is recorded, but no HPV test."), N_("Record the HPV result too."))
        via = _part(fields.get("via"), "VIA")
        _only(via, ("result",), "VIA")
        out["via"] = {"result": VIA_RESULT.check(via.get("result"))}
        cytology = _part(fields.get("cytology"), "cytology")
        _only(cytology, ("result", "exam_uuid"), "cytology")
        out["cytology"] = {"result": CYTOLOGY_RESULT.check(cytology.get("result")),
                           "exam_uuid": _exam_ref(cytology.get("exam_uuid"))}
        colpo = _part(fields.get("colposcopy"), "colposcopy")
        _only(colpo, ("result", "tz_type", "exam_uuid", "model_tz", "clinician_tz"), "colposcopy")
        out["colposcopy"] = {"result": COLPOSCOPY_RESULT.check(colpo.get("result")),
                             "tz_type": TZ_TYPE.check(colpo.get("tz_type")),
                             "exam_uuid": _exam_ref(colpo.get("exam_uuid")),
                             "model_tz": _tz_or_none(colpo.get("model_tz")),
                             "clinician_tz": _tz_or_none(colpo.get("clinician_tz"))}
        exams = fields.get("exam_uuids") or []
        if not isinstance(exams, list) or len(exams) > MAX_EXAMS or not all(is_uuid(e) for e in exams):
            raise VisitProblem(N_("The exams of the visit are not a list of exams."), N_("Choose the exams again."))
        out["exam_uuids"] = list(dict.fromkeys(exams))
        for ref in (out["cytology"]["exam_uuid"], out["colposcopy"]["exam_uuid"]):
            if ref and ref not in out["exam_uuids"]:
                out["exam_uuids"].append(ref)
        if not isinstance(fields.get("model_assisted", False), bool):
            raise VisitProblem(N_("The visit's model-assisted flag must be true or false."), N_("Save the visit again."))
        out["model_assisted"] = bool(fields.get("model_assisted", False))
        out["eligibility"] = checklist.checked(fields.get("eligibility"), out["colposcopy"]["tz_type"])
        out["treatment"] = checked_treatment(fields.get("treatment"), out, today=today)
        out["note"] = text(fields.get("note"), "note", max_len=MAX_NOTE, multiline=True)
    except BadCode as exc:
        raise VisitProblem(exc.msgid, exc.hint_msgid, **exc.fields) from None
    return out


def _exam_ref(value) -> str | None:
    if value in (None, ""):
        return None
    if not is_uuid(value):
        raise VisitProblem(N_("The visit names an exam that is not an exam id."), N_("Choose the exam again."))
    return value


def _tz_or_none(value) -> str | None:
    if value in (None, "", NOT_DONE):
        return None
    return TZ_TYPE.check(value)


# -- the index ------------------------------------------------------------------------------------

class VisitRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "post_id", "patient_uuid", "date", "key", "visit_type", "hiv",
                 "hpv", "via", "cytology", "cytology_exam", "colposcopy", "eligibility", "treated_on",
                 "model_assisted", "age", "screened", "positive", "cell")


def _summary_fields(r: VisitRow) -> list:
    return [r.doc_id, r.seq, r.uuid, r.post_id, r.patient_uuid, r.date, r.visit_type, r.hiv, r.hpv, r.via, r.cytology,
            r.cytology_exam, r.colposcopy, r.eligibility, r.treated_on, r.model_assisted]


class VisitIndex(RowIndex):
    """Visits by day (``ordered``) and by woman (``by_patient``); a row's ``age`` (at the visit) is
    made when the indicators first need it and forgotten when her record changes."""

    def __init__(self) -> None:
        super().__init__()
        self.ordered = SortedRows()
        self.by_patient: dict[str, list[VisitRow]] = {}

    def _row(self, chunk_no, doc_id, seq, uuid, post_id, patient_uuid, day, visit_type, hiv, hpv, via, cytology,
             cytology_exam, colposcopy, eligibility, treated_on, model_assisted) -> VisitRow:
        row = VisitRow()
        row.uuid, row.seq, row.chunk, row.doc_id = uuid, seq, chunk_no, doc_id
        row.post_id, row.patient_uuid, row.date, row.key = post_id, patient_uuid, day, (day, uuid)
        row.visit_type, row.hiv, row.hpv, row.via, row.cytology = visit_type, hiv, hpv, via, cytology
        row.cytology_exam, row.colposcopy, row.eligibility = cytology_exam, colposcopy, eligibility
        row.treated_on, row.model_assisted, row.age = treated_on, model_assisted, None
        row.screened, row.positive = screening_flags(hpv, via, colposcopy)
        row.cell = None          # made when the indicators first need it (pathway.indicators.visit_cell)
        return row

    def row_from(self, chunk_no, doc_id, r):
        def result(part):
            value = r.get(part)
            return _intern(value.get("result") or NOT_DONE) if isinstance(value, dict) else NOT_DONE
        treatment = r.get("treatment") if isinstance(r.get("treatment"), dict) else {}
        eligibility = r.get("eligibility") if isinstance(r.get("eligibility"), dict) else {}
        cytology = r.get("cytology") if isinstance(r.get("cytology"), dict) else {}
        return self._row(chunk_no, doc_id, r.get("_seq", 0), r["uuid"], _intern(r.get("post_id", "")),
                         _intern(r.get("patient_uuid") or ""), _intern(r.get("date") or ""),
                         _intern(r.get("visit_type") or NOT_RECORDED), _intern(r.get("hiv_status") or "unknown"),
                         result("hpv"), result("via"), result("cytology"), cytology.get("exam_uuid") or "",
                         result("colposcopy"), _intern(eligibility.get("outcome") or "not_assessed"),
                         (treatment.get("date") or "") if treatment.get("status") == RECEIVED else "",
                         bool(r.get("model_assisted")))

    def to_summary(self, row):
        return _summary_fields(row)

    def from_summary(self, chunk_no, item):
        return self._row(chunk_no, *item)

    def placement(self, row):
        return row.key, row.patient_uuid

    def _add(self, row):
        self.ordered.add(row)
        self.by_patient.setdefault(row.patient_uuid, []).append(row)

    def _drop(self, row):
        self.ordered.remove(row)
        same = self.by_patient.get(row.patient_uuid, [])
        same[:] = [r for r in same if r is not row]

    def patient_changed(self, patient_uuid: str) -> None:
        for row in self.by_patient.get(patient_uuid, ()):
            row.age = row.cell = None

    def finish_loading(self) -> None:
        self.ordered.rows()

    def between(self, date_from: str | None, date_to: str | None) -> list[VisitRow]:
        """Visits from ``date_from`` to ``date_to`` (ISO days, inclusive; either may be None)."""
        return self.ordered.between(date_from, date_to) if (date_from or date_to) else self.ordered.rows()


class Visits(PatientRecords):
    kind = "visits"
    capacity = 128          # ~1.5 KB a visit: ~200 KB a chunk

    def __init__(self, core: StoreCore):
        super().__init__(core, VisitIndex(), open_chunks=32)

    def on_day(self, patient_uuid: str, day: str, post_id: str) -> dict | None:
        """Her visit on ``day`` at post ``post_id``, if there is one (under a lock)."""
        for row in self.index.by_patient.get(patient_uuid, ()):
            if row.date == day and row.post_id == post_id:
                return public(self.stored(row))
        return None

