"""The figures of `compare`, the exam-level rule, the promotion rule and the drift statistic, on
constructed data whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from appliance import catalogue, drift
from appliance.inference.aggregate import RULE, exam_probabilities, top_class
from export import promotion
from export.compare import Units, bootstrap, confusion_figures, mcnemar


def test_exam_verdict_is_the_mean_over_usable_fields():
    fields = [{"normal": 0.9, "abnormal": 0.1}, {"normal": 0.3, "abnormal": 0.7}, {"normal": 0.0, "abnormal": 1.0}]
    assert exam_probabilities(fields) == pytest.approx({"normal": 0.4, "abnormal": 0.6})
    # A blurred field (the third) does not vote.
    assert exam_probabilities(fields, [True, True, False]) == pytest.approx({"normal": 0.6, "abnormal": 0.4})
    assert top_class({"normal": 0.6, "abnormal": 0.4}) == ("normal", 0.6)
    with pytest.raises(ValueError):
        exam_probabilities(fields, [False, False, False])
    assert "usable fields" in RULE


def test_catalogue_knows_the_positive_classes():
    assert catalogue.positive_classes("pap_smear") == ("abnormal",)
    assert catalogue.positive_classes("breast_binary") == ("malignant",)
    assert catalogue.positive_classes("cervix_histopathology") == ("precancer", "squamous_cell_carcinoma",
                                                                   "adenocarcinoma")
    assert catalogue.positive_classes("cervix_type") == () and catalogue.negative_class("breast_grade") is None
    assert catalogue.class_path("breast_histopathology", "ductal_carcinoma") == {
        "breast_binary": "malignant", "breast_malignant_subtype": "ductal_carcinoma"}


def test_confusion_figures_are_the_textbook_ones():
    # rows truth (normal, abnormal): 40 normal of which 4 called abnormal; 10 abnormal of which 9 found
    m = np.array([[36, 4], [1, 9]])
    f = confusion_figures(m, positives=[1], negatives=[0])
    assert f["accuracy"] == pytest.approx(45 / 50)
    assert f["sensitivity"] == pytest.approx(0.9) and f["specificity"] == pytest.approx(0.9)
    assert f["balanced_accuracy"] == pytest.approx(0.9)
    stacked = confusion_figures(np.stack([m, m.T]), [1], [0])          # any leading shape
    assert stacked["sensitivity"].shape == (2,)


def test_mcnemar_exact_p_values():
    champion = np.array([True] * 10 + [False] * 0 + [True] * 5)
    challenger = np.array([True] * 10 + [False] * 5)
    result = mcnemar(champion, challenger)
    assert (result["champion_only_right"], result["challenger_only_right"]) == (5, 0)
    assert result["p_value"] == pytest.approx(2 / 32)                   # 2 * 0.5**5
    same = mcnemar(champion, champion)
    assert same["p_value"] == 1.0


def test_bootstrap_resamples_patients_and_pairs_the_sides():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 100)
    patients = [f"p{i // 4}" for i in range(200)]                       # 4 images per woman
    good = np.eye(2)[truth] * 0.8 + 0.1
    worse = good.copy()
    worse[rng.choice(np.flatnonzero(truth == 1), 20, replace=False)] = [0.9, 0.1]   # misses 20 abnormal
    units = Units(truth, {"champion": good, "challenger": worse}, patients)
    out = bootstrap(units, ("normal", "abnormal"), [1], [0], resamples=1000, seed=0)
    diff = out["difference"]["sensitivity"]
    assert diff["high"] < 0 and diff["low"] > -0.4                        # about -0.2, never a gain
    assert out["champion"]["sensitivity"] == {"low": 1.0, "high": 1.0}


def _section(sens_low: float, sens_point: float, balanced: float) -> dict:
    return {"difference": {"sensitivity": {"point": sens_point, "low": sens_low, "high": sens_point + 0.05},
                           "balanced_accuracy": {"point": balanced, "low": balanced - 0.05, "high": balanced + 0.05}}}


def test_the_promotion_rule():
    assert promotion.judge(_section(-0.005, 0.02, 0.01)).passes
    failing = promotion.judge(_section(-0.03, 0.0, 0.01))
    assert not failing.passes and "sensitivity may fall" in failing.reasons[0]
    assert not promotion.judge(_section(0.0, 0.03, -0.001)).passes
    no_positive = {"difference": {"balanced_accuracy": {"point": 0.0, "low": -0.1, "high": 0.1}}}
    assert promotion.judge(no_positive).passes
    recommended, verdicts = promotion.judge_all({"a": _section(0, 0.1, 0.1), "b": _section(-0.2, 0, 0)})
    assert not recommended and verdicts["a"].passes and not verdicts["b"].passes


def _metrics(rng, n, shift=0.0):
    return [{"brightness": float(b) + shift, "contrast": float(c), "sharpness": float(s)}
            for b, c, s in zip(rng.normal(150, 10, n), rng.normal(40, 5, n), rng.lognormal(3, 0.5, n))]


def test_drift_thresholds_come_from_validation_samples_and_catch_a_shift():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(400, 2)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = drift.reference(["normal", "abnormal"], probs, _metrics(rng, 400))
    psi = ref["thresholds"]["psi"]["brightness"]
    assert all(a > b for a, b in zip(psi, psi[1:]))           # larger months, less noise, lower thresholds
    assert drift.threshold(ref, "brightness", 10) is None      # too few to judge
    assert psi[1] < drift.threshold(ref, "brightness", 30) < psi[0]

    def month(shift, n=120):
        metrics = _metrics(rng, n, shift)
        picks = rng.integers(0, 400, n)
        return [{"created_at": "2026-11-03T08:00:00Z", "analysis": "pap_smear",
                 "result": {"steps": [{"model": "pap_smear", "version": "2.0.0",
                                       "top": ["normal", "abnormal"][int(probs[i].argmax())],
                                       "confidence": float(probs[i].max())}],
                            "quality": {"metrics": m}}} for i, m in zip(picks, metrics)]
    refs = {("pap_smear", "2.0.0"): ref}
    calm = [drift.month_shifts(month(0), refs)[0] for _ in range(20)]
    assert sum(bool(s.large) for s in calm) <= 2              # 5 statistics at 1 % each: rarely flagged
    (lamp,) = drift.month_shifts(month(25), refs)              # a brighter lamp at the post
    assert lamp.large == ["brightness"] and lamp.exams == 120
    assert drift.month_shifts(month(25), {("pap_smear", "1.0.0"): ref}) == []   # another version: no reference
