"""Exams: one analysed image of a patient, the model's result and the clinician's decision.

Each exam has a row in the exams' index (``exam_index``), shared with the image library; the
full record is read from its chunk file when shown. An exam is made with the core, that index,
the patients (whom exams name) and the image library (where their images go).
"""
from __future__ import annotations

from .. import catalogue
from ..errors import NotFound, UserError
from ..i18n import N_
from .core import StoreCore
from .exam_index import ExamIndex, ExamRow, age_group
from .fields import day_bound, later_than, public, text
from .images import ImageFacts, ImageLibrary
from .kinds import RecordKind
from .patients import Patients
from .result_schema import MAX_RESULT_BYTES, checked_result
# The vocabulary of an exam's state, re-exported: the exchange, the kiosk and the tests read it
# from here as well as from appliance.store.vocabulary.
from .vocabulary import (AGREES, AWAITING, DECIDED, DECISION_NAMES, DISAGREES, REFERRED, STATUSES, decision_of,
                         research_label)

__all__ = ["Exams", "ExamIndex", "ExamRow", "SOURCES", "MAX_NOTE", "MAX_RESULT_BYTES", "age_group", "AGREES",
           "AWAITING", "DECIDED", "DECISION_NAMES", "DISAGREES", "REFERRED", "STATUSES", "decision_of",
           "research_label"]

SOURCES = ("file", "camera", "phone", "cli")
MAX_NOTE = 2000


def _labels(analysis: str) -> tuple[str, ...]:
    return catalogue.all_label_ids()[analysis]


def _check_label(analysis: str, label, what: str) -> str:
    if not isinstance(label, str) or label not in _labels(analysis):
        raise UserError(f"{label!r} is not a class of {catalogue.analysis(analysis).name}.",
                        f"The {what} must be one of: {', '.join(_labels(analysis))}.")
    return label


def _check_decision(analysis: str, label) -> str:
    """A decision is one of the analysis's classes or a referral (catalogue.REFERRALS)."""
    choices = catalogue.all_decision_ids()[analysis]
    if not isinstance(label, str) or label not in choices:
        raise UserError(f"{label!r} is not a class of {catalogue.analysis(analysis).name}, nor a referral.",
                        f"The decision must be one of: {', '.join(choices)}.")
    return label


def _check_same_image(result: dict, sha256: str) -> None:
    """A result that names the image it was made from is stored only with that image's bytes (a
    camera or phone image arriving while the models ran must never be paired with the result).
    ``sha256`` is the bytes' as the image library knows them: no second hash of the image."""
    made_from = (result.get("image_info") or {}).get("sha256") if isinstance(result.get("image_info"), dict) else None
    if made_from and made_from != sha256:
        raise UserError(N_("This result was made from another image, not the image being saved."),
                        N_("Nothing was saved. Process the image again."))


