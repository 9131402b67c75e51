"""Exams: one analysed image of a patient, the model's result and the clinician's decision.

The index keeps one small row per exam (no model output, no image data) for the kiosk's
browse page and the statistics; full records are read from their chunk file when shown.
A row's ``cell`` — (post, month, analysis, final class, decision, age group, demo) — is shared
by all rows alike, so statistics over 200,000 exams are one C-level ``Counter`` pass.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from .. import catalogue
from ..errors import NotFound, UserError
from ..i18n import N_
# One definition of the statistics age groups ("<20", "20-29" … "70+", "unknown") for the store,
# the kiosk and the exchange; ages themselves are counted here from the patient index (the same
# rule as i18n.age.age_at, in string arithmetic: statistics group every exam).
from ..i18n.age import age_group  # noqa: F401 (exchange imports it from here)
from .fields import day_bound, later_than, public, text
from .kinds import RecordKind, RowIndex
from .sorted_rows import SortedRows

if TYPE_CHECKING:
    from .store import Store

SOURCES = ("file", "camera", "phone", "cli")
MAX_RESULT_BYTES = 256 * 1024
MAX_NOTE = 2000
# The one vocabulary of an exam's state, for records, statistics, exports and the kiosk. A
# record's ``status`` is AWAITING or DECIDED; its decision is AWAITING, AGREES, DISAGREES or
# REFERRED (the clinician gave no class: image not suitable, or refer for a second opinion).
AWAITING, DECIDED = "awaiting_decision", "decided"
AGREES, DISAGREES, REFERRED = "agrees", "disagrees", "referred"
STATUSES = (AWAITING, DECIDED)
# What the kiosk calls each decision (English source strings, translated where shown).
DECISION_NAMES = {AWAITING: N_("Awaiting decision"), AGREES: N_("Clinician agrees with the model"),
                  DISAGREES: N_("Clinician chose another class"), REFERRED: N_("Referred without a class")}
# When a name or card-number filter matches fewer patients than this, their exams are
# collected per patient; otherwise the analysis list is scanned. Both are exact.
_FEW_PATIENTS = 2000

_intern = sys.intern


def decision_of(record: dict) -> str:
    decision = record.get("decision")
    if not decision:
        return AWAITING
    if catalogue.is_referral(decision.get("label")):
        return REFERRED
    return AGREES if decision.get("agrees") else DISAGREES


def research_label(analysis: str, final_label, decision: str, demo: bool) -> str | None:
    """The class a labelled dataset (the image library's ``confirmed`` folders, research exports)
    may file an exam's image under: the clinician's class of a decided exam made with trained
    models. None for a result still awaiting a decision (the model's label is a guess, uncertain
    and out-of-scope ones included: training on it would feed a model its own guesses), for an
    exam made with demo models, and for a decision without a class (a referral). ``decision`` is
    :func:`decision_of`'s value."""
    if demo or decision == AWAITING or final_label not in catalogue.all_label_ids().get(analysis, ()):
        return None
    return final_label


class ExamRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "created_at", "patient_uuid", "analysis", "label",
                 "final_label", "decision", "post_id", "sha256", "ext", "demo", "key", "cell")


