"""The exam-level verdict from several fields of view: one rule, for the box and for evaluation.

An exam is a slide (or a set of colposcope photos), and the models see its fields one at a time.
The exam's probabilities are the **mean of the first model's calibrated probabilities over the
exam's usable fields** (fields the quality gate or the decoder left out do not vote). The mean
keeps the calibration honest (an average of calibrated probabilities is still a probability),
lets no single blurry field decide, and is the rule published slide-level systems start from.

``bccdms-export compare`` groups held-out fields by exam with this very function; the box's
multi-field exams (issue 15) are to call it too, so that figures measured by the ML team are
figures of what the box does. Pure Python: no NumPy needed, nothing imported but the standard library.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

RULE = "mean of the first model's calibrated probabilities over the exam's usable fields"


def exam_probabilities(fields: Sequence[Mapping[str, float]],
                       usable: Iterable[bool] | None = None) -> dict[str, float]:
    """The exam's class probabilities: the mean over the usable fields (all when ``usable`` is None).

    ``fields``: one mapping class → calibrated probability per field, the same classes in each.
    Raises ValueError when no field is usable (an exam without a usable field has no verdict)."""
    keep = [f for f, ok in zip(fields, usable if usable is not None else [True] * len(fields)) if ok]
    if not keep:
        raise ValueError("no usable field: the exam has no verdict")
    classes = list(keep[0])
    if any(set(f) != set(classes) for f in keep):
        raise ValueError("the fields do not have the same classes")
    return {c: sum(float(f[c]) for f in keep) / len(keep) for c in classes}


def top_class(probabilities: Mapping[str, float]) -> tuple[str, float]:
    """(class, probability) of the most probable class; ties go to the class listed first."""
    best = max(probabilities, key=lambda c: probabilities[c])
    return best, float(probabilities[best])