class Exams(RecordKind):
    kind = "exams"
    capacity = 64          # ~130 KB a chunk: a save rewrites little, a cold read parses little

    def __init__(self, core: StoreCore, index: ExamIndex, patients: Patients, images: ImageLibrary):
        super().__init__(core, index, open_chunks=64)
        self._patients = patients
        self._images = images

    def get(self, uuid: str) -> dict | None:
        with self._core.reading():
            row = self.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            return public(self.stored(row)) if row else None

    def for_patient(self, patient_uuid: str) -> list[dict]:
        with self._core.reading():
            rows = sorted(self.index.by_patient.get(patient_uuid, ()), key=lambda r: r.key, reverse=True)
            return [public(self.stored(r)) for r in rows]

    def query(self, *, analysis: str | None = None, patient_uuid: str | None = None, pid: str | None = None,
              name_prefix: str | None = None, date_from=None, date_to=None, label: str | None = None,
              post_id: str | None = None, offset: int = 0, limit: int = 25) -> tuple[list[dict], int]:
        """Exams matching every filter given, newest first; returns one page and the total.
        ``post_id``: one health post's exams only (a supervisor's box holds many posts').

        ``name_prefix``: every word typed starts a word of the patient's name. ``pid``: the card
        number (exact, ignoring case and dashes). ``label``: the final class. Dates are inclusive
        days (``YYYY-MM-DD``) or exact times.
        """
        if analysis is not None:
            catalogue.analysis(analysis)
        low, high = day_bound(date_from, "start date", end=False), day_bound(date_to, "end date", end=True)
        offset, limit = max(0, int(offset)), max(0, min(int(limit), 1000))
        with self._core.reading():
            patients: set[str] | None = None
            pidx = self._patients.index
            if patient_uuid is not None:
                patients = {patient_uuid}
            if pid is not None:
                found = pidx.with_pid(pid)
                patients = found if patients is None else patients & found
            if name_prefix is not None and name_prefix.strip():
                found = pidx.match_name(name_prefix)
                patients = found if patients is None else patients & found
            rows, total = self.index.select(analysis=analysis, patients=patients, date_from=low, date_to=high,
                                            label=label, post_id=post_id, offset=offset, limit=limit)
            return [public(self.stored(r)) for r in rows], total

    def save(self, exam: dict, image_bytes: bytes, *, by: str | None, patient: dict | None = None,
             image_facts: ImageFacts | None = None) -> dict:
        """Store an exam and its image. ``exam`` holds ``patient_uuid``, ``analysis``, ``result`` (the
        engine's JSON) and optionally ``source``, ``label``, ``demo`` and ``decision`` ({label, note}).

        ``patient``: the patient's record as the store returned it just now (the caller looked it
        up already): the patient is then looked up once, under the writer lock. ``image_facts``:
        what the caller's decoder found about ``image_bytes`` (sha256, extension, size), so the
        image is neither hashed nor parsed again here (``ImageLibrary.put`` still checks them)."""
        if not isinstance(exam, dict):
            raise UserError("The exam must be a JSON object.", "Run the analysis again.")
        analysis = catalogue.analysis(exam.get("analysis")).id
        result = checked_result(exam.get("result"), analysis)
        label = _check_label(analysis, exam.get("label") or result.get("label"), "model's class")
        source = exam.get("source") or "file"
        if source not in SOURCES:
            raise UserError(f"The image source {source!r} is not known.", f"Use one of: {', '.join(SOURCES)}.")
        decision_in = exam.get("decision")
        if decision_in is not None and not isinstance(decision_in, dict):
            raise UserError("The decision must be a JSON object with a label.", "Choose the final class again.")
        final = _check_decision(analysis, decision_in["label"]) if decision_in else label
        note = text((decision_in or {}).get("note", ""), "note", max_len=MAX_NOTE, multiline=True)
        demo = bool(exam["demo"]) if "demo" in exam else bool(result.get("demo", False))
        patient_uuid = patient["uuid"] if patient is not None else exam.get("patient_uuid")
        if patient is not None and exam.get("patient_uuid", patient_uuid) != patient_uuid:
            raise UserError("The exam names another patient than the one given.", "Choose the patient again.")
        if patient is None:
            # Before the image is stored, so an exam of nobody stores nothing.
            with self._core.reading():
                if patient_uuid not in self._patients.index.by_uuid:
                    raise _no_patient()
        facts = image_facts or self._images.describe(image_bytes)
        _check_same_image(result, facts.sha256)
        # Content-addressed, so written outside the writer lock; durable before the record naming it.
        image = self._images.put(image_bytes, facts)
        with self._core.writing():
            patient_row = self._patients.index.by_uuid.get(patient_uuid)
            if patient_row is None:
                raise _no_patient()
            record = self._core.new_record({
                "created_by": by, "patient_uuid": patient_row.uuid, "patient_pid": patient_row.pid,
                "analysis": analysis, "source": source, "image": image, "result": result,
                "label": label, "demo": demo, "decision": None, "final_label": label,
                "status": AWAITING})
            if decision_in:
                record.update(decision={"label": final, "agrees": final == label, "note": note, "by": by,
                                        "at": record["created_at"]}, final_label=final, status=DECIDED)
            self.insert(record)
            self._core.audit(by, "exam.save", "exam", record["uuid"],
                             {"patient": patient_row.uuid, "analysis": analysis, "label": label})
            self._images.file_exam(record)
            return public(record)

    def decide(self, uuid: str, label: str, *, note: str = "", by: str | None) -> dict:
        """Record the clinician's final class beside the model's, and re-file the image under it.

        A decision that changes an earlier one never erases it: the earlier decision is appended to
        the record's ``decision_history`` (oldest first; the result page shows it) and the whole
        earlier version of the record is kept in the store's history. The same decision again
        (a second tap: same class, note and person) changes nothing.
        """
        note = text(note, "note", max_len=MAX_NOTE, multiline=True)
        with self._core.writing():
            row = self.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if row is None:
                raise NotFound(N_("This exam is not in the records."), N_("Open the exam again from the patient's page."))
            label = _check_decision(row.analysis, label)
            record = dict(self.stored(row))
            previous = record.get("final_label")
            earlier = record.get("decision") if isinstance(record.get("decision"), dict) else None
            if earlier and (earlier.get("label"), earlier.get("note") or "", earlier.get("by")) == (label, note, by):
                return public(record)
            now = later_than(record.get("updated_at"))
            if earlier:
                self._core.keep_version("exams", record, "decision changed")
                record["decision_history"] = [*(record.get("decision_history") or []), dict(earlier)]
            record.update(decision={"label": label, "agrees": label == record.get("label"), "note": note, "by": by,
                                    "at": now}, final_label=label, status=DECIDED, updated_at=now)
            self.replace(row, record)
            detail = {"label": label, "agrees": label == record.get("label")}
            if previous != label:
                detail["previous"] = previous
            self._core.audit(by, "exam.decide", "exam", uuid, detail)
            image = record.get("image") or {}
            if image.get("sha256"):
                self._images.refile(self.index.by_analysis[row.analysis].rows(), {image["sha256"]})
            return public(record)


def _no_patient() -> NotFound:
    return NotFound(N_("The patient of this exam is not registered."), N_("Register or choose the patient first."))
