"""The exams' index: one small row per exam (no model output, no image data) for the kiosk's
browse page, the image library and the statistics; full records are read from their chunk file
when shown. A row's ``cell`` — (post, month, analysis, final class, decision, age group, demo) —
is shared by all rows alike, so statistics over 200,000 exams are one C-level ``Counter`` pass.
"""
from __future__ import annotations

import sys
from collections import Counter
from typing import Any, Callable

from .. import catalogue
# One definition of the statistics age groups ("<20", "20-29" … "70+", "unknown") for the store,
# the kiosk and the exchange; ages themselves are counted here from the patient index (the same
# rule as i18n.age.age_at, in string arithmetic: statistics group every exam).
from ..i18n.age import age_group
from .kinds import RowIndex
from .sorted_rows import SortedRows
from .vocabulary import AWAITING, decision_of

# When a name or card-number filter matches fewer patients than this, their exams are
# collected per patient; otherwise the analysis list is scanned. Both are exact.
_FEW_PATIENTS = 2000

_intern = sys.intern


class ExamRow:
    __slots__ = ("uuid", "seq", "chunk", "doc_id", "created_at", "patient_uuid", "analysis", "label",
                 "final_label", "decision", "post_id", "sha256", "ext", "demo", "key", "cell")


class ExamIndex(RowIndex):
    def __init__(self, age_at: Callable[[str, str], int | None], patient_uuid: Callable[[str], str]) -> None:
        super().__init__()
        self._patient_uuid = patient_uuid
        self.ordered = SortedRows()
        self.by_analysis: dict[str, SortedRows] = {}
        self.by_patient: dict[str, list[ExamRow]] = {}
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
        return row.key, row.analysis, row.patient_uuid

    def _add(self, row):
        self.ordered.add(row)
        rows = self.by_analysis.get(row.analysis)
        if rows is None:
            rows = self.by_analysis[row.analysis] = SortedRows()
        rows.add(row)
        self.by_patient.setdefault(row.patient_uuid, []).append(row)

    def _drop(self, row):
        self.ordered.remove(row)
        self.by_analysis[row.analysis].remove(row)
        same = self.by_patient.get(row.patient_uuid, [])
        same[:] = [r for r in same if r is not row]

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