class ExamIndex(RowIndex):
    fields = ("uuid", "_seq", "created_at", "patient_uuid", "analysis", "label", "final_label", "decision", "post_id",
              "image", "demo")

    def __init__(self, age_at: Callable[[str, str], int | None], patient_uuid: Callable[[str], str]) -> None:
        super().__init__()
        self._patient_uuid = patient_uuid
        self.ordered = SortedRows()
        self.by_analysis: dict[str, SortedRows] = {}
        self.by_patient: dict[str, list[ExamRow]] = {}
        # The exams of each image (nearly always one): filing an image in the library looks at
        # the exams of that image only, never at every exam of the store.
        self.by_sha: dict[str, ExamRow | list[ExamRow]] = {}
        self._age_at = age_at
        self._cells: dict[tuple, tuple] = {}

    def _row(self, chunk_no, doc_id, seq, uuid, created_at, patient_uuid, analysis, label, final_label, decision,
             post_id, sha256, ext, demo) -> ExamRow:
        row = ExamRow()
        row.uuid, row.seq, row.chunk, row.doc_id = uuid, seq, chunk_no, doc_id
        # The patient's own uuid string: one object per patient, not one per exam.
        row.created_at, row.patient_uuid = created_at, self._patient_uuid(patient_uuid)
        row.analysis, row.label, row.final_label = analysis, label, final_label
        row.decision, row.post_id = decision, post_id
        row.sha256, row.ext, row.demo = sha256, ext, demo
        row.key = (created_at, uuid)
        row.cell = None          # made when statistics first need it (it needs the patient's age)
        return row

    def _cell(self, row: ExamRow) -> tuple:
        cell = row.cell
        if cell is None:
            age = self._age_at(row.patient_uuid, row.created_at)
            cell = (row.post_id, row.created_at[:7], row.analysis, row.final_label, row.decision, age_group(age),
                    row.demo)
            cell = row.cell = self._cells.setdefault(cell, cell)
        return cell

    def row_from(self, chunk_no, doc_id, r):
        # Repeated values share one string object (the cache's marshal keeps that sharing).
        image = r.get("image") or {}
        return self._row(chunk_no, doc_id, r.get("_seq", 0), r["uuid"], r.get("created_at", ""),
                         _intern(r.get("patient_uuid") or ""), _intern(r.get("analysis", "")),
                         _intern(r.get("label") or ""), _intern(r.get("final_label") or r.get("label") or ""),
                         _intern(decision_of(r)), _intern(r.get("post_id", "")), image.get("sha256", ""),
                         _intern(image.get("ext", "")), bool(r.get("demo")))

    def to_summary(self, r):
        return [r.doc_id, r.seq, r.uuid, r.created_at, r.patient_uuid, r.analysis, r.label, r.final_label,
                r.decision, r.post_id, r.sha256, r.ext, r.demo]

    def from_summary(self, chunk_no, item):
        return self._row(chunk_no, *item)

    def placement(self, row):
        return row.key, row.analysis, row.patient_uuid, row.sha256

    def _add(self, row):
        self.ordered.add(row)
        rows = self.by_analysis.get(row.analysis)
        if rows is None:
            rows = self.by_analysis[row.analysis] = SortedRows()
        rows.add(row)
        self.by_patient.setdefault(row.patient_uuid, []).append(row)
        if row.sha256:
            have = self.by_sha.get(row.sha256)
            if have is None:
                self.by_sha[row.sha256] = row
            elif isinstance(have, list):
                have.append(row)
            else:
                self.by_sha[row.sha256] = [have, row]

    def _drop(self, row):
        self.ordered.remove(row)
        self.by_analysis[row.analysis].remove(row)
        same = self.by_patient.get(row.patient_uuid, [])
        same[:] = [r for r in same if r is not row]
        have = self.by_sha.get(row.sha256)
        if have is row:
            del self.by_sha[row.sha256]
        elif isinstance(have, list):
            have[:] = [r for r in have if r is not row]
            if len(have) == 1:
                self.by_sha[row.sha256] = have[0]

    def of_images(self, shas) -> list[ExamRow]:
        """The rows of every exam of these images."""
        out: list[ExamRow] = []
        for sha in shas:
            have = self.by_sha.get(sha)
            if isinstance(have, list):
                out.extend(have)
            elif have is not None:
                out.append(have)
        return out

    def patient_changed(self, patient_uuid: str) -> None:
        for row in self.by_patient.get(patient_uuid, ()):
            row.cell = None

    def finish_loading(self) -> None:
        """Sort what bulk loading left unsorted and make every row's statistics cell, so the
        first query and the first statistics are as fast as the next ones."""
        cell = self._cell
        for row in self.ordered.rows():
            if row.cell is None:
                cell(row)
        for rows in self.by_analysis.values():
            rows.rows()

    # --- queries (under the store's lock) -------------------------------------------------

    def select(self, *, analysis=None, patients: set[str] | None = None, date_from=None, date_to=None,
               label=None, post_id=None, offset=0, limit=25) -> tuple[list[ExamRow], int]:
        """Rows matching every filter given, newest first: one page and the total."""
        if patients is not None and len(patients) < _FEW_PATIENTS:
            rows = [r for p in patients for r in self.by_patient.get(p, ())]
            rows.sort(key=lambda r: r.key)
            patients = None           # already applied
            low, high = date_from, date_to
            rows = [r for r in rows if (low is None or r.created_at >= low) and (high is None or r.created_at <= high)]
        else:
            base = self.ordered if analysis is None else self.by_analysis.get(analysis, SortedRows())
            rows = base.between(date_from, date_to) if (date_from or date_to) else base.rows()
        checks = []
        if analysis is not None:
            checks.append(lambda r: r.analysis == analysis)
        if label is not None:
            checks.append(lambda r: r.final_label == label)
        if post_id is not None:
            checks.append(lambda r: r.post_id == post_id)
        if patients is not None:
            checks.append(lambda r: r.patient_uuid in patients)
        total, page, end = 0, [], offset + limit
        for row in reversed(rows):
            if all(check(row) for check in checks):
                if offset <= total < end:
                    page.append(row)
                total += 1
        return page, total

    def stats(self, date_from=None, date_to=None, include_demo: bool = False, post_id=None) -> dict[str, Any]:
        """Counts of the exams in the period (see ``Store.stats`` for what each one means)."""
        rows = self.ordered.between(date_from, date_to) if (date_from or date_to) else self.ordered.rows()
        if post_id is not None:
            rows = [r for r in rows if r.post_id == post_id]
        cell = self._cell
        cells = Counter(row.cell or cell(row) for row in rows)
        counted = rows if include_demo else [r for r in rows if not r.demo]
        classes = catalogue.all_label_ids()
        out: dict[str, Any] = {"exams": 0, "decided": 0, "awaiting_decision": 0, "referred": 0, "demo_exams": 0,
                               "include_demo": include_demo,
                               "patients_examined": len({r.patient_uuid for r in counted}),
                               "by_analysis": Counter(), "awaiting_by_analysis": Counter(), "by_class": {},
                               "by_month": Counter(), "by_decision": Counter(), "by_post": Counter(),
                               "by_age_group": Counter()}
        for (post, month, analysis, label, decision, age, demo), n in cells.items():
            if demo:
                out["demo_exams"] += n
                if not include_demo:
                    continue          # untrained models: reported apart, never part of a figure
            out["exams"] += n
            out["by_analysis"][analysis] += n
            out["by_month"][month] += n
            out["by_decision"][decision] += n
            out["by_post"][post] += n
            out["by_age_group"][age] += n
            if decision == AWAITING:
                # The model's label is no finding until a clinician decides (uncertain and
                # out-of-scope results included): counted as awaiting, never as a class.
                out["awaiting_decision"] += n
                out["awaiting_by_analysis"][analysis] += n
            elif label in classes.get(analysis, ()):
                out["decided"] += n
                out["by_class"].setdefault(analysis, Counter())[label] += n
            else:
                out["referred"] += n       # decided without a class (a referral): no prevalence either
        out["cells"] = [{"post_id": post, "month": month, "analysis": analysis, "label": label, "decision": decision,
                         "age_group": age, "demo": demo, "count": n}
                        for (post, month, analysis, label, decision, age, demo), n in sorted(cells.items())]
        for key in ("by_analysis", "awaiting_by_analysis", "by_month", "by_decision", "by_post", "by_age_group"):
            out[key] = dict(sorted(out[key].items()))
        out["by_class"] = {a: dict(sorted(c.items())) for a, c in sorted(out["by_class"].items())}
        return out


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


