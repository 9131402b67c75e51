"""Checks on records that come from another store (USB bundles, old layouts) before they are merged.

A bundle is signed by its post, but a post can run other software or be damaged: a record that
would break an index, a query or a statistic is refused with a sentence naming it.
"""
from __future__ import annotations

import math
import re

from .. import catalogue
from ..errors import UserError
from ..fsutil import is_sha256
from . import ordering
from .fields import clone, is_time, is_uuid, text
from .users import ROLES, check_username


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
    change = ordering.problem(out)
    if change:
        raise _refuse(kind, record, change)
    try:
        if kind == "users":
            out["username"] = check_username(out.get("username"))
            if out.get("role") not in ROLES:
                raise _refuse(kind, record, f"its role {out.get('role')!r} is not known")
        elif kind == "patients":
            from .patients import check_pid
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
    problem = _result_problem(out.get("result"), analysis) or _decisions_problem(out, analysis)
    if problem:
        raise _refuse("exams", record, problem)


# The pages, the PDF and the statistics read an exam's result and decisions as this software
# writes them; a record from other software (signed by its post all the same) must not be
# able to break them, so it is held to that shape before anything is merged.

def _is_probability(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def _step_problem(step, n: int, analysis_id: str) -> str | None:
    where = f"step {n} of its model result"
    if not isinstance(step, dict):
        return f"{where} is not a JSON object"
    model_id = step.get("model")
    if model_id not in catalogue.ANALYSES[analysis_id].model_ids:
        return f"{where} names the model {model_id!r}, which is not a model of {analysis_id}"
    classes = catalogue.MODELS[model_id].class_ids
    probabilities = step.get("probabilities", {})
    if not isinstance(probabilities, dict):
        return f"{where} has no table of probabilities"
    for class_id, p in probabilities.items():
        if class_id not in classes:
            return f"{where} gives a probability for {class_id!r}, which is not a class of {model_id}"
        if not _is_probability(p):
            return f"{where} gives {class_id!r} a probability that is not a number from 0 to 1"
    if "top" in step and step["top"] not in classes:
        return f"{where} names the top class {step['top']!r}, which is not a class of {model_id}"
    if "confidence" in step and not _is_probability(step["confidence"]):
        return f"{where} has a confidence that is not a number from 0 to 1"
    if not isinstance(step.get("version", ""), str):
        return f"{where} has a model version that is not text"
    return None


def _result_problem(result, analysis_id: str) -> str | None:
    """What is wrong with an exam's model result (None: the pages can show it)."""
    if result is None:
        return None
    if not isinstance(result, dict):
        return "its model result is not a JSON object"
    steps = result.get("steps", [])
    if not isinstance(steps, list):
        return "its model result's steps are not a list"
    for n, step in enumerate(steps, 1):
        problem = _step_problem(step, n, analysis_id)
        if problem:
            return problem
    path = result.get("path", [])
    if not isinstance(path, list) or not all(
            isinstance(p, list) and len(p) == 2 and p[0] in catalogue.ANALYSES[analysis_id].model_ids
            and p[1] in catalogue.MODELS[p[0]].class_ids for p in path):
        return "its model result's path is not a list of [model, class] of this analysis"
    if "label" in result and result["label"] not in catalogue.all_label_ids()[analysis_id]:
        return f"its model result's label {result['label']!r} is not a class of {analysis_id}"
    for key in ("quality", "out_of_scope", "pack", "heatmap", "timings_ms", "image_info"):
        if not isinstance(result.get(key, {}), dict):
            return f"its model result's {key} is not a JSON object"
    warnings = result.get("quality", {}).get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, dict) and isinstance(w.get("message", ""), str)
                                                 for w in warnings):
        return "its model result's quality warnings are not a list of messages"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in result.get("timings_ms", {}).values()):
        return "its model result's timings are not numbers"
    return None


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
