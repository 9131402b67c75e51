"""Checks on records that come from another store (USB bundles, old layouts) before they are merged.

A bundle is signed by its post, but a post can run other software or be damaged: a record that
would break an index, a query or a statistic is refused with a sentence naming it.
"""
from __future__ import annotations

import re

from .. import catalogue
from ..errors import UserError
from ..fsutil import is_sha256
from .fields import clone, is_time, is_uuid, text
from .patients import check_pid
from .result_schema import result_problem
from .users import check_username
from .vocabulary import ROLES


def _refuse(kind: str, record, why: str) -> UserError:
    uuid = record.get("uuid") if isinstance(record, dict) else None
    return UserError(f"A {kind} record{f' ({uuid})' if isinstance(uuid, str) else ''} cannot be imported: {why}.",
                     "The bundle may be damaged or from incompatible software; ask the post for a new export.")


def check_incoming(kind: str, record) -> dict:
    """A clean copy of ``record`` (private ``_`` keys dropped), or a ``UserError`` saying what is wrong."""
    if not isinstance(record, dict):
        raise _refuse(kind, record, "it is not a JSON object")
    out = {k: clone(v) for k, v in record.items() if isinstance(k, str) and not k.startswith("_")}
    if not is_uuid(out.get("uuid")):
        raise _refuse(kind, record, "its uuid is missing or malformed")
    post_id = out.get("post_id")
    if not isinstance(post_id, str) or not 0 < len(post_id) <= 64:
        raise _refuse(kind, record, "its post id is missing")
    for key in ("created_at", "updated_at"):
        if not is_time(out.get(key)):
            raise _refuse(kind, record, f"its {key} is not a UTC time")
    try:
        if kind == "users":
            out["username"] = check_username(out.get("username"))
            if out.get("role") not in ROLES:
                raise _refuse(kind, record, f"its role {out.get('role')!r} is not known")
        elif kind == "patients":
            out["pid"] = check_pid(out.get("pid"))
            out["full_name"] = text(out.get("full_name"), "full name", max_len=200, required=True)
        elif kind == "exams":
            _check_exam(out, record)
        elif kind == "audit":
            text(out.get("action"), "audit action", max_len=64, required=True)
    except UserError as exc:
        if exc.message.startswith(f"A {kind} record"):
            raise
        raise _refuse(kind, record, exc.message.rstrip(".")) from None
    return out


def _check_exam(out: dict, record: dict) -> None:
    analysis = out.get("analysis")
    if analysis not in catalogue.ANALYSES:
        raise _refuse("exams", record, f"its analysis {analysis!r} is not known")
    if out.get("label") not in catalogue.all_label_ids()[analysis]:
        raise _refuse("exams", record, f"its label {out.get('label')!r} is not a class of {analysis}")
    # The final label is the clinician's decision: a class or a referral (no class).
    if out.get("final_label") not in catalogue.all_decision_ids()[analysis]:
        raise _refuse("exams", record, f"its final_label {out.get('final_label')!r} is not a decision for {analysis}")
    if not is_uuid(out.get("patient_uuid")):
        raise _refuse("exams", record, "it names no patient")
    image = out.get("image")
    if image is not None and (not isinstance(image, dict) or not is_sha256(image.get("sha256"))
                              or not re.match(r"^[a-z]{3,4}$", str(image.get("ext", "")))):
        raise _refuse("exams", record, "its image reference is malformed")
    problem = result_problem(out.get("result"), analysis) or _decisions_problem(out, analysis)
    if problem:
        raise _refuse("exams", record, problem)


# The decisions are held to the shape the pages read, as the result is (appliance.store.result_schema).

def _decision_problem(decision, analysis_id: str, what: str) -> str | None:
    if not isinstance(decision, dict):
        return f"its {what} is not a JSON object"
    if decision.get("label") not in catalogue.all_decision_ids()[analysis_id]:
        return f"its {what} {decision.get('label')!r} is not a decision for {analysis_id}"
    if not isinstance(decision.get("agrees", False), bool) or not isinstance(decision.get("note", ""), str):
        return f"its {what} is malformed (agrees must be true or false, the note text)"
    if not isinstance(decision.get("by") or "", str) or ("at" in decision and not is_time(decision["at"])):
        return f"its {what} names no user or time"
    return None


def _decisions_problem(out: dict, analysis_id: str) -> str | None:
    """What is wrong with an exam's decision and the earlier decisions it keeps (None: fine)."""
    if out.get("decision") is not None:
        problem = _decision_problem(out["decision"], analysis_id, "decision")
        if problem:
            return problem
    history = out.get("decision_history", [])
    if not isinstance(history, list):
        return "its earlier decisions are not a list"
    for earlier in history:
        problem = _decision_problem(earlier, analysis_id, "earlier decision")
        if problem:
            return problem
    return None