def _check_result(result) -> dict:
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise UserError("The model result must be a JSON object.", "Run the analysis again.")
    result = {k: v for k, v in result.items() if k != "heatmap"}
    try:
        encoded = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"The model result cannot be stored ({exc}).", "Run the analysis again.") from None
    if len(encoded.encode()) > MAX_RESULT_BYTES:
        raise UserError("The model result is too large to store.", "Run the analysis again.")
    return json.loads(encoded)


def _check_same_image(result: dict, image_bytes) -> None:
    """A result that names the image it was made from is stored only with that image's bytes (a
    camera or phone image arriving while the models ran must never be paired with the result)."""
    made_from = (result.get("image_info") or {}).get("sha256") if isinstance(result.get("image_info"), dict) else None
    if made_from and isinstance(image_bytes, (bytes, bytearray, memoryview)) \
            and hashlib.sha256(image_bytes).hexdigest() != made_from:
        raise UserError(N_("This result was made from another image, not the image being saved."),
                        N_("Nothing was saved. Process the image again."))


class Exams(RecordKind):
    kind = "exams"
    capacity = 64          # ~130 KB a chunk: a save rewrites little, a cold read parses little

    def __init__(self, store: "Store", age_at: Callable[[str, str], int | None],
                 patient_uuid: Callable[[str], str]):
        super().__init__(store, ExamIndex(age_at, patient_uuid), open_chunks=64)

    def get(self, uuid: str) -> dict | None:
        with self._store._reading():
            row = self.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            return public(self._raw(row)) if row else None

    def for_patient(self, patient_uuid: str) -> list[dict]:
        with self._store._reading():
            rows = sorted(self.index.by_patient.get(patient_uuid, ()), key=lambda r: r.key, reverse=True)
            return [public(self._raw(r)) for r in rows]

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
        with self._store._reading():
            patients: set[str] | None = None
            pidx = self._store.patients.index
            if patient_uuid is not None:
                patients = {patient_uuid}
            if pid is not None:
                from .patients import pid_key
                found = {r.uuid for r in pidx.by_pid.get(pid_key(pid), ())}
                patients = found if patients is None else patients & found
            if name_prefix is not None and name_prefix.strip():
                found = pidx.match_name(name_prefix)
                patients = found if patients is None else patients & found
            rows, total = self.index.select(analysis=analysis, patients=patients, date_from=low, date_to=high,
                                            label=label, post_id=post_id, offset=offset, limit=limit)
            return [public(self._raw(r)) for r in rows], total

    def save(self, exam: dict, image_bytes: bytes, *, by: str | None) -> dict:
        """Store an exam and its image. ``exam`` holds ``patient_uuid``, ``analysis``, ``result`` (the
        engine's JSON) and optionally ``source``, ``label``, ``demo`` and ``decision`` ({label, note})."""
        if not isinstance(exam, dict):
            raise UserError("The exam must be a JSON object.", "Run the analysis again.")
        analysis = catalogue.analysis(exam.get("analysis")).id
        result = _check_result(exam.get("result"))
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
        _check_same_image(result, image_bytes)
        images = self._store.images
        patients = self._store.patients.index.by_uuid
        with self._store._reading():
            if exam.get("patient_uuid") not in patients:
                raise NotFound(N_("The patient of this exam is not registered."), N_("Register or choose the patient first."))
        # Content-addressed, so written outside the writer lock; durable before the record naming it.
        image = images.put(image_bytes)
        with self._store._writing():
            patient_row = patients.get(exam["patient_uuid"])
            if patient_row is None:
                raise NotFound(N_("The patient of this exam is not registered."), N_("Register or choose the patient first."))
            record = self._store._new_record({
                "created_by": by, "patient_uuid": patient_row.uuid, "patient_pid": patient_row.pid,
                "analysis": analysis, "source": source, "image": image, "result": result,
                "label": label, "demo": demo, "decision": None, "final_label": label,
                "status": AWAITING})
            if decision_in:
                record.update(decision={"label": final, "agrees": final == label, "note": note, "by": by,
                                        "at": record["created_at"]}, final_label=final, status=DECIDED)
            self._insert(record)
            self._store._audit(by, "exam.save", "exam", record["uuid"],
                               {"patient": patient_row.uuid, "analysis": analysis, "label": label})
            images.file_exam(record)
            return public(record)

    def decide(self, uuid: str, label: str, *, note: str = "", by: str | None) -> dict:
        """Record the clinician's final class beside the model's, and re-file the image under it.

        A decision that changes an earlier one never erases it: the earlier decision is appended to
        the record's ``decision_history`` (oldest first; the result page shows it) and the whole
        earlier version of the record is kept in the store's history. The same decision again
        (a second tap: same class, note and person) changes nothing.
        """
        note = text(note, "note", max_len=MAX_NOTE, multiline=True)
        with self._store._writing():
            row = self.index.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if row is None:
                raise NotFound(N_("This exam is not in the records."), N_("Open the exam again from the patient's page."))
            label = _check_decision(row.analysis, label)
            record = dict(self._raw(row))
            previous = record.get("final_label")
            earlier = record.get("decision") if isinstance(record.get("decision"), dict) else None
            if earlier and (earlier.get("label"), earlier.get("note") or "", earlier.get("by")) == (label, note, by):
                return public(record)
            now = later_than(record.get("updated_at"))
            if earlier:
                self._store._history.keep("exams", record, "decision changed")
                record["decision_history"] = [*(record.get("decision_history") or []), dict(earlier)]
            record.update(decision={"label": label, "agrees": label == record.get("label"), "note": note, "by": by,
                                    "at": now}, final_label=label, status=DECIDED, updated_at=now)
            self._replace(row, record)
            detail = {"label": label, "agrees": label == record.get("label")}
            if previous != label:
                detail["previous"] = previous
            self._store._audit(by, "exam.decide", "exam", uuid, detail)
            image = record.get("image") or {}
            if image.get("sha256"):
                self._store.images.refile_images({image["sha256"]})
            return public(record)
