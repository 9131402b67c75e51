"""The promotion rule: when a challenger model is *recommended* over the champion the posts run.

This module is the one place the rule lives; ``compare`` applies it, ``pack --recommended`` refuses
a challenger it fails (unless ``--override "reason"``), and the post shows its verdict.

The rule, per model, on the locked held-out cases at exam level (``compare``):

1. **Sensitivity** (the share of abnormal/malignant cases found; models with a positive class in
   the catalogue, ``catalogue.positive_classes``) may not fall by more than
   ``MAX_SENSITIVITY_DROP`` (1 point) **at the lower bound** of the 95 % interval of the paired
   difference challenger - champion (bootstrap over patients). A challenger is not recommended on
   the hope that a drop is noise: the interval must rule out a drop of more than a point.
2. **Balanced accuracy** may not be lower: the challenger's point estimate is at least the
   champion's. (Balanced, so that a model cannot win by calling the common class more often.)

A pack is recommended when every model compared passes both. Nothing else (ECE, the refer band,
INT8 agreement) decides it; they are reported beside it for people to read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_SENSITIVITY_DROP = 0.01

TEXT = ("sensitivity not lower by more than 1 point at the lower bound of the 95 % interval of the paired "
        "difference (bootstrap over patients), and balanced accuracy not lower (point estimate), at exam level, "
        "for every model compared")


@dataclass
class Verdict:
    passes: bool
    reasons: list[str] = field(default_factory=list)       # what failed (empty when it passes)
    checks: list[str] = field(default_factory=list)         # what was checked, in words


def judge(model: dict[str, Any], max_drop: float = MAX_SENSITIVITY_DROP) -> Verdict:
    """The rule on one model's comparison (``compare``'s per-model section)."""
    verdict = Verdict(True)
    diff = model["difference"]
    sens = diff.get("sensitivity")
    if sens is not None and sens.get("low") is not None:
        ok = sens["low"] >= -max_drop
        verdict.checks.append(f"sensitivity change {_pts(sens['point'])} (95 % interval {_pts(sens['low'])} to "
                              f"{_pts(sens['high'])}): lower bound {'≥' if ok else '<'} {_pts(-max_drop)}")
        if not ok:
            verdict.passes = False
            verdict.reasons.append(f"sensitivity may fall by up to {_pts(-sens['low'])[1:]} (more than "
                                   f"{max_drop * 100:g} point)")
    else:
        verdict.checks.append("sensitivity: not applicable (the model has no positive class) or not measurable")
    bal = diff["balanced_accuracy"]
    ok = bal["point"] >= 0
    verdict.checks.append(f"balanced accuracy change {_pts(bal['point'])}: {'not lower' if ok else 'lower'}")
    if not ok:
        verdict.passes = False
        verdict.reasons.append(f"balanced accuracy is lower by {_pts(-bal['point'])[1:]}")
    return verdict


def judge_all(models: dict[str, dict[str, Any]]) -> tuple[bool, dict[str, Verdict]]:
    verdicts = {model_id: judge(section) for model_id, section in models.items()}
    return bool(verdicts) and all(v.passes for v in verdicts.values()), verdicts


def _pts(value: float) -> str:
    return f"{value * 100:+.1f} points"
