"""Exams as CSV for spreadsheets (UTF-8 with a byte-order mark, so Excel reads Ge'ez text)."""
from __future__ import annotations

import csv

IDENTIFIED_COLUMNS = ("exam_uuid", "post_id", "created_at", "patient_uuid", "patient_pid", "analysis",
                      "model_label", "confidence", "uncertain", "final_label", "status", "decision_label",
                      "clinician_agrees", "decided_by", "decided_at", "demo", "image_sha256")
DEIDENTIFIED_COLUMNS = ("exam_id", "post_id", "month", "patient_id", "age_group", "analysis", "model_label",
                        "confidence", "uncertain", "final_label", "status", "decision_label", "clinician_agrees",
                        "demo", "image")
# A cell starting with one of these is run as a formula by spreadsheet programs.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _confidence(result) -> float | None:
    steps = (result or {}).get("steps") or []
    last = steps[-1] if steps and isinstance(steps[-1], dict) else {}
    value = last.get("confidence")
    return round(float(value), 4) if isinstance(value, (int, float)) else None


def identified_row(exam: dict) -> list[str]:
    decision = exam.get("decision") or {}
    image = exam.get("image") or {}
    result = exam.get("result") or {}
    return [_cell(v) for v in (
        exam.get("uuid"), exam.get("post_id"), exam.get("created_at"), exam.get("patient_uuid"),
        exam.get("patient_pid"), exam.get("analysis"), exam.get("label"), _confidence(result),
        result.get("uncertain"), exam.get("final_label"), exam.get("status"), decision.get("label"),
        decision.get("agrees") if decision else None, decision.get("by"), decision.get("at"),
        exam.get("demo"), image.get("sha256"))]


def deidentified_row(record: dict) -> list[str]:
    decision = record.get("decision") or {}
    return [_cell(v) for v in (
        record["id"], record.get("post_id"), record.get("month"), record.get("patient"), record.get("age_group"),
        record.get("analysis"), record.get("label"), _confidence(record.get("result")),
        (record.get("result") or {}).get("uncertain"), record.get("final_label"), record.get("status"),
        decision.get("label"), decision.get("agrees") if decision else None, record.get("demo"),
        record.get("image"))]


class ExamCsv:
    """Write exam rows to a file as they come (the exams are never all in memory)."""

    def __init__(self, path, deidentified: bool):
        self._fh = open(path, "w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(DEIDENTIFIED_COLUMNS if deidentified else IDENTIFIED_COLUMNS)
        self._row = deidentified_row if deidentified else identified_row

    def add(self, record: dict) -> None:
        self._writer.writerow(self._row(record))

    def close(self) -> None:
        self._fh.close()
