"""The catalogue's cascade rules in one call, and the probabilities of each step.

Breast histopathology runs ``breast_binary``; its top class picks the subtype model, and a
ductal carcinoma adds the grade. Every step's logits are divided by the model's calibrated
temperature before the softmax; a step whose top probability is below the model's
``refer_below`` (when the pack sets one) is marked uncertain, and so is the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..catalogue import Analysis
from .pack import ModelEntry
from .runtimes.base import ModelOutput

# Probabilities are shown as percentages with one decimal; six places keep sums honest.
_DECIMALS = 6


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax in float64 (no overflow for any logit)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


@dataclass
class Step:
    model: str
    version: str
    demo: bool
    pack: str
    probabilities: dict[str, float]
    top: str
    confidence: float
    uncertain: bool

    def to_json(self) -> dict:
        return {"model": self.model, "version": self.version, "demo": self.demo, "pack": self.pack,
                "probabilities": dict(self.probabilities), "top": self.top,
                "confidence": self.confidence, "uncertain": self.uncertain}


def make_step(entry: ModelEntry, pack_id: str, logits: np.ndarray) -> Step:
    if logits.shape != (len(entry.classes),):
        from ..errors import PackError
        raise PackError(f"The model {entry.id} gave {logits.shape} outputs for {len(entry.classes)} classes.",
                        "The pack is inconsistent; reinstall it or roll back to the previous pack.")
    probs = softmax(logits, entry.temperature)
    best = int(np.argmax(probs))
    confidence = round(float(probs[best]), _DECIMALS)
    return Step(
        model=entry.id, version=entry.version, demo=entry.demo, pack=pack_id,
        probabilities={c: round(float(p), _DECIMALS) for c, p in zip(entry.classes, probs)},
        top=entry.classes[best], confidence=confidence,
        uncertain=entry.refer_below is not None and float(probs[best]) < entry.refer_below,
    )


@dataclass
class CascadeOutcome:
    steps: list[Step]
    path: list[tuple[str, str]]
    label: str
    uncertain: bool
    final_output: ModelOutput           # logits and features of the last step (for the heatmap)
    skipped: list[dict] = field(default_factory=list)


def run_cascade(analysis: Analysis, has_model: Callable[[str], bool],
                run_model: Callable[[str], tuple[ModelEntry, str, ModelOutput]]) -> CascadeOutcome:
    """Run ``analysis`` from its first model, following the rules on each step's top class.

    ``run_model(model_id)`` returns the model's pack entry, its pack id and its output;
    ``has_model(model_id)`` says whether a next step can run. A missing next model ends
    the cascade there, and the result says which step was skipped.
    """
    steps: list[Step] = []
    path: list[tuple[str, str]] = []
    skipped: list[dict] = []
    model_id: str | None = analysis.first_model
    output: ModelOutput | None = None
    while model_id is not None:
        entry, pack_id, output = run_model(model_id)
        step = make_step(entry, pack_id, output.logits)
        steps.append(step)
        path.append((model_id, step.top))
        rule = analysis.next_model(model_id, step.top)
        model_id = None
        if rule is not None:
            if has_model(rule.then_model):
                model_id = rule.then_model
            else:
                skipped.append({"model": rule.then_model, "reason": "not installed"})
    assert output is not None
    return CascadeOutcome(steps=steps, path=path, label=analysis.label_of(path),
                          uncertain=any(s.uncertain for s in steps), final_output=output, skipped=skipped)
