"""The shape of an exam's stored model result, checked the same way when an exam is saved here and
when one arrives from another store (a USB bundle).

The pages, the PDF and the statistics read a result as the engine writes it (docs/ARCHITECTURE.md,
"Result JSON"); a result from other software (signed by its post all the same) or from a caller's
bug must not be able to break them, so it is held to that shape before anything is stored.
"""
from __future__ import annotations

import json
import math

from .. import catalogue
from ..errors import UserError

MAX_RESULT_BYTES = 256 * 1024
# Not stored: the engine's note on whether a heatmap can be drawn is for the page shown at once.
UNSTORED = ("heatmap",)
_OBJECTS = ("quality", "out_of_scope", "pack", "heatmap", "timings_ms", "image_info")


def checked_result(result, analysis_id: str) -> dict:
    """The result as an exam stores it (a plain JSON copy, without the heatmap note), or a
    ``UserError`` saying what is wrong. None is an empty result."""
    if result is None:
        return {}
    if isinstance(result, dict):
        result = {k: v for k, v in result.items() if k not in UNSTORED}
    problem = result_problem(result, analysis_id)
    if problem:
        raise UserError(f"The exam cannot be stored: {problem}.", "Run the analysis again.")
    return json.loads(json.dumps(result, ensure_ascii=False))


def result_problem(result, analysis_id: str) -> str | None:
    """What is wrong with an exam's model result, as a phrase ("the model result's steps are not a
    list"); None when the pages can show it. ``analysis_id`` must be a known analysis."""
    if result is None:
        return None
    if not isinstance(result, dict):
        return "the model result is not a JSON object"
    try:
        size = len(json.dumps(result, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        return f"the model result is not plain JSON data ({exc})"
    if size > MAX_RESULT_BYTES:
        return f"the model result is too large ({size // 1024} KB; at most {MAX_RESULT_BYTES // 1024} KB)"
    analysis = catalogue.ANALYSES[analysis_id]
    if "label" in result and result["label"] not in catalogue.all_label_ids()[analysis_id]:
        return f"the model result's label {result['label']!r} is not a class of {analysis.name}"
    steps = result.get("steps", [])
    if not isinstance(steps, list):
        return "the model result's steps are not a list"
    for n, step in enumerate(steps, 1):
        problem = _step_problem(step, n, analysis_id)
        if problem:
            return problem
    path = result.get("path", [])
    if not isinstance(path, list) or not all(
            isinstance(p, list) and len(p) == 2 and p[0] in analysis.model_ids
            and p[1] in catalogue.MODELS[p[0]].class_ids for p in path):
        return "the model result's path is not a list of [model, class] of this analysis"
    for key in _OBJECTS:
        if not isinstance(result.get(key, {}), dict):
            return f"the model result's {key} is not a JSON object"
    warnings = result.get("quality", {}).get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, dict) and isinstance(w.get("message", ""), str)
                                                 for w in warnings):
        return "the model result's quality warnings are not a list of messages"
    if not all(_is_number(v) for v in result.get("timings_ms", {}).values()):
        return "the model result's timings are not numbers"
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_probability(value) -> bool:
    return _is_number(value) and math.isfinite(value) and 0 <= value <= 1


def _step_problem(step, n: int, analysis_id: str) -> str | None:
    where = f"step {n} of the model result"
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
